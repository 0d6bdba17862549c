//! A fleet of connected clients and the phases it runs. Clients `0..senders`
//! send; every client, senders included, receives, and counts only what it
//! received: a phase's figures are built from the tags found in arriving
//! frames, never from what was sent. Clients are split into rooms as
//! [`Rooms`] says (one room, chatd's default, unless a mode asks for more);
//! a client is owed every message sent in its room and nothing else.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::conn;
use crate::rooms::{Origin, Rooms};
use crate::stats::{Arrival, Histogram, SeqTrack, Tag};
use crate::wire;

/// How a connection ended.
#[derive(Debug)]
pub enum End {
    /// The server sent a close frame with this code.
    Closed(u16),
    /// Anything else: a reset, a bad frame.
    Fault(String),
}

/// How the senders pace their messages in a phase.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pacing {
    /// Open loop: this many messages a second in all, on a fixed schedule
    /// whatever the server does, so a slow server builds a backlog.
    Rate(f64),
    /// Closed loop: each sender writes its next message as soon as its own
    /// `echo` of the previous one arrives, so at most one message per sender
    /// is in flight and the server's speed sets the rate. chatd writes the
    /// sender's echo in the same fan-out pass as every other copy, so the
    /// echo confirms that the broadcast went out.
    Echo,
}

impl Pacing {
    /// The aggregate rate asked of the senders; none in a closed loop.
    pub fn rate(self) -> Option<f64> {
        match self {
            Self::Rate(rate) => Some(rate),
            Self::Echo => None,
        }
    }
}

/// The sending schedule of the running phase.
#[derive(Debug, Clone, Copy)]
struct Plan {
    start: Instant,
    end: Instant,
    pacing: Pacing,
    pad: usize,
}

struct Client {
    group: usize,
    room: usize,
    alive: bool,
    /// Connected when the phase began, so owed every message sent in its
    /// room.
    member: bool,
    /// One per sender of its room, in the order of [`Origin::OwnRoom`].
    tracks: Vec<SeqTrack>,
}

/// Everything the connection tasks share; borrowed only between awaits.
pub struct State {
    epoch: Instant,
    senders: usize,
    rooms: Rooms,
    phase: u32,
    plan: Option<Plan>,
    /// Wakes the senders that are waiting for a phase to begin.
    phase_begun: Rc<Notify>,
    clients: Vec<Client>,
    /// Per sender: messages written in this phase.
    sent: Vec<u64>,
    /// Per sender: the sequence number of its last message while its own
    /// echo has not come back; what a closed loop waits for.
    awaiting: Vec<Option<u64>>,
    latency: Vec<Histogram>,
    deliveries: Vec<u64>,
    /// Per room: members when the phase began, and distinct copies they got.
    room_members: Vec<u64>,
    room_deliveries: Vec<u64>,
    duplicates: u64,
    late: u64,
    errors: u64,
    /// Copies from, or labelled with, a room other than the receiver's.
    other_room: u64,
    last_delivery: Option<Instant>,
    ends: BTreeMap<String, u64>,
    text: Vec<u8>,
    /// Bytes on the wire of the copies counted in `deliveries`, headers
    /// included.
    wire_bytes: u64,
    /// Recent compressed broadcasts and what they inflate to.
    inflated: HashMap<Box<[u8]>, Rc<[u8]>>,
}

impl State {
    fn micros(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_micros() as u64
    }

