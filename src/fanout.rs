//! [`Fanout`]: the hub's delivery machinery, who gets which frames and how
//! they are batched. The `ChatHub` actor decides what to say; this decides
//! who hears it and hands each session its bytes.
//!
//! Every broadcast event is encoded as a WebSocket frame once and appended to
//! its room's batch (or the everyone batch). The batches of one hub turn go
//! out together at [`Fanout::flush`]: every member of a room gets the same
//! bytes, and a session gets one [`Deliver`] per turn carrying the frames of
//! all its rooms, so under load the per-client cost of many events is one
//! mailbox push and one socket write. Events keep their order within a room;
//! within one turn, a session in several rooms gets the everyone batch first,
//! then each room's batch.
//!
//! Receivers that agreed to permessage-deflate get a compressed copy of each
//! batch, made beside the plain one in the same turn: each event is
//! compressed once, whatever the number of its receivers, and only while
//! some receiver of the batch takes it (see `transport::deflate`).
//!
//! A room exists only while it has members or joiners: one with neither
//! costs nothing, not even a map entry. A joiner is a session whose `join`
//! waits for the room's history (from Redis): what the room says meanwhile is
//! kept for it, with each event's offset, so that once the history arrives it
//! gets exactly what came after, with no gap and no repeat. The history can
//! also be ahead of the room's live events (it was read from the stream while
//! the newest events were still on their way here); then the joiner skips
//! live events up to the history's last offset and becomes a member with the
//! first one past it.

use std::collections::HashMap;
use std::rc::Rc;

use actix::Recipient;
use actix_web::web::{Bytes, BytesMut};

use crate::actors::chat_hub::{Audience, Deliver};
use crate::auth::UserId;
use crate::protocol::{EventText, RoomName, SessionId};
use crate::transport::deflate::Deflate;
use crate::transport::frame::{self, OpCode};

/// Batches this large in all go out at once rather than at the end of the turn.
pub const MAX_BATCH_BYTES: usize = 64 * 1024;

/// A session's address, shared by every map that holds it: one `Recipient`
/// per connection (each clone of a `Recipient` is an allocation of its own).
pub type SessionAddr = Rc<Receiver>;

/// Where a session's deliveries go, and which encoding of a batch it takes.
pub struct Receiver {
    recipient: Recipient<Deliver>,
    /// It agreed to permessage-deflate with the full window: it takes the
    /// compressed copy of a batch.
    deflates: bool,
}

impl Receiver {
    /// The session at `recipient`, which agreed on `deflate` in its upgrade.
    pub fn new(recipient: Recipient<Deliver>, deflate: Option<Deflate>) -> Self {
        Self {
            recipient,
            deflates: deflate == Some(Deflate::FULL),
        }
    }

    /// Hands it `frames`, in the encoding it takes.
    fn deliver(&self, frames: &Frames) {
        self.recipient
            .do_send(Deliver::Frames(frames.for_receiver(self).clone()));
    }
}

impl std::ops::Deref for Receiver {
    type Target = Recipient<Deliver>;

    fn deref(&self) -> &Recipient<Deliver> {
        &self.recipient
    }
}

/// One turn's frames for a set of receivers: plain, and compressed while
/// some receiver takes that.
#[derive(Default)]
struct Batch {
    plain: BytesMut,
    /// Every event of `plain`, compressed; `None` when the turn began with
    /// no receiver that takes it.
    deflated: Option<BytesMut>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.plain.is_empty()
    }

    /// Appends the event `payload`; `deflating` when some receiver takes the
    /// compressed copy.
    fn push(&mut self, payload: &[u8], deflating: bool) {
        if self.plain.is_empty() {
            // A receiver that came in mid-turn takes the plain copy until
            // the next turn: the compressed one would lack the start.
            self.deflated = deflating.then(BytesMut::new);
        }
        frame::append_text(&mut self.plain, payload);
        if let Some(deflated) = self.deflated.as_mut() {
            frame::append_message(deflated, Deflate::FULL, OpCode::Text, payload);
        }
    }

    fn split(&mut self) -> Frames {
        Frames {
            plain: self.plain.split().freeze(),
            deflated: self.deflated.take().map(|mut d| d.split().freeze()),
        }
    }
}

