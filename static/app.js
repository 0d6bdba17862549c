// The chatd page: a list of rooms on the left and the open room's messages
// on the right; bubbles for `echo`, pills for everything the server says
// itself. The connection (reconnecting, rooms, resuming with `since`,
// dropping repeats) is static/chatd.js; this file is what the reader sees.
//
// Every room has its own message list (an <ol> that stays in the page while
// another room is open, so switching back keeps its scroll position). Each
// list holds a window of the latest WINDOW rows; older rows leave the page
// and come back from GET /rooms/{R}/history when the reader scrolls up. The
// URL hash names the open room (/#ops); on a phone the room list and the
// chat are two screens, and the hash decides which one shows.
//
// Every piece of text from the network goes into the page with textContent,
// never as HTML, so a message can never become markup or script.
//
// Identity: on a server without tokens (`<body data-auth="off">`) the
// reader picks a display name. With tokens (`data-auth="on"`, or a token in
// the URL, or a 401 from /ws) the page signs in with a JWT from the URL
// fragment (`/#token=…`, removed from the address bar at once, so it is not
// bookmarked or shared by accident) or from localStorage, shows who the
// token says we are, and asks for a new token when it is refused or runs out.
// Every room has a member list (GET /rooms/{R}/presence, then `presence`
// events) and a "… is typing" line.

// chatd.js with this file's ?v=, so a new release never runs with a cached
// old client (static files are cached for an hour).
const { ChatdClient, isRoomName, tokenClaims } = await import(new URL(`./chatd.js${new URL(import.meta.url).search}`, import.meta.url));

const $ = (id) => document.getElementById(id);
const app = $("app"), logs = $("logs"), roomList = $("rooms"), noRooms = $("no-rooms");
const text = $("text"), send = $("send"), nameInput = $("name"), me = $("me");
const roomInput = $("room-name"), joinHint = $("join-hint");
const roomTitle = $("room-title"), roomStatus = $("room-status"), roomAvatar = $("room-avatar");
const leaveButton = $("leave"), backButton = $("back");
const stateLabel = $("state"), onlineLabel = $("online");
const chip = $("new-messages"), chipCount = $("new-count");
const nameField = $("name-field"), identity = $("identity"), userName = $("user-name"), userId = $("user-id");
const tokenForm = $("token-form"), tokenInput = $("token"), tokenReason = $("token-reason");
const typingLine = $("typing"), membersPanel = $("members"), memberList = $("member-list");
const membersEmpty = $("members-empty"), membersToggle = $("members-toggle"), memberCount = $("member-count");
const maxMessageBytes = Number(document.body.dataset.maxMessageBytes) || 4096;
const maxNameChars = Number(document.body.dataset.maxNameChars) || 32;

/** Messages from one sender closer than this share a group. */
const GROUP_WINDOW_MS = 5 * 60 * 1000;
/** How far from the bottom still counts as "reading the latest". */
const STICKY_PX = 80;
/** How close to the top loads older messages. */
const OLDER_PX = 150;
const STATUS_POLL_MS = 15000;
/**
 * Without tokens chatd sends no `presence` events (every connection is its
 * own user, and v1 clients would not expect them), so the open room's
 * member list is fetched again this often while the tab is visible.
 */
const PRESENCE_POLL_MS = 5000;
const NAME_KEY = "chatd.name", ROOMS_KEY = "chatd.rooms", OPEN_KEY = "chatd.open", IDS_KEY = "chatd.ids";
const TOKEN_KEY = "chatd.token";
/** "… is typing" goes away this long after the last `typing` event. */
const TYPING_SHOWN_MS = 4000;
/** From this width the member list is open beside the chat by default. */
const roomy = window.matchMedia("(min-width: 1100px)");
/** The server's MAX_ROOMS_PER_CONNECTION default; more in /ws is a 400. */
const MAX_ROOMS = 50;
/**
 * Rows (bubbles and pills) a room keeps in the page while the reader
 * follows the latest; scrolling up may hold more, up to WINDOW_MAX, and
 * going back down trims to WINDOW again. A tab open for days stays light.
 */
const WINDOW = 300, WINDOW_MAX = 900;
/** Older messages fetched per scroll to the top. */
const OLDER_PAGE = 50;
/** Below this width the room list and the chat are two screens (style.css). */
const narrow = window.matchMedia("(max-width: 640px)");

