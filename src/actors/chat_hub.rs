//! `ChatHub`: the one actor per process that knows who is connected and
//! which rooms they are in.
//!
//! It owns the membership (session id → the session's [`Recipient<Deliver>`],
//! display name and rooms; room → its sessions), the other processes' counts
//! as the Redis bridge last reported them, and the drain state. Sessions send
//! it [`Connect`], [`Join`], [`Leave`], [`Say`] and [`Disconnect`]; the ticker
//! and `POST /notify` send [`Notify`]; the Redis bridge sends [`Remote`],
//! [`PeerCount`] and asks [`Census`]; the shutdown coordinator sends
//! [`Drain`] and [`ForceClose`]; HTTP handlers ask [`Count`] and [`ListRooms`].
//! It answers with [`Deliver`] to sessions, and tells the bridge [`Publish`]
//! for every event other processes need and [`RoomChange`] when a room gains
//! its first local member or loses its last.
//!
//! Every broadcast event is serialized and encoded as a WebSocket frame once
//! here, and appended to its room's batch (or the everyone batch). The
//! batches of one turn of the hub (everything its mailbox held) go out
//! together at the end of the turn: every member of a room gets the same
//! bytes, and a session gets one [`Deliver`] per turn carrying the frames of
//! all its rooms, so under load the per-client cost of many events is one
//! mailbox push and one socket write. A batch over 64 KiB goes out at once, so
//! a mailbox that never runs dry does not hold it back. Events keep their
//! order within a room; within one turn, a session in several rooms gets the
//! everyone batch first, then each room's batch. A room exists only while it
//! has members: one with none costs nothing, not even a map entry.
//!
//! Local clients are served without waiting for Redis; only other processes'
//! clients do, and when Redis is away chat on this process goes on.
//!
//! Draining changes three things: every member (and every late joiner) gets a
//! `shutdown_notice` with its own jittered reconnect delay, the hub tells the
//! coordinator when the last member leaves, and [`ForceClose`] closes whoever
//! is left with 1001 (and anyone who connects after that, or after the hub
//! reported itself empty, is closed the same way at once).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::web::{Bytes, BytesMut};
use actix_web_actors::ws::CloseCode;

use crate::protocol::{
    now_ms, DisplayName, Frame, RoomName, Sender, ServerEvent, ServerId, SessionId,
};
use crate::wire;

/// A session arrives: the hub welcomes it into its starting rooms.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Connect {
    /// The session's number in this process.
    pub id: SessionId,
    /// The checked display name shown on its messages.
    pub name: DisplayName,
    /// Where the hub sends its events.
    pub session: Recipient<Deliver>,
    /// The rooms it starts in, already checked and deduplicated.
    pub rooms: Vec<RoomName>,
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

/// A notification; answers how many clients it went to.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Notify {
    /// The notification text.
    pub message: String,
    /// Who gets it.
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
    /// The event as the origin process serialized it.
    pub frame: Frame,
}

/// The bridge's latest counts of the clients connected to other live processes.
#[derive(Message, Debug, Default)]
#[rtype(result = "()")]
pub struct PeerCount {
    /// Clients on every other process that shares the Redis.
    pub clients: usize,
    /// Their members per room, for rooms with any.
    pub rooms: HashMap<RoomName, usize>,
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
}

/// Every room with members on any process, and how many, sorted by name.
#[derive(Message)]
#[rtype(result = "Vec<(RoomName, usize)>")]
pub struct ListRooms;

/// Begin draining; answers how many clients were told.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Drain {
    /// When the remaining clients will be closed.
    pub deadline: Instant,
    /// Told once, when the last member has left.
    pub on_empty: Recipient<HubEmpty>,
}

/// Close every remaining session with 1001; answers how many were closed.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct ForceClose;

/// How many sessions are connected to this process.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Count;

/// What the hub hands a session.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub enum Deliver {
    /// One or more events, already encoded as WebSocket text frames, to write
    /// as they are.
    Frames(Bytes),
    /// One turn's frames for a session in several rooms: each room's batch,
    /// shared with that room's other members, in order.
    FrameLists(Vec<Bytes>),
    /// Close the connection with this code and reason.
    Close(CloseCode, &'static str),
}

