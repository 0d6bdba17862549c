//! The pure pieces of the Redis relay, kept apart from the `RedisBridge`
//! actor so they can be tested without Redis: the [`Envelope`] on the
//! channel, the bounded [`Outbox`], the repeat filter [`Seen`], the reconnect
//! [`backoff`] and [`redacted`] URLs for logs.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::protocol::{EventText, RoomName, ServerId};

/// The first reconnect delay; it doubles per failed attempt.
pub const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// The longest reconnect delay, jitter included.
pub const BACKOFF_CAP: Duration = Duration::from_secs(5);

/// What travels on the channel: the origin process, its sequence number,
/// the event's offset when it was stored, and the event exactly as the
/// origin serialized it. (`redis::history::APPEND` writes the same shape.)
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope<S> {
    /// The [`ServerId`] of the process that published it.
    pub origin: S,
    /// Increases by one per event of that origin; repeats are dropped.
    pub seq: u64,
    /// Its offset in its room's history, for a stored event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// The serialized event, delivered to clients as is.
    pub frame: S,
}

/// One event waiting for Redis, with its sequence number.
#[derive(Debug, Clone)]
pub enum Queued {
    /// To PUBLISH as it is (everyone-notices).
    Publish {
        seq: u64,
        channel: String,
        envelope: String,
    },
    /// To store in a room's history (which publishes it too).
    Store {
        seq: u64,
        room: RoomName,
        /// The event, with offset 0 where Redis puts its offset.
        event: EventText,
        /// Local members got it already, unstored (Redis was away): once
        /// stored it goes only to the other processes.
        delivered: bool,
    },
}

impl Queued {
    pub fn seq(&self) -> u64 {
        match self {
            Queued::Publish { seq, .. } | Queued::Store { seq, .. } => *seq,
        }
    }
}

/// Events waiting for Redis, oldest first, each with its sequence number.
/// One sequence runs across every channel, so a receiver that follows only
/// some channels sees gaps, never a step back.
#[derive(Debug)]
pub struct Outbox {
    items: VecDeque<Queued>,
    capacity: usize,
    next_seq: u64,
}

impl Outbox {
    pub fn new(capacity: usize) -> Self {
        Self {
            items: VecDeque::new(),
            capacity: capacity.max(1),
            next_seq: 1,
        }
    }

    /// Queues `frame` for `channel` in an envelope from `origin`; answers
    /// the oldest event if it had to be dropped to make room.
    pub fn publish(
        &mut self,
        origin: &ServerId,
        channel: String,
        frame: &EventText,
    ) -> Option<Queued> {
        let seq = self.next_seq();
        let envelope = Envelope {
            origin: origin.as_str(),
            seq,
            offset: None,
            frame: &**frame,
        };
        let envelope = serde_json::to_string(&envelope).expect("an envelope of strings serializes");
        self.push(Queued::Publish {
            seq,
            channel,
            envelope,
        })
    }

    /// Queues `event` for `room`'s history; answers the oldest event if it
    /// had to be dropped to make room.
    pub fn store(&mut self, room: RoomName, event: EventText, delivered: bool) -> Option<Queued> {
        let seq = self.next_seq();
        self.push(Queued::Store {
            seq,
            room,
            event,
            delivered,
        })
    }

    fn next_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    fn push(&mut self, item: Queued) -> Option<Queued> {
        let dropped = (self.items.len() >= self.capacity)
            .then(|| self.items.pop_front())
            .flatten();
        self.items.push_back(item);
        dropped
    }

    /// Up to `max` of the oldest events, and the sequence number of the last.
    pub fn batch(&self, max: usize) -> Option<(u64, Vec<&Queued>)> {
        let n = self.items.len().min(max);
        let last = self.items.get(n.checked_sub(1)?)?.seq();
        Some((last, self.items.iter().take(n).collect()))
    }

    /// Marks event `seq` delivered locally; `true` if it was not yet (and
    /// is still queued).
    pub fn deliver(&mut self, seq: u64) -> bool {
        let Ok(at) = self.items.binary_search_by_key(&seq, Queued::seq) else {
            return false;
        };
        match &mut self.items[at] {
            Queued::Store { delivered, .. } if !*delivered => {
                *delivered = true;
                true
            }
            _ => false,
        }
    }

    /// Up to `max` of the oldest events that `held` does not hold back, in
    /// order: in a cluster, the events of rooms whose shard is busy or away
    /// wait while the others go.
    pub fn unsent(&self, max: usize, held: impl Fn(&Queued) -> bool) -> Vec<&Queued> {
        self.items.iter().filter(|q| !held(q)).take(max).collect()
    }