/** The open room's "new messages" chip, and the hidden tab's title count. */
let unread = 0, hiddenUnread = 0;
/** True while reconnecting because the reader picked a new name. */
let renaming = false;
let countdownTimer = null, statusTimer = null;
/** Set when a room link is followed from the phone's room list. */
let clickedFromList = false, cameFromList = false;
/** The reader asked for a room with the join field: type there once it is joined. */
let focusOnJoin = false;

// ---- tokens --------------------------------------------------------------

/**
 * Takes a token out of the URL fragment (`#token=T`, `#ops&token=T`) and
 * puts the address back without it, keeping the room part; null if none.
 */
function takeTokenFromHash() {
  const parts = location.hash.slice(1).split("&");
  const found = parts.find((p) => p.startsWith("token="));
  if (found === undefined) return null;
  let token = found.slice("token=".length);
  try { token = decodeURIComponent(token); } catch { /* used as it is */ }
  const rest = parts.filter((p) => p && !p.startsWith("token="));
  history.replaceState(null, "", location.pathname + location.search + (rest.length ? `#${rest[0]}` : ""));
  return token.trim() || null;
}

function storedToken() {
  try { return localStorage.getItem(TOKEN_KEY) || ""; } catch { return ""; }
}

function storeToken(token) {
  try {
    if (token) localStorage.setItem(TOKEN_KEY, token); else localStorage.removeItem(TOKEN_KEY);
  } catch { /* private mode: kept for this tab */ }
}

const hashToken = takeTokenFromHash();
if (hashToken) storeToken(hashToken);
// A token kept from another time is not sent to a server that says it
// takes none; one in the link is (the reader asked for it).
const startToken = hashToken || (document.body.dataset.auth === "off" ? "" : storedToken());
/** Signing in with tokens, rather than picking a name. */
let tokenMode = document.body.dataset.auth === "on" || Boolean(startToken);
/** Who the server says we are (`welcome.user`), once connected. */
let user = null;

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

/** Why `name` is not a room name, in words for the reader; null if it is one. */
function roomProblem(name) {
  if (!name) return "Type a room name: 1–64 characters of a-z 0-9 - _ . :";
  if (isRoomName(name)) return null;
  if ([...name].length > 64) return `A room name has at most 64 characters (this one has ${[...name].length}).`;
  const lower = name.toLowerCase();
  if (isRoomName(lower)) return `Room names are lowercase: try “${lower}”.`;
  const dashed = lower.trim().replace(/\s+/g, "-");
  if (isRoomName(dashed)) return `Room names have no spaces: try “${dashed}”.`;
  return "Room names use only a-z, 0-9 and - _ . : (lowercase, no spaces).";
}

/** The remembered rooms, or null on a first visit. */
function storedRooms() {
  try {
    const raw = localStorage.getItem(ROOMS_KEY);
    if (raw === null) return null;
    const list = JSON.parse(raw);
    if (!Array.isArray(list)) return null;
    return [...new Set(list.filter(isRoomName))].slice(0, MAX_ROOMS);
  } catch { return null; }
}

function storeRooms() {
  // A v1 server knows one room: keep what was remembered for a rooms server.
  if (!client.roomsServer && client.everConnected) return;
  const names = [...rooms.values()].filter((r) => r.confirmed).map((r) => r.name);
  try { localStorage.setItem(ROOMS_KEY, JSON.stringify(names)); } catch { /* private mode */ }
}

function storedOpen() {
  try { return localStorage.getItem(OPEN_KEY) || ""; } catch { return ""; }
}

/**
 * The client ids this tab has had (each connection gets a new one without
 * a login), so its own messages in history still show as its own after a
 * reconnect or a reload.
 */
const myIds = new Set((() => {
  try { return JSON.parse(sessionStorage.getItem(IDS_KEY) || "[]").map(String); } catch { return []; }
})());

