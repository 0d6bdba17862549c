//! `ChatHub`: the one actor per process that knows who is connected, which
//! rooms they are in, and where each room's history is.
//!
//! It owns the membership (session id → display name and rooms, handed to a
//! [`Fanout`] that knows who hears what), the history store (in memory
//! without Redis, else the Redis bridge's streams), the other processes'
//! counts as the bridge last reported them, and the drain state. Sessions
//! send it [`Connect`], [`Join`], [`Leave`], [`Say`] and [`Disconnect`]; the
//! ticker and `POST /notify` send [`Notify`]; HTTP handlers ask [`Count`],
//! [`ListRooms`] and [`ReadPage`]; the Redis bridge sends [`Stored`],
//! [`Remote`], [`HistoryRead`] and [`PeerCount`] and asks [`Census`]; the
//! shutdown coordinator sends [`Drain`] and [`ForceClose`]. It answers with
//! [`Deliver`] to sessions, and tells the bridge [`Publish`] and
//! [`StoreEvent`] for what other processes need, [`ReadHistory`] when a join
//! needs a room's history, and [`RoomChange`] when a room gains its first
//! local member or loses its last.
//!
//! Stored events (chat and room notices) get their room's next offset:
//! - Without Redis the hub numbers them itself in a [`MemoryHistory`] and
//!   delivers them at once.
//! - With Redis the bridge numbers them in Redis, in the same atomic step that
//!   appends them to the room's stream and publishes them, and they come back
//!   to local members from the room's channel ([`Remote`]) in offset order;
//!   so a sender's own echo means "stored". While Redis is away the bridge
//!   hands them back at once without an offset ([`Stored`]).
//!
//! A join with Redis waits for the room's history: the session is a joiner
//! (see [`Fanout`]) until [`HistoryRead`] arrives; what the room says
//! meanwhile is held with its offsets, and after `joined` the session gets
//! exactly what is newer than the history it was given: no gap, no repeat.
//! A connecting session waits for all its starting rooms this way, and its
//! `welcome` (always its first event) carries them all.
//!
//! Local clients are served without waiting for other processes, and when
//! Redis is away chat on this process goes on.
//!
//! Draining changes three things: every member (and every late joiner) gets a
//! `shutdown_notice` with its own jittered reconnect delay, the hub tells the
//! coordinator when the last member leaves, and [`ForceClose`] closes whoever
//! is left with 1001 (and anyone who connects after that, or after the hub
//! reported itself empty, is closed the same way at once).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::transport::CloseCode;
use actix::prelude::*;
use actix_web::web::BytesMut;
use serde_json::value::RawValue;

use crate::auth::UserId;
use crate::config::HistorySettings;
use crate::fanout::{Fanout, Held, Receiver, SessionAddr};
use crate::history::{Epoch, MemoryHistory, Page, Replay, Since};
use crate::presence::Roster;
use crate::protocol::{
    now_ms, DisplayName, EventText, RoomName, Sender, ServerEvent, ServerId, SessionId,
};
use crate::transport::frame;

/// A session arrives: the hub welcomes it into its starting rooms.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Connect {
    /// The session's number in this process.
    pub id: SessionId,
    /// The checked display name shown on its messages.
    pub name: DisplayName,
    /// Its user, when tokens are required: `from.id` on its messages.
    pub user: Option<UserId>,
    /// Where the hub sends its events.
    pub session: Recipient<Deliver>,
    /// The permessage-deflate it agreed on, if any: it then takes the
    /// compressed copy of each broadcast.
    pub deflate: Option<crate::transport::deflate::Deflate>,
    /// The rooms it starts in, checked and deduplicated, each with the
    /// `since` it resumes after, if any.
    pub rooms: Vec<(RoomName, Option<Since>)>,
}

/// A session is gone; it leaves every room it was in.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Disconnect {
    /// The session that left.
    pub id: SessionId,
}

/// A session joins a room (answered with `joined`, also when it already was in).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Join {
    /// The session joining.
    pub id: SessionId,
    /// The room, created if it has no members yet.
    pub room: RoomName,
    /// What the session has seen of the room already, to resume after.
    pub since: Option<Since>,
}

/// A session leaves a room it is in (answered with `left`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    /// The session leaving.
    pub id: SessionId,
    /// The room; it is dropped when this was its last local member.
    pub room: RoomName,
}

/// A member sent a chat message (already checked) to one of its rooms.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Say {
    /// The sender, who gets the echo too as its delivery confirmation.
    pub from: SessionId,
    /// The room it is said in; the sender is a member.
    pub room: RoomName,
    /// The chat text.
    pub text: String,
}

/// A member is typing in a room: the room's other members hear of it, at
/// most once per user per room per [`TYPING_EVERY`].
#[derive(Message)]
#[rtype(result = "()")]
pub struct Typing {
    /// The session typing.
    pub id: SessionId,
    /// The room; the session is a member.
    pub room: RoomName,
}

/// A notification; answers how many clients it went to.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Notify {
    /// The notification text.
    pub message: String,
    /// Who gets it; a room notice is stored like chat.
    pub audience: Audience,
    /// Whether other processes' clients get it too.
    pub scope: Scope,
}

/// Who an event is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Audience {
    /// Every client, whatever its rooms (periodic and everyone-notices).
    Everyone,
    /// The members of one room.
    Room(RoomName),
    /// Every connection of one user.
    User(UserId),
}

/// How far a [`Notify`] reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// This process's clients only (the periodic ticker runs in every process).
    Local,
    /// Every process's clients, through the Redis bridge when there is one.
    Everywhere,
}

