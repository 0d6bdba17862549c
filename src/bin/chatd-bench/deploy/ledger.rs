//! The accounting of a deploy run, with no I/O: which messages were written
//! and said, which copies each client saw, and where a client resumes.
//!
//! Why it looks the way it does:
//! - Every message written gets a number `n` (0, 1, 2, ... in write order,
//!   one counter for the whole fleet) that its text carries in its tag, so a
//!   client's copies are a bit set over `n`: 1,000 clients and 10,000
//!   messages cost about a megabyte, not a hash set of a million entries.
//! - A message is *said* once its sender saw it (live, or in the history of a
//!   recovery): only then did the server take responsibility for it, so only
//!   then is every other client owed a copy. A message whose sender never saw
//!   it (its process died first) is *unconfirmed*, reported apart.
//! - A copy is first checked by the server's `id`, as a client would drop a
//!   repeat, and only then by `n`: a copy whose `id` was seen is a raw
//!   duplicate (a history overlapping live events, harmless to a client that
//!   drops by `id`); a copy of a seen message under another `id` is a
//!   duplicate that survives that drop, and a fault.
//! - [`Resume`] is what a client asks for with `since`: the offset up to
//!   which it has seen *every* event, not the highest it saw, so a copy that
//!   arrives out of order never makes it skip the one it has not got yet.

use std::collections::{BTreeSet, HashMap};

const NO_OFFSET: u64 = u64::MAX;

/// A growable set of small numbers.
#[derive(Debug, Clone, Default)]
pub struct Bits(Vec<u64>);

impl Bits {
    /// Adds `n`; whether it was already there.
    pub fn insert(&mut self, n: u32) -> bool {
        let (word, bit) = (n as usize / 64, n % 64);
        if word >= self.0.len() {
            self.0.resize(word + 1, 0);
        }
        let had = self.0[word] & (1 << bit) != 0;
        self.0[word] |= 1 << bit;
        had
    }

    pub fn contains(&self, n: u32) -> bool {
        let (word, bit) = (n as usize / 64, n % 64);
        self.0.get(word).is_some_and(|w| w & (1 << bit) != 0)
    }

    pub fn len(&self) -> u64 {
        self.0.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// How many of `self` are not in `other`.
    pub fn missing_from(&self, other: &Bits) -> u64 {
        self.0
            .iter()
            .enumerate()
            .map(|(i, w)| u64::from((w & !other.0.get(i).copied().unwrap_or(0)).count_ones()))
            .sum()
    }
}

/// What one arriving copy was, for one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Copy {
    /// The first copy of a message this tool wrote: written `sent_us` after
    /// the tool's epoch.
    First { sent_us: u64 },
    /// Its `id` was seen before: dropped, as a client would. `moved` when
    /// it came at another offset than the first copy of that `id` anyone
    /// saw: the event was stored twice.
    SameId { moved: bool },
    /// A message already seen under another `id`.
    OtherId,
    /// Not a message this run wrote.
    Foreign,
}

struct Written {
    sender: u32,
    sent_us: u64,
}

/// Every message written, who saw what, and by which `id`.
pub struct Ledger {
    written: Vec<Written>,
    said: Bits,
    /// Every `id` seen, numbered as first seen, and the offset it first
    /// came with (`NO_OFFSET` when it had none).
    ids: HashMap<Box<str>, u32>,
    id_offsets: Vec<u64>,
    /// Per client: the messages and the `id`s it saw.
    seen: Vec<Bits>,
    seen_ids: Vec<Bits>,
}

/// The copies owed and never seen, at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Loss {
    /// Said messages a client never saw, summed over clients.
    pub copies: u64,
    pub clients: u64,
    /// The most any one client missed.
    pub most: u64,
    /// Said messages that some client missed.
    pub messages: u64,
}