    /// Takes in every whole frame at the start of `buf` and answers pings
    /// into `out`; returns how many bytes it used.
    pub fn absorb(
        &mut self,
        index: usize,
        buf: &[u8],
        now: Instant,
        out: &mut Vec<u8>,
    ) -> Result<usize, End> {
        let now_us = self.micros(now);
        let mut at = 0;
        loop {
            match wire::parse_frame(&buf[at..]) {
                Ok(Some((frame, used))) => {
                    at += used;
                    match frame.opcode {
                        wire::OP_TEXT if frame.fin && frame.compressed => {
                            let message = self.inflated(frame.payload)?;
                            self.on_text(index, &message, used, now, now_us, out)
                        }
                        wire::OP_TEXT if frame.fin => {
                            self.on_text(index, frame.payload, used, now, now_us, out)
                        }
                        wire::OP_TEXT | wire::OP_CONTINUATION => {
                            return Err(End::Fault("fragmented message".into()))
                        }
                        wire::OP_PING => wire::encode(out, wire::OP_PONG, frame.payload),
                        wire::OP_CLOSE => return Err(End::Closed(wire::close_code(frame.payload))),
                        _ => {}
                    }
                }
                Ok(None) => return Ok(at),
                Err(err) => return Err(End::Fault(err.to_string())),
            }
        }
    }

    /// A compressed message, inflated. Every receiver of a broadcast gets
    /// the same compressed bytes, so the tool inflates each once: at a
    /// million deliveries a second, inflating every copy would make the tool
    /// what is measured.
    fn inflated(&mut self, payload: &[u8]) -> Result<Rc<[u8]>, End> {
        if let Some(message) = self.inflated.get(payload) {
            return Ok(message.clone());
        }
        let message: Rc<[u8]> = chatd::transport::deflate::inflate(payload, 16 << 20)
            .map_err(|_| End::Fault("a compressed frame does not inflate".into()))?
            .into();
        if self.inflated.len() >= 4096 {
            self.inflated.clear();
        }
        self.inflated.insert(payload.into(), message.clone());
        Ok(message)
    }

    /// Counts a tagged `echo`, `wire_len` bytes on the wire; a sender's own
    /// echo of its latest message also lets a closed loop write the next one
    /// into `out`.
    fn on_text(
        &mut self,
        index: usize,
        event: &[u8],
        wire_len: usize,
        now: Instant,
        now_us: u64,
        out: &mut Vec<u8>,
    ) {
        if !event.starts_with(b"{\"type\":\"echo\"") {
            if event.starts_with(b"{\"type\":\"error\"") {
                self.errors += 1;
            }
            return;
        }
        let Some(tag) = Tag::find(event) else {
            return;
        };
        let client = &mut self.clients[index];
        let track = match self
            .rooms
            .origin(client.room, tag.sender as usize, self.senders, event)
        {
            Origin::OwnRoom(track) => track,
            // Whatever its phase: isolation is broken either way.
            Origin::OtherRoom => {
                self.other_room += 1;
                return;
            }
            Origin::Unknown => {
                self.late += 1;
                return;
            }
        };
        if tag.phase != self.phase || !client.member {
            self.late += 1;
            return;
        }
        match client.tracks[track].record(tag.seq) {
            Arrival::New => {
                self.deliveries[client.group] += 1;
                self.wire_bytes += wire_len as u64;
                self.room_deliveries[client.room] += 1;
                self.latency[client.group].record(now_us.saturating_sub(tag.sent_us));
                self.last_delivery = Some(now);
            }
            Arrival::Duplicate => self.duplicates += 1,
        }
        if tag.sender as usize == index && self.awaiting[index] == Some(tag.seq) {
            self.awaiting[index] = None;
            self.write_due(index, now, out);
        }
    }

    /// Appends the messages sender `index` owes by `now` to `out`.
    pub fn write_due(&mut self, index: usize, now: Instant, out: &mut Vec<u8>) {
        let Some(plan) = self.plan else { return };
        if index >= self.senders || now < plan.start {
            return;
        }
        let owed = messages_owed(
            plan.pacing,
            now - plan.start,
            plan.end - plan.start,
            self.awaiting[index].is_some(),
            self.sent[index],
            (index, self.senders),
        );
        let sent_us = self.micros(now);
        for _ in 0..owed {
            let tag = Tag {
                phase: self.phase,
                sender: index as u32,
                seq: self.sent[index],
                sent_us,
            };
            self.text.clear();
            self.text.extend_from_slice(b"{\"type\":\"message\",");
            self.rooms
                .write_room_field(self.rooms.of_client(index), &mut self.text);
            self.text.extend_from_slice(b"\"message\":\"");
            tag.write_text(&mut self.text, plan.pad);
            self.text.extend_from_slice(b"\"}");
            wire::encode(out, wire::OP_TEXT, &self.text);
            self.awaiting[index] = Some(tag.seq);
            self.sent[index] += 1;
        }
    }

