//! Room history: the last events of each room, numbered, so a client that
//! was away can be given exactly what it missed.
//!
//! Every stored event (a chat message or a room notice) gets the next
//! `offset` of its room: 1, 2, 3, ... with no gaps. A room's [`Epoch`] names
//! the history those offsets belong to; it changes whenever that history was
//! lost (a restart without Redis, an expired or flushed stream), so a client
//! never mistakes a new offset 7 for the old one. A client that says
//! [`Since`] (the last offset it saw, and its epoch) gets exactly the events
//! after it when they are all still held ([`recovery`]), else the latest.
//!
//! This file holds the rules and the in-memory store used without Redis
//! ([`MemoryHistory`]); with Redis the same rules run against a stream per
//! room (`redis::history`). The store keeps each event as the encoded
//! [`EventText`] that went to the live members: one copy, shared by reference
//! count with every replay.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::config::HistorySettings;
use crate::protocol::{EventText, RoomName};

/// The name of one room's numbering: short, letters and digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Epoch(String);

impl Epoch {
    /// The length of a generated epoch.
    pub const LEN: usize = 8;

    /// A fresh epoch, unlike any before it (with overwhelming odds).
    pub fn generate() -> Self {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let epoch = (0..Self::LEN)
            .map(|_| char::from(ALPHABET[fastrand::usize(..ALPHABET.len())]))
            .collect();
        Self(epoch)
    }

    /// An epoch read back from Redis.
    pub fn from_stored(epoch: String) -> Self {
        Self(epoch)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a resuming client says it has seen of a room: everything up to
/// `offset` of `epoch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Since {
    pub offset: u64,
    pub epoch: String,
}

/// Why a `since` was refused; the text goes back in an `error` event with
/// the code `bad_since` (or a 400 for `/ws?since=`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinceError {
    #[error("\"since\" must be an object {{\"offset\":N,\"epoch\":\"...\"}}")]
    NotAnObject,
    #[error("\"since.offset\" must be a whole number, 0 or more")]
    BadOffset,
    #[error("\"since.epoch\" must be a string of letters and digits")]
    BadEpoch,
    #[error("since must be ROOM:OFFSET:EPOCH, such as general:41:k3x9q2vd")]
    BadQuery,
}

impl Since {
    /// Reads the `since` of a `join` message.
    ///
    /// # Errors
    /// [`SinceError`] says which part is malformed.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, SinceError> {
        let serde_json::Value::Object(fields) = value else {
            return Err(SinceError::NotAnObject);
        };
        let offset = fields
            .get("offset")
            .and_then(serde_json::Value::as_u64)
            .ok_or(SinceError::BadOffset)?;
        let epoch = fields
            .get("epoch")
            .and_then(serde_json::Value::as_str)
            .ok_or(SinceError::BadEpoch)?;
        Self::new(offset, epoch)
    }

    /// Reads one `/ws?since=ROOM:OFFSET:EPOCH` (room names may hold `:`, so
    /// it is split from the right).
    ///
    /// # Errors
    /// [`SinceError`] when it is not of that form; the room's own error is
    /// the caller's to check.
    pub fn from_query(raw: &str) -> Result<(String, Self), SinceError> {
        let mut parts = raw.rsplitn(3, ':');
        let (Some(epoch), Some(offset), Some(room)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(SinceError::BadQuery);
        };
        let offset = offset.parse().map_err(|_| SinceError::BadQuery)?;
        Ok((room.to_string(), Self::new(offset, epoch)?))
    }

    fn new(offset: u64, epoch: &str) -> Result<Self, SinceError> {
        let valid =
            (1..=32).contains(&epoch.len()) && epoch.bytes().all(|b| b.is_ascii_alphanumeric());
        if !valid {
            return Err(SinceError::BadEpoch);
        }
        Ok(Self {
            offset,
            epoch: epoch.to_string(),
        })
    }
}