/// A batch ready to go: the same bytes for every receiver of an encoding.
#[derive(Clone)]
struct Frames {
    plain: Bytes,
    deflated: Option<Bytes>,
}

impl Frames {
    fn for_receiver(&self, receiver: &Receiver) -> &Bytes {
        match &self.deflated {
            Some(deflated) if receiver.deflates => deflated,
            _ => &self.plain,
        }
    }
}

/// Events a joiner missed while its history was read: offset (if stored)
/// and the event.
pub type Held = Vec<(Option<u64>, EventText)>;

/// A session whose join of a room waits for the room's history.
struct Joiner {
    request: u64,
    recipient: SessionAddr,
    /// What the room said since the join began; `None` for a session that
    /// is a member already (asking again), which gets it live instead.
    held: Option<Held>,
    /// Set once the history came: its last offset, which live events must
    /// pass before the joiner becomes a member.
    floor: Option<u64>,
}

impl Joiner {
    /// Whether the room's event at `offset` is past the history this
    /// joiner was given, which makes it a member. An event without an offset
    /// (Redis is away) is past it too.
    fn catches_up(&self, offset: Option<u64>) -> bool {
        match (self.floor, offset) {
            (None, _) => false,
            (Some(floor), Some(offset)) => offset > floor,
            (Some(_), None) => true,
        }
    }
}

/// A room with local members or joiners, and its frames of this turn.
#[derive(Default)]
struct Room {
    members: HashMap<SessionId, SessionAddr>,
    /// Members that take compressed batches.
    deflating: usize,
    joiners: HashMap<SessionId, Joiner>,
    batch: Batch,
    /// The highest offset handed to the room here.
    live: u64,
}

impl Room {
    /// Makes session `id` a member; `true` when it was not one.
    fn admit(&mut self, id: SessionId, recipient: SessionAddr) -> bool {
        self.deflating += usize::from(recipient.deflates);
        match self.members.insert(id, recipient) {
            Some(old) => {
                self.deflating -= usize::from(old.deflates);
                false
            }
            None => true,
        }
    }

    fn is_empty(&self) -> bool {
        self.members.is_empty() && self.joiners.is_empty()
    }

    /// Members, and joiners that will be members.
    fn size(&self) -> usize {
        let new = self.joiners.values().filter(|j| j.held.is_some()).count();
        self.members.len() + new
    }
}

/// Who hears what; see the module docs.
#[derive(Default)]
pub struct Fanout {
    /// The sessions that get everyone-events (welcomed ones).
    sessions: HashMap<SessionId, SessionAddr>,
    /// How many rooms each session is a member of.
    room_counts: HashMap<SessionId, usize>,
    /// The sessions of each user (with tokens).
    users: HashMap<UserId, Vec<SessionId>>,
    /// The user of each session that has one.
    user_of: HashMap<SessionId, UserId>,
    rooms: HashMap<RoomName, Room>,
    /// Sessions that take compressed batches.
    deflating: usize,
    /// Frames for every session this turn, not yet handed out.
    everyone: Batch,
    /// Rooms whose batch holds frames this turn, in the order first used.
    touched: Vec<RoomName>,
    /// Bytes in all batches of this turn.
    batched: usize,
    /// Sessions in more than one room; while there are none, every room's
    /// batch can go straight to its members.
    multi_room: usize,
    /// Where each flush adds its deliveries, bytes and time: once per turn,
    /// never per session.
    metrics: Option<crate::metrics::Metrics>,
}

impl Fanout {
    /// Starts handing everyone-events to session `id`.
    pub fn add_session(&mut self, id: SessionId, recipient: SessionAddr, user: Option<UserId>) {
        self.deflating += usize::from(recipient.deflates);
        if let Some(old) = self.sessions.insert(id, recipient) {
            self.deflating -= usize::from(old.deflates);
        }
        if let Some(user) = user {
            self.users.entry(user.clone()).or_default().push(id);
            self.user_of.insert(id, user);
        }
    }