/// An event from another process, already serialized, for local clients only.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Remote {
    /// Who it is for.
    pub audience: Audience,
    /// Its offset in the room's history, when it was stored.
    pub offset: Option<u64>,
    /// The event as the origin process serialized it.
    pub event: EventText,
}

/// A stored event of this process back from the bridge, for local members.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stored {
    /// The room it was said in.
    pub room: RoomName,
    /// Its offset; `None` when Redis was away and it is delivered unstored.
    pub offset: Option<u64>,
    /// The event as the members get it (with its offset, when it has one).
    pub event: EventText,
}

/// The bridge's latest counts of the clients connected to other live processes.
#[derive(Message, Debug, Default)]
#[rtype(result = "()")]
pub struct PeerCount {
    /// Clients on every other process that shares the Redis.
    pub clients: usize,
    /// Their members per room, for rooms with any.
    pub rooms: HashMap<RoomName, usize>,
    /// Their connections per user, for users with any.
    pub users: HashMap<UserId, usize>,
    /// Their users per room.
    pub rosters: HashMap<RoomName, Roster>,
}

/// This process's clients and members per room, for the bridge's presence
/// record.
#[derive(Message)]
#[rtype(result = "CensusReport")]
pub struct Census;

/// The answer to [`Census`].
#[derive(Debug, MessageResponse)]
pub struct CensusReport {
    /// Sessions connected here.
    pub clients: usize,
    /// Local members per room, for every room with one.
    pub rooms: Vec<(RoomName, usize)>,
    /// Local connections per user, for every user with one.
    pub users: Vec<(UserId, usize)>,
    /// Local users per room.
    pub rosters: Vec<(RoomName, Roster)>,
}

/// The users in a room, on every process, for `GET /rooms/{R}/presence`.
#[derive(Message)]
#[rtype(result = "Roster")]
pub struct ReadPresence {
    pub room: RoomName,
}

/// Every room with members on any process, and how many, sorted by name.
#[derive(Message)]
#[rtype(result = "Vec<(RoomName, usize)>")]
pub struct ListRooms;

/// Part of a room's history, for `GET /rooms/{R}/history`.
#[derive(Message, Clone, Debug)]
#[rtype(result = "Option<HistoryPage>")]
pub struct ReadPage {
    /// The room.
    pub room: RoomName,
    /// Which events.
    pub page: Page,
    /// At most this many.
    pub limit: usize,
}

/// The answer to [`ReadPage`]; `None` when the history store is away.
#[derive(Debug)]
pub struct HistoryPage {
    pub epoch: Epoch,
    /// The room's last offset.
    pub offset: u64,
    /// Oldest first.
    pub events: Vec<(u64, EventText)>,
}

/// Begin draining; answers how many clients were told.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Drain {
    /// When the remaining clients will be closed.
    pub deadline: Instant,
    /// Told once, when the last member has left.
    pub on_empty: Recipient<HubEmpty>,
}

/// Close every remaining session with 1001, in batches spread evenly over
/// `spread` so the clients do not all reconnect elsewhere in one instant;
/// answers how many are to be closed. A zero `spread` closes them all at once,
/// also those still waiting in a spread begun earlier (a second signal).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct ForceClose {
    /// How long closing everyone may take; zero is at once.
    pub spread: Duration,
}

/// How many sessions are connected to this process.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Count;

/// How many rooms have members on this process, for `/metrics`.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct CountRooms;

/// What the hub hands a session.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub enum Deliver {
    /// One or more events, already encoded as WebSocket text frames, to write
    /// as they are.
    Frames(actix_web::web::Bytes),
    /// One turn's frames for a session in several rooms: each room's batch,
    /// shared with that room's other members, in order.
    FrameLists(Vec<actix_web::web::Bytes>),
    /// Close the connection with this code and reason.
    Close(CloseCode, &'static str),
}

/// An event for the other processes, not stored, handed to the Redis bridge.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct Publish {
    /// Who it is for, on the other processes.
    pub audience: Audience,
    /// The event as this process serialized it; other processes deliver it as is.
    pub event: EventText,
}

/// An event to store in a room's history (Redis): the bridge gives it its
/// offset, appends and publishes it, and hands it back as [`Stored`].
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct StoreEvent {
    /// The room.
    pub room: RoomName,
    /// The event, with offset 0 where Redis puts its offset.
    pub event: EventText,
}

/// A join needs a room's history (Redis); answered with [`HistoryRead`].
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct ReadHistory {
    /// The session joining.
    pub session: SessionId,
    /// The room.
    pub room: RoomName,
    /// Resume after this, when it can be served.
    pub since: Option<Since>,
    /// Otherwise the latest this many.
    pub latest: usize,
    /// Names the join, for the answer.
    pub request: u64,
}

/// The bridge's answer to [`ReadHistory`].
#[derive(Message)]
#[rtype(result = "()")]
pub struct HistoryRead {
    /// The session joining.
    pub session: SessionId,
    /// The room.
    pub room: RoomName,
    /// The join it answers.
    pub request: u64,
    /// Whether the join asked to resume (so the answer says `recovered`).
    pub asked_since: bool,
    /// `None` when Redis was away or failed.
    pub replay: Option<Replay>,
}

/// A room gained its first local member, or lost its last: the bridge
/// follows its traffic only while it has local members.
#[derive(Message, Clone, Debug, PartialEq, Eq)]
#[rtype(result = "()")]
pub enum RoomChange {
    Opened(RoomName),
    Closed(RoomName),
}

