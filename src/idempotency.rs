//! Idempotent `POST /notify`: a request with an `Idempotency-Key` header is
//! sent once per key within [`KEEP_FOR`], and a repeat gets the first answer.
//!
//! Why it looks the way it does:
//! - The key is claimed before the notification is sent, so two repeats that
//!   arrive together (a client retrying on a timeout while the first is still
//!   on its way) cannot both send. A repeat that finds the key claimed but not
//!   yet answered waits, up to [`IN_FLIGHT_WAIT`], for the answer.
//! - Only a sent notification's answer is kept. A first request that failed
//!   (the hub did not answer) gives its key back, so a retry can succeed.
//! - With Redis the keys live there (`SET NX` with an expiry, see
//!   `redis::idempotency`), so a retry that a load balancer sends to another
//!   process is still sent once; while Redis is away, this process's memory
//!   stands in, which still holds repeats that reach the same process.
//! - Without Redis the keys are in memory, at most [`MEMORY_KEYS`] of them;
//!   past that the oldest go first, so a flood of keys cannot grow memory
//!   without bound.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::redis::idempotency::RedisKeys;

/// How long a key's answer is kept.
pub const KEEP_FOR: Duration = Duration::from_secs(300);

/// How long a repeat waits for the first request with its key to finish.
pub const IN_FLIGHT_WAIT: Duration = Duration::from_secs(10);

/// How often a waiting repeat looks again.
const IN_FLIGHT_POLL: Duration = Duration::from_millis(20);

/// The most keys held in memory.
pub const MEMORY_KEYS: usize = 10_000;

/// The longest key, in bytes (printable ASCII, so also characters).
pub const MAX_KEY_BYTES: usize = 128;

/// A checked `Idempotency-Key`: 1 to 128 printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

/// Why an `Idempotency-Key` header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("Idempotency-Key is empty: give 1 to {MAX_KEY_BYTES} printable ASCII characters")]
    Empty,
    #[error("Idempotency-Key is over {MAX_KEY_BYTES} characters")]
    TooLong,
    #[error("Idempotency-Key must be printable ASCII (space to ~)")]
    NotPrintable,
}