/// Whether a `since` can be served from what is held: the same epoch, and
/// every event after its offset still there. `top` is the room's last
/// offset, `first_held` the offset of its oldest held event (`top + 1` when
/// none is held). An offset above the top cannot be from this epoch's
/// history, so it is not recovered either.
pub fn recovery(since: &Since, epoch: &Epoch, top: u64, first_held: u64) -> bool {
    since.epoch == epoch.as_str() && since.offset <= top && since.offset + 1 >= first_held
}

/// What a join replays to the joining client.
#[derive(Debug, Clone)]
pub struct Replay {
    pub epoch: Epoch,
    /// The room's last offset when the replay was read.
    pub offset: u64,
    /// `Some` when the client asked to resume: whether it was.
    pub recovered: Option<bool>,
    /// Oldest first.
    pub events: Vec<(u64, EventText)>,
}

/// Which part of a room's history `GET /rooms/{R}/history` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// The events after this offset, oldest first.
    After(u64),
    /// The latest events before this offset, oldest first.
    Before(u64),
    /// The latest events.
    Latest,
}

/// One room's held events, in memory.
#[derive(Debug)]
pub struct RoomHistory {
    epoch: Epoch,
    top: u64,
    events: VecDeque<(u64, EventText)>,
    bytes: usize,
    last_event: Instant,
}

/// What an empty history costs, counted against the memory cap so that
/// rooms asked about but never used are bounded too.
const ROOM_OVERHEAD: usize = 256;
/// What one held event costs beyond its bytes.
const EVENT_OVERHEAD: usize = 32;

impl RoomHistory {
    fn new(now: Instant) -> Self {
        Self {
            epoch: Epoch::generate(),
            top: 0,
            events: VecDeque::new(),
            bytes: ROOM_OVERHEAD,
            last_event: now,
        }
    }

    pub fn epoch(&self) -> &Epoch {
        &self.epoch
    }

    /// The room's last offset (0 before its first event).
    pub fn top(&self) -> u64 {
        self.top
    }

    fn first_held(&self) -> u64 {
        self.events
            .front()
            .map_or(self.top + 1, |(offset, _)| *offset)
    }

    /// What a join carries: after `since` when it can be served, else the
    /// latest `on_join` events.
    pub fn replay(&self, since: Option<&Since>, on_join: usize) -> Replay {
        let recovered = since.map(|s| recovery(s, &self.epoch, self.top, self.first_held()));
        let events = match (since, recovered) {
            (Some(since), Some(true)) => self.page(Page::After(since.offset), usize::MAX),
            _ => self.page(Page::Latest, on_join),
        };
        Replay {
            epoch: self.epoch.clone(),
            offset: self.top,
            recovered,
            events,
        }
    }

    /// Up to `limit` events of `page`, oldest first.
    pub fn page(&self, page: Page, limit: usize) -> Vec<(u64, EventText)> {
        let held = self.events.iter().cloned();
        match page {
            Page::After(offset) => held.filter(|(o, _)| *o > offset).take(limit).collect(),
            Page::Before(offset) => {
                let older: Vec<_> = held.filter(|(o, _)| *o < offset).collect();
                older[older.len().saturating_sub(limit)..].to_vec()
            }
            Page::Latest => {
                let skip = self.events.len().saturating_sub(limit);
                held.skip(skip).collect()
            }
        }
    }
}

/// Every room's history on this process, bounded per room (`HISTORY_SIZE`),
/// in time (`HISTORY_TTL` after a room's last event) and in total
/// (`HISTORY_MEMORY_BYTES`, the least recently active rooms going first).
#[derive(Debug)]
pub struct MemoryHistory {
    rooms: HashMap<RoomName, RoomHistory>,
    bytes: usize,
    settings: HistorySettings,
}

impl MemoryHistory {
    pub fn new(settings: HistorySettings) -> Self {
        Self {
            rooms: HashMap::new(),
            bytes: 0,
            settings,
        }
    }

    /// `room`'s history, started (with a new epoch) if it has none.
    pub fn room(&mut self, room: &RoomName) -> &RoomHistory {
        self.entry(room)
    }

    fn entry(&mut self, room: &RoomName) -> &mut RoomHistory {
        if !self.rooms.contains_key(room) {
            self.bytes += ROOM_OVERHEAD;
            self.evict_over_cap(Some(room));
        }
        self.rooms
            .entry(room.clone())
            .or_insert_with(|| RoomHistory::new(Instant::now()))
    }