/// Where the hub reaches the Redis bridge, when there is one.
pub struct BridgeLink {
    pub publish: Recipient<Publish>,
    pub store: Recipient<StoreEvent>,
    pub read: Recipient<ReadHistory>,
    pub page: Recipient<ReadPage>,
    pub rooms: Recipient<RoomChange>,
}

/// The end of a turn: hand the batched frames to the members.
#[derive(Message)]
#[rtype(result = "()")]
struct Flush;

/// Sent by the hub when a drain has no members left.
#[derive(Message)]
#[rtype(result = "()")]
pub struct HubEmpty;

/// How often a room's members are told who came and went.
pub const PRESENCE_EVERY: Duration = Duration::from_secs(1);

/// The least time between two `typing` events of one user in one room.
pub const TYPING_EVERY: Duration = Duration::from_secs(2);

/// How often a spread close ([`ForceClose`]) closes its next batch.
pub const CLOSE_TICK: Duration = Duration::from_millis(50);

/// The shortest and longest delay a draining client is told to wait before
/// reconnecting; spreading reconnects keeps a deploy from becoming a storm.
const RETRY_AFTER_MS: std::ops::RangeInclusive<u64> = 1_000..=10_000;

struct Member {
    name: DisplayName,
    user: Option<UserId>,
    session: SessionAddr,
    /// The rooms it is in or joining; at most MAX_ROOMS_PER_CONNECTION, so a list.
    rooms: Vec<RoomName>,
    /// Set until its `welcome` is sent: its starting rooms' histories (boxed:
    /// every member but the newest has none, and members are many).
    arriving: Option<Box<Arriving>>,
}

/// A connecting session's starting rooms, as their histories come in.
#[derive(Default)]
struct Arriving {
    requests: HashMap<RoomName, u64>,
    replays: HashMap<RoomName, Option<Replay>>,
    /// The rooms it asked to resume in.
    resuming: Vec<RoomName>,
    /// What it said before its welcome, in order, acted on right after.
    deferred: Vec<Deferred>,
}

/// A session's message that came before its welcome.
enum Deferred {
    Join(Join),
    Leave(Leave),
    Say(Say),
}

struct DrainState {
    deadline: Instant,
    /// Taken when the hub reports it is empty.
    on_empty: Option<Recipient<HubEmpty>>,
    /// Set by [`ForceClose`].
    closing: bool,
    /// The sessions a spread close has still to close, and its timer.
    to_close: VecDeque<SessionId>,
    close_timer: Option<SpawnHandle>,
}

impl DrainState {
    /// The coordinator has been told the hub is empty, or the rest were
    /// closed: the server is on its way down and a newcomer would be cut off.
    fn finished(&self) -> bool {
        self.on_empty.is_none() || self.closing
    }
}

/// Where stored events get their offsets.
enum Store {
    /// No Redis: this process numbers and keeps them.
    Memory(MemoryHistory),
    /// Redis: the bridge does.
    Redis,
}

/// The membership of this process; see the module docs.
pub struct ChatHub {
    server: ServerId,
    members: HashMap<SessionId, Member>,
    fanout: Fanout,
    store: Store,
    history: HistorySettings,
    bridge: Option<BridgeLink>,
    peers: PeerCount,
    next_message: u64,
    next_request: u64,
    /// When each (sender, room) last had a `typing` forwarded.
    typing: HashMap<(String, RoomName), Instant>,
    /// Each local room's users as its members were last told.
    told_presence: HashMap<RoomName, Roster>,
    /// Whether members get `presence` events at all.
    presence_events: bool,
    draining: Option<DrainState>,
    flush_scheduled: bool,
    metrics: Option<crate::metrics::Metrics>,
}

impl ChatHub {
    /// A hub for the process `server`. With `bridge` (Redis) every event
    /// meant for other processes and every room opened or closed here goes
    /// to the bridge, and histories live in Redis; without, in memory.
    pub fn new(server: ServerId, history: HistorySettings, bridge: Option<BridgeLink>) -> Self {
        Self::with_presence(server, history, bridge, false)
    }

    /// [`ChatHub::new`], and with `presence_events` a room's members are
    /// told who came and went (with tokens, where users are people; without,
    /// every connection would be one, and v1 clients get no new events).
    pub fn with_presence(
        server: ServerId,
        history: HistorySettings,
        bridge: Option<BridgeLink>,
        presence_events: bool,
    ) -> Self {
        let store = match bridge {
            Some(_) => Store::Redis,
            None => Store::Memory(MemoryHistory::new(history.clone())),
        };
        Self {
            server,
            members: HashMap::new(),
            fanout: Fanout::default(),
            store,
            history,
            bridge,
            peers: PeerCount::default(),
            next_message: 0,
            next_request: 0,
            typing: HashMap::new(),
            told_presence: HashMap::new(),
            presence_events,
            draining: None,
            flush_scheduled: false,
            metrics: None,
        }
    }

    /// Counts deliveries, turns and recoveries in `metrics`.
    pub fn with_metrics(mut self, metrics: crate::metrics::Metrics) -> Self {
        self.fanout.set_metrics(metrics.clone());
        self.metrics = Some(metrics);
        self
    }

    fn next_message_id(&mut self) -> String {
        self.next_message += 1;
        format!("{}-m{}", self.server, self.next_message)
    }

