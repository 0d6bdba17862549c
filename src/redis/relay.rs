//! The pure pieces of the Redis relay, kept apart from the `RedisBridge`
//! actor so they can be tested without Redis: the [`Envelope`] on the
//! channel, the bounded [`Outbox`], the repeat filter [`Seen`], the reconnect
//! [`backoff`] and [`redacted`] URLs for logs.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::protocol::{Frame, ServerId};

/// The first reconnect delay; it doubles per failed attempt.
pub const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// The longest reconnect delay, jitter included.
pub const BACKOFF_CAP: Duration = Duration::from_secs(5);

/// What travels on the channel: the origin process, its sequence number and
/// the event exactly as the origin serialized it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope<S> {
    /// The [`ServerId`] of the process that published it.
    pub origin: S,
    /// Increases by one per event of that origin; repeats are dropped.
    pub seq: u64,
    /// The serialized event, delivered to clients as is.
    pub frame: S,
}

/// One event waiting to be published: its sequence number, its channel and
/// its envelope.
#[derive(Debug)]
struct Queued {
    seq: u64,
    channel: String,
    envelope: String,
}

/// Events waiting to be published, oldest first, each with its sequence
/// number and channel. One sequence runs across every channel, so a receiver
/// that follows only some channels sees gaps, never a step back.
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
    /// whether the oldest event had to be dropped to make room.
    pub fn push(&mut self, origin: &ServerId, channel: String, frame: &Frame) -> bool {
        let seq = self.next_seq;
        self.next_seq += 1;
        let envelope = Envelope {
            origin: origin.as_str(),
            seq,
            frame: &**frame,
        };
        let json = serde_json::to_string(&envelope).expect("an envelope of strings serializes");
        let dropped = self.items.len() >= self.capacity;
        if dropped {
            self.items.pop_front();
        }
        self.items.push_back(Queued {
            seq,
            channel,
            envelope: json,
        });
        dropped
    }

    /// Up to `max` of the oldest `(channel, envelope)` pairs, and the sequence
    /// number of the last.
    pub fn batch(&self, max: usize) -> Option<(u64, Vec<(&str, &str)>)> {
        let n = self.items.len().min(max);
        let last = self.items.get(n.checked_sub(1)?)?.seq;
        let batch = self.items.iter().take(n);
        Some((
            last,
            batch
                .map(|q| (q.channel.as_str(), q.envelope.as_str()))
                .collect(),
        ))
    }

    /// Forgets every envelope up to `seq`, now that Redis has it. Envelopes
    /// dropped for room while the batch was in flight are already gone.
    pub fn confirm(&mut self, seq: u64) {
        while self.items.front().is_some_and(|q| q.seq <= seq) {
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
#[derive(Debug, Default)]
pub struct Seen(HashMap<String, u64>);

impl Seen {
    /// Whether event `seq` of `origin` is news, remembering it if so.
    pub fn is_new(&mut self, origin: String, seq: u64) -> bool {
        let last = self.0.entry(origin).or_insert(0);
        let new = seq > *last;
        if new {
            *last = seq;
        }
        new
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
            .map(|n| outbox.push(&me, "c".into(), &Frame::from(format!("e{n}"))))
            .collect();

        assert_eq!(dropped, [false, false, false, true, true]);
        let (last, batch) = outbox.batch(10).unwrap();
        assert_eq!(last, 5);
        let frames: Vec<String> = batch
            .iter()
            .map(|(_, e)| serde_json::from_str::<Envelope<String>>(e).unwrap().frame)
            .collect();
        assert_eq!(frames, ["e3", "e4", "e5"]);
    }

    #[test]
    fn confirming_a_batch_keeps_what_came_after_it() {
        let me = ServerId::generate();
        let mut outbox = Outbox::new(2);
        outbox.push(&me, "x".into(), &Frame::from("a"));
        outbox.push(&me, "y".into(), &Frame::from("b"));
        let (last, _) = outbox.batch(2).unwrap();
        // While the batch is in flight, "c" pushes "a" out.
        outbox.push(&me, "z".into(), &Frame::from("c"));

        outbox.confirm(last);

        assert_eq!(outbox.len(), 1);
        let (_, rest) = outbox.batch(10).unwrap();
        assert_eq!(rest[0].0, "z");
        assert!(rest[0].1.contains(r#""frame":"c""#), "{rest:?}");
    }

    #[test]
    fn an_envelope_carries_the_frame_byte_for_byte() {
        let me = ServerId::generate();
        let mut outbox = Outbox::new(1);
        let frame = Frame::from(r#"{"type":"echo","message":"“quotes” \\ and\nlines"}"#);
        outbox.push(&me, "c".into(), &frame);

        let (_, batch) = outbox.batch(1).unwrap();
        let envelope: Envelope<String> = serde_json::from_str(batch[0].1).unwrap();

        assert_eq!(envelope.origin, me.as_str());
        assert_eq!(envelope.seq, 1);
        assert_eq!(envelope.frame, &*frame);
    }

    #[test]
    fn a_batch_sent_twice_is_delivered_once() {
        let mut seen = Seen::default();
        let delivered: Vec<(&str, u64)> =
            [("a", 1), ("a", 2), ("b", 1), ("a", 1), ("a", 2), ("a", 3)]
                .into_iter()
                .filter(|(origin, seq)| seen.is_new(origin.to_string(), *seq))
                .collect();

        assert_eq!(delivered, [("a", 1), ("a", 2), ("b", 1), ("a", 3)]);
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
