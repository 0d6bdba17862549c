// The chatd page: one WebSocket to /ws, a list of rooms on the left and the
// open room's messages on the right; bubbles for `echo`, pills for everything
// the server says itself, and a connection that heals itself.
//
// Every room has its own message list (an <ol> that stays in the page while
// another room is open, so switching back keeps its scroll position). The
// URL hash names the open room (/#ops); on a phone the room list and the chat
// are two screens, and the hash decides which one shows.
//
// Every piece of text from the network goes into the page with textContent,
// never as HTML, so a message can never become markup or script.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const app = $("app"), logs = $("logs"), roomList = $("rooms"), noRooms = $("no-rooms");
  const text = $("text"), send = $("send"), nameInput = $("name"), me = $("me");
  const roomInput = $("room-name"), joinHint = $("join-hint");
  const roomTitle = $("room-title"), roomStatus = $("room-status"), roomAvatar = $("room-avatar");
  const leaveButton = $("leave"), backButton = $("back");
  const stateLabel = $("state"), onlineLabel = $("online");
  const chip = $("new-messages"), chipCount = $("new-count");
  const maxMessageBytes = Number(document.body.dataset.maxMessageBytes) || 4096;
  const maxNameChars = Number(document.body.dataset.maxNameChars) || 32;

  /** Backoff after a lost connection: 0.5 s doubling up to 15 s, jittered. */
  const BACKOFF_BASE_MS = 500, BACKOFF_CAP_MS = 15000;
  /** Messages from one sender closer than this share a group. */
  const GROUP_WINDOW_MS = 5 * 60 * 1000;
  /** How far from the bottom still counts as "reading the latest". */
  const STICKY_PX = 80;
  const STATUS_POLL_MS = 15000;
  const NAME_KEY = "chatd.name", ROOMS_KEY = "chatd.rooms", OPEN_KEY = "chatd.open";
  /** The server's MAX_ROOMS_PER_CONNECTION default; more in /ws is a 400. */
  const MAX_ROOMS = 50;
  /** Where a v1 event (no `room`) belongs, and where a first visit starts. */
  const DEFAULT_ROOM = "general";
  /** Below this width the room list and the chat are two screens (style.css). */
  const narrow = window.matchMedia("(max-width: 640px)");

  let socket = null;
  let connected = false;
  let myId = null;
  let everConnected = false;
  let attempt = 0;
  let retryTimer = null, countdownTimer = null, statusTimer = null;
  /** Set by a shutdown_notice: when to come back, instead of the backoff. */
  let resumeAt = null;
  /** The open room's "new messages" chip, and the hidden tab's title count. */
  let unread = 0, hiddenUnread = 0;
  /** True while reconnecting because the reader picked a new name. */
  let renaming = false;
  /** The server sent `rooms` in its welcome; a v1 server has only `general`. */
  let roomsServer = false;
  /**
   * A first visit (nothing remembered) takes the rooms the server started
   * it in; afterwards the remembered rooms are the truth, and a room the
   * server adds on its own (`general` when we asked for none) is left again.
   */
  let adoptServerRooms = false;
  /**
   * Joins go one at a time: an `error` names no room, and the session can
   * refuse a join at once while an accepted one is answered later (by the
   * hub), so with several in flight a refusal could not be told apart.
   * `joinInFlight` is the room asked for and not answered yet.
   */
  const joinQueue = [];
  let joinInFlight = null;
  /**
   * How many rooms the next /ws names. A server with a lower
   * MAX_ROOMS_PER_CONNECTION answers a longer list with 400 before the
   * upgrade, which the page only sees as a failed connection; so each
   * failure halves the list, and welcome() joins the rest one by one (a
   * refused join then says why). Halving while the server is simply down
   * costs nothing for the same reason.
   */
  let queryRooms = MAX_ROOMS;
  /** Set when a room link is followed from the phone's room list. */
  let clickedFromList = false, cameFromList = false;
  /** The reader asked for a room with the join field: type there once it is joined. */
  let focusOnJoin = false;

  // ---- names ---------------------------------------------------------------

  /** The server's rule: letters, digits, spaces and _ - . ', at most N chars. */
  function cleanName(raw) {
    const kept = raw.replace(/[^\p{Alphabetic}\p{N} _.'-]/gu, "").replace(/\s+/g, " ").trim();
    return [...kept].slice(0, maxNameChars).join("").trim();
  }

  function storedName() {
    try { return cleanName(localStorage.getItem(NAME_KEY) || ""); } catch { return ""; }
  }

  function storeName(name) {
    try { localStorage.setItem(NAME_KEY, name); } catch { /* private mode: keep it for this tab */ }
  }

  /** The server's room rule: 1–64 characters of a-z 0-9 - _ . : */
  const ROOM_PATTERN = /^[a-z0-9_.:-]{1,64}$/;
  const validRoom = (name) => typeof name === "string" && ROOM_PATTERN.test(name);

  /** Why `name` is not a room name, in words for the reader; null if it is one. */
  function roomProblem(name) {
    if (!name) return "Type a room name: 1–64 characters of a-z 0-9 - _ . :";
    if (validRoom(name)) return null;
    if ([...name].length > 64) return `A room name has at most 64 characters (this one has ${[...name].length}).`;
    const lower = name.toLowerCase();
    if (validRoom(lower)) return `Room names are lowercase: try “${lower}”.`;
    const dashed = lower.trim().replace(/\s+/g, "-");
    if (validRoom(dashed)) return `Room names have no spaces: try “${dashed}”.`;
    return "Room names use only a-z, 0-9 and - _ . : (lowercase, no spaces).";
  }

  /** The remembered rooms, or null on a first visit. */
  function storedRooms() {
    try {
      const raw = localStorage.getItem(ROOMS_KEY);
      if (raw === null) return null;
      const list = JSON.parse(raw);
      if (!Array.isArray(list)) return null;
      return [...new Set(list.filter(validRoom))].slice(0, MAX_ROOMS);
    } catch { return null; }
  }

  function storeRooms() {
    // A v1 server knows one room: keep what was remembered for a rooms server.
    if (!roomsServer && everConnected) return;
    const names = [...rooms.values()].filter((r) => r.confirmed).map((r) => r.name);
    try { localStorage.setItem(ROOMS_KEY, JSON.stringify(names)); } catch { /* private mode */ }
  }

  function storedOpen() {
    try { return localStorage.getItem(OPEN_KEY) || ""; } catch { return ""; }
  }

  /** A stable colour per sender or room name, as messengers do. */
  function hue(name) {
    let h = 0;
    for (const c of name) h = (h * 31 + c.codePointAt(0)) >>> 0;
    return h % 7;
  }

  function initials(name) {
    const words = name.split(/[\s_.:-]+/).filter(Boolean);
    const letters = words.length > 1 ? [words[0], words[1]] : [name];
    return letters.map((w) => [...w][0] || "").join("").toUpperCase() || "?";
  }

  // ---- elements --------------------------------------------------------------

  function el(tag, className, content) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (content !== undefined) node.textContent = content;
    return node;
  }

  function clock(ts) {
    const when = new Date(typeof ts === "number" ? ts : Date.now());
    return when.toLocaleTimeString([], { hour: "numeric", minute: "2-digit" });
  }

  /** A message list: one per room, plus the lobby's for when no room is open. */
  function makeLog(name) {
    const log = el("ol", "messages");
    log.dataset.room = name;
    log.setAttribute("role", "log");
    log.setAttribute("aria-live", "polite");
    log.setAttribute("aria-relevant", "additions");
    log.setAttribute("aria-label", name ? `Messages in ${name}` : "Messages");
    log.tabIndex = 0;
    log.hidden = true;
    log.addEventListener("scroll", () => {
      if (unread && log === visibleLog() && atBottom(log)) { unread = 0; showUnread(); }
    });
    logs.append(log);
    return log;
  }

  // ---- rooms ---------------------------------------------------------------

  /**
   * Every room on the page, by name, in the order they were joined. A room
   * is here from the moment the reader asks for it until they leave it:
   * `joined` says whether this connection is in it right now, `confirmed`
   * whether the server ever accepted it (only those are remembered).
   */
  const rooms = new Map();
  /** What the chat pane shows when the reader is in no room. */
  const lobby = { name: "", log: makeLog(""), stuck: true, scrollTop: 0 };
  let current = lobby;

  function addRoom(name) {
    const known = rooms.get(name);
    if (known) return known;
    const link = el("a", "room-link");
    link.href = `#${name}`;
    link.dataset.room = name;
    link.addEventListener("click", (e) => {
      clickedFromList = isListView();
      // Following a link to the hash we are on changes nothing by itself.
      if (roomFromHash() === name) { e.preventDefault(); route(); }
    });
    const avatar = el("span", `avatar c${hue(name)}`, initials(name));
    avatar.setAttribute("aria-hidden", "true");
    const time = el("time", "room-time");
    const preview = el("span", "room-preview", "joining…");
    const badge = el("span", "badge");
    badge.hidden = true;
    const count = el("span", "count", "0");
    badge.append(count, el("span", "visually-hidden", " unread"));
    const top = el("span", "room-top");
    top.append(el("span", "room-name", name), time);
    const bottom = el("span", "room-bottom");
    bottom.append(preview, badge);
    const main = el("span", "room-main");
    main.append(top, bottom);
    link.append(avatar, main);
    const item = el("li", "room-item");
    item.append(link);
    roomList.append(item);
    const room = {
      name, link, item, time, preview, badge, count, log: makeLog(name),
      joined: false, confirmed: false, members: null, unread: 0, stuck: true, scrollTop: 0,
    };
    rooms.set(name, room);
    noRooms.hidden = true;
    return room;
  }

  function removeRoom(room) {
    rooms.delete(room.name);
    room.item.remove();
    room.log.remove();
    noRooms.hidden = rooms.size > 0;
    if (current === room) current = lobby;
  }

  /** The room to open when the hash names none: the last one open, or the first. */
  function defaultRoom() {
    if (current !== lobby && rooms.has(current.name)) return current;
    return rooms.get(storedOpen()) || rooms.values().next().value || lobby;
  }

  function setPreview(room, line, ts) {
    room.preview.textContent = line.replace(/\s+/g, " ");
    room.time.textContent = clock(ts);
    room.time.dateTime = new Date(ts).toISOString();
  }

  function showBadge(room) {
    room.badge.hidden = room.unread === 0;
    room.count.textContent = room.unread > 99 ? "99+" : String(room.unread);
  }

  function sendFrame(frame) {
    if (!socket || socket.readyState !== WebSocket.OPEN) return false;
    socket.send(JSON.stringify(frame));
    return true;
  }

  /** Asks the server for `room`; without a connection, the next connect does. */
  function sendJoin(room) {
    if (!roomsServer || joinInFlight === room.name || joinQueue.includes(room.name)) return;
    joinQueue.push(room.name);
    sendNextJoin();
  }

  function sendNextJoin() {
    while (joinInFlight === null && joinQueue.length) {
      const name = joinQueue.shift();
      if (!rooms.has(name)) continue; // left while waiting
      if (!sendFrame({ type: "join", room: name })) { joinQueue.length = 0; return; }
      joinInFlight = name;
    }
  }

  /** Adds `name` to the page and joins it, or says why not (null). */
  function requestJoin(name) {
    if (rooms.size >= MAX_ROOMS) {
      hint(`You can be in at most ${MAX_ROOMS} rooms; leave one first.`);
      return null;
    }
    const room = addRoom(name);
    sendJoin(room);
    return room;
  }

  function leaveRoom(room) {
    // A join still in flight would make us a member after all: leave too.
    const member = room.joined || joinInFlight === room.name;
    if (member && roomsServer) sendFrame({ type: "leave", room: room.name });
    removeRoom(room);
    storeRooms();
    history.replaceState(null, "", location.pathname + location.search);
    route();
  }

  /** The server confirmed a room: from `welcome.rooms` or a `joined`. */
  function onJoined(event, announce) {
    if (joinInFlight === event.room) joinInFlight = null;
    sendNextJoin();
    const room = rooms.get(event.room);
    if (!room) return; // left again before the answer came
    const first = !room.confirmed;
    room.joined = true;
    room.confirmed = true;
    if (typeof event.members === "number") room.members = event.members;
    if (room.preview.textContent === "joining…") room.preview.textContent = "No messages yet";
    storeRooms();
    if (announce && first) pill(`You joined ${room.name}`, "info", room);
    if (room === current) { showRoomBar(); showComposer(); }
  }

  /** The server refused the oldest join we sent (bad_room, too_many_rooms, ...). */
  function onJoinRefused(event) {
    const name = joinInFlight;
    joinInFlight = null;
    sendNextJoin();
    const room = rooms.get(name);
    hint(`${name}: ${event.message}`);
    // Dropped even if it was remembered: this server will not have us in it.
    if (room) {
      const wasOpen = room === current;
      removeRoom(room);
      storeRooms();
      if (wasOpen) {
        history.replaceState(null, "", location.pathname + location.search);
        route();
      }
    }
    pill(`${name}: ${event.message}`, "error");
  }

  function hint(message) {
    joinHint.textContent = message;
    roomInput.setAttribute("aria-invalid", message ? "true" : "false");
  }

  // ---- which room shows ----------------------------------------------------

  /** On a phone, the room list is showing instead of the chat. */
  function isListView() {
    return narrow.matches && app.dataset.view === "list";
  }

  /** The message list the reader sees right now, or null. */
  function visibleLog() {
    return isListView() ? null : current.log;
  }

  /**
   * Opens `room` (or the lobby) in the chat pane and shows `view` ("list" or
   * "chat", which only matters on a phone). The list that goes out of sight
   * remembers whether it was following the latest message; the one that
   * comes into sight goes back to where it was, and its unread count clears.
   */
  function show(room, view) {
    const before = visibleLog();
    const beforeRoom = current;
    if (before) { beforeRoom.stuck = atBottom(before); beforeRoom.scrollTop = before.scrollTop; }
    current = room;
    app.dataset.view = view;
    for (const log of logs.children) log.hidden = log !== room.log;
    const after = visibleLog();
    if (after && after !== before) {
      if (room.stuck) scrollToBottom(after, false); else after.scrollTop = room.scrollTop;
      unread = 0;
      showUnread();
    }
    if (after && room !== lobby && room.unread) { room.unread = 0; showBadge(room); }
    for (const r of rooms.values()) {
      r.link.classList.toggle("active", r === room);
      if (r === room) r.link.setAttribute("aria-current", "page"); else r.link.removeAttribute("aria-current");
    }
    if (room !== lobby) {
      try { localStorage.setItem(OPEN_KEY, room.name); } catch { /* private mode */ }
    }
    showRoomBar();
    showComposer();
  }

  function roomFromHash() {
    const raw = location.hash.slice(1);
    try { return decodeURIComponent(raw); } catch { return raw; }
  }

  /** Makes the page match the URL hash: the room it names, joined if needed. */
  function route() {
    const name = roomFromHash();
    if (!name) {
      const room = defaultRoom();
      // A wide screen always shows a room, so the address names it.
      if (!narrow.matches && room !== lobby) history.replaceState(null, "", `#${room.name}`);
      show(room, "list");
      return;
    }
    const problem = roomProblem(name);
    const room = problem ? null : rooms.get(name) || requestJoin(name);
    if (problem) hint(problem);
    if (room) show(room, "chat"); else show(defaultRoom(), "list");
  }

  function openHash(name) {
    clickedFromList = isListView();
    if (roomFromHash() === name) route(); else location.hash = name;
  }

  window.addEventListener("hashchange", () => {
    cameFromList = clickedFromList;
    clickedFromList = false;
    route();
  });
  narrow.addEventListener("change", route);

  backButton.addEventListener("click", () => {
    if (cameFromList) {
      history.back();
    } else {
      history.pushState(null, "", location.pathname + location.search);
      route();
    }
  });
  leaveButton.addEventListener("click", () => { if (current !== lobby) leaveRoom(current); });

  $("join-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const name = roomInput.value.trim();
    const problem = roomProblem(name);
    hint(problem || "");
    if (problem) { roomInput.focus(); return; }
    roomInput.value = "";
    focusOnJoin = true;
    openHash(name);
  });
  roomInput.addEventListener("input", () => {
    const name = roomInput.value.trim();
    hint(name ? roomProblem(name) || "" : "");
  });

  // ---- scrolling -----------------------------------------------------------

  function atBottom(log) {
    return log.scrollHeight - log.scrollTop - log.clientHeight < STICKY_PX;
  }

  function scrollToBottom(log, smooth) {
    log.scrollTo({ top: log.scrollHeight, behavior: smooth ? "smooth" : "auto" });
  }

  function showUnread() {
    chip.hidden = unread === 0;
    chipCount.textContent = String(unread);
    chip.setAttribute("aria-label", `${unread} new message${unread === 1 ? "" : "s"}, jump to latest`);
  }

  /**
   * Runs `insert` on `room`'s list. In the list the reader sees, the view
   * stays pinned to the bottom unless they had scrolled up, and then the
   * arrival counts on the "new messages" chip; in any other room it counts
   * on the room's unread badge.
   */
  function place(room, insert, { own = false, counts = true } = {}) {
    const log = visibleLog();
    if (log === room.log) {
      const follow = own || atBottom(log);
      insert();
      if (follow) {
        scrollToBottom(log, false);
      } else if (counts) {
        unread += 1;
        showUnread();
      }
    } else {
      insert();
      if (counts && room !== lobby) { room.unread += 1; showBadge(room); }
    }
    if (counts && document.hidden) {
      hiddenUnread += 1;
      document.title = `(${hiddenUnread}) chatd`;
    }
  }

  chip.addEventListener("click", () => {
    const log = visibleLog();
    if (log) scrollToBottom(log, true);
    unread = 0;
    showUnread();
    text.focus();
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) { hiddenUnread = 0; document.title = "chatd"; }
  });

  // ---- rows ----------------------------------------------------------------

  /** A centred system line: welcome, notifications, shutdown notices, errors. */
  function pill(message, kind = "info", room = current) {
    const row = el("li", `pill ${kind}`);
    row.append(el("span", "", message));
    place(room, () => room.log.append(row), { counts: kind === "notice" });
    if (kind === "notice" && room !== lobby) setPreview(room, message, Date.now());
    return row;
  }

  /** The group in `log` a new bubble from `from` joins, or null to start one. */
  function openGroup(log, from, ts) {
    const last = log.lastElementChild;
    if (!last || !last.classList.contains("group")) return null;
    if (last.dataset.sender !== from.id) return null;
    if (ts - Number(last.dataset.ts) > GROUP_WINDOW_MS) return null;
    return last;
  }

  function bubble(room, event) {
    const from = event.from && typeof event.from === "object"
      ? { id: String(event.from.id ?? ""), name: String(event.from.name ?? "?") }
      : { id: "", name: "?" };
    const own = from.id === myId;
    const ts = typeof event.ts === "number" ? event.ts : Date.now();
    const open = openGroup(room.log, from, ts);
    const group = open || el("li", `group ${own ? "own" : "other"} c${hue(from.name)}`);
    if (!open) {
      group.dataset.sender = from.id;
      if (!own) group.append(el("div", "avatar", initials(from.name)));
      const stack = el("div", "stack");
      if (!own) stack.append(el("span", "who", from.name));
      group.append(stack);
    }
    group.dataset.ts = String(ts);
    const message = el("div", "bubble");
    message.dataset.id = String(event.id || "");
    // Grouped bubbles show the name once; a screen reader hears it every time.
    message.append(el("span", "visually-hidden", own ? "You: " : `${from.name}: `));
    message.append(el("span", "text", String(event.message)));
    const time = el("time", "time", clock(ts));
    time.dateTime = new Date(ts).toISOString();
    message.append(time);
    place(room, () => {
      group.querySelector(".stack").append(message);
      if (!open) room.log.append(group);
    }, { own });
    setPreview(room, `${own ? "You" : from.name}: ${event.message}`, ts);
  }

  // ---- header and composer -------------------------------------------------

  function showRoomBar() {
    const room = current;
    leaveButton.hidden = room === lobby;
    roomTitle.textContent = room === lobby ? "chatd" : room.name;
    roomAvatar.textContent = room === lobby ? "#" : initials(room.name);
    roomAvatar.className = room === lobby ? "avatar room" : `avatar room c${hue(room.name)}`;
    let status;
    if (!connected) status = stateLabel.textContent;
    else if (room === lobby) status = rooms.size ? "pick a room" : "join a room to start";
    else if (!room.joined) status = "joining…";
    else if (typeof room.members === "number") status = `${room.members} member${room.members === 1 ? "" : "s"}`;
    else status = "";
    roomStatus.textContent = status;
    roomStatus.dataset.state = connected ? "connected" : stateLabel.dataset.state;
  }

  function showComposer() {
    const ready = connected && current !== lobby && current.joined;
    const hadFocus = document.activeElement === text;
    text.disabled = !ready;
    send.disabled = !ready;
    text.placeholder = !connected ? "Waiting for the connection…"
      : current === lobby ? "Join a room to chat"
        : !current.joined ? `Joining ${current.name}…` : "Message";
    if (ready && (hadFocus || focusOnJoin)) text.focus();
    if (ready) focusOnJoin = false;
  }

  // ---- connection state ----------------------------------------------------

  function setState(state, detail) {
    stateLabel.dataset.state = state;
    stateLabel.textContent = detail || state;
    document.body.dataset.state = state;
    connected = state === "connected";
    if (!connected) onlineLabel.textContent = "";
    showComposer();
    showRoomBar();
  }

  function setOnline(count) {
    if (typeof count === "number") onlineLabel.textContent = `${count} online`;
  }

  /** The welcome and joined counts are snapshots; /status and /rooms refresh them. */
  function pollStatus() {
    clearInterval(statusTimer);
    statusTimer = setInterval(async () => {
      if (document.hidden || !socket || socket.readyState !== WebSocket.OPEN) return;
      try {
        const response = await fetch("/status", { cache: "no-store" });
        if (response.ok) setOnline((await response.json()).connections);
        if (!roomsServer) return;
        const list = await fetch("/rooms", { cache: "no-store" });
        if (!list.ok) return;
        const body = await list.json();
        for (const entry of Array.isArray(body.rooms) ? body.rooms : []) {
          const room = entry && rooms.get(entry.room);
          if (room && room.joined && typeof entry.members === "number") room.members = entry.members;
        }
        showRoomBar();
      } catch { /* the socket's close handler reports outages */ }
    }, STATUS_POLL_MS);
  }

  /** Full-ish jitter: between half and all of the doubled delay. */
  function backoffDelay() {
    const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** Math.max(0, attempt - 1));
    return ceiling / 2 + Math.random() * (ceiling / 2);
  }

  /**
   * Waits `delay` ms, showing what the page is doing, then connects. After a
   * few failed attempts in a row the page calls itself offline.
   */
  function scheduleConnect(delay) {
    clearTimeout(retryTimer);
    clearInterval(countdownTimer);
    if (navigator.onLine === false) {
      setState("offline", "offline · waiting for network");
      return;
    }
    const state = !everConnected ? "connecting" : attempt >= 4 ? "offline" : "reconnecting";
    const verb = state === "offline" ? "offline · retrying" : state;
    const due = Date.now() + delay;
    const tick = () => {
      const seconds = Math.ceil((due - Date.now()) / 1000);
      setState(state, seconds > 0 ? `${verb} in ${seconds} s…` : `${verb}…`);
    };
    tick();
    if (delay >= 1000) countdownTimer = setInterval(tick, 1000);
    retryTimer = setTimeout(() => {
      clearInterval(countdownTimer);
      connect();
    }, delay);
  }

  /** /ws?name=N&room=a&room=b…: the connection starts in every room of the page. */
  function wsUrl() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const query = new URLSearchParams();
    const name = cleanName(nameInput.value);
    if (name) query.append("name", name);
    for (const room of [...rooms.keys()].slice(0, queryRooms)) query.append("room", room);
    const search = query.toString();
    return `${scheme}://${location.host}/ws${search ? `?${search}` : ""}`;
  }

  function connect() {
    clearTimeout(retryTimer);
    if (!everConnected) setState("connecting", "connecting…");
    let ws;
    try {
      ws = new WebSocket(wsUrl());
    } catch {
      attempt += 1;
      scheduleConnect(backoffDelay());
      return;
    }
    socket = ws;
    let welcomed = false;
    ws.onmessage = (e) => {
      let event;
      try { event = JSON.parse(e.data); } catch { return; }
      if (!event || typeof event !== "object") return;
      if (event.type === "welcome") { welcomed = true; queryRooms = MAX_ROOMS; }
      handle(event);
    };
    ws.onclose = () => {
      if (socket !== ws) return; // replaced on purpose (rename, shutdown notice)
      socket = null;
      if (!welcomed) queryRooms = Math.max(1, Math.floor(Math.min(queryRooms, rooms.size) / 2));
      for (const room of rooms.values()) room.joined = false;
      clearInterval(statusTimer);
      if (resumeAt !== null) {
        scheduleConnect(Math.max(0, resumeAt - Date.now()));
        resumeAt = null;
      } else {
        attempt += 1;
        scheduleConnect(backoffDelay());
      }
    };
  }

  /** Closes the current socket on purpose and connects again after `delay`. */
  function reconnect(delay) {
    const old = socket;
    socket = null;
    if (old) old.close(1000);
    for (const room of rooms.values()) room.joined = false;
    scheduleConnect(delay);
  }

  /**
   * A (re)connection: the rooms the server started us in are joined; a
   * remembered room it did not start us in is joined now, and a room it put
   * us in that the reader has left (`general` by default) is left again.
   */
  function welcome(event) {
    myId = String(event.client_id);
    attempt = 0;
    resumeAt = null;
    joinQueue.length = 0;
    joinInFlight = null;
    for (const room of rooms.values()) room.joined = false;
    roomsServer = Array.isArray(event.rooms);
    const started = roomsServer
      ? event.rooms.filter((j) => j && typeof j === "object" && validRoom(j.room))
      : [{ room: DEFAULT_ROOM }];
    if (adoptServerRooms || !roomsServer) for (const j of started) addRoom(j.room);
    if (roomsServer) adoptServerRooms = false;
    for (const j of started) {
      if (rooms.has(j.room)) onJoined(j, false);
      else sendFrame({ type: "leave", room: j.room });
    }
    for (const room of rooms.values()) if (!room.joined) sendJoin(room);
    setState("connected");
    setOnline(event.online);
    pollStatus();
    const name = String(event.name);
    if (!nameInput.value) nameInput.placeholder = name;
    me.textContent = initials(name);
    me.className = `avatar me c${hue(name)}`;
    route();
    pill(renaming ? `You are now ${name}` : everConnected ? `Reconnected as ${name}` : `You joined as ${name}`,
      "welcome");
    renaming = false;
    everConnected = true;
  }

  /** The room an event belongs to: its `room`, or `general` for a v1 event. */
  function roomOf(event) {
    return rooms.get(typeof event.room === "string" ? event.room : DEFAULT_ROOM) || null;
  }

  function handle(event) {
    switch (event.type) {
      case "welcome": welcome(event); break;
      case "joined": if (validRoom(event.room)) onJoined(event, true); break;
      case "left": {
        const room = rooms.get(event.room);
        if (room) { room.joined = false; showComposer(); showRoomBar(); }
        break;
      }
      case "echo": {
        const room = roomOf(event);
        if (room) bubble(room, event);
        break;
      }
      case "notification": {
        // With `room`, it belongs to that room; without, it is for everyone
        // (POST /notify, the ticker) and shows in whichever room is open.
        const room = typeof event.room === "string" ? rooms.get(event.room) : current;
        if (room) pill(String(event.message), "notice", room);
        break;
      }
      case "shutdown_notice": {
        const wait = Math.max(0, Number(event.retry_after_ms) || 0);
        resumeAt = Date.now() + wait;
        pill(`${event.message} · reconnecting in ${Math.ceil(wait / 1000)} s`, "shutdown");
        // Leave the draining server after our own jittered delay; the
        // reconnect then lands on whichever server is taking new clients.
        clearTimeout(retryTimer);
        retryTimer = setTimeout(() => { resumeAt = null; reconnect(0); }, wait);
        break;
      }
      case "error": {
        const refusal = ["bad_room", "too_many_rooms", "not_allowed"].includes(event.code);
        if (refusal && joinInFlight !== null) onJoinRefused(event);
        else pill(String(event.message), "error");
        break;
      }
      default: break; // newer events (presence, typing, ...) are not shown yet
    }
  }

  // ---- composer and name -----------------------------------------------------

  /**
   * Grows the composer with its text. scrollHeight leaves out the border, so
   * it is added back: without it a one-line text overflowed by a pixel or two
   * on phones (16 px text) and showed scrollbar arrows. The textarea scrolls
   * only once it is at its CSS max-height.
   */
  function resizeComposer() {
    text.classList.remove("scrolls");
    text.style.height = "auto";
    const border = text.offsetHeight - text.clientHeight;
    const wanted = text.scrollHeight + border;
    const max = parseFloat(getComputedStyle(text).maxHeight) || 160;
    text.style.height = `${Math.min(wanted, max)}px`;
    text.classList.toggle("scrolls", wanted > max);
  }

  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const message = text.value;
    if (!message.trim() || current === lobby || !current.joined) return;
    if (new TextEncoder().encode(message).length > maxMessageBytes) {
      pill(`That message is longer than ${maxMessageBytes} bytes.`, "error");
      return;
    }
    if (!sendFrame({ type: "message", room: current.name, message })) return;
    text.value = "";
    resizeComposer();
    text.focus();
  });

  text.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $("composer").requestSubmit();
    }
  });
  text.addEventListener("input", resizeComposer);

  function rename() {
    const name = cleanName(nameInput.value);
    nameInput.value = name;
    if (name === storedName()) return;
    storeName(name);
    renaming = true;
    reconnect(0);
  }

  $("name-form").addEventListener("submit", (e) => {
    e.preventDefault();
    rename();
    if (!text.disabled) text.focus();
  });
  nameInput.addEventListener("change", rename);

  window.addEventListener("online", () => { if (!socket) scheduleConnect(0); });
  window.addEventListener("offline", () => { if (!socket) setState("offline", "offline · waiting for network"); });

  // ---- start -----------------------------------------------------------------

  nameInput.value = storedName();
  const remembered = storedRooms();
  adoptServerRooms = remembered === null;
  for (const name of remembered || []) addRoom(name).confirmed = true;
  noRooms.hidden = rooms.size > 0 || adoptServerRooms;
  route(); // a room named by the hash is added here, so the connection starts in it
  connect();
})();