    /// Queues `event` for the local members of `audience`. The batches go out
    /// when the hub's mailbox is empty ([`Flush`] runs after the messages
    /// already waiting), so a burst costs each session one delivery.
    fn broadcast(
        &mut self,
        audience: &Audience,
        offset: Option<u64>,
        event: &EventText,
        ctx: &mut Context<Self>,
    ) {
        let full = self.fanout.push(audience, offset, event);
        self.flush_then_or_later(full, ctx);
    }

    /// Queues `event` for `room`'s members beside the conversation (see
    /// [`Fanout::push_aside`]).
    fn broadcast_aside(&mut self, room: &RoomName, event: &EventText, ctx: &mut Context<Self>) {
        let full = self.fanout.push_aside(room, event);
        self.flush_then_or_later(full, ctx);
    }

    /// Hands the batches out now when they are `full` (a mailbox that never
    /// runs dry must not hold them back), else at the end of the turn.
    fn flush_then_or_later(&mut self, full: bool, ctx: &mut Context<Self>) {
        if full {
            self.fanout.flush();
        } else if !self.flush_scheduled {
            self.flush_scheduled = true;
            ctx.notify(Flush);
        }
    }

    fn publish(&self, audience: Audience, event: EventText) {
        if let Some(bridge) = &self.bridge {
            bridge.publish.do_send(Publish { audience, event });
        }
    }

    /// Stores and delivers an event of `room`: `encode` is given its offset
    /// (or `None`, when Redis adds it) and returns the event.
    fn store(
        &mut self,
        room: RoomName,
        encode: impl FnOnce(Option<u64>) -> EventText,
        ctx: &mut Context<Self>,
    ) {
        match &mut self.store {
            Store::Memory(history) => {
                let mut offset = 0;
                let event = history.append(&room, |n| {
                    offset = n;
                    encode(Some(n))
                });
                self.broadcast(&Audience::Room(room), Some(offset), &event, ctx);
            }
            Store::Redis => {
                // Offset 0 holds the place Redis fills in.
                let event = encode(Some(0));
                let bridge = self.bridge.as_ref().expect("a Redis store has a bridge");
                bridge.store.do_send(StoreEvent { room, event });
            }
        }
    }

    /// Session `id`, if it is connected and in `room`.
    fn speaker(&self, id: SessionId, room: &RoomName) -> Option<&Member> {
        self.members.get(&id).filter(|m| m.rooms.contains(room))
    }

    /// Members of `room` on this process and, as last reported, the others.
    fn members_of(&self, room: &RoomName) -> usize {
        self.fanout.room_size(room) + self.peers.rooms.get(room).copied().unwrap_or(0)
    }

    fn room_opened(&self, opened: bool, room: &RoomName) {
        if let (true, Some(bridge)) = (opened, &self.bridge) {
            bridge.rooms.do_send(RoomChange::Opened(room.clone()));
        }
    }

    fn exit(&mut self, id: SessionId, room: &RoomName) {
        if let (true, Some(bridge)) = (self.fanout.exit(id, room), &self.bridge) {
            bridge.rooms.do_send(RoomChange::Closed(room.clone()));
        }
    }

    /// Begins session `id`'s join of `room`: with the history in memory the
    /// session is a member at once and the replay is returned; with Redis it
    /// becomes a joiner and the history is asked for, under the request
    /// number returned.
    fn begin_join(
        &mut self,
        id: SessionId,
        session: &SessionAddr,
        room: &RoomName,
        since: Option<Since>,
    ) -> Result<Replay, u64> {
        match &mut self.store {
            Store::Memory(history) => {
                let replay = history
                    .room(room)
                    .replay(since.as_ref(), self.history.on_join);
                let opened = self.fanout.enter(id, session, room);
                self.room_opened(opened, room);
                Ok(replay)
            }
            Store::Redis => {
                self.next_request += 1;
                let request = self.next_request;
                let opened = self.fanout.begin_join(id, session, room, request);
                self.room_opened(opened, room);
                let bridge = self.bridge.as_ref().expect("a Redis store has a bridge");
                bridge.read.do_send(ReadHistory {
                    session: id,
                    room: room.clone(),
                    since,
                    latest: self.history.on_join,
                    request,
                });
                Err(request)
            }
        }
    }

    /// The `joined` event for `room`, as one encoded frame. Without a
    /// replay (Redis away) the epoch is empty and the history too.
    fn joined_json(&self, room: &RoomName, since_given: bool, replay: Option<&Replay>) -> String {
        let history = replay.map_or_else(Vec::new, |r| raw_events(&r.events));
        let recovered = replay.map_or(since_given.then_some(false), |r| r.recovered);
        if let (Some(metrics), Some(recovered)) = (&self.metrics, recovered) {
            let label = if recovered { "true" } else { "false" };
            metrics.history_recoveries.with_label_values(&[label]).inc();
        }
        serde_json::to_string(&ServerEvent::Joined {
            room: room.as_str(),
            epoch: replay.map_or("", |r| r.epoch.as_str()),
            offset: replay.map_or(0, |r| r.offset),
            members: self.members_of(room),
            recovered,
            history,
            ts: now_ms(),
        })
        .expect("server events hold only strings, numbers and JSON")
    }

    /// Hands a session, after its `joined`, the events held for it while
    /// its join waited (those newer than its history).
    fn deliver_held(session: &Recipient<Deliver>, held: Held) {
        let mut frames = BytesMut::new();
        for (_, event) in held {
            frame::append_text(&mut frames, event.as_bytes());
        }
        if !frames.is_empty() {
            session.do_send(Deliver::Frames(frames.freeze()));
        }
    }

