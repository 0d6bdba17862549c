// chatd.js: a chatd connection for any web page, with no dependencies.
//
//   import { ChatdClient } from "/static/chatd.js";
//   const chat = new ChatdClient({ name: "Ana", rooms: ["general"] });
//   chat.on("message", ({ room, event }) => console.log(room, event.from.name, event.message));
//   chat.connect();
//   chat.say("general", "hi");
//
// What it does for the page that uses it:
// - one WebSocket to /ws, reconnected after any loss with exponential
//   backoff (0.5 s doubling to 15 s, each wait jittered between half and all
//   of it), or after the `retry_after_ms` a `shutdown_notice` gives;
// - the rooms the app asked for, remembered: every connection starts in
//   them, and joins the server refuses are dropped and reported;
// - each room's last `offset` and `epoch`, so every reconnect resumes with
//   `since` and the server sends exactly what was missed (`recovered:true`),
//   or says it cannot (`recovered:false`, reported as a `gap`);
// - repeats dropped: by offset, and by event `id` (the last few thousand per
//   room), so nothing reaches the app twice.
//
// Why it looks the way it does:
// - Joins go one at a time. An `error` names no room, and the server can
//   refuse a join at once while it answers an accepted one later, so with
//   several in flight a refusal could not be told apart.
// - The URL names at most `maxRooms` rooms: a server with a lower
//   MAX_ROOMS_PER_CONNECTION answers a longer list with 400 before the
//   upgrade, which a browser only sees as a failed connection. Each failure
//   before `welcome` halves the list; the rest are joined one by one, so a
//   refusal then says why. Halving while the server is simply down costs
//   nothing for the same reason.
// - An empty `epoch` means the server's history store is away: there is
//   nothing to resume with, so the last real position is kept for later.
// - A browser's WebSocket never says why an upgrade failed. When one fails
//   before `welcome`, the same URL is asked once over plain HTTP: chatd
//   checks the token before the upgrade, so a 401 there (with its reason)
//   means the token is no good, and retrying would only repeat it. Any
//   other answer (a 400 for the missing upgrade, or no server) means retry.
// - With a token that names its `rooms`, the URL names only rooms it allows
//   (chatd answers any other with 403 before the upgrade); the rest are
//   joined one by one, so their refusal (`not_allowed`) names the room. The
//   claims are read, not verified: the server does that.
"use strict";

/** The server's room rule: 1–64 characters of a-z 0-9 - _ . : */
const ROOM_PATTERN = /^[a-z0-9_.:-]{1,64}$/;
/** What the server calls an epoch; anything else is not resumed from. */
const EPOCH_PATTERN = /^[A-Za-z0-9]{1,64}$/;
/** Where an event without `room` (a v1 server's) belongs. */
const DEFAULT_ROOM = "general";
/** Errors that answer a join: the room is dropped. */
const REFUSALS = new Set(["bad_room", "too_many_rooms", "not_allowed"]);
/** The close code for a token that expired; 4003 is "not allowed". */
const CLOSE_EXPIRED = 4001, CLOSE_NOT_ALLOWED = 4003;
/** The server forwards one `typing` per user per room per this; so do we. */
const TYPING_EVERY_MS = 2000;

/**
 * The claims of a JWT (its middle part), unverified; null if it is not one.
 * For choosing rooms and showing a name before the server answers.
 */
export function tokenClaims(token) {
  if (typeof token !== "string") return null;
  const part = token.split(".")[1];
  if (!part) return null;
  try {
    const base64 = part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "=");
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims && typeof claims === "object" ? claims : null;
  } catch {
    return null;
  }
}

/** The rooms a token allows, or null for any (`rooms` absent or with `*`). */
function allowedRooms(token) {
  const rooms = tokenClaims(token)?.rooms;
  if (!Array.isArray(rooms) || rooms.includes("*")) return null;
  return new Set(rooms.filter(isRoomName));
}

/** Whether `name` is a room name the server accepts. */
export function isRoomName(name) {
  return typeof name === "string" && ROOM_PATTERN.test(name);
}

