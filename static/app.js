// The chatd page: one WebSocket to /ws, bubbles for `echo`, pills for
// everything the server says itself, and a connection that heals itself.
//
// Every piece of text from the network goes into the page with textContent,
// never as HTML, so a message can never become markup or script.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const log = $("messages"), text = $("text"), send = $("send"), nameInput = $("name");
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
  const NAME_KEY = "chatd.name";

  let socket = null;
  let myId = null;
  let everConnected = false;
  let attempt = 0;
  let retryTimer = null, countdownTimer = null, statusTimer = null;
  /** Set by a shutdown_notice: when to come back, instead of the backoff. */
  let resumeAt = null;
  let unread = 0, hiddenUnread = 0;
  /** True while reconnecting because the reader picked a new name. */
  let renaming = false;

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

  /** A stable colour per sender name, as messengers do. */
  function hue(name) {
    let h = 0;
    for (const c of name) h = (h * 31 + c.codePointAt(0)) >>> 0;
    return h % 7;
  }

  function initials(name) {
    const words = name.split(/[\s_.-]+/).filter(Boolean);
    const letters = words.length > 1 ? [words[0], words[1]] : [name];
    return letters.map((w) => [...w][0] || "").join("").toUpperCase() || "?";
  }

  // ---- scrolling -----------------------------------------------------------

  function atBottom() {
    return log.scrollHeight - log.scrollTop - log.clientHeight < STICKY_PX;
  }

  function scrollToBottom(smooth) {
    log.scrollTo({ top: log.scrollHeight, behavior: smooth ? "smooth" : "auto" });
  }

  function showUnread() {
    chip.hidden = unread === 0;
    chipCount.textContent = String(unread);
    chip.setAttribute("aria-label", `${unread} new message${unread === 1 ? "" : "s"}, jump to latest`);
  }

  /**
   * Runs `insert`, then keeps the view pinned to the bottom unless the reader
   * had scrolled up; then the arrival is counted on the "new messages" chip.
   */
  function place(insert, { own = false, counts = true } = {}) {
    const follow = own || atBottom();
    insert();
    if (follow) {
      scrollToBottom(false);
    } else if (counts) {
      unread += 1;
      showUnread();
    }
    if (counts && document.hidden) {
      hiddenUnread += 1;
      document.title = `(${hiddenUnread}) chatd`;
    }
  }

  log.addEventListener("scroll", () => {
    if (unread && atBottom()) { unread = 0; showUnread(); }
  });
  chip.addEventListener("click", () => {
    scrollToBottom(true);
    unread = 0;
    showUnread();
    text.focus();
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) { hiddenUnread = 0; document.title = "chatd"; }
  });

  // ---- rows ----------------------------------------------------------------

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

  /** A centred system line: welcome, notifications, shutdown notices, errors. */
  function pill(message, kind = "info") {
    const row = el("li", `pill ${kind}`);
    row.append(el("span", "", message));
    place(() => log.append(row), { counts: kind === "notice" });
    return row;
  }

  /** The group a new bubble from `from` joins, or null to start one. */
  function openGroup(from, ts) {
    const last = log.lastElementChild;
    if (!last || !last.classList.contains("group")) return null;
    if (last.dataset.sender !== from.id) return null;
    if (ts - Number(last.dataset.ts) > GROUP_WINDOW_MS) return null;
    return last;
  }

  function bubble(event) {
    const from = event.from || { id: "", name: "?" };
    const own = from.id === myId;
    const ts = typeof event.ts === "number" ? event.ts : Date.now();
    const open = openGroup(from, ts);
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
    place(() => {
      group.querySelector(".stack").append(message);
      if (!open) log.append(group);
    }, { own });
  }

  // ---- connection state ----------------------------------------------------

  function setState(state, detail) {
    stateLabel.dataset.state = state;
    stateLabel.textContent = detail || state;
    document.body.dataset.state = state;
    const connected = state === "connected";
    const hadFocus = document.activeElement === text;
    text.disabled = !connected;
    send.disabled = !connected;
    text.placeholder = connected ? "Message" : "Waiting for the connection…";
    if (connected && hadFocus) text.focus();
    if (!connected) onlineLabel.textContent = "";
  }

  function setOnline(count) {
    if (typeof count === "number") onlineLabel.textContent = `${count} online`;
  }

  /** The welcome count is a snapshot; /status keeps it roughly current. */
  function pollStatus() {
    clearInterval(statusTimer);
    statusTimer = setInterval(async () => {
      if (document.hidden || !socket || socket.readyState !== WebSocket.OPEN) return;
      try {
        const response = await fetch("/status", { cache: "no-store" });
        if (response.ok) setOnline((await response.json()).connections);
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

  function connect() {
    clearTimeout(retryTimer);
    if (!everConnected) setState("connecting", "connecting…");
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const name = cleanName(nameInput.value);
    const query = name ? `?name=${encodeURIComponent(name)}` : "";
    let ws;
    try {
      ws = new WebSocket(`${scheme}://${location.host}/ws${query}`);
    } catch {
      attempt += 1;
      scheduleConnect(backoffDelay());
      return;
    }
    socket = ws;
    ws.onmessage = (e) => {
      let event;
      try { event = JSON.parse(e.data); } catch { return; }
      if (event && typeof event === "object") handle(event);
    };
    ws.onclose = () => {
      if (socket !== ws) return; // replaced on purpose (rename, shutdown notice)
      socket = null;
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
    scheduleConnect(delay);
  }

  function handle(event) {
    switch (event.type) {
      case "welcome": {
        myId = event.client_id;
        attempt = 0;
        resumeAt = null;
        setState("connected");
        setOnline(event.online);
        pollStatus();
        if (!nameInput.value) nameInput.placeholder = String(event.name);
        const name = String(event.name);
        pill(renaming ? `You are now ${name}` : everConnected ? `Reconnected as ${name}` : `You joined as ${name}`,
          "welcome");
        renaming = false;
        everConnected = true;
        break;
      }
      case "echo": bubble(event); break;
      case "notification": pill(String(event.message), "notice"); break;
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
      case "error": pill(String(event.message), "error"); break;
      default: break;
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
    if (!message.trim() || !socket || socket.readyState !== WebSocket.OPEN) return;
    if (new TextEncoder().encode(message).length > maxMessageBytes) {
      pill(`That message is longer than ${maxMessageBytes} bytes.`, "error");
      return;
    }
    socket.send(JSON.stringify({ type: "message", message }));
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
    text.focus();
  });
  nameInput.addEventListener("change", rename);

  window.addEventListener("online", () => { if (!socket) scheduleConnect(0); });
  window.addEventListener("offline", () => { if (!socket) setState("offline", "offline · waiting for network"); });

  nameInput.value = storedName();
  connect();
})();