    /// When sender `index` next has a message due, if the clock decides
    /// that; `None` when only an echo or the next phase can.
    pub fn next_due(&self, index: usize, now: Instant) -> Option<Instant> {
        let plan = self.plan?;
        if index >= self.senders {
            return None;
        }
        let slot = next_slot(
            plan.pacing,
            now.saturating_duration_since(plan.start),
            plan.end - plan.start,
            self.awaiting[index].is_some(),
            self.sent[index],
            (index, self.senders),
        )?;
        Some(plan.start + slot)
    }

    pub fn phase_begun(&self) -> Rc<Notify> {
        self.phase_begun.clone()
    }

    pub fn ended(&mut self, index: usize, end: End) {
        self.clients[index].alive = false;
        let kind = match end {
            End::Closed(code) => format!("closed {code}"),
            End::Fault(fault) => fault,
        };
        *self.ends.entry(kind).or_default() += 1;
    }

    fn unique_deliveries(&self) -> u64 {
        self.deliveries.iter().sum()
    }

    /// Starts a phase that sends as `plan` says: every count from zero, and
    /// the clients connected now are its members.
    fn begin_phase(&mut self, plan: Plan) {
        self.phase += 1;
        self.sent.fill(0);
        self.awaiting.fill(None);
        let mut room_members = vec![0; self.rooms.count()];
        for client in &mut self.clients {
            client.member = client.alive;
            client.tracks.fill(SeqTrack::default());
            room_members[client.room] += u64::from(client.member);
        }
        self.room_deliveries = vec![0; room_members.len()];
        self.room_members = room_members;
        let groups = self.latency.len();
        self.latency = vec![Histogram::default(); groups];
        self.deliveries = vec![0; groups];
        (self.duplicates, self.late, self.errors, self.other_room) = (0, 0, 0, 0);
        self.wire_bytes = 0;
        self.last_delivery = None;
        self.ends.clear();
        self.plan = Some(plan);
        self.phase_begun.notify_waiters();
    }

    /// Stops sending and reports what arrived, lost copies counted room by
    /// room; the CPU figures are the caller's to fill in.
    fn finish_phase(&mut self) -> PhaseReport {
        let plan = self.plan.take().expect("a phase is running");
        let deliveries = self.unique_deliveries();
        let last = self.last_delivery.unwrap_or(plan.end).max(plan.end);
        let room_lost: Vec<u64> = self
            .room_expected()
            .iter()
            .zip(&self.room_deliveries)
            .map(|(expected, delivered)| expected.saturating_sub(*delivered))
            .collect();
        PhaseReport {
            pacing: plan.pacing,
            members: self.clients.iter().filter(|c| c.member).count(),
            sent: self.sent.iter().sum(),
            deliveries,
            wire_bytes: self.wire_bytes,
            lost: room_lost.iter().sum(),
            duplicates: self.duplicates,
            late: self.late,
            errors: self.errors,
            other_room: self.other_room,
            rooms: self.rooms.count(),
            rooms_with_loss: room_lost.iter().filter(|&&lost| lost > 0).count(),
            window: last - plan.start,
            latency: self.latency.clone(),
            ends: std::mem::take(&mut self.ends),
            server_cpu_s: None,
            tool_cpu_s: 0.0,
        }
    }