function rememberId(id) {
  myIds.add(id);
  try { sessionStorage.setItem(IDS_KEY, JSON.stringify([...myIds].slice(-20))); } catch { /* private mode */ }
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
function makeLog(room) {
  const log = el("ol", "messages");
  log.dataset.room = room.name;
  log.setAttribute("role", "log");
  log.setAttribute("aria-live", "polite");
  log.setAttribute("aria-relevant", "additions");
  log.setAttribute("aria-label", room.name ? `Messages in ${room.name}` : "Messages");
  log.tabIndex = 0;
  log.hidden = true;
  log.addEventListener("scroll", () => {
    if (log !== visibleLog()) return;
    if (atBottom(log)) {
      if (unread) { unread = 0; showUnread(); }
      trim(room, WINDOW);
    }
    if (log.scrollTop < OLDER_PX && room !== lobby) loadOlder(room);
  });
  logs.append(log);
  return log;
}

// ---- the connection ----------------------------------------------------------

const remembered = storedRooms();
const client = new ChatdClient({
  name: tokenMode ? "" : storedName(), token: startToken, rooms: remembered, maxRooms: MAX_ROOMS,
});

// ---- rooms ---------------------------------------------------------------

/**
 * Every room on the page, by name, in the order they were joined. A room
 * is here from the moment the reader asks for it until they leave it:
 * `client.isMember` says whether this connection is in it right now,
 * `confirmed` whether the server ever accepted it (only those are remembered).
 */
const rooms = new Map();
/** What the chat pane shows when the reader is in no room. */
const lobby = { name: "", stuck: true, scrollTop: 0, ids: new Map() };
lobby.log = makeLog(lobby);
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
    name, link, item, time, preview, badge, count,
    confirmed: false, members: null, unread: 0, stuck: true, scrollTop: 0,
    /** id → its row, for the events in the page (a repeat is not added twice). */
    ids: new Map(),
    /** Loading older rows; no older rows to load. */
    loadingOlder: false, startReached: false,
    /** id → { id, name } online in the room; null until known. */
    people: null,
    /** `presence` events that came while the list was being fetched. */
    presenceQueue: null,
    /** Joined again since the list was fetched: fetch it when shown. */
    presenceStale: true,
    /** id → { name, timer } of those typing. */
    typers: new Map(),
  };
  room.log = makeLog(room);
  rooms.set(name, room);
  noRooms.hidden = true;
  return room;
}