    /// Sends the welcome of a session whose starting rooms are all in, then
    /// what its rooms said while it waited; from then on it gets
    /// everyone-events too.
    /// Answers what the session said meanwhile, to be acted on now.
    fn welcome(&mut self, id: SessionId, arriving: Arriving) -> Vec<Deferred> {
        let Arriving {
            requests,
            mut replays,
            resuming,
            deferred,
        } = arriving;
        let member = &self.members[&id];
        let session = member.session.clone();
        let joined: Vec<String> = member
            .rooms
            .iter()
            .map(|room| {
                let replay = replays.get(room).and_then(Option::as_ref);
                self.joined_json(room, resuming.contains(room), replay)
            })
            .collect();
        let rooms: Vec<&RawValue> = joined
            .iter()
            .filter_map(|json| serde_json::from_str(json).ok())
            .collect();
        let client_id = id.client_id(&self.server);
        let welcome = ServerEvent::Welcome {
            client_id: &client_id,
            name: member.name.as_str(),
            online: self.members.len() + self.peers.clients,
            server: self.server.as_str(),
            rooms,
            user: member.user.as_ref().map(|user| Sender {
                id: user.as_str(),
                name: member.name.as_str(),
            }),
            ts: now_ms(),
        }
        .to_frame();
        session.do_send(Deliver::Frames(welcome));
        self.fanout
            .add_session(id, session.clone(), member.user.clone());
        for (room, request) in requests {
            let top = replays.remove(&room).flatten().map_or(0, |r| r.offset);
            if let Some(held) = self.fanout.finish_join(id, &room, request, top) {
                Self::deliver_held(&session, held);
            }
        }
        if let Some(drain) = &self.draining {
            self.send_shutdown_notice(&session, drain.deadline);
        }
        deferred
    }

    /// Defers `message` of session `id` if its welcome has not gone out;
    /// answers it back otherwise, to be acted on now.
    fn unless_arriving(&mut self, id: SessionId, message: Deferred) -> Option<Deferred> {
        match self.members.get_mut(&id).and_then(|m| m.arriving.as_mut()) {
            Some(arriving) => {
                arriving.deferred.push(message);
                None
            }
            None => Some(message),
        }
    }

    fn act_on(&mut self, message: Deferred, ctx: &mut Context<Self>) {
        match message {
            Deferred::Join(join) => self.join(join),
            Deferred::Leave(leave) => self.leave(leave),
            Deferred::Say(say) => self.say(say, ctx),
        }
    }

    fn join(&mut self, msg: Join) {
        // `joined` comes after what its other rooms said before it, and
        // before anything said in the new room after it.
        self.fanout.flush();
        let Join { id, room, since } = msg;
        let Some(member) = self.members.get_mut(&id) else {
            return;
        };
        let session = member.session.clone();
        if !member.rooms.contains(&room) {
            member.rooms.push(room.clone());
        }
        let asked_since = since.is_some();
        if let Ok(replay) = self.begin_join(id, &session, &room, since) {
            let joined = self.joined_json(&room, asked_since, Some(&replay));
            session.do_send(Deliver::Frames(frame::text(joined.as_bytes())));
        }
    }

    fn leave(&mut self, msg: Leave) {
        // It was a member for everything said before it left.
        self.fanout.flush();
        let Some(member) = self.members.get_mut(&msg.id) else {
            return;
        };
        let Some(at) = member.rooms.iter().position(|room| *room == msg.room) else {
            return;
        };
        member.rooms.remove(at);
        let left = ServerEvent::Left {
            room: msg.room.as_str(),
            ts: now_ms(),
        };
        member.session.do_send(Deliver::Frames(left.to_frame()));
        self.exit(msg.id, &msg.room);
    }

    fn say(&mut self, msg: Say, ctx: &mut Context<Self>) {
        // A sender that left while its message was in flight has no name
        // to show; its last words are dropped with it.
        if self.speaker(msg.from, &msg.room).is_none() {
            return;
        }
        let id = self.next_message_id();
        let sender = self.speaker(msg.from, &msg.room).expect("checked above");
        let client_id = sender
            .user
            .as_ref()
            .map_or_else(|| msg.from.client_id(&self.server), |u| u.to_string());
        let name = sender.name.clone();
        let room = msg.room.clone();
        let encode = |offset| {
            ServerEvent::Echo {
                id: &id,
                room: room.as_str(),
                offset,
                message: &msg.text,
                from: Sender {
                    id: &client_id,
                    name: name.as_str(),
                },
                ts: now_ms(),
            }
            .encode()
        };
        self.store(msg.room, encode, ctx);
    }

    /// `room`'s users on this process.
    fn local_roster(&self, room: &RoomName) -> Roster {
        let mut roster = Roster::default();
        for id in self.fanout.members_of(room) {
            if let Some(member) = self.members.get(&id) {
                let key = member
                    .user
                    .as_ref()
                    .map_or_else(|| id.client_id(&self.server), |u| u.to_string());
                roster.add(&key, member.name.as_str(), 1);
            }
        }
        roster
    }

    /// `room`'s users on every process.
    fn roster(&self, room: &RoomName) -> Roster {
        let mut roster = self.local_roster(room);
        if let Some(peers) = self.peers.rosters.get(room) {
            roster.merge(peers);
        }
        roster
    }