impl Ledger {
    pub fn new(clients: usize) -> Self {
        Self {
            written: Vec::new(),
            said: Bits::default(),
            ids: HashMap::new(),
            id_offsets: Vec::new(),
            seen: vec![Bits::default(); clients],
            seen_ids: vec![Bits::default(); clients],
        }
    }

    /// Numbers a message `sender` writes now (`sent_us`).
    pub fn write(&mut self, sender: usize, sent_us: u64) -> u32 {
        let n = u32::try_from(self.written.len()).expect("fewer than 2^32 messages in a run");
        self.written.push(Written {
            sender: sender as u32,
            sent_us,
        });
        n
    }

    /// Client `client` got a copy of message `n` (from its tag) with `id`,
    /// at `offset` if it had one.
    pub fn arrive(&mut self, client: usize, n: u64, id: &str, offset: Option<u64>) -> Copy {
        let Some(written) = u32::try_from(n)
            .ok()
            .and_then(|n| self.written.get(n as usize))
        else {
            return Copy::Foreign;
        };
        let (n, sent_us, sender) = (n as u32, written.sent_us, written.sender as usize);
        let next = self.ids.len() as u32;
        let id = *self.ids.entry(id.into()).or_insert(next);
        let offset = offset.unwrap_or(NO_OFFSET);
        if id == next {
            self.id_offsets.push(offset);
        }
        if self.seen_ids[client].insert(id) {
            let first = self.id_offsets[id as usize];
            let moved = first != offset && first != NO_OFFSET && offset != NO_OFFSET;
            return Copy::SameId { moved };
        }
        if self.seen[client].insert(n) {
            return Copy::OtherId;
        }
        if sender == client {
            self.said.insert(n);
        }
        Copy::First { sent_us }
    }

    pub fn written(&self) -> u64 {
        self.written.len() as u64
    }

    pub fn said(&self) -> u64 {
        self.said.len()
    }

    /// Written messages their sender never saw, and how many of those some
    /// client did see.
    pub fn unconfirmed(&self) -> (u64, u64) {
        let unconfirmed = (0..self.written.len() as u32).filter(|&n| !self.said.contains(n));
        let (mut count, mut reached) = (0, 0);
        for n in unconfirmed {
            count += 1;
            reached += u64::from(self.seen.iter().any(|seen| seen.contains(n)));
        }
        (count, reached)
    }

    /// What the clients are still owed.
    pub fn loss(&self) -> Loss {
        let mut loss = Loss::default();
        let mut missed = Bits::default();
        for seen in &self.seen {
            let copies = self.said.missing_from(seen);
            if copies > 0 {
                loss.copies += copies;
                loss.clients += 1;
                loss.most = loss.most.max(copies);
                for (i, w) in self.said.0.iter().enumerate() {
                    let mut gone = w & !seen.0.get(i).copied().unwrap_or(0);
                    while gone != 0 {
                        missed.insert(i as u32 * 64 + gone.trailing_zeros());
                        gone &= gone - 1;
                    }
                }
            }
        }
        loss.messages = missed.len();
        loss
    }
}

/// How a live event's offset fitted a client's [`Resume`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// The next one, or one that fills a gap.
    InOrder,
    /// Past a gap: some earlier offset has not arrived yet.
    Early,
    /// An offset already seen.
    Repeat,
}

/// Where a client resumes in its room: the room's epoch and the offset up to
/// which every event arrived.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resume {
    epoch: String,
    through: u64,
    /// Offsets above `through` that arrived early.
    above: BTreeSet<u64>,
}

impl Resume {
    /// Takes in a `joined`: with `recovered: true` in the epoch held, the
    /// history (its offsets then go through [`Resume::saw`]) continues where
    /// the client was; anything else starts again from the room's `offset`,
    /// the history's last, and whatever was missed stays missed.
    pub fn joined(&mut self, epoch: &str, offset: u64, recovered: Option<bool>) {
        if recovered == Some(true) && epoch == self.epoch {
            return;
        }
        *self = Self {
            epoch: epoch.into(),
            through: offset,
            above: BTreeSet::new(),
        };
    }