    /// Stores the next event of `room`: `encode` is given its offset and
    /// returns the encoded event, which is kept and returned.
    pub fn append(&mut self, room: &RoomName, encode: impl FnOnce(u64) -> EventText) -> EventText {
        let size = self.settings.size;
        let history = self.entry(room);
        history.top += 1;
        let event = encode(history.top);
        let cost = event.len() + EVENT_OVERHEAD;
        history.events.push_back((history.top, event.clone()));
        history.bytes += cost;
        history.last_event = Instant::now();
        let mut freed = 0;
        while history.events.len() > size {
            let (_, old) = history
                .events
                .pop_front()
                .expect("over the size, so not empty");
            freed += old.len() + EVENT_OVERHEAD;
        }
        history.bytes -= freed;
        self.bytes = self.bytes + cost - freed;
        self.evict_over_cap(Some(room));
        event
    }

    /// Drops the histories whose last event is older than `HISTORY_TTL`.
    pub fn expire(&mut self, now: Instant) {
        let ttl = self.settings.ttl;
        let before = self.rooms.len();
        let mut freed = 0;
        self.rooms.retain(|_, h| {
            let keep = now.saturating_duration_since(h.last_event) < ttl;
            if !keep {
                freed += h.bytes;
            }
            keep
        });
        self.bytes -= freed;
        if self.rooms.len() < before {
            log::debug!("history expired rooms={}", before - self.rooms.len());
        }
    }

    /// While over `HISTORY_MEMORY_BYTES`, drops whole histories, the least
    /// recently active first (never `keep`, the room being written).
    fn evict_over_cap(&mut self, keep: Option<&RoomName>) {
        while self.bytes > self.settings.memory_bytes {
            let oldest = self
                .rooms
                .iter()
                .filter(|(name, _)| Some(*name) != keep)
                .min_by_key(|(_, h)| h.last_event)
                .map(|(name, _)| name.clone());
            let Some(name) = oldest else {
                return;
            };
            let dropped = self.rooms.remove(&name).expect("found above");
            self.bytes -= dropped.bytes;
            log::info!(
                "history over its memory cap; dropped room={name} events={} memory_bytes={}",
                dropped.events.len(),
                self.settings.memory_bytes
            );
        }
    }