    /// Per room: the copies its members are owed, every message sent in it
    /// once per member.
    fn room_expected(&self) -> Vec<u64> {
        let mut sent = vec![0; self.rooms.count()];
        for (sender, count) in self.sent.iter().enumerate() {
            sent[self.rooms.of_client(sender)] += count;
        }
        sent.iter()
            .zip(&self.room_members)
            .map(|(sent, members)| sent * members)
            .collect()
    }

    fn expected(&self) -> u64 {
        self.room_expected().iter().sum()
    }
}

/// What connecting a batch of clients gave.
#[derive(Debug, Default)]
pub struct ConnectReport {
    pub opened: usize,
    pub failures: BTreeMap<String, u64>,
    pub elapsed: Duration,
    /// From the first SYN to the `welcome`, in microseconds.
    pub handshake: Histogram,
}

/// What one phase measured.
#[derive(Debug, Clone)]
pub struct PhaseReport {
    /// How the senders were paced: the rate asked of them, or a closed loop.
    pub pacing: Pacing,
    pub members: usize,
    pub sent: u64,
    pub deliveries: u64,
    /// Bytes on the wire of those deliveries, frame headers included.
    pub wire_bytes: u64,
    /// Copies owed and not delivered, counted room by room.
    pub lost: u64,
    pub duplicates: u64,
    pub late: u64,
    pub errors: u64,
    /// Copies from, or labelled with, another room than the receiver's.
    pub other_room: u64,
    pub rooms: usize,
    /// Rooms in which some member missed a copy.
    pub rooms_with_loss: usize,
    /// From the first send to the last delivery (at least the send period).
    pub window: Duration,
    /// Per client group, microseconds from write to arrival.
    pub latency: Vec<Histogram>,
    /// Connections that ended during the phase, by how.
    pub ends: BTreeMap<String, u64>,
    /// chatd's CPU time in the phase, when its pid is known.
    pub server_cpu_s: Option<f64>,
    /// This tool's CPU time in the phase: near `window` means the tool, not
    /// the server, may be the limit.
    pub tool_cpu_s: f64,
}

impl PhaseReport {
    pub fn deliveries_per_s(&self) -> f64 {
        self.deliveries as f64 / self.window.as_secs_f64().max(1e-9)
    }

    /// Bytes on the wire per delivery, frame header included.
    pub fn bytes_per_delivery(&self) -> f64 {
        self.wire_bytes as f64 / (self.deliveries as f64).max(1.0)
    }

    /// Messages the senders wrote per second over the same window as
    /// `deliveries_per_s`, so one divided by the other is the fan-out when
    /// nothing is lost; what a closed loop achieved.
    pub fn broadcasts_per_s(&self) -> f64 {
        self.sent as f64 / self.window.as_secs_f64().max(1e-9)
    }

    /// Every group together.
    pub fn all_latency(&self) -> Histogram {
        let mut all = Histogram::default();
        for group in &self.latency {
            all.merge(group);
        }
        all
    }

    /// chatd's core-seconds per million deliveries.
    pub fn cpu_per_million(&self) -> Option<f64> {
        let cpu = self.server_cpu_s?;
        (self.deliveries > 0).then(|| cpu / (self.deliveries as f64 / 1e6))
    }

    pub fn tool_busy(&self) -> f64 {
        self.tool_cpu_s / self.window.as_secs_f64().max(1e-9)
    }
}

/// Clients connected to one or more servers, and the phases they run.
pub struct Fleet {
    state: Rc<RefCell<State>>,
    server_pid: Option<u32>,
}