    /// Takes in an event's offset.
    pub fn saw(&mut self, offset: u64) -> Fit {
        if offset <= self.through || !self.above.insert(offset) {
            return Fit::Repeat;
        }
        if offset != self.through + 1 {
            return Fit::Early;
        }
        while self.above.remove(&(self.through + 1)) {
            self.through += 1;
        }
        Fit::InOrder
    }

    /// Whether every event up to `offset` arrived: after a recovery's
    /// history, up to the `joined` offset it was read at.
    pub fn has_all_through(&self, offset: u64) -> bool {
        self.through >= offset
    }

    /// Events below the highest offset seen that have not arrived: what a
    /// client resuming from its highest offset, rather than from
    /// [`Resume::since`], would never get.
    pub fn unseen_below_highest(&self) -> u64 {
        let highest = self.above.last().copied().unwrap_or(self.through);
        highest - self.through - self.above.len() as u64
    }

    /// `ROOM:OFFSET:EPOCH` for `/ws?since=`; `None` when the room had no
    /// epoch (Redis was away), so there is nothing to resume from.
    pub fn since(&self, room: &str) -> Option<String> {
        (!self.epoch.is_empty()).then(|| format!("{room}:{}:{}", self.through, self.epoch))
    }
}

/// The wait before reconnect attempt `attempt` (0 for the first) after a
/// dropped connection: 0.5 s doubling per attempt up to `cap`, then a random
/// point in its upper half (`unit` in 0..1), so a thousand clients of a
/// killed process do not come back in one instant.
pub fn backoff(attempt: u32, cap: std::time::Duration, unit: f64) -> std::time::Duration {
    let full = std::time::Duration::from_millis(500)
        .saturating_mul(1 << attempt.min(16))
        .min(cap);
    full.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_said_message_is_owed_to_every_client_and_counted_once_per_missing_copy() {
        // Three clients; client 0 writes message 0, client 1 writes message 1.
        let mut ledger = Ledger::new(3);
        assert_eq!(ledger.write(0, 10), 0);
        assert_eq!(ledger.write(1, 20), 1);

        assert_eq!(
            ledger.arrive(1, 0, "a-m1", None),
            Copy::First { sent_us: 10 }
        );
        assert_eq!(ledger.loss(), Loss::default(), "nothing is said yet");
        assert_eq!(
            ledger.arrive(0, 0, "a-m1", None),
            Copy::First { sent_us: 10 }
        );

        // Message 0 is said (its sender saw it); client 2 misses it.
        assert_eq!(ledger.said(), 1);
        let loss = ledger.loss();
        assert_eq!(
            (loss.copies, loss.clients, loss.most, loss.messages),
            (1, 1, 1, 1)
        );
        // Message 1 never came back to client 1: unconfirmed, reached by none.
        assert_eq!(ledger.unconfirmed(), (1, 0));
        assert_eq!(
            ledger.arrive(2, 1, "b-m1", None),
            Copy::First { sent_us: 20 }
        );
        assert_eq!(ledger.unconfirmed(), (1, 1), "client 2 saw it");

        assert_eq!(
            ledger.arrive(2, 0, "a-m1", None),
            Copy::First { sent_us: 10 }
        );
        assert_eq!(ledger.loss(), Loss::default());
    }

    #[test]
    fn repeats_are_told_apart_by_id_then_by_message() {
        let mut ledger = Ledger::new(2);
        ledger.write(0, 0);
        let same = Copy::SameId { moved: false };
        let first = Copy::First { sent_us: 0 };
        let cases = [
            ("first copy", 1, 0, "a-m1", 3, first),
            ("the same id again", 1, 0, "a-m1", 3, same),
            (
                "at another offset",
                1,
                0,
                "a-m1",
                4,
                Copy::SameId { moved: true },
            ),
            (
                "the same message, another id",
                1,
                0,
                "b-m7",
                9,
                Copy::OtherId,
            ),
            ("that other id again", 1, 0, "b-m7", 9, same),
            ("another client's first copy", 0, 0, "b-m7", 9, first),
            ("a number never written", 0, 5, "c-m1", 1, Copy::Foreign),
        ];
        for (what, client, n, id, offset, expected) in cases {
            let copy = ledger.arrive(client, n, id, Some(offset));
            assert_eq!(copy, expected, "{what}");
        }
        assert_eq!(ledger.said(), 1);
    }

    #[test]
    fn bits_count_what_one_set_has_and_another_lacks() {
        let mut a = Bits::default();
        let mut b = Bits::default();
        for n in [0, 63, 64, 200] {
            assert!(!a.insert(n));
        }
        assert!(a.insert(63));
        b.insert(64);
        assert_eq!(a.len(), 4);
        assert_eq!(a.missing_from(&b), 3);
        assert_eq!(b.missing_from(&a), 0);
        assert!(a.contains(200) && !a.contains(201) && !b.contains(10_000));
    }

    #[test]
    fn resume_holds_the_offset_below_which_every_event_arrived() {
        let mut resume = Resume::default();
        assert_eq!(resume.since("general"), None, "nothing to resume from yet");
        resume.joined("e1", 4, None);
        assert_eq!(resume.since("general").as_deref(), Some("general:4:e1"));

        assert_eq!(resume.saw(5), Fit::InOrder);
        assert_eq!(resume.saw(7), Fit::Early);
        assert_eq!(
            resume.since("general").as_deref(),
            Some("general:5:e1"),
            "6 is missing"
        );
        assert_eq!(
            resume.unseen_below_highest(),
            1,
            "resuming after 7 would skip 6"
        );
        assert_eq!(resume.saw(7), Fit::Repeat);
        assert_eq!(resume.saw(6), Fit::InOrder);
        assert_eq!(resume.since("general").as_deref(), Some("general:7:e1"));
        assert_eq!(resume.unseen_below_highest(), 0);
        assert_eq!(resume.saw(3), Fit::Repeat);
        resume.saw(10);
        resume.saw(12);
        assert_eq!(resume.unseen_below_highest(), 3, "8, 9 and 11");
    }

    #[test]
    fn a_recovery_continues_and_anything_else_starts_again() {
        let mut resume = Resume::default();
        resume.joined("e1", 2, None);
        resume.saw(3);

        // Recovered: the history's offsets follow on.
        resume.joined("e1", 5, Some(true));
        assert_eq!(resume.since("r").as_deref(), Some("r:3:e1"));
        assert!(!resume.has_all_through(5));
        for offset in [4, 5] {
            assert_eq!(resume.saw(offset), Fit::InOrder);
        }
        assert!(resume.has_all_through(5));
        assert_eq!(resume.since("r").as_deref(), Some("r:5:e1"));

        let cases = [
            ("not recovered", "e1", 90, Some(false), Some("r:90:e1")),
            ("a new epoch", "e2", 1, Some(true), Some("r:1:e2")),
            ("Redis away", "", 0, Some(false), None),
        ];
        for (what, epoch, offset, recovered, since) in cases {
            resume.joined(epoch, offset, recovered);
            assert_eq!(resume.since("r").as_deref(), since, "{what}");
        }
    }

    #[test]
    fn backoff_doubles_from_half_a_second_to_the_cap_with_jitter_in_the_upper_half() {
        let cap = Duration::from_secs(4);
        let cases = [
            (0, 0.0, 250),
            (0, 1.0, 500),
            (1, 1.0, 1000),
            (2, 0.5, 1500),
            (3, 1.0, 4000),
            (30, 0.0, 2000),
        ];
        for (attempt, unit, ms) in cases {
            assert_eq!(
                backoff(attempt, cap, unit),
                Duration::from_millis(ms),
                "attempt {attempt} unit {unit}"
            );
        }
    }
}