    /// Forgets the events `seqs`, wherever they are in the queue, now that
    /// Redis has them (a cluster confirms room by room).
    pub fn remove(&mut self, seqs: &[u64]) {
        let seqs: std::collections::HashSet<u64> = seqs.iter().copied().collect();
        self.items.retain(|q| !seqs.contains(&q.seq()));
    }

    /// `room`'s stored events not yet delivered locally, marked delivered
    /// now: the room's shard is away, so local members get them unstored.
    pub fn deliver_room(&mut self, room: &RoomName) -> Vec<EventText> {
        let mut undelivered = Vec::new();
        for item in &mut self.items {
            if let Queued::Store {
                room: r,
                event,
                delivered: delivered @ false,
                ..
            } = item
            {
                if r == room {
                    *delivered = true;
                    undelivered.push(event.clone());
                }
            }
        }
        undelivered
    }

    /// Every stored event not yet delivered locally, marked delivered now:
    /// Redis is away, so local members get them unstored.
    pub fn deliver_all(&mut self) -> Vec<(RoomName, EventText)> {
        let mut undelivered = Vec::new();
        for item in &mut self.items {
            if let Queued::Store {
                room,
                event,
                delivered: delivered @ false,
                ..
            } = item
            {
                *delivered = true;
                undelivered.push((room.clone(), event.clone()));
            }
        }
        undelivered
    }

    /// Forgets every envelope up to `seq`, now that Redis has it. Envelopes
    /// dropped for room while the batch was in flight are already gone.
    pub fn confirm(&mut self, seq: u64) {
        while self.items.front().is_some_and(|q| q.seq() <= seq) {
            self.items.pop_front();
        }
    }

    /// The most events it holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// The delay before reconnect attempt number `attempt` (1 = the first retry):
/// exponential from [`BACKOFF_BASE`], capped at [`BACKOFF_CAP`], with the upper
/// half jittered so that processes that lost Redis together do not return
/// together.
pub fn backoff(attempt: u32) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1 << attempt.saturating_sub(1).min(16));
    let ceiling = exp.min(BACKOFF_CAP);
    let half = ceiling / 2;
    half + half.mul_f64(fastrand::f64())
}

/// The highest sequence number delivered per origin, to drop repeats of a
/// batch that was published again after a failure.
///
/// With one Redis every event of an origin comes back on one connection, in
/// the order it was sent, so one number per origin will do (`scope` is
/// empty). In a cluster each channel is served by its own shard, and events
/// of different channels overtake each other on the way back: there the
/// number is kept per origin and channel (`scope` is the channel).
#[derive(Debug, Default)]
pub struct Seen(HashMap<(String, String), u64>);

impl Seen {
    /// Whether event `seq` of `origin` in `scope` is news, remembering it if so.
    pub fn is_new(&mut self, origin: String, scope: &str, seq: u64) -> bool {
        let last = self.0.entry((origin, scope.to_string())).or_insert(0);
        let new = seq > *last;
        if new {
            *last = seq;
        }
        new
    }

    /// Forgets `scope` (a room channel no longer followed).
    pub fn forget(&mut self, scope: &str) {
        self.0.retain(|(_, s), _| s != scope);
    }
}