    /// Forgets session `id` everywhere: its rooms, its joins.
    pub fn remove_session(&mut self, id: SessionId, rooms: &[RoomName]) {
        for room in rooms {
            self.exit(id, room);
        }
        if let Some(old) = self.sessions.remove(&id) {
            self.deflating -= usize::from(old.deflates);
        }
        if let Some(user) = self.user_of.remove(&id) {
            if let Some(sessions) = self.users.get_mut(&user) {
                sessions.retain(|s| *s != id);
                if sessions.is_empty() {
                    self.users.remove(&user);
                }
            }
        }
        if let Some(count) = self.room_counts.remove(&id) {
            self.multi_room -= usize::from(count > 1);
        }
    }

    /// Makes session `id` a member of `room`; `true` when the room is new here.
    pub fn enter(&mut self, id: SessionId, recipient: &SessionAddr, room: &RoomName) -> bool {
        let opened = !self.rooms.contains_key(room);
        let entry = self.rooms.entry(room.clone()).or_default();
        if entry.admit(id, recipient.clone()) {
            let count = self.room_counts.entry(id).or_default();
            *count += 1;
            self.multi_room += usize::from(*count == 2);
        }
        opened
    }

    /// Starts holding `room`'s events for session `id` until
    /// [`Fanout::finish_join`] with the same `request`; `true` when the room
    /// is new here. A member asking again keeps getting them live.
    pub fn begin_join(
        &mut self,
        id: SessionId,
        recipient: &SessionAddr,
        room: &RoomName,
        request: u64,
    ) -> bool {
        let opened = !self.rooms.contains_key(room);
        let entry = self.rooms.entry(room.clone()).or_default();
        let held = (!entry.members.contains_key(&id)).then(Vec::new);
        let joiner = Joiner {
            request,
            recipient: recipient.clone(),
            held,
            floor: None,
        };
        entry.joiners.insert(id, joiner);
        opened
    }

    /// Whether session `id` waits for `room`'s history under `request`.
    pub fn is_joining(&self, id: SessionId, room: &RoomName, request: u64) -> bool {
        let joiner = self.rooms.get(room).and_then(|r| r.joiners.get(&id));
        joiner.is_some_and(|j| j.request == request && j.floor.is_none())
    }

    /// Ends the join `request` with a history whose last offset is `top`:
    /// answers what the room said meanwhile that the history did not have,
    /// and makes the session a member once the room's live events have
    /// caught up with `top` (at once, if they have). `None` when that join is
    /// no longer waiting (left, gone, or asked again since).
    pub fn finish_join(
        &mut self,
        id: SessionId,
        room: &RoomName,
        request: u64,
        top: u64,
    ) -> Option<Held> {
        if !self.is_joining(id, room, request) {
            return None;
        }
        let entry = self
            .rooms
            .get_mut(room)
            .expect("joining, so the room exists");
        let joiner = entry.joiners.get_mut(&id).expect("checked above");
        let held = joiner.held.take().unwrap_or_default();
        let newer: Held = held
            .into_iter()
            .filter(|(offset, _)| offset.map_or(true, |o| o > top))
            .collect();
        if newer.is_empty() && entry.live < top && !entry.members.contains_key(&id) {
            // The history is ahead of the live events: wait for them.
            joiner.floor = Some(top);
            joiner.held = Some(Vec::new());
        } else {
            let joiner = entry.joiners.remove(&id).expect("checked above");
            self.enter(id, &joiner.recipient, room);
        }
        Some(newer)
    }