/// An event for the other processes, handed to the Redis bridge.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct Publish {
    /// Who it is for, on the other processes.
    pub audience: Audience,
    /// The event as this process serialized it; other processes deliver it as is.
    pub frame: Frame,
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

/// The shortest and longest delay a draining client is told to wait before
/// reconnecting; spreading reconnects keeps a deploy from becoming a storm.
const RETRY_AFTER_MS: std::ops::RangeInclusive<u64> = 1_000..=10_000;

/// Batches this large in all go out at once rather than at the end of the turn.
const MAX_BATCH_BYTES: usize = 64 * 1024;

struct Member {
    name: DisplayName,
    session: Recipient<Deliver>,
    /// The rooms it is in; at most MAX_ROOMS_PER_CONNECTION, so a list.
    rooms: Vec<RoomName>,
}

/// A room with local members, and its frames of this turn.
#[derive(Default)]
struct Room {
    members: HashMap<SessionId, Recipient<Deliver>>,
    batch: BytesMut,
}

struct DrainState {
    deadline: Instant,
    /// Taken when the hub reports it is empty.
    on_empty: Option<Recipient<HubEmpty>>,
    /// Set by [`ForceClose`].
    closing: bool,
}

impl DrainState {
    /// The coordinator has been told the hub is empty, or the rest were
    /// closed: the server is on its way down and a newcomer would be cut off.
    fn finished(&self) -> bool {
        self.on_empty.is_none() || self.closing
    }
}

/// The membership of this process; see the module docs.
pub struct ChatHub {
    server: ServerId,
    members: HashMap<SessionId, Member>,
    rooms: HashMap<RoomName, Room>,
    bridge: Option<BridgeLink>,
    peers: PeerCount,
    next_message: u64,
    draining: Option<DrainState>,
    /// Frames for every member this turn, not yet handed out.
    everyone: BytesMut,
    /// Rooms whose batch holds frames this turn, in the order first used.
    touched: Vec<RoomName>,
    /// Bytes in all batches of this turn.
    batched: usize,
    flush_scheduled: bool,
}

impl ChatHub {
    /// A hub for the process `server`; `bridge` (the Redis bridge) gets every
    /// event meant for other processes, and every room opened or closed here.
    pub fn new(server: ServerId, bridge: Option<BridgeLink>) -> Self {
        Self {
            server,
            members: HashMap::new(),
            rooms: HashMap::new(),
            bridge,
            peers: PeerCount::default(),
            next_message: 0,
            draining: None,
            everyone: BytesMut::new(),
            touched: Vec::new(),
            batched: 0,
            flush_scheduled: false,
        }
    }

    fn next_message_id(&mut self) -> String {
        self.next_message += 1;
        format!("{}-m{}", self.server, self.next_message)
    }

    /// Queues `frame` for the local members of `audience`. The batches go out
    /// when the hub's mailbox is empty ([`Flush`] runs after the messages
    /// already waiting), so a burst costs each session one delivery.
    fn broadcast(&mut self, audience: &Audience, frame: &Frame, ctx: &mut Context<Self>) {
        match audience {
            Audience::Everyone if !self.members.is_empty() => {
                wire::append_text(&mut self.everyone, frame.as_bytes());
            }
            Audience::Room(name) => {
                let Some(room) = self.rooms.get_mut(name) else {
                    return;
                };
                if room.batch.is_empty() {
                    self.touched.push(name.clone());
                }
                wire::append_text(&mut room.batch, frame.as_bytes());
            }
            Audience::Everyone => return,
        }
        self.batched += frame.len();
        if self.batched >= MAX_BATCH_BYTES {
            // A mailbox that never runs dry must not hold the batch back.
            self.flush();
        } else if !self.flush_scheduled {
            self.flush_scheduled = true;
            ctx.notify(Flush);
        }
    }