impl Fleet {
    /// A fleet whose first `senders` clients send, split into `rooms`;
    /// `groups` sets apart clients whose latency is reported separately
    /// (local and remote in `cross`).
    pub fn new(senders: usize, rooms: Rooms, groups: usize, server_pid: Option<u32>) -> Self {
        let state = State {
            epoch: Instant::now(),
            senders,
            rooms,
            phase: 0,
            plan: None,
            phase_begun: Rc::new(Notify::new()),
            clients: Vec::new(),
            sent: vec![0; senders],
            awaiting: vec![None; senders],
            latency: vec![Histogram::default(); groups],
            deliveries: vec![0; groups],
            room_members: vec![0; rooms.count()],
            room_deliveries: vec![0; rooms.count()],
            duplicates: 0,
            late: 0,
            errors: 0,
            other_room: 0,
            last_delivery: None,
            ends: BTreeMap::new(),
            text: Vec::new(),
            wire_bytes: 0,
            inflated: HashMap::new(),
        };
        Self {
            state: Rc::new(RefCell::new(state)),
            server_pid,
        }
    }

    pub fn alive(&self) -> usize {
        self.state
            .borrow()
            .clients
            .iter()
            .filter(|c| c.alive)
            .count()
    }

    /// Opens `count` more clients of `group` to `server`, `in_flight` at a
    /// time, each given up after `timeout`. Must run inside a `LocalSet`.
    pub async fn connect(
        &self,
        server: SocketAddr,
        count: usize,
        group: usize,
        in_flight: usize,
        timeout: Duration,
    ) -> ConnectReport {
        let (first, rooms) = {
            let mut state = self.state.borrow_mut();
            let first = state.clients.len();
            let (senders, rooms) = (state.senders, state.rooms);
            state.clients.extend((first..first + count).map(|index| {
                let room = rooms.of_client(index);
                Client {
                    group,
                    room,
                    alive: false,
                    member: false,
                    tracks: vec![SeqTrack::default(); rooms.senders_in(room, senders)],
                }
            }));
            (first, rooms)
        };
        let next = Rc::new(Cell::new(first));
        let end = first + count;
        let report = Rc::new(RefCell::new(ConnectReport::default()));
        let started = Instant::now();
        let workers: Vec<_> = (0..in_flight.clamp(1, count.max(1)))
            .map(|_| {
                let (next, report, state) = (next.clone(), report.clone(), self.state.clone());
                tokio::task::spawn_local(async move {
                    loop {
                        let index = next.get();
                        if index >= end {
                            break;
                        }
                        next.set(index + 1);
                        let began = Instant::now();
                        let source = conn::source_address(index);
                        let path = with_token(rooms.ws_path(rooms.of_client(index)));
                        let opened =
                            tokio::time::timeout(timeout, conn::open(server, &path, source))
                                .await
                                .unwrap_or_else(|_| Err("timed out".into()));
                        let mut report = report.borrow_mut();
                        match opened {
                            Ok(opened) => {
                                report.opened += 1;
                                report.handshake.record(began.elapsed().as_micros() as u64);
                                let sender = index < state.borrow().senders;
                                state.borrow_mut().clients[index].alive = true;
                                tokio::task::spawn_local(conn::drive(
                                    opened,
                                    index,
                                    sender,
                                    state.clone(),
                                ));
                            }
                            Err(kind) => *report.failures.entry(kind).or_default() += 1,
                        }
                    }
                })
            })
            .collect();
        for worker in workers {
            let _ = worker.await;
        }
        let mut report = report.take();
        report.elapsed = started.elapsed();
        report
    }