/**
 * The wait before reconnect attempt `attempt` (1, 2, ...): `base` doubling up
 * to `cap`, then a uniformly random point between half and all of it, so a
 * crowd that lost one server does not come back in step.
 */
export function backoffDelay(attempt, { base = 500, cap = 15000, random = Math.random } = {}) {
  const ceiling = Math.min(cap, base * 2 ** Math.max(0, attempt - 1));
  return ceiling / 2 + random() * (ceiling / 2);
}

/** The ids an app has already been given for one room, the newest `limit`. */
class SeenIds {
  constructor(limit) {
    this.limit = limit;
    this.ids = new Set();
  }

  /** Records `id`; false if it was already there. */
  add(id) {
    if (this.ids.has(id)) return false;
    this.ids.add(id);
    // A Set iterates in insertion order: the first is the oldest.
    if (this.ids.size > this.limit) this.ids.delete(this.ids.values().next().value);
    return true;
  }
}

/**
 * A chatd connection. Events (subscribe with `on(type, handler)`), each
 * handler getting one object:
 * - `state`   `{ state, attempt, retryAt }`: "connecting", "connected",
 *             "reconnecting", "offline" (after 4 failures, or no network),
 *             "closed", or "expired" / "unauthorized" (see below: stopped
 *             until a new token); `retryAt` is when the next attempt is due (ms).
 * - `welcome` `{ event, reconnected }`: the server's welcome (`client_id`,
 *             `name`, `online`), after the rooms it started us in.
 * - `joined`  `{ room, members, recovered, epoch, offset, first, atConnect }`:
 *             in the room, after its history; `first` on the first join of
 *             this client, `atConnect` when the connection started in it.
 * - `gap`     `{ room, epochChanged }`: the server answered a resume with
 *             `recovered:false`; what follows is its latest history, and
 *             some messages in between may be missing.
 *   (A join's events come as: `gap` if any, its history, then `joined`.)
 * - `message` `{ room, event, source, epoch }`: an `echo`; `source` is
 *             "history" (sent with a first join), "recovery" (missed while
 *             away) or "live".
 * - `notice`  `{ room, event, source, epoch }`: a `notification`; `room` is
 *             null for a notice to everyone (periodic, POST /notify).
 * - `left`    `{ room }`, `refused` `{ room, code, message }` (a join the
 *             server would not take; the room is forgotten).
 * - `shutdown` `{ event, retryAfterMs }`: the server is draining; the client
 *             leaves after `retryAfterMs` and comes back.
 * - `error`   `{ code, message }`: any other `error` event.
 * - `presence` `{ room, joins, leaves }`: users who came online in `room`
 *             and who left (each `{ id, name }`).
 * - `typing`  `{ room, from }`: `from` (`{ id, name }`) is typing in `room`.
 * - `expiring` `{ secondsLeft, event }`: the token runs out soon; call
 *             `refresh(token)` with a new one.
 * - `expired` `{ code, reason }`: the server closed the connection because
 *             the token ran out (4001) or is not allowed (4003); the client
 *             stays closed until `refresh(token)`.
 * - `unauthorized` `{ status, message }`: the server refused the token
 *             before the upgrade (401, with its reason); no retries until
 *             `refresh(token)`.
 * - `event`   `{ event }`: every event, as parsed, before the above.
 */