impl IdempotencyKey {
    /// Checks a header value.
    ///
    /// # Errors
    /// The value is empty, longer than [`MAX_KEY_BYTES`], or holds anything
    /// but printable ASCII.
    pub fn parse(raw: &[u8]) -> Result<Self, KeyError> {
        if raw.is_empty() {
            return Err(KeyError::Empty);
        }
        if !raw.iter().all(|b| (b' '..=b'~').contains(b)) {
            return Err(KeyError::NotPrintable);
        }
        if raw.len() > MAX_KEY_BYTES {
            return Err(KeyError::TooLong);
        }
        let key = std::str::from_utf8(raw).expect("printable ASCII is UTF-8");
        Ok(Self(key.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The answer a first request got, replayed to its repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// The clients the notification was sent to.
    pub sent: usize,
}

/// What claiming a key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key was free: this request sends, then completes or releases it.
    First,
    /// A request with the key was answered this.
    Done(Answer),
    /// A request with the key is still being sent.
    InFlight,
}

/// Why [`Idempotency::once`] has no answer.
#[derive(Debug, thiserror::Error)]
pub enum OnceError<E> {
    /// The first request with the key did not finish within [`IN_FLIGHT_WAIT`].
    #[error("a request with this Idempotency-Key is still in progress")]
    InFlight,
    /// Sending failed; the key was given back.
    #[error(transparent)]
    Send(E),
}

/// Where keys are kept: in memory, or in Redis with memory while it is away.
pub struct Idempotency {
    memory: MemoryKeys,
    redis: Option<RedisKeys>,
}

impl Idempotency {
    /// Keys in this process's memory only.
    pub fn in_memory() -> Self {
        Self {
            memory: MemoryKeys::new(MEMORY_KEYS),
            redis: None,
        }
    }

    /// Keys in Redis, shared by every process.
    pub fn in_redis(redis: RedisKeys) -> Self {
        Self {
            memory: MemoryKeys::new(MEMORY_KEYS),
            redis: Some(redis),
        }
    }

    /// Runs `send` unless a request with `key` already did (then answers
    /// what it answered) or is doing so (then waits for its answer).
    ///
    /// # Errors
    /// The first request is still in flight after [`IN_FLIGHT_WAIT`], or
    /// `send` failed.
    pub async fn once<E, F>(&self, key: &IdempotencyKey, send: F) -> Result<Answer, OnceError<E>>
    where
        F: std::future::Future<Output = Result<Answer, E>>,
    {
        let deadline = Instant::now() + IN_FLIGHT_WAIT;
        loop {
            match self.claim(key).await {
                Claim::First => break,
                Claim::Done(answer) => return Ok(answer),
                Claim::InFlight if Instant::now() >= deadline => return Err(OnceError::InFlight),
                Claim::InFlight => tokio::time::sleep(IN_FLIGHT_POLL).await,
            }
        }
        match send.await {
            Ok(answer) => {
                self.complete(key, answer).await;
                Ok(answer)
            }
            Err(err) => {
                self.release(key).await;
                Err(OnceError::Send(err))
            }
        }
    }

    async fn claim(&self, key: &IdempotencyKey) -> Claim {
        if let Some(redis) = &self.redis {
            match redis.claim(key).await {
                Ok(claim) => return claim,
                Err(err) => {
                    log::warn!("idempotency keys: Redis failed, using this process's memory: {err}")
                }
            }
        }
        self.memory.claim(key, Instant::now())
    }

    async fn complete(&self, key: &IdempotencyKey, answer: Answer) {
        self.memory.complete(key, answer, Instant::now());
        if let Some(redis) = &self.redis {
            if let Err(err) = redis.complete(key, answer).await {
                log::warn!("idempotency keys: storing an answer in Redis failed: {err}");
            }
        }
    }

    async fn release(&self, key: &IdempotencyKey) {
        self.memory.release(key);
        if let Some(redis) = &self.redis {
            if let Err(err) = redis.release(key).await {
                log::warn!("idempotency keys: releasing a key in Redis failed: {err}");
            }
        }
    }
}

/// Keys in memory, each kept [`KEEP_FOR`], at most `capacity` of them.
pub struct MemoryKeys {
    capacity: usize,
    inner: Mutex<MemoryInner>,
}

#[derive(Default)]
struct MemoryInner {
    /// Key → when it was claimed and, once sent, its answer.
    entries: HashMap<IdempotencyKey, (Instant, Option<Answer>)>,
    /// Keys in the order they were claimed, for expiry and eviction.
    order: VecDeque<(Instant, IdempotencyKey)>,
}

impl MemoryKeys {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::default(),
        }
    }

    /// Claims `key` at `now`, or says what a request with it got.
    pub fn claim(&self, key: &IdempotencyKey, now: Instant) -> Claim {
        let mut inner = self.inner.lock().expect("no panic while holding the keys");
        inner.expire(now);
        if let Some((_, answer)) = inner.entries.get(key) {
            return answer.map_or(Claim::InFlight, Claim::Done);
        }
        while inner.entries.len() >= self.capacity {
            let Some((_, oldest)) = inner.order.pop_front() else {
                break;
            };
            inner.entries.remove(&oldest);
        }
        inner.entries.insert(key.clone(), (now, None));
        inner.order.push_back((now, key.clone()));
        Claim::First
    }

    /// Stores the answer of the request that claimed `key`.
    pub fn complete(&self, key: &IdempotencyKey, answer: Answer, now: Instant) {
        let mut inner = self.inner.lock().expect("no panic while holding the keys");
        match inner.entries.get_mut(key) {
            Some(entry) => entry.1 = Some(answer),
            // Evicted while it was sent; keep the answer from now on.
            None => {
                inner.entries.insert(key.clone(), (now, Some(answer)));
                inner.order.push_back((now, key.clone()));
            }
        }
    }