    /// Takes session `id` out of `room`, members and joiners alike; `true`
    /// when that closed the room here. What the room said this turn is
    /// handed out first: it was said while the session was a member.
    pub fn exit(&mut self, id: SessionId, room: &RoomName) -> bool {
        if self.rooms.get(room).is_some_and(|r| !r.batch.is_empty()) {
            self.flush();
        }
        let Some(entry) = self.rooms.get_mut(room) else {
            return false;
        };
        entry.joiners.remove(&id);
        if let Some(old) = entry.members.remove(&id) {
            entry.deflating -= usize::from(old.deflates);
            if let Some(count) = self.room_counts.get_mut(&id) {
                self.multi_room -= usize::from(*count == 2);
                *count -= 1;
                if *count == 0 {
                    self.room_counts.remove(&id);
                }
            }
        }
        if !entry.is_empty() {
            return false;
        }
        self.rooms.remove(room);
        true
    }

    /// Local members of `room`, joiners included.
    pub fn room_size(&self, room: &RoomName) -> usize {
        self.rooms.get(room).map_or(0, Room::size)
    }

    /// Every room here and its local members.
    pub fn rooms(&self) -> impl Iterator<Item = (&RoomName, usize)> {
        self.rooms.iter().map(|(name, room)| (name, room.size()))
    }