export class ChatdClient {
  /**
   * @param {object} [options]
   * @param {string} [options.url] the WebSocket URL, default `/ws` on this page's host
   * @param {string} [options.name] the display name (`?name=`)
   * @param {string} [options.token] a JWT for a server with tokens (`?token=`)
   * @param {string[]|null} [options.rooms] the rooms to be in; null or
   *   absent: whatever the server starts a connection in (`general`)
   * @param {Object<string,{offset:number,epoch:string}>} [options.positions]
   *   where to resume each room from (from `positions()` of an earlier client)
   * @param {number} [options.maxRooms] at most this many rooms (50, the server's default)
   * @param {number} [options.seenIds] ids remembered per room for dropping repeats (4000)
   * @param {number} [options.backoffBaseMs] 500; [options.backoffCapMs] 15000
   * @param {Function} [options.WebSocket] a WebSocket class (tests, Node); default the global one
   */
  constructor(options = {}) {
    this.url = options.url || defaultUrl();
    this.name = options.name || "";
    this.token = options.token || "";
    this.maxRooms = options.maxRooms || 50;
    this.seenLimit = options.seenIds || 4000;
    this.backoff = { base: options.backoffBaseMs || 500, cap: options.backoffCapMs || 15000 };
    /** A WebSocket class to use instead of the global one (looked up at each connect). */
    this.WebSocketClass = options.WebSocket || null;

    /** Rooms wanted, in the order asked for. */
    this.wanted = new Set((options.rooms || []).filter(isRoomName).slice(0, this.maxRooms));
    /** A first client takes the rooms the server starts it in. */
    this.adoptServerRooms = !Array.isArray(options.rooms);
    /** room → { offset, epoch }: the last stored event given to the app. */
    this.position = new Map();
    for (const [room, at] of Object.entries(options.positions || {})) {
      if (isRoomName(room) && validPosition(at)) this.position.set(room, { offset: at.offset, epoch: at.epoch });
    }
    /** room → SeenIds. */
    this.seen = new Map();
    /** Rooms this connection is in right now. */
    this.member = new Set();
    /** Rooms ever joined by this client (for `joined.first`). */
    this.confirmed = new Set();

    this.handlers = new Map();
    this.socket = null;
    this.state = "idle";
    this.attempt = 0;
    this.everConnected = false;
    this.roomsServer = true;
    this.queryRooms = this.maxRooms;
    this.joinQueue = [];
    this.joinInFlight = null;
    this.retryTimer = null;
    this.leaveTimer = null;
    this.resumeAt = null;
    this.stopped = true;
    this.clientId = null;
    /** Who the token says we are (`welcome.user`), or null. */
    this.user = null;
    /** room → when we last said we were typing there. */
    this.typingSent = new Map();
    /** Counts connection attempts, so a late answer about an old one is ignored. */
    this.generation = 0;

    if (typeof window !== "undefined" && window.addEventListener) {
      window.addEventListener("online", () => { if (!this.stopped && !this.socket) this.schedule(0); });
      window.addEventListener("offline", () => {
        if (!this.stopped && !this.socket) this.setState("offline", null);
      });
    }
  }

  // ---- the app's side --------------------------------------------------

  /** Calls `handler(detail)` for every `type` event; returns a function that stops it. */
  on(type, handler) {
    if (!this.handlers.has(type)) this.handlers.set(type, new Set());
    this.handlers.get(type).add(handler);
    return () => this.handlers.get(type).delete(handler);
  }

  /** Opens the connection (and keeps it open until `close()`). */
  connect() {
    this.stopped = false;
    if (!this.socket) this.open();
  }