    /// Sends as `pacing` says for `duration`, then waits up to `drain` for
    /// every owed copy to arrive, and reports what did. Sending stops at
    /// `duration` whatever is in flight, so a sender whose echo never comes
    /// stalls only itself, and the phase lasts at most `duration + drain`.
    pub async fn run_phase(
        &self,
        pacing: Pacing,
        duration: Duration,
        pad: usize,
        drain: Duration,
    ) -> PhaseReport {
        let cpu_before = self.server_cpu();
        let tool_before = tool_cpu();
        let start = Instant::now() + Duration::from_millis(10);
        let plan = Plan {
            start,
            end: start + duration,
            pacing,
            pad,
        };
        self.state.borrow_mut().begin_phase(plan);
        tokio::time::sleep_until((plan.end + Duration::from_millis(5)).into()).await;
        let give_up = Instant::now() + drain;
        loop {
            let owed = {
                let state = self.state.borrow();
                state.expected().saturating_sub(state.unique_deliveries())
            };
            if owed == 0 || Instant::now() >= give_up {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut report = self.state.borrow_mut().finish_phase();
        report.server_cpu_s = cpu_before.zip(self.server_cpu()).map(|(a, b)| b - a);
        report.tool_cpu_s = tool_cpu() - tool_before;
        report
    }

    fn server_cpu(&self) -> Option<f64> {
        self.server_pid
            .and_then(|pid| crate::procfs::cpu_seconds(pid).ok())
    }
}

/// How many more messages a sender may write `elapsed` into a send period
/// of `period`, having written `sent`, with its latest still unconfirmed or
/// not; `sender` is `(index, senders)`.
///
/// A closed loop writes one message when nothing of its own is in flight
/// and the period is not over: never two at once, so the server is never
/// asked for more than one broadcast per sender at a time.
fn messages_owed(
    pacing: Pacing,
    elapsed: Duration,
    period: Duration,
    unconfirmed: bool,
    sent: u64,
    (index, senders): (usize, usize),
) -> u64 {
    match pacing {
        Pacing::Rate(rate) => {
            let per_sender = rate / senders.max(1) as f64;
            messages_due(elapsed.min(period), per_sender, index, senders).saturating_sub(sent)
        }
        Pacing::Echo => u64::from(elapsed < period && !unconfirmed),
    }
}

/// How long after the start of a send period of `period` the next message
/// of a sender (having written `sent`, its latest unconfirmed or not) is
/// due, `elapsed` into it; `None` when the clock will not make one due.
///
/// An open loop's next slot is a microsecond past the k-th due time of
/// [`messages_due`], and only a slot that [`messages_owed`] will agree is due
/// is given, so a sender never wakes to find nothing owed and spins. A
/// closed loop's first message is due at the start; each later one is
/// written when the echo of the last arrives, not by the clock.
fn next_slot(
    pacing: Pacing,
    elapsed: Duration,
    period: Duration,
    unconfirmed: bool,
    sent: u64,
    (index, senders): (usize, usize),
) -> Option<Duration> {
    match pacing {
        Pacing::Rate(rate) => {
            let per_sender = rate / senders.max(1) as f64;
            let offset = (index + 1) as f64 / senders.max(1) as f64;
            let due = Duration::try_from_secs_f64((sent as f64 + offset) / per_sender).ok()?;
            let slot = due + Duration::from_micros(1);
            (messages_due(slot.min(period), per_sender, index, senders) > sent).then_some(slot)
        }
        Pacing::Echo => (sent == 0 && !unconfirmed && elapsed < period).then_some(Duration::ZERO),
    }
}

/// How many messages sender `sender` of `senders` owes after `elapsed`.
///
/// Its k-th message is due at `(k + (sender + 1) / senders) / per_sender`:
/// each sender is offset by its share of the interval, so together they send
/// one message every `1 / rate` seconds rather than all at once, which would
/// queue a burst of broadcasts at the server and inflate every latency.
fn messages_due(elapsed: Duration, per_sender: f64, sender: usize, senders: usize) -> u64 {
    let offset = (sender + 1) as f64 / senders.max(1) as f64;
    let owed = elapsed.as_secs_f64() * per_sender - offset;
    if owed < 0.0 {
        0
    } else {
        owed as u64 + 1
    }
}

fn tool_cpu() -> f64 {
    crate::procfs::cpu_seconds(std::process::id()).unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server text frame carrying `event`.
    fn text_frame(event: &str) -> Vec<u8> {
        assert!(event.len() < 126);
        let mut frame = vec![0x81, event.len() as u8];
        frame.extend_from_slice(event.as_bytes());
        frame
    }

    /// The `echo` of `sender`'s message `seq` in phase 1, labelled `room`.
    fn echo(room: &str, sender: u32, seq: u64) -> Vec<u8> {
        text_frame(&format!(
            r#"{{"type":"echo","id":"1","room":"{room}","message":"B1 {sender} {seq} 0","ts":1}}"#
        ))
    }

    #[test]
    fn copies_are_owed_room_by_room_and_other_rooms_copies_are_errors() {
        // Four clients in two rooms: 0 and 2 in r-0, 1 and 3 in r-1; client
        // 0 sends in r-0 and client 1 in r-1.
        let fleet = Fleet::new(2, Rooms::Named(2), 1, None);
        let mut state = fleet.state.borrow_mut();
        for index in 0..4 {
            let room = state.rooms.of_client(index);
            state.clients.push(Client {
                group: 0,
                room,
                alive: true,
                member: false,
                tracks: vec![SeqTrack::default(); 1],
            });
        }
        let start = Instant::now();
        let period = Duration::from_secs(1);
        state.begin_phase(Plan {
            start,
            end: start + period,
            pacing: Pacing::Rate(2.0),
            pad: 0,
        });
        // Each sender's one message of the period (due at 0.5 s and 1 s).
        let mut out = Vec::new();
        state.write_due(0, start + period, &mut out);
        state.write_due(1, start + period, &mut out);
        assert_eq!(state.sent, [1, 1]);
        let last = String::from_utf8_lossy(&state.text).into_owned();
        assert!(
            last.starts_with(r#"{"type":"message","room":"r-1","message":"B1 1 0 "#),
            "{last}"
        );
        out.clear();
        let arrivals: [(usize, Vec<u8>); 6] = [
            (0, echo("r-0", 0, 0)),
            (2, echo("r-0", 0, 0)),
            (2, echo("r-0", 0, 0)), // twice
            (1, echo("r-1", 1, 0)),
            (3, echo("r-0", 0, 0)), // r-0's message in r-1
            (3, echo("r-0", 1, 0)), // r-1's message labelled r-0
        ];
        for (client, frame) in arrivals {
            let used = state.absorb(client, &frame, start + period, &mut out);
            assert_eq!(used.ok(), Some(frame.len()));
        }

        let report = state.finish_phase();

        assert_eq!(report.sent, 2);
        assert_eq!(report.deliveries, 3);
        assert_eq!(report.duplicates, 1);
        assert_eq!(report.other_room, 2);
        assert_eq!(report.lost, 1, "client 3 never got r-1's message");
        assert_eq!((report.rooms, report.rooms_with_loss), (2, 1));
    }

    #[test]
    fn senders_take_turns_and_each_sends_its_share() {
        let second = Duration::from_secs(1);
        // Two senders at 10/s each: 0.05, 0.15, … and 0.1, 0.2, …, 1.0.
        assert_eq!(messages_due(second, 10.0, 0, 2), 10);
        assert_eq!(messages_due(second, 10.0, 1, 2), 10);
        let at = |ms| Duration::from_millis(ms);
        assert_eq!(messages_due(at(40), 10.0, 0, 2), 0);
        assert_eq!(messages_due(at(50), 10.0, 0, 2), 1);
        assert_eq!(messages_due(at(99), 10.0, 1, 2), 0);
        assert_eq!(messages_due(at(100), 10.0, 1, 2), 1);
        // Ten senders at 100/s in all: one message every 10 ms.
        let sent_by = |ms| {
            (0..10)
                .map(|s| messages_due(at(ms), 10.0, s, 10))
                .sum::<u64>()
        };
        assert_eq!(sent_by(9), 0);
        assert_eq!(sent_by(10), 1);
        assert_eq!(sent_by(55), 5);
        assert_eq!(sent_by(3000), 300);
    }

    #[test]
    fn a_closed_loop_sends_one_message_at_a_time_until_the_period_ends() {
        let at = Duration::from_millis;
        let period = at(2000);
        let owed = |elapsed, unconfirmed, sent| {
            messages_owed(Pacing::Echo, elapsed, period, unconfirmed, sent, (1, 4))
        };
        assert_eq!(owed(at(0), false, 0), 1, "the first message goes at once");
        assert_eq!(owed(at(0), true, 1), 0, "then waits for its echo");
        assert_eq!(owed(at(1500), true, 40), 0, "however long that takes");
        assert_eq!(owed(at(1500), false, 40), 1, "the echo lets the next go");
        assert_eq!(owed(at(2000), false, 41), 0, "none once the period is over");
        assert_eq!(owed(at(9000), false, 41), 0);
    }

    #[test]
    fn a_sender_wakes_exactly_when_its_next_message_is_due() {
        let at = Duration::from_millis;
        let period = at(1000);
        for (rate, senders) in [(40.0, 2), (100_000.0, 1000), (3.0, 7), (1e6, 3)] {
            for index in [0, senders / 2, senders - 1] {
                let slot = |sent| {
                    next_slot(
                        Pacing::Rate(rate),
                        at(0),
                        period,
                        true,
                        sent,
                        (index, senders),
                    )
                };
                let owed = |elapsed, sent| {
                    messages_owed(
                        Pacing::Rate(rate),
                        elapsed,
                        period,
                        true,
                        sent,
                        (index, senders),
                    )
                };
                let mut sent = 0;
                while let Some(due) = slot(sent) {
                    assert!(due <= period + at(1), "{rate} {index}: {due:?}");
                    assert_eq!(owed(due, sent), 1, "{rate} {index} #{sent} at {due:?}");
                    let before = due - Duration::from_micros(2);
                    assert_eq!(owed(before, sent), 0, "{rate} {index} #{sent} early");
                    sent += 1;
                }
                assert_eq!(sent, owed(period, 0), "{rate} {index}: all, then none");
            }
        }
        assert_eq!(
            next_slot(Pacing::Rate(0.0), at(0), period, false, 0, (0, 1)),
            None
        );
    }

    #[test]
    fn a_closed_loop_is_woken_by_the_clock_only_for_its_first_message() {
        let at = Duration::from_millis;
        let slot = |elapsed, unconfirmed, sent| {
            next_slot(Pacing::Echo, elapsed, at(2000), unconfirmed, sent, (0, 4))
        };
        assert_eq!(slot(at(0), false, 0), Some(Duration::ZERO));
        assert_eq!(slot(at(5), true, 1), None);
        assert_eq!(slot(at(5), false, 1), None, "its echo sends the next");
        assert_eq!(
            slot(at(2000), false, 0),
            None,
            "not once the period is over"
        );
    }

    #[test]
    fn an_open_loop_owes_what_its_schedule_says_whatever_is_in_flight() {
        let at = Duration::from_millis;
        let owed = |elapsed, sent| {
            messages_owed(Pacing::Rate(40.0), elapsed, at(1000), true, sent, (0, 2))
        };
        // 20/s per sender, the first at 25 ms: five due by 225 ms.
        assert_eq!(owed(at(225), 0), 5);
        assert_eq!(owed(at(225), 3), 2);
        assert_eq!(owed(at(225), 5), 0);
        assert_eq!(owed(at(5000), 0), 20, "nothing is owed past the period");
    }
}

thread_local! {
    /// A token every connection of this thread presents (`?token=`), for a
    /// chatd that requires one; see [`present_token`].
    static TOKEN: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// From now on this thread's connections present `token` (or none).
pub fn present_token(token: Option<String>) {
    TOKEN.with(|t| *t.borrow_mut() = token);
}

/// `path` with the token, if one is to be presented.
fn with_token(path: String) -> String {
    TOKEN.with(|t| match t.borrow().as_deref() {
        None => path,
        Some(token) => {
            let sep = if path.contains('?') { '&' } else { '?' };
            format!("{path}{sep}token={token}")
        }
    })
}