    /// Tells each local room's members who came and went since last time.
    fn tell_presence(&mut self, ctx: &mut Context<Self>) {
        let rooms: Vec<RoomName> = self.fanout.rooms().map(|(r, _)| r.clone()).collect();
        self.told_presence.retain(|room, _| rooms.contains(room));
        for room in rooms {
            let now = self.roster(&room);
            let before = self.told_presence.get(&room).cloned().unwrap_or_default();
            let (joins, leaves) = now.changes(&before);
            if joins.is_empty() && leaves.is_empty() {
                continue;
            }
            let event = ServerEvent::Presence {
                room: room.as_str(),
                joins: joins.iter().map(|(id, name)| Sender { id, name }).collect(),
                leaves: leaves
                    .iter()
                    .map(|(id, name)| Sender { id, name })
                    .collect(),
                ts: now_ms(),
            }
            .encode();
            self.broadcast_aside(&room, &event, ctx);
            self.told_presence.insert(room, now);
        }
    }

    fn send_shutdown_notice(&self, session: &Recipient<Deliver>, deadline: Instant) {
        let deadline_s = deadline.saturating_duration_since(Instant::now());
        let frame = ServerEvent::ShutdownNotice {
            message: "Server is shutting down; please reconnect",
            deadline_s: deadline_s.as_secs_f64().ceil() as u64,
            retry_after_ms: fastrand::u64(RETRY_AFTER_MS),
            ts: now_ms(),
        }
        .to_frame();
        session.do_send(Deliver::Frames(frame));
    }

    /// Closes the next `batch` sessions of a spread close; answers how many
    /// are still waiting after them.
    fn close_batch(&mut self, batch: usize) -> usize {
        let Some(drain) = self.draining.as_mut() else {
            return 0;
        };
        let mut closed = 0;
        while closed < batch {
            let Some(id) = drain.to_close.pop_front() else {
                break;
            };
            // One that left meanwhile is not counted against the batch.
            if let Some(member) = self.members.get(&id) {
                member
                    .session
                    .do_send(Deliver::Close(CloseCode::AWAY, "server shutting down"));
                closed += 1;
            }
        }
        drain.to_close.len()
    }

    fn tell_if_drained(&mut self) {
        if !self.members.is_empty() {
            return;
        }
        if let Some(on_empty) = self.draining.as_mut().and_then(|d| d.on_empty.take()) {
            on_empty.do_send(HubEmpty);
        }
    }
}

/// Stored events as raw JSON for a `history` list; one that is not JSON
/// (which only a foreign writer to Redis could leave) is skipped.
fn raw_events(events: &[(u64, EventText)]) -> Vec<&RawValue> {
    events
        .iter()
        .filter_map(|(_, event)| serde_json::from_str(event).ok())
        .collect()
}

impl Actor for ChatHub {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if self.presence_events {
            ctx.run_interval(PRESENCE_EVERY, |act, ctx| act.tell_presence(ctx));
        }
        if let Store::Memory(history) = &self.store {
            ctx.run_interval(history.sweep_interval(), |act, _| {
                if let Store::Memory(history) = &mut act.store {
                    history.expire(Instant::now());
                }
            });
        }
    }
}

impl Handler<Connect> for ChatHub {
    type Result = ();

    fn handle(&mut self, msg: Connect, _: &mut Self::Context) {
        // What was broadcast before it arrived is not for it.
        self.fanout.flush();
        let Connect {
            id,
            name,
            user,
            session,
            deflate,
            rooms,
        } = msg;
        let session = SessionAddr::new(Receiver::new(session, deflate));
        let finished = self.draining.as_ref().is_some_and(DrainState::finished);
        log::debug!(
            "connected client_id={} name={:?} rooms={}",
            id.client_id(&self.server),
            name.as_str(),
            rooms.len()
        );
        let mut arriving = Arriving {
            resuming: rooms
                .iter()
                .filter(|(_, since)| since.is_some())
                .map(|(room, _)| room.clone())
                .collect(),
            ..Arriving::default()
        };
        self.members.insert(
            id,
            Member {
                name,
                user,
                session: session.clone(),
                rooms: rooms.iter().map(|(room, _)| room.clone()).collect(),
                arriving: None,
            },
        );
        if finished {
            // Too late even for a drain: welcome it, tell it, and close it
            // with 1001 rather than let the stopping server drop it.
            let _nothing_said_yet = self.welcome(id, arriving);
            session.do_send(Deliver::Close(CloseCode::AWAY, "server shutting down"));
            let member = self.members.remove(&id).expect("inserted above");
            self.fanout.remove_session(id, &member.rooms);
            return;
        }
        for (room, since) in rooms {
            match self.begin_join(id, &session, &room, since) {
                Ok(replay) => {
                    arriving.replays.insert(room, Some(replay));
                }
                Err(request) => {
                    arriving.requests.insert(room, request);
                }
            }
        }
        if arriving.requests.is_empty() {
            let _nothing_said_yet = self.welcome(id, arriving);
        } else {
            self.members.get_mut(&id).expect("inserted above").arriving = Some(Box::new(arriving));
        }
    }
}

impl Handler<HistoryRead> for ChatHub {
    type Result = ();

