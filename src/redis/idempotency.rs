//! `Idempotency-Key`s of `POST /notify` in Redis, shared by every process.
//!
//! A key is `<REDIS_CHANNEL>:idempotency:<key>`. The first request claims it
//! with `SET key "" NX EX 300`; once sent, it stores its answer (JSON) in the
//! key with the same expiry. A repeat whose `SET NX` finds the key reads it:
//! an answer is replayed, an empty value means the first is still in flight.
//! A first request that failed deletes the key. If the first request's
//! process dies in flight, the key stays claimed until it expires, and
//! repeats are answered 409 until then: sending twice is what the key is
//! there to prevent.
//!
//! One multiplexed connection (a cluster connection with
//! `REDIS_CLUSTER_NODES`), opened on first use and opened again after an
//! error, serves every worker; the commands are single round trips on one
//! key each, so in a cluster each goes to the key's shard.

use std::sync::Mutex;
use std::time::Duration;

use super::link::{Conn, Target};
use crate::config::RedisTarget;
use crate::idempotency::{Answer, Claim, IdempotencyKey, KEEP_FOR};

/// How long connecting or one command may take.
const TIMEOUT: Duration = Duration::from_secs(2);

/// The keys in one Redis.
pub struct RedisKeys {
    target: Target,
    prefix: String,
    conn: Mutex<Option<Conn>>,
}

impl RedisKeys {
    /// Keys in the Redis (or cluster) at `target`, named after `channel`.
    /// Nothing connects until the first claim.
    ///
    /// # Errors
    /// A URL does not parse (the start-up check has already read them).
    pub fn new(target: &RedisTarget, channel: &str) -> redis::RedisResult<Self> {
        Ok(Self {
            target: Target::new(target)?,
            prefix: format!("{channel}:idempotency:"),
            conn: Mutex::new(None),
        })
    }

    fn name(&self, key: &IdempotencyKey) -> String {
        format!("{}{}", self.prefix, key.as_str())
    }

    async fn connection(&self) -> redis::RedisResult<Conn> {
        if let Some(conn) = self.conn.lock().expect("no panic while held").clone() {
            return Ok(conn);
        }
        let conn = self.target.connect(TIMEOUT).await?;
        *self.conn.lock().expect("no panic while held") = Some(conn.clone());
        Ok(conn)
    }

    /// Runs `cmd`, forgetting the connection when it fails.
    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        let mut conn = self.connection().await?;
        let result = cmd.query_async(&mut conn).await;
        if result.is_err() {
            *self.conn.lock().expect("no panic while held") = None;
        }
        result
    }

    /// Claims `key`, or reads what the request that claimed it answered.
    ///
    /// # Errors
    /// Redis failed.
    pub async fn claim(&self, key: &IdempotencyKey) -> redis::RedisResult<Claim> {
        let name = self.name(key);
        // The key may expire between the SET and the GET: then claim again.
        for _ in 0..3 {
            let claimed: Option<String> = self
                .run(
                    redis::cmd("SET")
                        .arg(&name)
                        .arg("")
                        .arg("NX")
                        .arg("EX")
                        .arg(KEEP_FOR.as_secs()),
                )
                .await?;
            if claimed.is_some() {
                return Ok(Claim::First);
            }
            let stored: Option<String> = self.run(redis::cmd("GET").arg(&name)).await?;
            match stored.as_deref() {
                None => continue,
                Some("") => return Ok(Claim::InFlight),
                Some(json) => {
                    return Ok(match serde_json::from_str(json) {
                        Ok(answer) => Claim::Done(answer),
                        // Not written by chatd; treat as in flight until it expires.
                        Err(_) => Claim::InFlight,
                    });
                }
            }
        }
        Ok(Claim::InFlight)
    }

    /// Stores the answer of the request that claimed `key`.
    ///
    /// # Errors
    /// Redis failed.
    pub async fn complete(&self, key: &IdempotencyKey, answer: Answer) -> redis::RedisResult<()> {
        let json = serde_json::to_string(&answer).expect("an answer is plain JSON");
        self.run::<()>(
            redis::cmd("SET")
                .arg(self.name(key))
                .arg(json)
                .arg("EX")
                .arg(KEEP_FOR.as_secs()),
        )
        .await
    }

    /// Gives `key` back after a request that did not send.
    ///
    /// # Errors
    /// Redis failed.
    pub async fn release(&self, key: &IdempotencyKey) -> redis::RedisResult<()> {
        self.run::<()>(redis::cmd("DEL").arg(self.name(key))).await
    }
}