    /// Hands this turn's batches to the members; the bytes are shared, not
    /// copied. The common turns (one room, or only everyone-events) go
    /// straight to the members; a turn with several batches first gathers
    /// each session's list, so it still gets one delivery.
    fn flush(&mut self) {
        self.batched = 0;
        let everyone = (!self.everyone.is_empty()).then(|| self.everyone.split().freeze());
        match (everyone, self.touched.len()) {
            (None, 0) => {}
            (Some(frames), 0) => {
                for member in self.members.values() {
                    member.session.do_send(Deliver::Frames(frames.clone()));
                }
            }
            (None, 1) => {
                let name = self.touched.pop().expect("one touched room");
                let room = self
                    .rooms
                    .get_mut(&name)
                    .expect("touched rooms have members");
                let frames = room.batch.split().freeze();
                for session in room.members.values() {
                    session.do_send(Deliver::Frames(frames.clone()));
                }
            }
            (everyone, _) => self.flush_lists(everyone),
        }
    }

    fn flush_lists(&mut self, everyone: Option<Bytes>) {
        let mut lists: HashMap<SessionId, Vec<Bytes>> = HashMap::new();
        if let Some(frames) = everyone {
            for id in self.members.keys() {
                lists.insert(*id, vec![frames.clone()]);
            }
        }
        for name in self.touched.drain(..) {
            let room = self
                .rooms
                .get_mut(&name)
                .expect("touched rooms have members");
            let frames = room.batch.split().freeze();
            for id in room.members.keys() {
                lists.entry(*id).or_default().push(frames.clone());
            }
        }
        for (id, mut list) in lists {
            let deliver = if list.len() == 1 {
                Deliver::Frames(list.pop().expect("one batch"))
            } else {
                Deliver::FrameLists(list)
            };
            self.members[&id].session.do_send(deliver);
        }
    }

    fn publish(&self, audience: Audience, frame: Frame) {
        if let Some(bridge) = &self.bridge {
            bridge.publish.do_send(Publish { audience, frame });
        }
    }

    /// Session `id`, if it is connected and in `room`.
    fn speaker(&self, id: SessionId, room: &RoomName) -> Option<&Member> {
        self.members.get(&id).filter(|m| m.rooms.contains(room))
    }

    /// Members of `room` on this process and, as last reported, the others.
    fn members_of(&self, room: &RoomName) -> usize {
        let local = self.rooms.get(room).map_or(0, |r| r.members.len());
        local + self.peers.rooms.get(room).copied().unwrap_or(0)
    }

    /// Puts session `id` into `room`, opening the room if it is new here.
    fn enter(&mut self, id: SessionId, session: &Recipient<Deliver>, room: &RoomName) {
        let entry = self.rooms.entry(room.clone()).or_insert_with(|| {
            if let Some(bridge) = &self.bridge {
                bridge.rooms.do_send(RoomChange::Opened(room.clone()));
            }
            Room::default()
        });
        entry.members.insert(id, session.clone());
    }

    /// Takes session `id` out of `room`, closing the room if it was the last.
    fn exit(&mut self, id: SessionId, room: &RoomName) {
        let Some(entry) = self.rooms.get_mut(room) else {
            return;
        };
        entry.members.remove(&id);
        if entry.members.is_empty() {
            self.rooms.remove(room);
            if let Some(bridge) = &self.bridge {
                bridge.rooms.do_send(RoomChange::Closed(room.clone()));
            }
        }
    }

