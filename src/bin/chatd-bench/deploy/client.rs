//! One deploy client: it chats in `general` on one of the chatd processes,
//! and when that process goes away it moves to another and resumes where it
//! was, as a careful real client would.
//!
//! - On `shutdown_notice` it keeps chatting on the draining process for the
//!   `retry_after_ms` it was given, then closes (waiting up to
//!   [`CLOSE_WAIT`] for the server's close, so that nothing it wrote is cut
//!   off by a reset) and connects at once to a random other process.
//! - On a dropped connection (a killed process, a force-close) it waits a
//!   [`backoff`] (0.5 s doubling, jittered, capped at [`BACKOFF_CAP`]) and
//!   tries a random other process; each failed attempt doubles the wait.
//! - Every reconnect asks `/ws?since=general:N:E` with the offset up to which
//!   it saw every event ([`Resume`]), and counts the `joined` it gets back.
//! - It writes on a fixed schedule (its share of the rate) while connected;
//!   a slot that falls due while it is away is skipped, not sent late.

use std::cell::RefCell;
use std::io::ErrorKind;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::clients::{Shared, Stage};
use super::ledger::{backoff, Bits, Copy, Fit, Resume};
use crate::conn::{self, Opened};
use crate::stats::Tag;
use crate::wire;

/// The room every deploy client chats in.
pub const ROOM: &str = "general";

/// The longest wait for the server's close frame after ours.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// The longest wait between reconnect attempts.
pub const BACKOFF_CAP: Duration = Duration::from_secs(4);

/// The longest handshake.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Every event a deploy client reads, with only the fields it uses; the
/// strings borrow from the frame (the ones it reads have no escapes).
#[derive(Deserialize)]
struct Event<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    room: Option<&'a str>,
    id: Option<&'a str>,
    offset: Option<u64>,
    message: Option<&'a str>,
    retry_after_ms: Option<u64>,
}

#[derive(Deserialize)]
struct Welcome<'a> {
    #[serde(borrow)]
    rooms: Vec<Joined<'a>>,
}

#[derive(Deserialize)]
struct Joined<'a> {
    room: &'a str,
    epoch: &'a str,
    offset: u64,
    recovered: Option<bool>,
    #[serde(borrow)]
    history: Vec<Event<'a>>,
}

/// Why a connection ended.
enum Left {
    /// After a `shutdown_notice`, by the client's own close.
    Moved,
    /// The server closed it or it broke, by this description.
    Dropped(String),
    /// The run is over.
    Done,
}

/// A deploy client across all its connections.
pub struct Roamer {
    index: usize,
    resume: Resume,
    rng: fastrand::Rng,
    /// Which process it is on, or tries next.
    server: usize,
    /// Its next send slot.
    slot: u64,
    /// The offset of this connection's `joined`, and the offsets it has
    /// had live: what a live repeat is checked against.
    joined_at: u64,
    live_here: Bits,
    history_here: Bits,
    /// The `since` this connection asked for.
    since_asked: Option<String>,
    shared: Rc<RefCell<Shared>>,
    stage: watch::Receiver<Stage>,
}

impl Roamer {
    pub fn new(
        index: usize,
        server: usize,
        shared: Rc<RefCell<Shared>>,
        stage: watch::Receiver<Stage>,
    ) -> Self {
        Self {
            index,
            resume: Resume::default(),
            rng: fastrand::Rng::with_seed(index as u64),
            server,
            slot: 0,
            joined_at: 0,
            live_here: Bits::default(),
            history_here: Bits::default(),
            since_asked: None,
            shared,
            stage,
        }
    }