    /// Bytes held, overheads included.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// How often [`MemoryHistory::expire`] should run.
    pub fn sweep_interval(&self) -> Duration {
        (self.settings.ttl / 10).clamp(Duration::from_secs(1), Duration::from_secs(60))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(size: usize) -> HistorySettings {
        HistorySettings {
            size,
            ttl: Duration::from_secs(60),
            on_join: 2,
            memory_bytes: 1 << 20,
        }
    }

    fn room(name: &str) -> RoomName {
        RoomName::parse(name).unwrap()
    }

    fn offsets(events: &[(u64, EventText)]) -> Vec<u64> {
        events.iter().map(|(o, _)| *o).collect()
    }

    fn filled(size: usize, events: u64) -> MemoryHistory {
        let mut history = MemoryHistory::new(settings(size));
        for _ in 0..events {
            history.append(&room("r"), |n| EventText::from(format!("e{n}")));
        }
        history
    }

    #[test]
    fn offsets_count_up_from_one_and_the_oldest_fall_out() {
        let mut history = filled(3, 5);
        let r = history.room(&room("r"));
        assert_eq!(r.top(), 5);
        assert_eq!(offsets(&r.page(Page::Latest, 10)), [3, 4, 5]);
        assert_eq!(&*r.page(Page::Latest, 10)[0].1, "e3");
    }

    #[test]
    fn a_since_within_what_is_held_recovers_exactly_the_rest() {
        let mut history = filled(3, 5);
        let r = history.room(&room("r"));
        let epoch = r.epoch().as_str().to_string();
        let since = |offset| Since {
            offset,
            epoch: epoch.clone(),
        };
        let cases = [
            ("the last seen is the top", 5, Some(true), vec![]),
            ("one missed", 4, Some(true), vec![5]),
            (
                "the oldest held is the first missed",
                2,
                Some(true),
                vec![3, 4, 5],
            ),
            (
                "one more was missed than is held",
                1,
                Some(false),
                vec![4, 5],
            ),
            ("an offset above the top", 9, Some(false), vec![4, 5]),
        ];
        for (what, offset, recovered, expected) in cases {
            let replay = r.replay(Some(&since(offset)), 2);
            assert_eq!(replay.recovered, recovered, "{what}");
            assert_eq!(offsets(&replay.events), expected, "{what}");
            assert_eq!(replay.offset, 5, "{what}");
        }
        let foreign = Since {
            offset: 5,
            epoch: "other".into(),
        };
        assert_eq!(r.replay(Some(&foreign), 2).recovered, Some(false));
        assert_eq!(r.replay(None, 2).recovered, None);
    }

    #[test]
    fn an_empty_room_recovers_only_from_its_own_epoch_at_zero() {
        let mut history = MemoryHistory::new(settings(3));
        let r = history.room(&room("new"));
        let at_zero = Since {
            offset: 0,
            epoch: r.epoch().as_str().into(),
        };
        assert_eq!(r.replay(Some(&at_zero), 2).recovered, Some(true));
    }

    #[test]
    fn pages_before_an_offset_are_the_latest_older_ones() {
        let mut history = filled(10, 8);
        let r = history.room(&room("r"));
        assert_eq!(offsets(&r.page(Page::Before(6), 2)), [4, 5]);
        assert_eq!(offsets(&r.page(Page::Before(2), 5)), [1]);
        assert_eq!(offsets(&r.page(Page::After(6), 5)), [7, 8]);
    }

    #[test]
    fn idle_histories_expire_and_come_back_with_a_new_epoch() {
        let mut history = filled(3, 2);
        let epoch = history.room(&room("r")).epoch().clone();

        history.expire(Instant::now() + Duration::from_secs(61));

        assert_eq!(history.bytes(), 0);
        let again = history.room(&room("r"));
        assert_eq!(again.top(), 0);
        assert_ne!(again.epoch(), &epoch);
    }

    #[test]
    fn the_memory_cap_drops_the_least_recently_active_rooms() {
        let mut history = MemoryHistory::new(HistorySettings {
            memory_bytes: 4 * ROOM_OVERHEAD,
            ..settings(100)
        });
        for name in ["a", "b", "c"] {
            history.append(&room(name), |_| EventText::from("x".repeat(100)));
        }
        assert!(history.bytes() <= 4 * ROOM_OVERHEAD, "{}", history.bytes());
        assert_eq!(history.rooms.len(), 2, "a went first");
        assert!(!history.rooms.contains_key(&room("a")));
    }

    #[test]
    fn since_is_read_from_a_frame_and_from_the_query() {
        let ok = Since {
            offset: 41,
            epoch: "k3x9q2vd".into(),
        };
        let json = serde_json::json!({"offset": 41, "epoch": "k3x9q2vd"});
        assert_eq!(Since::from_json(&json), Ok(ok.clone()));
        assert_eq!(
            Since::from_query("team:ops:41:k3x9q2vd"),
            Ok(("team:ops".into(), ok))
        );
        let bad = [
            (serde_json::json!(5), SinceError::NotAnObject),
            (
                serde_json::json!({"offset": -1, "epoch": "a"}),
                SinceError::BadOffset,
            ),
            (
                serde_json::json!({"offset": "7", "epoch": "a"}),
                SinceError::BadOffset,
            ),
            (serde_json::json!({"offset": 7}), SinceError::BadEpoch),
            (
                serde_json::json!({"offset": 7, "epoch": "a b"}),
                SinceError::BadEpoch,
            ),
        ];
        for (value, expected) in bad {
            assert_eq!(Since::from_json(&value), Err(expected), "{value}");
        }
        for raw in [
            "general",
            "general:x:abc",
            "general:-1:abc",
            "general:1:",
            ":",
        ] {
            assert!(Since::from_query(raw).is_err(), "{raw}");
        }
    }
}