    fn joined_event<'a>(&self, room: &'a RoomName) -> ServerEvent<'a> {
        ServerEvent::Joined {
            room: room.as_str(),
            members: self.members_of(room),
            ts: now_ms(),
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
        .to_wire();
        session.do_send(Deliver::Frames(frame));
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

impl Actor for ChatHub {
    type Context = Context<Self>;
}

impl Handler<Connect> for ChatHub {
    type Result = ();

    fn handle(&mut self, msg: Connect, _: &mut Self::Context) {
        // What was broadcast before it arrived is not for it.
        self.flush();
        let Connect {
            id,
            name,
            session,
            rooms,
        } = msg;
        let finished = self.draining.as_ref().is_some_and(DrainState::finished);
        if !finished {
            for room in &rooms {
                self.enter(id, &session, room);
            }
        }
        let client_id = id.client_id(&self.server);
        let welcome = ServerEvent::Welcome {
            client_id: &client_id,
            name: name.as_str(),
            online: self.members.len() + 1 + self.peers.clients,
            server: self.server.as_str(),
            rooms: rooms.iter().map(|room| self.joined_event(room)).collect(),
            ts: now_ms(),
        }
        .to_wire();
        session.do_send(Deliver::Frames(welcome));
        if let Some(drain) = &self.draining {
            // Accepted just before the drain began: it leaves like the others.
            self.send_shutdown_notice(&session, drain.deadline);
            if finished {
                // Too late even for that: close it now, with 1001, rather
                // than let the stopping server drop it.
                session.do_send(Deliver::Close(CloseCode::Away, "server shutting down"));
                return;
            }
        }
        log::debug!(
            "connected client_id={client_id} name={:?} rooms={}",
            name.as_str(),
            rooms.len()
        );
        self.members.insert(
            id,
            Member {
                name,
                session,
                rooms,
            },
        );
    }
}

impl Handler<Disconnect> for ChatHub {
    type Result = ();

    fn handle(&mut self, msg: Disconnect, _: &mut Self::Context) {
        // It was a member for everything said before it left.
        self.flush();
        let Some(member) = self.members.remove(&msg.id) else {
            return;
        };
        for room in &member.rooms {
            self.exit(msg.id, room);
        }
        log::debug!("disconnected client_id={}", msg.id.client_id(&self.server));
        self.tell_if_drained();
    }
}

impl Handler<Join> for ChatHub {
    type Result = ();

    fn handle(&mut self, msg: Join, _: &mut Self::Context) {
        // `joined` comes after what its other rooms said before it, and
        // before anything said in the new room after it.
        self.flush();
        let Some(member) = self.members.get_mut(&msg.id) else {
            return;
        };
        let session = member.session.clone();
        if !member.rooms.contains(&msg.room) {
            member.rooms.push(msg.room.clone());
            self.enter(msg.id, &session, &msg.room);
        }
        session.do_send(Deliver::Frames(self.joined_event(&msg.room).to_wire()));
    }
}

impl Handler<Leave> for ChatHub {
    type Result = ();

    fn handle(&mut self, msg: Leave, _: &mut Self::Context) {
        // It was a member for everything said before it left.
        self.flush();
        let Some(member) = self.members.get_mut(&msg.id) else {
            return;
        };
        let Some(at) = member.rooms.iter().position(|room| *room == msg.room) else {
            return;
        };
        member.rooms.swap_remove(at);
        let left = ServerEvent::Left {
            room: msg.room.as_str(),
            ts: now_ms(),
        };
        member.session.do_send(Deliver::Frames(left.to_wire()));
        self.exit(msg.id, &msg.room);
    }
}

impl Handler<Say> for ChatHub {
    type Result = ();

    fn handle(&mut self, msg: Say, ctx: &mut Self::Context) {
        // A sender that left while its message was in flight has no name
        // to show; its last words are dropped with it.
        if self.speaker(msg.from, &msg.room).is_none() {
            return;
        }
        let id = self.next_message_id();
        let sender = self.speaker(msg.from, &msg.room).expect("checked above");
        let client_id = msg.from.client_id(&self.server);
        let frame = ServerEvent::Echo {
            id: &id,
            room: msg.room.as_str(),
            message: &msg.text,
            from: Sender {
                id: &client_id,
                name: sender.name.as_str(),
            },
            ts: now_ms(),
        }
        .encode();
        let audience = Audience::Room(msg.room);
        self.broadcast(&audience, &frame, ctx);
        self.publish(audience, frame);
    }
}

impl Handler<Notify> for ChatHub {
    type Result = usize;

    fn handle(&mut self, msg: Notify, ctx: &mut Self::Context) -> usize {
        let id = self.next_message_id();
        let room = match &msg.audience {
            Audience::Everyone => None,
            Audience::Room(room) => Some(room.as_str()),
        };
        let frame = ServerEvent::Notification {
            id: &id,
            room,
            message: &msg.message,
            ts: now_ms(),
        }
        .encode();
        self.broadcast(&msg.audience, &frame, ctx);
        let (local, everywhere) = match &msg.audience {
            Audience::Everyone => (self.members.len(), self.members.len() + self.peers.clients),
            Audience::Room(room) => (
                self.rooms.get(room).map_or(0, |r| r.members.len()),
                self.members_of(room),
            ),
        };
        match msg.scope {
            Scope::Local => local,
            Scope::Everywhere => {
                self.publish(msg.audience, frame);
                everywhere
            }
        }
    }
}

impl Handler<Remote> for ChatHub {
    type Result = ();

    fn handle(&mut self, msg: Remote, ctx: &mut Self::Context) {
        self.broadcast(&msg.audience, &msg.frame, ctx);
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
                .rooms
                .iter()
                .map(|(name, room)| (name.clone(), room.members.len()))
                .collect(),
        }
    }
}