    /// Gives `key` back, for a request that did not send.
    pub fn release(&self, key: &IdempotencyKey) {
        let mut inner = self.inner.lock().expect("no panic while holding the keys");
        inner.entries.remove(key);
        inner.order.retain(|(_, k)| k != key);
    }

    pub fn len(&self) -> usize {
        self.inner.lock().expect("no panic").entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl MemoryInner {
    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.duration_since(*at) < KEEP_FOR {
                break;
            }
            let (at, key) = self.order.pop_front().expect("checked above");
            // A released and re-claimed key has a newer entry; keep that.
            if self.entries.get(&key).is_some_and(|(t, _)| *t == at) {
                self.entries.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> IdempotencyKey {
        IdempotencyKey::parse(k.as_bytes()).unwrap()
    }

    #[test]
    fn keys_are_1_to_128_printable_ascii_characters() {
        let long = "k".repeat(129);
        let longest = "k".repeat(128);
        let cases: [(&str, &[u8], Result<(), KeyError>); 7] = [
            ("one character", b"a", Ok(())),
            ("the longest", longest.as_bytes(), Ok(())),
            ("spaces and symbols", b"order 42/~!", Ok(())),
            ("empty", b"", Err(KeyError::Empty)),
            ("one too long", long.as_bytes(), Err(KeyError::TooLong)),
            ("a tab", b"a\tb", Err(KeyError::NotPrintable)),
            (
                "not ASCII",
                "caf\u{e9}".as_bytes(),
                Err(KeyError::NotPrintable),
            ),
        ];
        for (description, raw, expected) in cases {
            let got = IdempotencyKey::parse(raw).map(|_| ());
            assert_eq!(got, expected, "{description}");
        }
    }

    #[test]
    fn a_claimed_key_is_in_flight_then_done_then_forgotten_after_five_minutes() {
        let keys = MemoryKeys::new(10);
        let t0 = Instant::now();
        assert_eq!(keys.claim(&key("a"), t0), Claim::First);
        assert_eq!(keys.claim(&key("a"), t0), Claim::InFlight);
        keys.complete(&key("a"), Answer { sent: 3 }, t0);
        assert_eq!(keys.claim(&key("a"), t0), Claim::Done(Answer { sent: 3 }));
        let later = t0 + KEEP_FOR;
        assert_eq!(keys.claim(&key("a"), later), Claim::First);
    }

    #[test]
    fn a_released_key_can_be_claimed_again() {
        let keys = MemoryKeys::new(10);
        let now = Instant::now();
        assert_eq!(keys.claim(&key("a"), now), Claim::First);
        keys.release(&key("a"));
        assert_eq!(keys.claim(&key("a"), now), Claim::First);
    }

    #[test]
    fn memory_holds_at_most_its_capacity_and_drops_the_oldest() {
        let keys = MemoryKeys::new(3);
        let now = Instant::now();
        for k in ["a", "b", "c", "d"] {
            assert_eq!(keys.claim(&key(k), now), Claim::First);
        }
        assert_eq!(keys.len(), 3);
        assert_eq!(keys.claim(&key("a"), now), Claim::First, "a was dropped");
    }

    #[actix_web::test]
    async fn once_sends_once_and_repeats_get_the_first_answer() {
        let keys = Idempotency::in_memory();
        let first = keys
            .once(&key("k"), async { Ok::<_, ()>(Answer { sent: 2 }) })
            .await
            .unwrap();
        let repeat = keys
            .once(&key("k"), async { Ok::<_, ()>(Answer { sent: 9 }) })
            .await
            .unwrap();
        assert_eq!((first, repeat), (Answer { sent: 2 }, Answer { sent: 2 }));
        let failed = keys.once(&key("f"), async { Err::<Answer, _>("no") }).await;
        assert!(matches!(failed, Err(OnceError::Send("no"))));
        let retried = keys
            .once(&key("f"), async { Ok::<_, ()>(Answer { sent: 1 }) })
            .await
            .unwrap();
        assert_eq!(retried, Answer { sent: 1 });
    }
}