function removeRoom(room) {
  for (const { timer } of room.typers.values()) clearTimeout(timer);
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

const joined = (room) => room !== lobby && client.isMember(room.name);

/** Adds `name` to the page and joins it, or says why not (null). */
function requestJoin(name) {
  if (rooms.size >= MAX_ROOMS) {
    hint(`You can be in at most ${MAX_ROOMS} rooms; leave one first.`);
    return null;
  }
  const room = addRoom(name);
  client.join(name);
  return room;
}

function leaveRoom(room) {
  client.leave(room.name);
  removeRoom(room);
  storeRooms();
  history.replaceState(null, "", location.pathname + location.search);
  route();
}

/** The server refused a join (bad_room, too_many_rooms, ...): the room goes. */
client.on("refused", ({ room: name, message }) => {
  const room = rooms.get(name);
  hint(`${name}: ${message}`);
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
  pill(`${name}: ${message}`, "error");
});

/** In a room (its history is already on the page). */
client.on("joined", (d) => {
  const room = rooms.get(d.room) || addRoom(d.room); // a first visit takes the server's rooms
  const first = !room.confirmed;
  room.confirmed = true;
  if (typeof d.members === "number") room.members = d.members;
  if (room.preview.textContent === "joining…") room.preview.textContent = "No messages yet";
  storeRooms();
  if (!d.atConnect && first) pill(`You joined ${room.name}`, "info", room);
  // The list is fetched for the room on screen; the others when opened, so
  // a reconnect in fifty rooms is one request, not fifty.
  room.presenceStale = true;
  if (room === current) loadPresence(room);
  if (room === current) { showRoomBar(); showComposer(); }
});

client.on("left", ({ room: name }) => {
  if (rooms.get(name) === current) { showComposer(); showRoomBar(); }
});

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
  if (room !== lobby && room.presenceStale && joined(room)) loadPresence(room);
  showMembers();
  showTyping();
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
  const token = takeTokenFromHash();
  if (token) useToken(token);
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
 * on the room's unread badge. The room's window is trimmed from the top.
 */
function place(room, insert, { own = false, counts = true } = {}) {
  const log = visibleLog();
  if (log === room.log) {
    const follow = own || atBottom(log);
    insert();
    trim(room, follow ? WINDOW : WINDOW_MAX);
    if (follow) {
      scrollToBottom(log, false);
    } else if (counts) {
      unread += 1;
      showUnread();
    }
  } else {
    insert();
    trim(room, room.stuck ? WINDOW : WINDOW_MAX);
    if (counts && room !== lobby) { room.unread += 1; showBadge(room); }
  }
  if (counts && document.hidden) {
    hiddenUnread += 1;
    document.title = `(${hiddenUnread}) chatd`;
  }
}

/** The rows of a list that count against its window. */
const rowCount = (log) => log.querySelectorAll(".bubble, .pill").length;

/**
 * Drops the oldest rows of `room` until at most `keep` are left. The view
 * keeps what the reader is looking at where it was. Dropped messages come
 * back from the server's history when the reader scrolls up to them.
 */
function trim(room, keep) {
  const log = room.log;
  let excess = rowCount(log) - keep;
  if (excess <= 0) return;
  const heightBefore = log.scrollHeight;
  while (excess > 0 && log.firstElementChild) {
    const first = log.firstElementChild;
    const bubble = first.classList.contains("group") ? first.querySelector(".bubble") : null;
    const row = bubble || first;
    if (row.dataset.id) room.ids.delete(row.dataset.id);
    row.remove();
    if (bubble && !first.querySelector(".bubble")) first.remove();
    excess -= 1;
  }
  room.startReached = false;
  if (log === visibleLog() && !atBottom(log)) log.scrollTop -= heightBefore - log.scrollHeight;
}

/**
 * Loads the messages before the oldest one on the page, from the room's
 * history (GET /rooms/{R}/history?before=N), and puts them on top without
 * moving what the reader sees. Only the current epoch's history can be
 * asked for: rows of a lost one have nothing older to load.
 */
async function loadOlder(room) {
  if (room.loadingOlder || room.startReached || rowCount(room.log) >= WINDOW_MAX) return;
  const oldest = room.log.querySelector("[data-offset]");
  const at = client.positions()[room.name];
  if (!oldest || !at || oldest.dataset.epoch !== at.epoch || Number(oldest.dataset.offset) <= 1) {
    room.startReached = true;
    return;
  }
  room.loadingOlder = true;
  try {
    const page = await client.history(room.name, { before: Number(oldest.dataset.offset), limit: OLDER_PAGE });
    if (!rooms.has(room.name)) return;
    // A batch Redis stored twice (after a failed round trip) repeats an id.
    const ids = new Set(room.ids.keys());
    const fresh = page.epoch !== at.epoch ? [] : page.events.filter((e) => {
      if (!e || ids.has(String(e.id))) return false;
      ids.add(String(e.id));
      return true;
    });
    if (!fresh.length) { room.startReached = true; return; }
    prepend(room, fresh, at.epoch);
  } catch {
    // Offline or an old server: try again on the next scroll to the top.
  } finally {
    room.loadingOlder = false;
  }
}

// ---- rows ----------------------------------------------------------------

/** Marks `row` with the event's id and place in the room's history. */
function tag(room, row, event, epoch) {
  if (event.id !== undefined && event.id !== null) {
    row.dataset.id = String(event.id);
    room.ids.set(row.dataset.id, row);
  }
  if (Number.isInteger(event.offset) && epoch) {
    row.dataset.offset = String(event.offset);
    row.dataset.epoch = epoch;
  }
}

/**
 * A centred system line: welcome, notifications, shutdown notices, errors.
 * A room notice (`event`) counts as unread unless it is from the past.
 */
function pill(message, kind = "info", room = current, { event = null, epoch = null, counts = kind === "notice" } = {}) {
  const row = el("li", `pill ${kind}`);
  row.append(el("span", "", message));
  if (event) tag(room, row, event, epoch);
  place(room, () => room.log.append(row), { counts });
  if (kind === "notice" && room !== lobby) {
    setPreview(room, message, event && typeof event.ts === "number" ? event.ts : Date.now());
  }
  return row;
}

/**
 * Notices to everyone (the periodic one, POST /notify without a room) of
 * one kind (the same text but for its numbers: "Periodic notification #12")
 * share one pill that counts them and says when the last came, at the
 * bottom of the open room: a tab open for days stays readable.
 */
const repeated = new Map();

function everyoneNotice(event) {
  const message = String(event.message);
  const key = message.replace(/\d+/g, "#");
  const ts = typeof event.ts === "number" ? event.ts : Date.now();
  const known = repeated.get(key);
  const count = known ? known.count + 1 : 1;
  if (known) known.row.remove();
  const row = el("li", "pill notice everyone");
  row.append(el("span", "", message));
  if (count > 1) {
    row.dataset.count = String(count);
    row.append(el("span", "repeat", ` · ×${count}, last ${clock(ts)}`));
  }
  repeated.set(key, { row, count });
  place(current, () => current.log.append(row), { counts: count === 1 });
}

/** The group in `log` a new bubble from `from` joins, or null to start one. */
function openGroup(log, from, ts) {
  const last = log.lastElementChild;
  if (!last || !last.classList.contains("group")) return null;
  if (last.dataset.sender !== from.id) return null;
  if (ts - Number(last.dataset.ts) > GROUP_WINDOW_MS) return null;
  return last;
}

function sender(event) {
  return event.from && typeof event.from === "object"
    ? { id: String(event.from.id ?? ""), name: String(event.from.name ?? "?") }
    : { id: "", name: "?" };
}

/** A new group for `from`'s bubbles. */
function makeGroup(from, own) {
  const group = el("li", `group ${own ? "own" : "other"} c${hue(from.name)}`);
  group.dataset.sender = from.id;
  if (!own) group.append(el("div", "avatar", initials(from.name)));
  const stack = el("div", "stack");
  if (!own) stack.append(el("span", "who", from.name));
  group.append(stack);
  return group;
}

function makeBubble(room, event, epoch, own, from, ts) {
  const message = el("div", "bubble");
  tag(room, message, event, epoch);
  message.dataset.ts = String(ts);
  // Grouped bubbles show the name once; a screen reader hears it every time.
  message.append(el("span", "visually-hidden", own ? "You: " : `${from.name}: `));
  message.append(el("span", "text", String(event.message)));
  const time = el("time", "time", clock(ts));
  time.dateTime = new Date(ts).toISOString();
  message.append(time);
  return message;
}

/** Appends `event` (an echo) to `room`'s list, in the last group when it can. */
function bubble(room, event, epoch, counts) {
  if (event.id !== undefined && room.ids.has(String(event.id))) return;
  const from = sender(event);
  const own = myIds.has(from.id);
  const ts = typeof event.ts === "number" ? event.ts : Date.now();
  const open = openGroup(room.log, from, ts);
  const group = open || makeGroup(from, own);
  group.dataset.ts = String(ts);
  const message = makeBubble(room, event, epoch, own, from, ts);
  place(room, () => {
    group.querySelector(".stack").append(message);
    if (!open) room.log.append(group);
  }, { own, counts: counts && !own });
  setPreview(room, `${own ? "You" : from.name}: ${event.message}`, ts);
}

/** Puts older `events` (oldest first) on top of `room`'s list. */
function prepend(room, events, epoch) {
  const log = room.log;
  const rows = document.createDocumentFragment();
  let last = null;
  for (const event of events) {
    const ts = typeof event.ts === "number" ? event.ts : 0;
    if (event.type === "notification") {
      const row = el("li", "pill notice");
      row.append(el("span", "", String(event.message)));
      tag(room, row, event, epoch);
      rows.append(row);
      last = null;
      continue;
    }
    if (event.type !== "echo") continue;
    const from = sender(event);
    const own = myIds.has(from.id);
    if (!last || last.dataset.sender !== from.id || ts - Number(last.dataset.ts) > GROUP_WINDOW_MS) {
      last = makeGroup(from, own);
      rows.append(last);
    }
    last.dataset.ts = String(ts);
    last.querySelector(".stack").append(makeBubble(room, event, epoch, own, from, ts));
  }
  // Measured before anything moves: the view keeps its distance from the bottom.
  const fromBottom = log.scrollHeight - log.scrollTop;
  // The last loaded group and the first on the page may be one sender's run.
  const first = log.firstElementChild;
  const firstBubble = first && first.classList.contains("group") ? first.querySelector(".bubble") : null;
  if (last && firstBubble && first.dataset.sender === last.dataset.sender
      && Number(firstBubble.dataset.ts) - Number(last.dataset.ts) <= GROUP_WINDOW_MS) {
    const stack = first.querySelector(".stack");
    for (const b of [...last.querySelectorAll(".bubble")]) stack.insertBefore(b, firstBubble);
    last.remove();
  }
  log.prepend(rows);
  log.scrollTop = log.scrollHeight - fromBottom;
}

client.on("message", ({ room: name, event, source, epoch }) => {
  const room = rooms.get(name) || addRoom(name);
  bubble(room, event, epoch, source !== "history");
  if (source === "live") stopTyping(room, sender(event).id);
});

client.on("notice", ({ room: name, event, source, epoch }) => {
  // With `room`, it belongs to that room and is stored; without, it is for
  // everyone (POST /notify, the ticker) and shows in whichever room is open.
  if (name === null) { everyoneNotice(event); return; }
  const room = rooms.get(name) || addRoom(name);
  if (event.id !== undefined && room.ids.has(String(event.id))) return;
  pill(String(event.message), "notice", room, { event, epoch, counts: source !== "history" });
});

/** The server could not give us everything we missed in `room`. */
client.on("gap", ({ room: name }) => {
  const room = rooms.get(name);
  if (room) pill("some messages may be missing", "gap", room);
});

// ---- header and composer -------------------------------------------------

function showRoomBar() {
  const room = current;
  leaveButton.hidden = room === lobby;
  roomTitle.textContent = room === lobby ? "chatd" : room.name;
  roomAvatar.textContent = room === lobby ? "#" : initials(room.name);
  roomAvatar.className = room === lobby ? "avatar room" : `avatar room c${hue(room.name)}`;
  let status;
  if (!client.connected) status = stateLabel.textContent;
  else if (room === lobby) status = rooms.size ? "pick a room" : "join a room to start";
  else if (!joined(room)) status = "joining…";
  else if (typeof room.members === "number") status = `${room.members} member${room.members === 1 ? "" : "s"}`;
  else status = "";
  roomStatus.textContent = status;
  roomStatus.dataset.state = client.connected ? "connected" : stateLabel.dataset.state;
}

function showComposer() {
  const ready = client.connected && joined(current);
  const hadFocus = document.activeElement === text;
  text.disabled = !ready;
  send.disabled = !ready;
  text.placeholder = !client.connected ? "Waiting for the connection…"
    : current === lobby ? "Join a room to chat"
      : !joined(current) ? `Joining ${current.name}…` : "Message";
  if (ready && (hadFocus || focusOnJoin)) text.focus();
  if (ready) focusOnJoin = false;
}

// ---- connection state ----------------------------------------------------

function showState(state, detail) {
  stateLabel.dataset.state = state;
  stateLabel.textContent = detail || state;
  document.body.dataset.state = state;
  if (state !== "connected") onlineLabel.textContent = "";
  showComposer();
  showRoomBar();
  membersPanel.classList.toggle("stale", state !== "connected");
}

/** What the client is doing, with a countdown to its next attempt. */
client.on("state", ({ state, retryAt }) => {
  clearInterval(countdownTimer);
  if (state === "connected") { showState(state); return; }
  clearInterval(statusTimer);
  if (state === "expired") { showState("offline", "session expired"); return; }
  if (state === "unauthorized") { showState("offline", "not signed in"); return; }
  if (state === "offline" && retryAt === null) { showState(state, "offline · waiting for network"); return; }
  if (retryAt === null) { showState(state, `${state}…`); return; }
  const verb = state === "offline" ? "offline · retrying" : state;
  const tick = () => {
    const seconds = Math.ceil((retryAt - Date.now()) / 1000);
    showState(state, seconds > 0 ? `${verb} in ${seconds} s…` : `${verb}…`);
  };
  tick();
  if (retryAt - Date.now() >= 1000) countdownTimer = setInterval(tick, 1000);
});

function setOnline(count) {
  if (typeof count === "number") onlineLabel.textContent = `${count} online`;
}

/** The welcome and joined counts are snapshots; /status and /rooms refresh them. */
function pollStatus() {
  clearInterval(statusTimer);
  statusTimer = setInterval(async () => {
    if (document.hidden || !client.connected) return;
    try {
      const response = await fetch("/status", { cache: "no-store" });
      if (response.ok) setOnline((await response.json()).connections);
      if (!client.roomsServer) return;
      const list = await fetch("/rooms", { cache: "no-store" });
      if (!list.ok) return;
      const body = await list.json();
      for (const entry of Array.isArray(body.rooms) ? body.rooms : []) {
        const room = entry && rooms.get(entry.room);
        if (room && joined(room) && typeof entry.members === "number") room.members = entry.members;
      }
      showRoomBar();
    } catch { /* the client reports outages */ }
  }, STATUS_POLL_MS);
}

/** A (re)connection, after the rooms it started in (and their history). */
client.on("welcome", ({ event, reconnected }) => {
  rememberId(String(event.client_id));
  user = client.user;
  // The server has the last word: `welcome.user` comes only with tokens.
  tokenMode = Boolean(user);
  // With tokens, `from.id` is the user's id, the same in every tab.
  if (user) rememberId(user.id);
  showIdentity();
  setOnline(event.online);
  pollStatus();
  const name = user ? user.name : String(event.name);
  if (!nameInput.value) nameInput.placeholder = name;
  me.textContent = initials(name);
  me.className = `avatar me c${hue(name)}`;
  route();
  pill(renaming ? `You are now ${name}` : reconnected ? `Reconnected as ${name}` : `You joined as ${name}`,
    "welcome");
  renaming = false;
});

client.on("shutdown", ({ event, retryAfterMs }) => {
  pill(`${event.message} · reconnecting in ${Math.ceil(retryAfterMs / 1000)} s`, "shutdown");
});

client.on("error", ({ message }) => pill(message, "error"));

// ---- identity --------------------------------------------------------------

/** The name field (open mode) or who the token says we are (token mode). */
function showIdentity() {
  nameField.hidden = tokenMode;
  identity.hidden = !tokenMode;
  const claims = tokenClaims(client.token);
  const name = user ? user.name : claims && typeof claims.name === "string" ? claims.name : "";
  const id = user ? user.id : claims && claims.sub !== undefined ? String(claims.sub) : "";
  $("identity-label").textContent = name || id ? "Signed in as" : "Not signed in";
  userName.textContent = name || id;
  userId.textContent = id && id !== name ? id : "";
  if (tokenMode && (name || id)) {
    me.textContent = initials(name || id);
    me.className = `avatar me c${hue(name || id)}`;
  }
}

/** Asks for a token, saying why. */
function askForToken(reason) {
  tokenMode = true;
  showIdentity();
  tokenReason.textContent = reason;
  tokenForm.hidden = false;
}

/** A new token from the reader or a link: kept, and used at once. */
function useToken(token) {
  storeToken(token);
  tokenForm.hidden = true;
  tokenReason.textContent = "";
  tokenInput.value = "";
  tokenMode = true;
  client.refresh(token);
  showIdentity();
}

client.on("expiring", ({ secondsLeft }) => {
  pill(`Your session ends in ${secondsLeft} s. Paste a new token to stay connected.`, "shutdown");
  askForToken(`Your session ends in ${secondsLeft} s.`);
});

client.on("expired", ({ code, reason }) => {
  storeToken("");
  const why = code === 4001 ? "Your session expired." : `The server closed the connection: ${reason || "not allowed"}.`;
  pill(`${why} Paste a new token to continue.`, "error");
  askForToken(why);
});

client.on("unauthorized", ({ message }) => {
  storeToken("");
  pill(`Not signed in: ${message}`, "error");
  askForToken(`Not signed in: ${message}`);
});

tokenForm.addEventListener("submit", (e) => {
  e.preventDefault();
  const token = tokenInput.value.trim();
  if (!tokenClaims(token)) {
    tokenReason.textContent = "That is not a token (three parts separated by dots).";
    tokenInput.focus();
    return;
  }
  useToken(token);
});

// ---- who is online -----------------------------------------------------------

/**
 * The room's member list (id → { id, name }), afresh from GET /rooms/{R}/presence (after
 * every join, so a reconnect starts from the truth). `presence` events
 * that come while it loads are kept and applied on top, in order.
 */
async function loadPresence(room) {
  const queue = [];
  room.presenceQueue = queue;
  room.presenceStale = false;
  let people = room.people;
  try {
    const { users } = await client.presence(room.name);
    people = new Map(users.map((u) => [String(u.id), { id: String(u.id), name: String(u.name ?? u.id) }]));
  } catch {
    // An older server without presence: the list stays unknown.
  }
  if (room.presenceQueue !== queue) return; // a newer load took over
  room.presenceQueue = null;
  room.people = people;
  for (const d of queue) applyPresence(room, d);
  if (room === current) showMembers();
}

function applyPresence(room, { joins, leaves }) {
  if (!room.people) return;
  for (const u of leaves) { room.people.delete(u.id); stopTyping(room, u.id); }
  for (const u of joins) room.people.set(u.id, { id: u.id, name: u.name });
}

/** Without tokens: the open room's list, fetched again every few seconds. */
setInterval(() => {
  if (user || document.hidden || !client.connected || current === lobby || !joined(current)) return;
  if (!current.presenceQueue) loadPresence(current);
}, PRESENCE_POLL_MS);

client.on("presence", (d) => {
  const room = rooms.get(d.room);
  if (!room) return;
  if (room.presenceQueue) { room.presenceQueue.push(d); return; }
  applyPresence(room, d);
  if (room === current) showMembers();
});

/** The open room's member list: a dot and a name each, you first. */
function showMembers() {
  const people = current === lobby ? null : current.people;
  membersToggle.hidden = !people;
  if (!people) { membersPanel.hidden = true; return; }
  membersPanel.hidden = !membersOpen();
  membersToggle.setAttribute("aria-expanded", String(!membersPanel.hidden));
  memberCount.textContent = String(people.size);
  const sorted = [...people.values()].sort((a, b) =>
    Number(myIds.has(b.id)) - Number(myIds.has(a.id)) || a.name.localeCompare(b.name));
  memberList.replaceChildren(...sorted.map((u) => {
    const item = el("li", `member c${hue(u.name)}`);
    item.dataset.id = u.id;
    const avatar = el("span", "avatar", initials(u.name));
    avatar.setAttribute("aria-hidden", "true");
    const dot = el("span", "dot");
    dot.title = "online";
    avatar.append(dot);
    item.append(avatar, el("span", "member-name", u.name));
    // No tab count: `presence` events say who came and went, not how many
    // connections each has, so a count would go stale.
    if (myIds.has(u.id)) item.append(el("span", "member-note", "you"));
    return item;
  }));
  membersEmpty.hidden = people.size > 0;
  membersEmpty.textContent = "Nobody is online here.";
}

/** Whether the reader wants the member list shown (wide screens: yes). */
let membersWanted = null;
const membersOpen = () => (membersWanted === null ? roomy.matches : membersWanted);

membersToggle.addEventListener("click", () => {
  membersWanted = !membersOpen();
  showMembers();
});
roomy.addEventListener("change", showMembers);

// ---- typing ----------------------------------------------------------------

client.on("typing", ({ room: name, from }) => {
  const room = rooms.get(name);
  if (!room || myIds.has(from.id) || (user && from.id === user.id)) return;
  const known = room.typers.get(from.id);
  if (known) clearTimeout(known.timer);
  const timer = setTimeout(() => stopTyping(room, from.id), TYPING_SHOWN_MS);
  room.typers.set(from.id, { name: from.name, timer });
  if (room === current) showTyping();
});

function stopTyping(room, id) {
  const known = room.typers.get(id);
  if (!known) return;
  clearTimeout(known.timer);
  room.typers.delete(id);
  if (room === current) showTyping();
}

/** "Ana is typing…" in the open room's header, in place of its status. */
function showTyping() {
  const names = current === lobby ? [] : [...current.typers.values()].map((t) => t.name);
  let line = "";
  if (names.length === 1) line = `${names[0]} is typing…`;
  else if (names.length === 2) line = `${names[0]} and ${names[1]} are typing…`;
  else if (names.length > 2) line = `${names.length} people are typing…`;
  typingLine.textContent = line;
  typingLine.hidden = !line;
  roomStatus.hidden = Boolean(line);
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
  if (!message.trim() || !joined(current)) return;
  if (new TextEncoder().encode(message).length > maxMessageBytes) {
    pill(`That message is longer than ${maxMessageBytes} bytes.`, "error");
    return;
  }
  if (!client.say(current.name, message)) return;
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
text.addEventListener("input", () => {
  resizeComposer();
  if (text.value.trim() && joined(current)) client.typing(current.name);
});

function rename() {
  if (tokenMode) return;
  const name = cleanName(nameInput.value);
  nameInput.value = name;
  if (name === storedName()) return;
  storeName(name);
  renaming = true;
  client.rename(name);
}

$("name-form").addEventListener("submit", (e) => {
  e.preventDefault();
  rename();
  if (!text.disabled) text.focus();
});
nameInput.addEventListener("change", rename);

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

// ---- start -----------------------------------------------------------------

nameInput.value = storedName();
for (const name of remembered || []) addRoom(name).confirmed = true;
noRooms.hidden = rooms.size > 0 || remembered === null;
showIdentity();
route(); // a room named by the hash is joined here, so the connection starts in it
if (tokenMode && !client.token) {
  // Nothing to sign in with: the server would only answer 401.
  showState("offline", "not signed in");
  askForToken("This chat needs a sign-in token: open the link you were given, or paste the token here.");
} else {
  client.connect();
}