impl Handler<ListRooms> for ChatHub {
    type Result = MessageResult<ListRooms>;

    fn handle(&mut self, _: ListRooms, _: &mut Self::Context) -> Self::Result {
        let mut rooms: HashMap<&RoomName, usize> =
            self.peers.rooms.iter().map(|(r, n)| (r, *n)).collect();
        for (name, room) in &self.rooms {
            *rooms.entry(name).or_default() += room.members.len();
        }
        let mut rooms: Vec<(RoomName, usize)> =
            rooms.into_iter().map(|(r, n)| (r.clone(), n)).collect();
        rooms.sort_unstable();
        MessageResult(rooms)
    }
}

impl Handler<Drain> for ChatHub {
    type Result = usize;

    fn handle(&mut self, msg: Drain, _: &mut Self::Context) -> usize {
        self.flush();
        for member in self.members.values() {
            self.send_shutdown_notice(&member.session, msg.deadline);
        }
        self.draining = Some(DrainState {
            deadline: msg.deadline,
            on_empty: Some(msg.on_empty),
            closing: false,
        });
        self.tell_if_drained();
        self.members.len()
    }
}

impl Handler<ForceClose> for ChatHub {
    type Result = usize;

    fn handle(&mut self, _: ForceClose, _: &mut Self::Context) -> usize {
        self.flush();
        if let Some(drain) = self.draining.as_mut() {
            drain.closing = true;
        }
        for member in self.members.values() {
            member
                .session
                .do_send(Deliver::Close(CloseCode::Away, "server shutting down"));
        }
        // Members leave as their sessions stop, which tells the coordinator.
        self.members.len()
    }
}

impl Handler<Flush> for ChatHub {
    type Result = ();

    fn handle(&mut self, _: Flush, _: &mut Self::Context) {
        self.flush_scheduled = false;
        self.flush();
    }
}

impl Handler<Count> for ChatHub {
    type Result = usize;

    fn handle(&mut self, _: Count, _: &mut Self::Context) -> usize {
        self.members.len()
    }
}