    /// The member sessions of `room` here (joiners not yet).
    pub fn members_of(&self, room: &RoomName) -> impl Iterator<Item = SessionId> + '_ {
        self.rooms
            .get(room)
            .into_iter()
            .flat_map(|r| r.members.keys().copied())
    }

    /// Queues `event` for `room`'s members only: an event outside the
    /// conversation (presence, typing from elsewhere), with no offset and no
    /// say in what joiners are owed.
    pub fn push_aside(&mut self, room: &RoomName, event: &EventText) -> bool {
        let Some(entry) = self.rooms.get_mut(room) else {
            return false;
        };
        if entry.members.is_empty() {
            return false;
        }
        if entry.batch.is_empty() {
            self.touched.push(room.clone());
        }
        entry.batch.push(event.as_bytes(), entry.deflating > 0);
        self.batched += event.len();
        self.batched >= MAX_BATCH_BYTES
    }

    /// Sessions that get everyone-events.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Connections of `user` here.
    pub fn user_sessions(&self, user: &UserId) -> usize {
        self.users.get(user).map_or(0, Vec::len)
    }

    /// Every user here and its connections.
    pub fn users(&self) -> impl Iterator<Item = (&UserId, usize)> {
        self.users
            .iter()
            .map(|(user, sessions)| (user, sessions.len()))
    }

    /// Sends `event` at once to `room`'s members but `except`, outside the
    /// batches: for events that are not part of the conversation (typing).
    pub fn send_to_others(&self, room: &RoomName, except: SessionId, event: &EventText) {
        let Some(room) = self.rooms.get(room) else {
            return;
        };
        let bytes = frame::text(event.as_bytes());
        for (id, member) in &room.members {
            if *id != except {
                member.do_send(Deliver::Frames(bytes.clone()));
            }
        }
    }

    /// Queues `event` for `audience`; `true` when the batches are big enough
    /// to go out now, without waiting for the end of the turn.
    pub fn push(&mut self, audience: &Audience, offset: Option<u64>, event: &EventText) -> bool {
        match audience {
            Audience::Everyone if !self.sessions.is_empty() => {
                self.everyone.push(event.as_bytes(), self.deflating > 0);
            }
            Audience::Everyone => return false,
            Audience::User(user) => {
                // Notices to a person are rare: sent at once, not batched.
                let bytes = frame::text(event.as_bytes());
                for id in self.users.get(user).into_iter().flatten() {
                    if let Some(session) = self.sessions.get(id) {
                        session.do_send(Deliver::Frames(bytes.clone()));
                    }
                }
                return false;
            }
            Audience::Room(name) => {
                let Some(room) = self.rooms.get_mut(name) else {
                    return false;
                };
                if let Some(offset) = offset {
                    room.live = room.live.max(offset);
                }
                if !room.batch.is_empty() && room.joiners.values().any(|j| j.catches_up(offset)) {
                    // What the room said earlier this turn was in the
                    // history of those about to enter: it goes out first,
                    // to the members it is for.
                    self.flush();
                }
                let room = self.rooms.get_mut(name).expect("looked up above");
                let mut caught_up = Vec::new();
                for (id, joiner) in &mut room.joiners {
                    if joiner.catches_up(offset) {
                        caught_up.push(*id);
                    } else if let (None, Some(held)) = (joiner.floor, joiner.held.as_mut()) {
                        held.push((offset, event.clone()));
                    }
                    // Otherwise it is already in the history it was given.
                }
                for id in caught_up {
                    let joiner = room.joiners.remove(&id).expect("listed above");
                    if room.admit(id, joiner.recipient) {
                        let count = self.room_counts.entry(id).or_default();
                        *count += 1;
                        self.multi_room += usize::from(*count == 2);
                    }
                }
                if room.members.is_empty() {
                    return false;
                }
                if room.batch.is_empty() {
                    self.touched.push(name.clone());
                }
                room.batch.push(event.as_bytes(), room.deflating > 0);
            }
        }
        self.batched += event.len();
        self.batched >= MAX_BATCH_BYTES
    }

    /// Hands this turn's batches to the members; the bytes are shared, not
    /// copied. The common turns go straight to the members: only
    /// everyone-events, one room's, or several rooms' while no session is in
    /// more than one. Otherwise each session's list is gathered first, so it
    /// still gets one delivery.
    pub fn flush(&mut self) {
        let batched = std::mem::take(&mut self.batched);
        let everyone = (!self.everyone.is_empty()).then(|| self.everyone.split());
        if everyone.is_none() && self.touched.is_empty() {
            return;
        }
        let started = self.metrics.as_ref().map(|_| std::time::Instant::now());
        let delivered = match (everyone, self.touched.len()) {
            (Some(frames), 0) => {
                for session in self.sessions.values() {
                    session.deliver(&frames);
                }
                self.sessions.len()
            }
            (None, n) if n == 1 || self.multi_room == 0 => {
                let mut delivered = 0;
                for name in self.touched.drain(..) {
                    let room = self.rooms.get_mut(&name).expect("touched rooms exist");
                    let frames = room.batch.split();
                    for member in room.members.values() {
                        member.deliver(&frames);
                    }
                    delivered += room.members.len();
                }
                delivered
            }
            (everyone, _) => self.flush_lists(everyone),
        };
        if let (Some(metrics), Some(started)) = (&self.metrics, started) {
            metrics.deliveries.inc_by(delivered as u64);
            metrics.hub_batch_bytes.observe(batched as f64);
            metrics
                .hub_turn_seconds
                .observe(started.elapsed().as_secs_f64());
        }
    }

    /// Counts every flush in `metrics` from now on.
    pub fn set_metrics(&mut self, metrics: crate::metrics::Metrics) {
        self.metrics = Some(metrics);
    }

    /// Answers how many sessions it handed a list to.
    fn flush_lists(&mut self, everyone: Option<Frames>) -> usize {
        let mut batches = Vec::with_capacity(self.touched.len());
        for name in self.touched.drain(..) {
            let room = self.rooms.get_mut(&name).expect("touched rooms exist");
            batches.push((name, room.batch.split()));
        }
        let mut lists: HashMap<SessionId, (&SessionAddr, Vec<Bytes>)> = HashMap::new();
        if let Some(frames) = everyone {
            for (id, session) in &self.sessions {
                let list = vec![frames.for_receiver(session).clone()];
                lists.insert(*id, (session, list));
            }
        }
        for (name, frames) in batches {
            for (id, member) in &self.rooms[&name].members {
                let list = lists.entry(*id).or_insert_with(|| (member, Vec::new()));
                list.1.push(frames.for_receiver(member).clone());
            }
        }
        let delivered = lists.len();
        for (recipient, mut list) in lists.into_values() {
            let deliver = if list.len() == 1 {
                Deliver::Frames(list.pop().expect("one batch"))
            } else {
                Deliver::FrameLists(list)
            };
            recipient.do_send(deliver);
        }
        delivered
    }
}