    fn handle(&mut self, msg: HistoryRead, ctx: &mut Self::Context) {
        // The members hear what was said before the history was read first.
        self.fanout.flush();
        let HistoryRead {
            session: id,
            room,
            request,
            asked_since,
            replay,
        } = msg;
        if !self.fanout.is_joining(id, &room, request) {
            // The session left the room, or is gone, or asked again since.
            return;
        }
        let Some(member) = self.members.get_mut(&id) else {
            return;
        };
        if let Some(arriving) = member.arriving.as_mut() {
            arriving.replays.insert(room, replay);
            if arriving.replays.len() >= arriving.requests.len() {
                let arriving = member.arriving.take().expect("checked above");
                for message in self.welcome(id, *arriving) {
                    self.act_on(message, ctx);
                }
            }
            return;
        }
        let session = member.session.clone();
        let top = replay.as_ref().map_or(0, |r| r.offset);
        let held = self
            .fanout
            .finish_join(id, &room, request, top)
            .expect("joining, checked above");
        let joined = self.joined_json(&room, asked_since, replay.as_ref());
        session.do_send(Deliver::Frames(frame::text(joined.as_bytes())));
        Self::deliver_held(&session, held);
    }
}

impl Handler<Disconnect> for ChatHub {
    type Result = ();

    fn handle(&mut self, msg: Disconnect, _: &mut Self::Context) {
        // It was a member for everything said before it left.
        self.fanout.flush();
        let Some(member) = self.members.remove(&msg.id) else {
            return;
        };
        for room in &member.rooms {
            self.exit(msg.id, room);
        }
        self.fanout.remove_session(msg.id, &[]);
        log::debug!("disconnected client_id={}", msg.id.client_id(&self.server));
        self.tell_if_drained();
    }
}

impl Handler<Join> for ChatHub {
    type Result = ();

    fn handle(&mut self, msg: Join, ctx: &mut Self::Context) {
        if let Some(message) = self.unless_arriving(msg.id, Deferred::Join(msg)) {
            self.act_on(message, ctx);
        }
    }
}

impl Handler<Leave> for ChatHub {
    type Result = ();

    fn handle(&mut self, msg: Leave, ctx: &mut Self::Context) {
        if let Some(message) = self.unless_arriving(msg.id, Deferred::Leave(msg)) {
            self.act_on(message, ctx);
        }
    }
}

impl Handler<Say> for ChatHub {
    type Result = ();

    fn handle(&mut self, msg: Say, ctx: &mut Self::Context) {
        if let Some(message) = self.unless_arriving(msg.from, Deferred::Say(msg)) {
            self.act_on(message, ctx);
        }
    }
}

impl Handler<Typing> for ChatHub {
    type Result = ();

    fn handle(&mut self, msg: Typing, _: &mut Self::Context) {
        let Some(member) = self.speaker(msg.id, &msg.room) else {
            return;
        };
        let name = member.name.clone();
        let from_id = member
            .user
            .as_ref()
            .map_or_else(|| msg.id.client_id(&self.server), |u| u.to_string());
        let now = Instant::now();
        let key = (from_id, msg.room);
        if self
            .typing
            .get(&key)
            .is_some_and(|last| now.duration_since(*last) < TYPING_EVERY)
        {
            return;
        }
        if self.typing.len() > 10_000 {
            self.typing
                .retain(|_, last| now.duration_since(*last) < TYPING_EVERY);
        }
        let event = ServerEvent::Typing {
            room: key.1.as_str(),
            from: Sender {
                id: &key.0,
                name: name.as_str(),
            },
            ts: now_ms(),
        }
        .encode();
        self.fanout.send_to_others(&key.1, msg.id, &event);
        self.publish(Audience::Room(key.1.clone()), event);
        self.typing.insert(key, now);
    }
}

impl Handler<Notify> for ChatHub {
    type Result = usize;

    fn handle(&mut self, msg: Notify, ctx: &mut Self::Context) -> usize {
        let id = self.next_message_id();
        let local_only = msg.scope == Scope::Local;
        if let Audience::Room(room) = msg.audience {
            // Room notices are stored, and so reach every process.
            let reached = self.members_of(&room);
            let encode = |offset| {
                ServerEvent::Notification {
                    id: &id,
                    room: Some(room.as_str()),
                    offset,
                    message: &msg.message,
                    ts: now_ms(),
                }
                .encode()
            };
            self.store(room.clone(), encode, ctx);
            return reached;
        }
        // Everyone, or one user: not stored, delivered here at once.
        let event = ServerEvent::Notification {
            id: &id,
            room: None,
            offset: None,
            message: &msg.message,
            ts: now_ms(),
        }
        .encode();
        let (local, peers) = match &msg.audience {
            Audience::User(user) => (
                self.fanout.user_sessions(user),
                self.peers.users.get(user).copied().unwrap_or(0),
            ),
            _ => (self.fanout.session_count(), self.peers.clients),
        };
        self.broadcast(&msg.audience, None, &event, ctx);
        if local_only {
            return local;
        }
        self.publish(msg.audience, event);
        local + peers
    }
}
impl Handler<Remote> for ChatHub {
    type Result = ();

    fn handle(&mut self, msg: Remote, ctx: &mut Self::Context) {
        match (&msg.audience, msg.offset) {
            // A room event without an offset from another process is not
            // part of the conversation (typing).
            (Audience::Room(room), None) => self.broadcast_aside(room, &msg.event, ctx),
            _ => self.broadcast(&msg.audience, msg.offset, &msg.event, ctx),
        }
    }
}

impl Handler<Stored> for ChatHub {
    type Result = ();

    fn handle(&mut self, msg: Stored, ctx: &mut Self::Context) {
        self.broadcast(&Audience::Room(msg.room), msg.offset, &msg.event, ctx);
    }
}

impl Handler<PeerCount> for ChatHub {
    type Result = ();

    fn handle(&mut self, msg: PeerCount, _: &mut Self::Context) {
        self.peers = msg;
    }
}