/// How long until `deadline`, rounded up to whole seconds, for logs and `/status`.
pub fn seconds_left(deadline: Instant) -> u64 {
    let left: Duration = deadline.saturating_duration_since(Instant::now());
    left.as_secs() + u64::from(left.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    /// Stands in for a session: forwards every event it is delivered, one
    /// JSON text at a time, to a channel.
    struct Probe(mpsc::UnboundedSender<String>);

    impl Actor for Probe {
        type Context = Context<Self>;
    }

    impl Handler<Deliver> for Probe {
        type Result = ();
        fn handle(&mut self, msg: Deliver, _: &mut Self::Context) {
            match msg {
                Deliver::Frames(frames) => {
                    for event in wire::text_payloads(&frames) {
                        let _ = self.0.send(event);
                    }
                }
                Deliver::FrameLists(lists) => {
                    for event in lists.iter().flat_map(|f| wire::text_payloads(f)) {
                        let _ = self.0.send(event);
                    }
                }
                Deliver::Close(code, _) => {
                    let _ = self.0.send(format!("close {}", u16::from(code)));
                }
            }
        }
    }

    fn probe() -> (Recipient<Deliver>, mpsc::UnboundedReceiver<String>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Probe(tx).start().recipient(), rx)
    }

    async fn next_event(rx: &mut mpsc::UnboundedReceiver<String>) -> serde_json::Value {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Some(event)) => serde_json::from_str(&event).expect(&event),
            other => panic!("expected an event, got {other:?}"),
        }
    }

    fn connect(hub: &Addr<ChatHub>, name: &str) -> mpsc::UnboundedReceiver<String> {
        let (session, rx) = probe();
        hub.do_send(Connect {
            id: SessionId::next(),
            name: DisplayName::parse(name, 32).unwrap(),
            session,
            rooms: vec![RoomName::general()],
        });
        rx
    }

    #[actix_rt::test]
    async fn a_say_reaches_every_member_with_the_same_bytes() {
        let hub = ChatHub::new(ServerId::generate(), None).start();
        let (ana_session, mut ana) = probe();
        let ana_id = SessionId::next();
        hub.do_send(Connect {
            id: ana_id,
            name: DisplayName::parse("ana", 32).unwrap(),
            session: ana_session,
            rooms: vec![RoomName::general()],
        });
        let mut bo = connect(&hub, "bo");
        assert_eq!(next_event(&mut ana).await["type"], "welcome");
        assert_eq!(next_event(&mut bo).await["online"], 2);

        hub.do_send(Say {
            from: ana_id,
            room: RoomName::general(),
            text: "hi".into(),
        });

        let (a, b) = (next_event(&mut ana).await, next_event(&mut bo).await);
        assert_eq!(a, b);
        assert_eq!(a["type"], "echo");
        assert_eq!(a["from"]["name"], "ana");
    }

    #[actix_rt::test]
    async fn a_session_that_joins_after_the_drain_finished_is_closed_with_1001() {
        struct Ignore;
        impl Actor for Ignore {
            type Context = Context<Self>;
        }
        impl Handler<HubEmpty> for Ignore {
            type Result = ();
            fn handle(&mut self, _: HubEmpty, _: &mut Self::Context) {}
        }
        let hub = ChatHub::new(ServerId::generate(), None).start();
        let told = hub
            .send(Drain {
                deadline: Instant::now() + Duration::from_secs(30),
                on_empty: Ignore.start().recipient(),
            })
            .await
            .unwrap();
        assert_eq!(told, 0, "empty at once, so the coordinator is already told");

        let mut late = connect(&hub, "late");

        assert_eq!(next_event(&mut late).await["type"], "welcome");
        assert_eq!(next_event(&mut late).await["type"], "shutdown_notice");
        let close = tokio::time::timeout(Duration::from_secs(5), late.recv()).await;
        assert_eq!(close.unwrap().as_deref(), Some("close 1001"));
        assert_eq!(hub.send(Count).await.unwrap(), 0);
    }

    #[actix_rt::test]
    async fn the_messages_of_one_turn_reach_a_session_in_one_delivery() {
        struct Counter(mpsc::UnboundedSender<usize>);
        impl Actor for Counter {
            type Context = Context<Self>;
        }
        impl Handler<Deliver> for Counter {
            type Result = ();
            fn handle(&mut self, msg: Deliver, _: &mut Self::Context) {
                match msg {
                    Deliver::Frames(frames) => {
                        let _ = self.0.send(wire::text_payloads(&frames).len());
                    }
                    Deliver::FrameLists(lists) => {
                        let events = lists.iter().map(|f| wire::text_payloads(f).len());
                        let _ = self.0.send(events.sum());
                    }
                    Deliver::Close(..) => {}
                }
            }
        }
        let hub = ChatHub::new(ServerId::generate(), None).start();
        let (tx, mut deliveries) = mpsc::unbounded_channel();
        let id = SessionId::next();
        hub.do_send(Connect {
            id,
            name: DisplayName::guest(id),
            session: Counter(tx).start().recipient(),
            rooms: vec![RoomName::general()],
        });

        for n in 0..3 {
            hub.do_send(Say {
                from: id,
                room: RoomName::general(),
                text: format!("burst {n}"),
            });
        }

        let mut sizes = Vec::new();
        for _ in 0..2 {
            let size = tokio::time::timeout(Duration::from_secs(5), deliveries.recv())
                .await
                .expect("a delivery in time")
                .expect("the counter is alive");
            sizes.push(size);
        }
        assert_eq!(
            sizes,
            [1, 3],
            "the welcome alone, then the burst in one delivery"
        );
    }

    #[actix_rt::test]
    async fn a_drain_tells_every_member_and_reports_when_the_last_leaves() {
        struct Watcher(mpsc::UnboundedSender<()>);
        impl Actor for Watcher {
            type Context = Context<Self>;
        }
        impl Handler<HubEmpty> for Watcher {
            type Result = ();
            fn handle(&mut self, _: HubEmpty, _: &mut Self::Context) {
                let _ = self.0.send(());
            }
        }
        let hub = ChatHub::new(ServerId::generate(), None).start();
        let (session, mut rx) = probe();
        let id = SessionId::next();
        hub.do_send(Connect {
            id,
            name: DisplayName::guest(id),
            session,
            rooms: vec![RoomName::general()],
        });
        let (empty_tx, mut empty_rx) = mpsc::unbounded_channel();
        let deadline = Instant::now() + Duration::from_secs(30);

        let told = hub
            .send(Drain {
                deadline,
                on_empty: Watcher(empty_tx).start().recipient(),
            })
            .await
            .unwrap();

        assert_eq!(told, 1);
        next_event(&mut rx).await; // welcome
        let notice = next_event(&mut rx).await;
        assert_eq!(notice["type"], "shutdown_notice");
        assert_eq!(notice["deadline_s"], 30);
        let retry = notice["retry_after_ms"].as_u64().unwrap();
        assert!(RETRY_AFTER_MS.contains(&retry), "{retry}");
        assert!(empty_rx.try_recv().is_err(), "not empty yet");
        hub.do_send(Disconnect { id });
        tokio::time::timeout(Duration::from_secs(5), empty_rx.recv())
            .await
            .expect("told when the last member left");
    }

    fn room(name: &str) -> RoomName {
        RoomName::parse(name).unwrap()
    }

    /// Connects a probe in `rooms`; its receiver has already taken the welcome.
    async fn connect_in(
        hub: &Addr<ChatHub>,
        rooms: &[&str],
    ) -> (SessionId, mpsc::UnboundedReceiver<String>) {
        let (session, mut rx) = probe();
        let id = SessionId::next();
        hub.do_send(Connect {
            id,
            name: DisplayName::guest(id),
            session,
            rooms: rooms.iter().map(|r| room(r)).collect(),
        });
        let welcome = next_event(&mut rx).await;
        assert_eq!(welcome["type"], "welcome");
        assert_eq!(welcome["rooms"].as_array().unwrap().len(), rooms.len());
        (id, rx)
    }

    #[actix_rt::test]
    async fn a_message_reaches_only_its_room() {
        let hub = ChatHub::new(ServerId::generate(), None).start();
        let (ana, mut ana_rx) = connect_in(&hub, &["ops"]).await;
        let (_, mut bo_rx) = connect_in(&hub, &["dev"]).await;
        let (_, mut both_rx) = connect_in(&hub, &["ops", "dev"]).await;

        hub.do_send(Say {
            from: ana,
            room: room("ops"),
            text: "deploy".into(),
        });

        for rx in [&mut ana_rx, &mut both_rx] {
            let echo = next_event(rx).await;
            assert_eq!(
                (echo["room"].as_str(), echo["message"].as_str()),
                (Some("ops"), Some("deploy"))
            );
        }
        hub.send(Count).await.unwrap();
        assert!(bo_rx.try_recv().is_err(), "dev heard ops");
    }

    #[actix_rt::test]
    async fn a_turn_across_rooms_is_one_delivery_per_session() {
        struct Counter(mpsc::UnboundedSender<usize>);
        impl Actor for Counter {
            type Context = Context<Self>;
        }
        impl Handler<Deliver> for Counter {
            type Result = ();
            fn handle(&mut self, msg: Deliver, _: &mut Self::Context) {
                let batches = match msg {
                    Deliver::Frames(_) => 1,
                    Deliver::FrameLists(lists) => lists.len(),
                    Deliver::Close(..) => 0,
                };
                let _ = self.0.send(batches);
            }
        }
        let hub = ChatHub::new(ServerId::generate(), None).start();
        let (tx, mut deliveries) = mpsc::unbounded_channel();
        let id = SessionId::next();
        hub.do_send(Connect {
            id,
            name: DisplayName::guest(id),
            session: Counter(tx).start().recipient(),
            rooms: vec![room("a"), room("b")],
        });

        for name in ["a", "b", "a"] {
            hub.do_send(Say {
                from: id,
                room: room(name),
                text: "x".into(),
            });
        }
        hub.do_send(Notify {
            message: "all".into(),
            audience: Audience::Everyone,
            scope: Scope::Local,
        });

        let mut got = Vec::new();
        for _ in 0..2 {
            let next = tokio::time::timeout(Duration::from_secs(5), deliveries.recv()).await;
            got.push(next.expect("a delivery in time").expect("alive"));
        }
        assert_eq!(
            got,
            [1, 3],
            "the welcome, then everyone + a + b in one delivery"
        );
    }

    #[actix_rt::test]
    async fn rooms_open_and_close_with_their_first_and_last_member() {
        struct Watcher(mpsc::UnboundedSender<RoomChange>);
        impl Actor for Watcher {
            type Context = Context<Self>;
        }
        impl Handler<RoomChange> for Watcher {
            type Result = ();
            fn handle(&mut self, msg: RoomChange, _: &mut Self::Context) {
                let _ = self.0.send(msg);
            }
        }
        impl Handler<Publish> for Watcher {
            type Result = ();
            fn handle(&mut self, _: Publish, _: &mut Self::Context) {}
        }
        let (tx, mut changes) = mpsc::unbounded_channel();
        let watcher = Watcher(tx).start();
        let link = BridgeLink {
            publish: watcher.clone().recipient(),
            rooms: watcher.recipient(),
        };
        let hub = ChatHub::new(ServerId::generate(), Some(link)).start();
        let (one, mut one_rx) = connect_in(&hub, &["ops"]).await;
        let (two, _two_rx) = connect_in(&hub, &["ops"]).await;

        hub.do_send(Leave {
            id: one,
            room: room("ops"),
        });
        assert_eq!(next_event(&mut one_rx).await["type"], "left");
        hub.do_send(Disconnect { id: two });
        let census = hub.send(Census).await.unwrap();

        assert!(
            census.rooms.is_empty(),
            "an empty room is forgotten: {census:?}"
        );
        let mut seen = Vec::new();
        while let Ok(change) = changes.try_recv() {
            seen.push(change);
        }
        assert_eq!(
            seen,
            [
                RoomChange::Opened(room("ops")),
                RoomChange::Closed(room("ops"))
            ]
        );
    }

    #[actix_rt::test]
    async fn a_room_notice_counts_its_members_here_and_on_peers() {
        let hub = ChatHub::new(ServerId::generate(), None).start();
        let (_, mut ops_rx) = connect_in(&hub, &["ops"]).await;
        let (_, mut dev_rx) = connect_in(&hub, &["dev"]).await;
        hub.do_send(PeerCount {
            clients: 7,
            rooms: [(room("ops"), 3)].into_iter().collect(),
        });
        let notify = |audience| Notify {
            message: "hi".into(),
            audience,
            scope: Scope::Everywhere,
        };

        let to_ops = hub.send(notify(Audience::Room(room("ops")))).await.unwrap();
        let to_nobody = hub
            .send(notify(Audience::Room(room("nobody"))))
            .await
            .unwrap();
        let to_all = hub.send(notify(Audience::Everyone)).await.unwrap();

        assert_eq!((to_ops, to_nobody, to_all), (4, 0, 9));
        let notice = next_event(&mut ops_rx).await;
        assert_eq!(notice["room"], "ops");
        let everyone = next_event(&mut dev_rx).await;
        assert!(everyone.get("room").is_none(), "{everyone}");
        let rooms = hub.send(ListRooms).await.unwrap();
        assert_eq!(rooms, [(room("dev"), 1), (room("ops"), 4)]);
    }
}