    /// Connects, and reconnects, until the run is over.
    pub async fn run(mut self) {
        let mut failures = 0u32;
        let mut wait = Duration::ZERO;
        loop {
            if !wait.is_zero() {
                let mut stage = self.stage.clone();
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = done(&mut stage) => return,
                }
            }
            if *self.stage.borrow() == Stage::Done {
                return;
            }
            let addr = self.shared.borrow().servers[self.server];
            self.since_asked = self.resume.since(ROOM);
            let opened = tokio::time::timeout(
                OPEN_TIMEOUT,
                conn::open(addr, &self.path(), conn::source_address(self.index)),
            )
            .await
            .unwrap_or_else(|_| Err("timed out".into()));
            let opened = match opened {
                Ok(opened) => opened,
                Err(kind) => {
                    self.shared.borrow_mut().tally.failed(&kind);
                    wait = backoff(failures, BACKOFF_CAP, self.rng.f64());
                    failures += 1;
                    self.server = self.pick_other();
                    continue;
                }
            };
            failures = 0;
            self.shared.borrow_mut().connected += 1;
            let left = self.connection(opened).await;
            let mut shared = self.shared.borrow_mut();
            shared.connected -= 1;
            let gap = self.resume.unseen_below_highest();
            if gap > 0 && !matches!(left, Left::Done) {
                shared.tally.leaves_with_gap += 1;
                shared.tally.gap_events += gap;
            }
            match left {
                Left::Done => return,
                Left::Moved => {
                    shared.tally.reconnects_after_notice += 1;
                    wait = Duration::ZERO;
                }
                Left::Dropped(kind) => {
                    shared.tally.ended(&kind);
                    shared.tally.reconnects_after_drop += 1;
                    wait = backoff(0, BACKOFF_CAP, self.rng.f64());
                    failures = 1;
                }
            }
            drop(shared);
            self.server = self.pick_other();
        }
    }

    /// `/ws` with its name and, once it has an epoch, `since`.
    fn path(&self) -> String {
        match &self.since_asked {
            Some(since) => format!("/ws?name=c{}&since={since}", self.index),
            None => format!("/ws?name=c{}&room={ROOM}", self.index),
        }
    }

    /// A random process other than the current one.
    fn pick_other(&mut self) -> usize {
        let count = self.shared.borrow().servers.len();
        if count < 2 {
            return 0;
        }
        (self.server + 1 + self.rng.usize(..count - 1)) % count
    }

    /// Runs one open connection until it ends.
    async fn connection(&mut self, opened: Opened) -> Left {
        let Opened {
            stream,
            welcome,
            leftover: mut pending,
        } = opened;
        if let Err(why) = self.welcome(&welcome) {
            return Left::Dropped(why);
        }
        let mut out = Vec::new();
        let mut move_at = None;
        let mut closing: Option<Instant> = None;
        self.skip_missed_slots();
        let mut stage = self.stage.clone();
        stage.borrow_and_update();
        if let Err(left) = self.absorb(&mut pending, &mut out, &mut move_at) {
            return left;
        }
        loop {
            let due = match closing {
                None => self.due(),
                Some(_) => None,
            };
            let result = tokio::select! {
                ready = stream.readable() => match ready {
                    Ok(()) => self.read(&stream, &mut pending, &mut out, &mut move_at),
                    Err(err) => Err(Left::Dropped(format!("read: {err}"))),
                },
                ready = stream.writable(), if !out.is_empty() => match ready {
                    Ok(()) => flush(&stream, &mut out),
                    Err(err) => Err(Left::Dropped(format!("write: {err}"))),
                },
                () = sleep_until(due), if due.is_some() => {
                    self.write_message(&mut out);
                    flush(&stream, &mut out)
                }
                () = sleep_until(move_at), if move_at.is_some() && closing.is_none() => {
                    wire::encode(&mut out, wire::OP_CLOSE, &1000u16.to_be_bytes());
                    closing = Some(Instant::now() + CLOSE_WAIT);
                    flush(&stream, &mut out)
                }
                () = sleep_until(closing), if closing.is_some() => Err(Left::Moved),
                // Chatting starts or stops (the loop looks at `due` again), or
                // the run is over.
                changed = stage.changed() => {
                    if changed.is_ok() && *stage.borrow_and_update() != Stage::Done {
                        Ok(())
                    } else {
                        wire::encode(&mut out, wire::OP_CLOSE, &1000u16.to_be_bytes());
                        let _ = flush(&stream, &mut out);
                        Err(Left::Done)
                    }
                }
            };
            if let Err(left) = result {
                return match (left, closing) {
                    // Our close answered, or the socket shut after it.
                    (Left::Dropped(_), Some(_)) => Left::Moved,
                    (left, _) => left,
                };
            }
        }
    }

    /// Takes in the `welcome`: the `joined` of `general` and its history.
    fn welcome(&mut self, welcome: &[u8]) -> Result<(), String> {
        let welcome: Welcome =
            serde_json::from_slice(welcome).map_err(|err| format!("bad welcome: {err}"))?;
        let joined = welcome
            .rooms
            .iter()
            .find(|joined| joined.room == ROOM)
            .ok_or("the welcome has no joined for general")?;
        self.resume
            .joined(joined.epoch, joined.offset, joined.recovered);
        self.joined_at = joined.offset;
        self.live_here = Bits::default();
        self.history_here = Bits::default();
        let now = Instant::now();
        let shared = self.shared.clone();
        let mut shared = shared.borrow_mut();
        shared
            .tally
            .joined(joined.recovered, joined.epoch.is_empty());
        for event in &joined.history {
            self.event(&mut shared, event, now, true);
        }
        if joined.recovered == Some(true) && !self.resume.has_all_through(joined.offset) {
            shared.tally.short_recoveries += 1;
        }
        Ok(())
    }

    /// Why a live copy repeated an `id` this client had: the event stored
    /// twice (another offset), or one the join's history already held, or
    /// sent twice on this connection, or one an earlier connection got.
    fn repeat(&self, moved: bool, offset: Option<u64>) -> &'static str {
        match offset {
            _ if moved => "stored twice",
            Some(offset) if self.history_here.contains(offset as u32) => "in the join's history",
            Some(offset) if offset <= self.joined_at => "at or below the joined offset",
            Some(offset) if self.live_here.contains(offset as u32) => "twice on one connection",
            _ => "got on an earlier connection",
        }
    }

    /// Counts one event, live or from a history.
    fn event(&mut self, shared: &mut Shared, event: &Event, now: Instant, history: bool) {
        if event.room != Some(ROOM) {
            return;
        }
        if let Some(offset) = event.offset {
            match (self.resume.saw(offset), history) {
                (Fit::Early, false) => shared.tally.early += 1,
                (Fit::Early, true) => shared.tally.history_gaps += 1,
                _ => {}
            }
        }
        if event.kind != "echo" {
            return;
        }
        let (Some(id), Some(tag)) = (event.id, event.message.and_then(Tag::parse)) else {
            shared.tally.foreign += 1;
            return;
        };
        let copy = shared.ledger.arrive(self.index, tag.seq, id, event.offset);
        if let (Copy::SameId { moved }, false) = (copy, history) {
            let why = self.repeat(moved, event.offset);
            *shared.tally.repeats.entry(why).or_default() += 1;
            if shared.tally.repeat_examples.len() < 3 {
                let example = format!(
                    "client {} got {id} (offset {:?}) live again, {why}; since {:?}, joined at offset {}",
                    self.index, event.offset, self.since_asked, self.joined_at
                );
                shared.tally.repeat_examples.push(example);
            }
        }
        match (event.offset, history) {
            (Some(offset), false) => self.live_here.insert(offset as u32),
            (Some(offset), true) => self.history_here.insert(offset as u32),
            (None, _) => false,
        };
        shared.count(copy, now, history);
    }

    /// Reads what the socket has and takes in every whole frame.
    fn read(
        &mut self,
        stream: &TcpStream,
        pending: &mut Vec<u8>,
        out: &mut Vec<u8>,
        move_at: &mut Option<Instant>,
    ) -> Result<(), Left> {
        for _ in 0..8 {
            pending.reserve(16 * 1024);
            match stream.try_read_buf(pending) {
                Ok(0) => return Err(Left::Dropped("closed without a close frame".into())),
                Ok(_) => {}
                Err(err) if err.kind() == ErrorKind::WouldBlock => break,
                Err(err) => return Err(Left::Dropped(format!("read: {err}"))),
            }
        }
        self.absorb(pending, out, move_at)?;
        if pending.is_empty() && pending.capacity() > 1 << 20 {
            *pending = Vec::new();
        }
        flush(stream, out)
    }

    /// Takes in every whole frame at the start of `pending`.
    fn absorb(
        &mut self,
        pending: &mut Vec<u8>,
        out: &mut Vec<u8>,
        move_at: &mut Option<Instant>,
    ) -> Result<(), Left> {
        let now = Instant::now();
        let mut at = 0;
        let shared = self.shared.clone();
        let mut shared = shared.borrow_mut();
        let result = loop {
            let (frame, used) = match wire::parse_frame(&pending[at..]) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => break Ok(()),
                Err(err) => break Err(Left::Dropped(err.to_string())),
            };
            at += used;
            match frame.opcode {
                wire::OP_TEXT if frame.fin => {
                    let message = match frame.message() {
                        Ok(message) => message,
                        Err(err) => break Err(Left::Dropped(err.to_string())),
                    };
                    let Ok(event) = serde_json::from_slice::<Event>(&message) else {
                        shared.tally.foreign += 1;
                        continue;
                    };
                    match event.kind {
                        "shutdown_notice" => {
                            shared.tally.notices += 1;
                            let retry = Duration::from_millis(event.retry_after_ms.unwrap_or(0));
                            move_at.get_or_insert(now + retry);
                        }
                        "error" => shared.tally.errors += 1,
                        _ => self.event(&mut shared, &event, now, false),
                    }
                }
                wire::OP_PING => wire::encode(out, wire::OP_PONG, frame.payload),
                wire::OP_CLOSE => {
                    break Err(Left::Dropped(format!(
                        "closed {}",
                        wire::close_code(frame.payload)
                    )))
                }
                wire::OP_TEXT | wire::OP_CONTINUATION => {
                    break Err(Left::Dropped("fragmented message".into()))
                }
                _ => {}
            }
        };
        pending.drain(..at);
        result
    }

    /// When its next message is due, while the fleet is chatting.
    fn due(&self) -> Option<Instant> {
        if *self.stage.borrow() != Stage::Chatting {
            return None;
        }
        self.shared.borrow().slot_time(self.index, self.slot)
    }

    /// Skips the slots that fell due while it was away.
    fn skip_missed_slots(&mut self) {
        let now = Instant::now();
        let mut shared = self.shared.borrow_mut();
        while shared
            .slot_time(self.index, self.slot)
            .is_some_and(|at| at < now)
        {
            self.slot += 1;
            shared.tally.skipped += 1;
        }
    }

    /// Writes the message of its current slot, unless sending has stopped
    /// since the slot was looked up.
    fn write_message(&mut self, out: &mut Vec<u8>) {
        if *self.stage.borrow() != Stage::Chatting {
            return;
        }
        let mut shared = self.shared.borrow_mut();
        let sent_us = shared.micros(Instant::now());
        let n = shared.ledger.write(self.index, sent_us);
        let tag = Tag {
            phase: 1,
            sender: self.index as u32,
            seq: u64::from(n),
            sent_us,
        };
        let mut text =
            format!("{{\"type\":\"message\",\"room\":\"{ROOM}\",\"message\":\"").into_bytes();
        tag.write_text(&mut text, 0);
        text.extend_from_slice(b"\"}");
        wire::encode(out, wire::OP_TEXT, &text);
        self.slot += 1;
    }
}

/// Returns once the run is over (or its controller gone).
async fn done(stage: &mut watch::Receiver<Stage>) {
    while *stage.borrow_and_update() != Stage::Done {
        if stage.changed().await.is_err() {
            return;
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Writes what the socket takes now; the rest waits for `writable`.
fn flush(stream: &TcpStream, out: &mut Vec<u8>) -> Result<(), Left> {
    while !out.is_empty() {
        match stream.try_write(out) {
            Ok(n) => {
                out.drain(..n);
            }
            Err(err) if err.kind() == ErrorKind::WouldBlock => break,
            Err(err) => return Err(Left::Dropped(format!("write: {err}"))),
        }
    }
    Ok(())
}