impl Handler<Census> for ChatHub {
    type Result = CensusReport;

    fn handle(&mut self, _: Census, _: &mut Self::Context) -> CensusReport {
        CensusReport {
            clients: self.members.len(),
            rooms: self
                .fanout
                .rooms()
                .map(|(name, members)| (name.clone(), members))
                .collect(),
            users: self
                .fanout
                .users()
                .map(|(user, connections)| (user.clone(), connections))
                .collect(),
            rosters: self
                .fanout
                .rooms()
                .map(|(room, _)| (room.clone(), self.local_roster(room)))
                .filter(|(_, roster)| !roster.is_empty())
                .collect(),
        }
    }
}

impl Handler<ListRooms> for ChatHub {
    type Result = MessageResult<ListRooms>;

    fn handle(&mut self, _: ListRooms, _: &mut Self::Context) -> Self::Result {
        let mut rooms: HashMap<&RoomName, usize> =
            self.peers.rooms.iter().map(|(r, n)| (r, *n)).collect();
        for (name, members) in self.fanout.rooms() {
            *rooms.entry(name).or_default() += members;
        }
        let mut rooms: Vec<(RoomName, usize)> =
            rooms.into_iter().map(|(r, n)| (r.clone(), n)).collect();
        rooms.sort_unstable();
        MessageResult(rooms)
    }
}

impl Handler<ReadPresence> for ChatHub {
    type Result = MessageResult<ReadPresence>;

    fn handle(&mut self, msg: ReadPresence, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.roster(&msg.room))
    }
}

impl Handler<ReadPage> for ChatHub {
    type Result = ResponseFuture<Option<HistoryPage>>;

    fn handle(&mut self, msg: ReadPage, _: &mut Self::Context) -> Self::Result {
        match (&mut self.store, &self.bridge) {
            (Store::Memory(history), _) => {
                let room = history.room(&msg.room);
                let page = HistoryPage {
                    epoch: room.epoch().clone(),
                    offset: room.top(),
                    events: room.page(msg.page, msg.limit),
                };
                Box::pin(std::future::ready(Some(page)))
            }
            (Store::Redis, Some(bridge)) => {
                let ask = bridge.page.send(msg);
                Box::pin(async move { ask.await.ok().flatten() })
            }
            (Store::Redis, None) => Box::pin(std::future::ready(None)),
        }
    }
}

impl Handler<Drain> for ChatHub {
    type Result = usize;

    fn handle(&mut self, msg: Drain, _: &mut Self::Context) -> usize {
        self.fanout.flush();
        for member in self.members.values().filter(|m| m.arriving.is_none()) {
            // Arriving ones are told right after their welcome.
            self.send_shutdown_notice(&member.session, msg.deadline);
        }
        self.draining = Some(DrainState {
            deadline: msg.deadline,
            on_empty: Some(msg.on_empty),
            closing: false,
            to_close: VecDeque::new(),
            close_timer: None,
        });
        self.tell_if_drained();
        self.members.len()
    }
}

impl Handler<ForceClose> for ChatHub {
    type Result = usize;

    fn handle(&mut self, msg: ForceClose, ctx: &mut Self::Context) -> usize {
        self.fanout.flush();
        let left = self.members.len();
        let drain = self.draining.get_or_insert_with(|| DrainState {
            deadline: Instant::now(),
            on_empty: None,
            closing: false,
            to_close: VecDeque::new(),
            close_timer: None,
        });
        drain.closing = true;
        if let Some(timer) = drain.close_timer.take() {
            ctx.cancel_future(timer);
        }
        // Members leave as their sessions stop, which tells the coordinator.
        // As many batches as ticks fit in the spread, or one per member when
        // there are fewer, evenly apart.
        let ticks = (msg.spread.as_millis() / CLOSE_TICK.as_millis()) as usize;
        let batches = ticks.min(left);
        if batches <= 1 {
            drain.to_close.clear();
            for member in self.members.values() {
                member
                    .session
                    .do_send(Deliver::Close(CloseCode::AWAY, "server shutting down"));
            }
            return left;
        }
        drain.to_close = self.members.keys().copied().collect();
        let batch = left.div_ceil(batches);
        let every = msg.spread / batches as u32;
        self.close_batch(batch);
        let timer = ctx.run_interval(every, move |act, ctx| {
            if act.close_batch(batch) == 0 {
                if let Some(timer) = act.draining.as_mut().and_then(|d| d.close_timer.take()) {
                    ctx.cancel_future(timer);
                }
            }
        });
        if let Some(drain) = self.draining.as_mut() {
            drain.close_timer = Some(timer);
        }
        left
    }
}

impl Handler<Flush> for ChatHub {
    type Result = ();

    fn handle(&mut self, _: Flush, _: &mut Self::Context) {
        self.flush_scheduled = false;
        self.fanout.flush();
    }
}

impl Handler<Count> for ChatHub {
    type Result = usize;

    fn handle(&mut self, _: Count, _: &mut Self::Context) -> usize {
        self.members.len()
    }
}

impl Handler<CountRooms> for ChatHub {
    type Result = usize;

    fn handle(&mut self, _: CountRooms, _: &mut Self::Context) -> usize {
        self.fanout.rooms().count()
    }
}

/// How long until `deadline`, rounded up to whole seconds, for logs and `/status`.
pub fn seconds_left(deadline: Instant) -> u64 {
    let left: Duration = deadline.saturating_duration_since(Instant::now());
    left.as_secs() + u64::from(left.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests;