  /** Closes the connection for good. */
  close() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.leaveTimer);
    const old = this.socket;
    this.socket = null;
    this.member.clear();
    if (old) old.close(1000);
    this.setState("closed", null);
  }

  /** Reconnects now under a new display name; every room resumes. */
  rename(name) {
    this.name = name || "";
    this.reconnect(0);
  }

  /**
   * A new token: sent as `refresh` on a live connection (the server keeps
   * it open past the old `exp`), or, after `expired` or `unauthorized`,
   * used to connect again (as it is by a client not connected yet). A
   * token for another `sub` reconnects.
   */
  refresh(token) {
    this.token = token || "";
    const sub = tokenClaims(this.token)?.sub;
    // The server extends a connection only for the same user; another
    // user is another connection.
    if (this.connected && this.user && sub !== undefined && String(sub) !== this.user.id) {
      this.reconnect(0);
      return;
    }
    if (this.connected && this.send({ type: "refresh", token: this.token })) return;
    // Stopped for want of a (good) token, or never started: connect now.
    // Only `close()` means closed for good.
    if (this.stopped && this.state !== "closed") {
      this.attempt = 0;
      this.connect();
    }
  }

  /** Says we are typing in `room`, at most once per 2 s; false if not sent. */
  typing(room) {
    if (!this.member.has(room) || !this.roomsServer) return false;
    const now = Date.now();
    if (now - (this.typingSent.get(room) || 0) < TYPING_EVERY_MS) return false;
    if (!this.send({ type: "typing", room })) return false;
    this.typingSent.set(room, now);
    return true;
  }

  /**
   * `GET /rooms/{room}/presence`: resolves to `{ room, users }`, each user
   * `{ id, name, connections }`.
   */
  async presence(room) {
    const response = await fetch(`${this.httpBase()}/rooms/${encodeURIComponent(room)}/presence`, { cache: "no-store" });
    if (!response.ok) throw new Error(`presence in ${room}: HTTP ${response.status}`);
    const body = await response.json();
    return { room, users: Array.isArray(body.users) ? body.users.filter((u) => u && u.id !== undefined) : [] };
  }

  get connected() {
    return this.state === "connected";
  }

  /** The rooms this client is to be in, in order. */
  get rooms() {
    return [...this.wanted];
  }

  /** Whether this connection is in `room` right now. */
  isMember(room) {
    return this.member.has(room);
  }

  /** Where each room would resume from: `{ room: { offset, epoch } }`. */
  positions() {
    return Object.fromEntries([...this.position].map(([room, at]) => [room, { ...at }]));
  }

  /** Joins `room` (now, or on the next connection); false if it is not a room name or too many. */
  join(room) {
    if (!isRoomName(room)) return false;
    if (!this.wanted.has(room)) {
      if (this.wanted.size >= this.maxRooms) return false;
      this.wanted.add(room);
    }
    if (!this.member.has(room)) this.queueJoin(room);
    return true;
  }

  /** Leaves `room` and forgets it. */
  leave(room) {
    const inRoom = this.member.has(room) || this.joinInFlight === room;
    this.wanted.delete(room);
    this.member.delete(room);
    this.position.delete(room);
    this.seen.delete(room);
    if (inRoom && this.roomsServer) this.send({ type: "leave", room });
  }

  /** Says `text` in `room`; false without a connection. */
  say(room, text) {
    return this.send(this.roomsServer ? { type: "message", room, message: text } : { type: "message", message: text });
  }

  /** Sends any frame as JSON; false without a connection. */
  send(frame) {
    const ws = this.socket;
    if (!ws || ws.readyState !== 1 /* OPEN */) return false;
    ws.send(JSON.stringify(frame));
    return true;
  }

  /**
   * `GET /rooms/{room}/history`: `{ before }` the latest `limit` events older
   * than that offset, `{ since }` the events after it, neither the latest;
   * oldest first. Resolves to `{ room, epoch, offset, events }`.
   */
  async history(room, { before, since, limit = 50 } = {}) {
    const query = new URLSearchParams();
    if (before !== undefined) query.set("before", String(before));
    if (since !== undefined) query.set("since", String(since));
    query.set("limit", String(limit));
    const response = await fetch(`${this.httpBase()}/rooms/${encodeURIComponent(room)}/history?${query}`, { cache: "no-store" });
    if (!response.ok) throw new Error(`history of ${room}: HTTP ${response.status}`);
    const body = await response.json();
    return { ...body, events: Array.isArray(body.events) ? body.events : [] };
  }

  /** The server's HTTP origin (and path prefix), from the WebSocket URL. */
  httpBase() {
    return this.url.replace(/^ws/, "http").replace(/\/ws(\?.*)?$/, "");
  }

  // ---- the connection ----------------------------------------------------

  emit(type, detail) {
    for (const handler of this.handlers.get(type) || []) {
      try { handler(detail); } catch (err) { console.error(`chatd: a ${type} handler failed`, err); }
    }
  }

  setState(state, retryAt) {
    this.state = state;
    this.emit("state", { state, attempt: this.attempt, retryAt });
  }

  /**
   * /ws?name=N&since=R:N:E&room=R…: the connection starts in every wanted
   * room (the first `queryRooms`), resuming those with a position.
   */
  wsUrl() {
    const query = new URLSearchParams();
    if (this.name) query.append("name", this.name);
    if (this.token) query.append("token", this.token);
    const allowed = this.token ? allowedRooms(this.token) : null;
    let start = [...this.wanted];
    if (allowed) {
      start = start.filter((room) => allowed.has(room));
      // Nothing wanted that the token allows: start in one it does (not
      // `general`, which it may not); a first visit adopts it.
      if (!start.length) start = [...allowed].slice(0, 1);
    }
    for (const room of start.slice(0, this.queryRooms)) {
      const at = this.position.get(room);
      if (at) query.append("since", `${room}:${at.offset}:${at.epoch}`);
      else query.append("room", room);
    }
    const search = query.toString();
    return search ? `${this.url}${this.url.includes("?") ? "&" : "?"}${search}` : this.url;
  }

  open() {
    clearTimeout(this.retryTimer);
    if (!this.everConnected) this.setState("connecting", null);
    let ws;
    const url = this.wsUrl();
    const generation = ++this.generation;
    try {
      ws = new (this.WebSocketClass || globalThis.WebSocket)(url);
    } catch {
      this.failed(false);
      return;
    }
    this.socket = ws;
    let welcomed = false;
    ws.onmessage = (e) => {
      if (this.socket !== ws) return;
      let event;
      try { event = JSON.parse(e.data); } catch { return; }
      if (!event || typeof event !== "object") return;
      if (event.type === "welcome") welcomed = true;
      this.handle(event);
    };
    ws.onclose = (e) => {
      if (this.socket !== ws) return; // replaced on purpose
      this.socket = null;
      if (e && (e.code === CLOSE_EXPIRED || e.code === CLOSE_NOT_ALLOWED)) {
        this.stopFor("expired", { code: e.code, reason: String(e.reason || "") });
        return;
      }
      if (welcomed) { this.failed(true); return; }
      this.probe(url).then((refusal) => {
        // Superseded meanwhile (a rename, a close, another attempt).
        if (generation !== this.generation || this.socket !== null || this.stopped) return;
        if (refusal) this.stopFor("unauthorized", refusal);
        else this.failed(false);
      });
    };
  }

  /**
   * Why the upgrade to `url` failed, if the server refused its token: asks
   * the same URL over plain HTTP and returns `{ status, message }` for a
   * 401, else null (retry as usual).
   */
  async probe(url) {
    if (typeof fetch !== "function") return null;
    try {
      const response = await fetch(url.replace(/^ws/, "http"), { cache: "no-store" });
      if (response.status !== 401) return null;
      let message = "the server needs a valid token";
      try {
        const body = await response.json();
        if (body && typeof body.message === "string") message = body.message;
      } catch { /* a 401 without JSON: keep the general reason */ }
      return { status: 401, message };
    } catch {
      return null; // no server: the usual backoff
    }
  }

  /** Stops for a reason only a new token fixes; `refresh(token)` resumes. */
  stopFor(state, detail) {
    clearTimeout(this.retryTimer);
    clearTimeout(this.leaveTimer);
    this.stopped = true;
    this.resumeAt = null;
    this.member.clear();
    this.joinQueue.length = 0;
    this.joinInFlight = null;
    this.setState(state, null);
    this.emit(state, detail);
  }

  /** The socket closed (or never opened): wait, then try again. */
  failed(welcomed) {
    clearTimeout(this.leaveTimer);
    this.member.clear();
    this.joinQueue.length = 0;
    this.joinInFlight = null;
    if (!welcomed) this.queryRooms = Math.max(1, Math.floor(Math.min(this.queryRooms, this.wanted.size) / 2));
    if (this.stopped) return;
    if (this.resumeAt !== null) {
      const wait = Math.max(0, this.resumeAt - Date.now());
      this.resumeAt = null;
      this.schedule(wait);
    } else {
      this.attempt += 1;
      this.schedule(backoffDelay(this.attempt, this.backoff));
    }
  }

  /** Connects after `delay` ms, saying so. */
  schedule(delay) {
    clearTimeout(this.retryTimer);
    if (typeof navigator !== "undefined" && navigator.onLine === false) {
      this.setState("offline", null);
      return;
    }
    const state = !this.everConnected ? "connecting" : this.attempt >= 4 ? "offline" : "reconnecting";
    this.setState(state, Date.now() + delay);
    this.retryTimer = setTimeout(() => this.open(), delay);
  }

  /** Closes the socket on purpose and connects again after `delay`. */
  reconnect(delay) {
    clearTimeout(this.leaveTimer);
    this.generation += 1;
    this.resumeAt = null;
    const old = this.socket;
    this.socket = null;
    this.member.clear();
    this.joinQueue.length = 0;
    this.joinInFlight = null;
    if (old) old.close(1000);
    if (!this.stopped) this.schedule(delay);
  }

  handle(event) {
    this.emit("event", { event });
    switch (event.type) {
      case "welcome": this.onWelcome(event); break;
      case "joined": if (isRoomName(event.room)) this.onJoined(event); break;
      case "left":
        if (this.member.delete(event.room)) this.emit("left", { room: event.room });
        break;
      case "echo": this.onStored("message", this.roomOf(event), event, "live"); break;
      case "notification":
        if (typeof event.room === "string") this.onStored("notice", event.room, event, "live");
        else this.emit("notice", { room: null, event, source: "live", epoch: null });
        break;
      case "shutdown_notice": {
        const retryAfterMs = Math.max(0, Number(event.retry_after_ms) || 0);
        this.resumeAt = Date.now() + retryAfterMs;
        this.emit("shutdown", { event, retryAfterMs });
        // Leave the draining server after our own jittered delay; the
        // reconnect then lands on whichever server takes new clients.
        clearTimeout(this.leaveTimer);
        this.leaveTimer = setTimeout(() => this.reconnect(0), retryAfterMs);
        break;
      }
      case "error": this.onError(event); break;
      case "presence":
        if (this.member.has(event.room)) {
          this.emit("presence", { room: event.room, joins: users(event.joins), leaves: users(event.leaves) });
        }
        break;
      case "typing":
        if (this.member.has(event.room) && event.from && typeof event.from === "object") {
          this.emit("typing", { room: event.room, from: { id: String(event.from.id ?? ""), name: String(event.from.name ?? "?") } });
        }
        break;
      case "token_expiring":
        this.emit("expiring", { secondsLeft: Math.max(0, Number(event.seconds_left) || 0), event });
        break;
      default: break;
    }
  }

  /** The room an event belongs to: its `room`, or `general` for a v1 event. */
  roomOf(event) {
    return typeof event.room === "string" ? event.room : DEFAULT_ROOM;
  }

  /**
   * A (re)connection: the rooms the server started us in are joined; a
   * wanted room it did not start us in is joined now, and one it put us in
   * that is not wanted (`general` by default) is left again.
   */
  onWelcome(event) {
    this.clientId = String(event.client_id);
    this.user = event.user && typeof event.user === "object"
      ? { id: String(event.user.id ?? ""), name: String(event.user.name ?? "") }
      : null;
    this.attempt = 0;
    this.resumeAt = null;
    this.queryRooms = this.maxRooms;
    this.joinQueue.length = 0;
    this.joinInFlight = null;
    this.member.clear();
    this.roomsServer = Array.isArray(event.rooms);
    const started = this.roomsServer
      ? event.rooms.filter((j) => j && typeof j === "object" && isRoomName(j.room))
      : [{ room: DEFAULT_ROOM }];
    if (this.adoptServerRooms || !this.roomsServer) for (const j of started) this.wanted.add(j.room);
    if (this.roomsServer) this.adoptServerRooms = false;
    const reconnected = this.everConnected;
    this.everConnected = true;
    this.setState("connected", null);
    for (const j of started) {
      if (this.wanted.has(j.room)) this.onJoined(j, true);
      else this.send({ type: "leave", room: j.room });
    }
    this.emit("welcome", { event, reconnected });
    for (const room of this.wanted) if (!this.member.has(room)) this.queueJoin(room);
  }

  queueJoin(room) {
    if (!this.roomsServer || this.joinInFlight === room || this.joinQueue.includes(room)) return;
    this.joinQueue.push(room);
    this.sendNextJoin();
  }

  sendNextJoin() {
    while (this.joinInFlight === null && this.joinQueue.length) {
      const room = this.joinQueue.shift();
      if (!this.wanted.has(room) || this.member.has(room)) continue;
      const at = this.position.get(room);
      const frame = at ? { type: "join", room, since: { offset: at.offset, epoch: at.epoch } } : { type: "join", room };
      if (!this.send(frame)) { this.joinQueue.length = 0; return; }
      this.joinInFlight = room;
    }
  }

  /**
   * In a room: from `welcome.rooms` or a `joined`. The app gets, in order,
   * a `gap` if the server could not resume, the room's history (or what was
   * missed), then `joined`.
   */
  onJoined(event, atConnect = false) {
    const room = event.room;
    if (this.joinInFlight === room) this.joinInFlight = null;
    if (!this.wanted.has(room)) { this.sendNextJoin(); return; } // left before the answer came
    this.member.add(room);
    const first = !this.confirmed.has(room);
    this.confirmed.add(room);
    const before = this.position.get(room);
    const epoch = typeof event.epoch === "string" ? event.epoch : "";
    const epochChanged = Boolean(before && epoch && epoch !== before.epoch);
    // A new epoch numbers a new history: the old offsets say nothing.
    if (EPOCH_PATTERN.test(epoch) && (epochChanged || !before)) this.position.set(room, { offset: 0, epoch });
    const recovered = typeof event.recovered === "boolean" ? event.recovered : null;
    if (recovered === false) this.emit("gap", { room, epochChanged });
    // A first join's history is the past; after that it is what we missed.
    const source = recovered === true || !first ? "recovery" : "history";
    for (const past of Array.isArray(event.history) ? event.history : []) {
      if (!past || typeof past !== "object") continue;
      if (past.type === "echo") this.onStored("message", room, past, source);
      else if (past.type === "notification") this.onStored("notice", room, past, source);
    }
    const top = Number(event.offset);
    const at = this.position.get(room);
    if (at && at.epoch === epoch && Number.isInteger(top) && top > at.offset) at.offset = top;
    this.emit("joined", {
      room, first, atConnect, recovered, epoch, offset: event.offset,
      members: typeof event.members === "number" ? event.members : null,
    });
    this.sendNextJoin();
  }

  /**
   * A stored kind of event (an `echo`, a room `notification`): given to the
   * app unless it is a repeat, by offset or by id.
   */
  onStored(kind, room, event, source) {
    if (!this.wanted.has(room)) return;
    const at = this.position.get(room);
    const offset = event.offset;
    if (at && Number.isInteger(offset) && offset <= at.offset) return;
    if (event.id !== undefined && event.id !== null) {
      if (!this.seen.has(room)) this.seen.set(room, new SeenIds(this.seenLimit));
      if (!this.seen.get(room).add(String(event.id))) return;
    }
    if (at && Number.isInteger(offset)) at.offset = offset;
    this.emit(kind, { room, event, source, epoch: at ? at.epoch : null });
  }

  onError(event) {
    const code = typeof event.code === "string" ? event.code : "";
    const message = String(event.message ?? "error");
    if (this.joinInFlight !== null && REFUSALS.has(code)) {
      const room = this.joinInFlight;
      this.joinInFlight = null;
      this.wanted.delete(room);
      this.position.delete(room);
      this.seen.delete(room);
      this.emit("refused", { room, code, message });
      this.sendNextJoin();
      return;
    }
    if (this.joinInFlight !== null && code === "bad_since") {
      // Our resume point is no good to this server: join afresh.
      const room = this.joinInFlight;
      this.joinInFlight = null;
      this.position.delete(room);
      this.queueJoin(room);
      return;
    }
    this.emit("error", { code, message });
  }
}

/** A `presence` list as `{ id, name }` objects. */
function users(list) {
  return (Array.isArray(list) ? list : [])
    .filter((u) => u && typeof u === "object" && u.id !== undefined)
    .map((u) => ({ id: String(u.id), name: String(u.name ?? u.id) }));
}

function validPosition(at) {
  return at && Number.isInteger(at.offset) && at.offset >= 0 && typeof at.epoch === "string" && EPOCH_PATTERN.test(at.epoch);
}

/** `/ws` on the host this page came from. */
function defaultUrl() {
  if (typeof location === "undefined") return "ws://127.0.0.1:8000/ws";
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${location.host}/ws`;
}