/// `url` with any password replaced, for logs.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_under_the_cap() {
        for attempt in 1..40 {
            let delay = backoff(attempt);
            assert!(delay <= BACKOFF_CAP, "attempt {attempt}: {delay:?}");
            let ceiling = BACKOFF_BASE
                .saturating_mul(1 << (attempt - 1).min(16))
                .min(BACKOFF_CAP);
            assert!(delay >= ceiling / 2, "attempt {attempt}: {delay:?}");
        }
        assert!(backoff(1) <= BACKOFF_BASE);
        assert!(backoff(30) >= BACKOFF_CAP / 2);
    }

    #[test]
    fn a_full_outbox_drops_the_oldest_and_keeps_order() {
        let me = ServerId::generate();
        let mut outbox = Outbox::new(3);
        let dropped: Vec<bool> = (1..=5)
            .map(|n| {
                outbox
                    .publish(&me, "c".into(), &EventText::from(format!("e{n}")))
                    .is_some()
            })
            .collect();

        assert_eq!(dropped, [false, false, false, true, true]);
        let (last, batch) = outbox.batch(10).unwrap();
        assert_eq!(last, 5);
        let frames: Vec<String> = batch
            .iter()
            .map(|q| match q {
                Queued::Publish { envelope, .. } => {
                    serde_json::from_str::<Envelope<String>>(envelope)
                        .unwrap()
                        .frame
                }
                Queued::Store { .. } => panic!("only publishes were queued"),
            })
            .collect();
        assert_eq!(frames, ["e3", "e4", "e5"]);
    }

    #[test]
    fn confirming_a_batch_keeps_what_came_after_it() {
        let me = ServerId::generate();
        let mut outbox = Outbox::new(2);
        outbox.publish(&me, "x".into(), &EventText::from("a"));
        outbox.publish(&me, "y".into(), &EventText::from("b"));
        let (last, _) = outbox.batch(2).unwrap();
        // While the batch is in flight, "c" pushes "a" out.
        outbox.publish(&me, "z".into(), &EventText::from("c"));

        outbox.confirm(last);

        assert_eq!(outbox.len(), 1);
        let (_, rest) = outbox.batch(10).unwrap();
        let Queued::Publish {
            channel, envelope, ..
        } = rest[0]
        else {
            panic!("a publish")
        };
        assert_eq!(channel, "z");
        assert!(envelope.contains(r#""frame":"c""#), "{rest:?}");
    }

    #[test]
    fn an_envelope_carries_the_frame_byte_for_byte() {
        let me = ServerId::generate();
        let mut outbox = Outbox::new(1);
        let frame = EventText::from(r#"{"type":"echo","message":"“quotes” \\ and\nlines"}"#);
        outbox.publish(&me, "c".into(), &frame);

        let (_, batch) = outbox.batch(1).unwrap();
        let Queued::Publish { envelope, .. } = batch[0] else {
            panic!("a publish")
        };
        let envelope: Envelope<String> = serde_json::from_str(envelope).unwrap();

        assert_eq!(envelope.origin, me.as_str());
        assert_eq!(envelope.seq, 1);
        assert_eq!(envelope.frame, &*frame);
    }

    #[test]
    fn stored_events_are_delivered_locally_once() {
        let mut outbox = Outbox::new(10);
        let room = RoomName::general();
        outbox.store(room.clone(), EventText::from("a"), false);
        outbox.store(room.clone(), EventText::from("b"), true);
        outbox.store(room.clone(), EventText::from("c"), false);

        assert!(outbox.deliver(1), "a was not yet");
        assert!(!outbox.deliver(1), "a is now");
        assert!(!outbox.deliver(2), "b was at once");
        let rest: Vec<String> = outbox
            .deliver_all()
            .into_iter()
            .map(|(_, e)| e.to_string())
            .collect();
        assert_eq!(rest, ["c"]);
        assert!(outbox.deliver_all().is_empty());
        assert!(!outbox.deliver(99), "not queued");
    }

    #[test]
    fn a_cluster_sends_and_confirms_room_by_room() {
        let mut outbox = Outbox::new(10);
        let (ops, dev) = (RoomName::parse("ops").unwrap(), RoomName::general());
        outbox.store(ops.clone(), EventText::from("o1"), false);
        outbox.store(dev.clone(), EventText::from("d1"), false);
        outbox.store(ops.clone(), EventText::from("o2"), false);

        let not_ops = outbox.unsent(
            10,
            |q| matches!(q, Queued::Store { room, .. } if *room == ops),
        );
        assert_eq!(not_ops.iter().map(|q| q.seq()).collect::<Vec<_>>(), [2]);
        outbox.remove(&[2]);
        let held: Vec<String> = outbox
            .deliver_room(&ops)
            .iter()
            .map(|f| f.to_string())
            .collect();
        assert_eq!(held, ["o1", "o2"]);
        assert!(outbox.deliver_room(&ops).is_empty(), "once");
        assert_eq!(outbox.unsent(10, |_| false).len(), 2);
    }

    #[test]
    fn a_batch_sent_twice_is_delivered_once() {
        let mut seen = Seen::default();
        let delivered: Vec<(&str, u64)> =
            [("a", 1), ("a", 2), ("b", 1), ("a", 1), ("a", 2), ("a", 3)]
                .into_iter()
                .filter(|(origin, seq)| seen.is_new(origin.to_string(), "", *seq))
                .collect();

        assert_eq!(delivered, [("a", 1), ("a", 2), ("b", 1), ("a", 3)]);
    }

    #[test]
    fn in_a_cluster_channels_may_overtake_each_other() {
        let mut seen = Seen::default();
        // Room x's event 2 arrives before room y's event 1, then x's 2 again.
        assert!(seen.is_new("a".into(), "x", 2));
        assert!(
            seen.is_new("a".into(), "y", 1),
            "another channel's older event"
        );
        assert!(!seen.is_new("a".into(), "x", 2), "a repeat");
        seen.forget("x");
        assert!(seen.is_new("a".into(), "x", 2), "forgotten with its room");
    }

    #[test]
    fn passwords_are_kept_out_of_logs() {
        assert_eq!(
            redacted("redis://:s3cret@db:6379/0"),
            "redis://***@db:6379/0"
        );
        assert_eq!(redacted("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
