//! Room histories in Redis: a stream per room, numbered in Redis.
//!
//! Each room has two keys with one hash tag, so a cluster keeps them (and
//! the room's channel, whose name is the tag) on one shard:
//! - `{<channel>:room:<name>}:history`, a stream of the room's stored events,
//!   entry id `<offset>-1`, trimmed to `HISTORY_SIZE`;
//! - `{<channel>:room:<name>}:meta`, a hash with the room's `epoch` and `top`
//!   (its last offset).
//!
//! Both expire `HISTORY_TTL` after the room's last event. When the meta hash
//! is missing (a new room, an expired or flushed one) a fresh epoch is
//! written and any old stream dropped: the offsets start again at 1 under a
//! name no client has seen.
//!
//! [`APPEND`] gives a batch of events their offsets, appends them and
//! publishes them in one atomic step (one round trip for the batch), so an
//! event is either stored and published or neither, and any process can
//! serve a recovery the moment a client saw the echo. [`READ`] reads what a
//! join or `GET /rooms/{R}/history` needs, with the recovery decision taken
//! in the same step as the read.
//!
//! In a Redis Cluster the script publishes with SPUBLISH, the room channel
//! being a sharded channel there. A script may only touch its own slot, and
//! it does: the channel `<channel>:room:<name>` hashes to the slot of its
//! own name, which is the keys' hash tag (`REDIS_CHANNEL` may hold no brace
//! in a cluster, so the tag is always the whole channel name).

use redis::{FromRedisValue, Value};

use super::link::Conn;
use super::relay::Queued;
use super::Channels;
use crate::config::HistorySettings;
use crate::history::{Epoch, Page, Replay, Since};
use crate::protocol::{EventText, RoomName, ServerId};

/// Appends events to a room and publishes each.
/// KEYS: stream, meta. ARGV: channel, size, ttl, epoch if new, origin, then
/// (seq, event) per event, each event carrying the placeholder
/// [`OFFSET_PLACEHOLDER`] where its offset goes. Returns {epoch, first
/// offset}.
pub const APPEND: &str = r#"
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if not epoch then
  epoch = ARGV[4]
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'epoch', epoch, 'top', 0)
end
local n = (#ARGV - 5) / 2
local first = redis.call('HINCRBY', KEYS[2], 'top', n) - n + 1
for i = 0, n - 1 do
  local offset = first + i
  local event = ARGV[7 + 2 * i]
  local at = string.find(event, '"offset":0,', 1, true)
  local body
  if at then
    body = string.sub(event, 1, at - 1) .. '"offset":' .. offset .. ',' .. string.sub(event, at + 11)
  else
    body = '{"offset":' .. offset .. ',' .. string.sub(event, 2)
  end
  redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], offset .. '-1', 'e', body)
  redis.call('PUBLISH', ARGV[1], '{"origin":' .. cjson.encode(ARGV[5]) .. ',"seq":' ..
    ARGV[6 + 2 * i] .. ',"offset":' .. offset .. ',"frame":' .. cjson.encode(body) .. '}')
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return {epoch, first}
"#;

/// Reads a room's history. KEYS: stream, meta. ARGV: epoch if new, ttl,
/// mode (`resume`, `after`, `before`, `latest`), offset, limit, the epoch a
/// resume asks for, the most a resume returns. Returns {epoch, top,
/// recovered (1/0), offset, event, offset, event, ...}. The resume rule is
/// `history::recovery`'s, here so that the decision and the read are one
/// atomic step.
pub const READ: &str = r#"
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'epoch', epoch, 'top', 0)
  redis.call('EXPIRE', KEYS[2], ARGV[2])
end
local top = tonumber(redis.call('HGET', KEYS[2], 'top'))
local mode, offset, limit = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local recovered = 0
if mode == 'resume' then
  local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
  local first = top + 1
  if #oldest > 0 then first = tonumber(string.match(oldest[1][1], '^(%d+)')) end
  if ARGV[6] == epoch and offset <= top and offset + 1 >= first then
    recovered, mode, limit = 1, 'after', tonumber(ARGV[7])
  else
    mode = 'latest'
  end
end
local entries
if mode == 'after' then
  entries = redis.call('XRANGE', KEYS[1], (offset + 1) .. '-0', '+', 'COUNT', limit)
elseif mode == 'before' then
  entries = redis.call('XREVRANGE', KEYS[1], '(' .. offset .. '-0', '-', 'COUNT', limit)
else
  entries = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', limit)
end
local out = {epoch, top, recovered}
local from, to, step = 1, #entries, 1
if mode ~= 'after' then from, to, step = #entries, 1, -1 end
for i = from, to, step do
  table.insert(out, tonumber(string.match(entries[i][1], '^(%d+)')))
  table.insert(out, entries[i][2][2])
end
return out
"#;

/// The two keys of a room's history.
pub fn keys(room_channel: &str) -> (String, String) {
    (
        format!("{{{room_channel}}}:history"),
        format!("{{{room_channel}}}:meta"),
    )
}

/// Where an event handed to [`APPEND`] has its offset: the hub encodes it
/// with offset 0, and the script puts the real one in its place, so a stored
/// event keeps the field order of one numbered in memory. (Inside a JSON
/// string a quote is escaped, so the first match is the field itself.)
pub const OFFSET_PLACEHOLDER: &str = "\"offset\":0,";

/// The event `APPEND` stores for offset `offset`: the same bytes the script
/// builds, so local members get exactly what other processes get.
pub fn with_offset(event: &str, offset: u64) -> EventText {
    match event.find(OFFSET_PLACEHOLDER) {
        Some(at) => EventText::from(format!(
            "{}\"offset\":{offset},{}",
            &event[..at],
            &event[at + OFFSET_PLACEHOLDER.len()..]
        )),
        None => EventText::from(format!("{{\"offset\":{offset},{}", &event[1..])),
    }
}

/// The event as local members get it while it cannot be stored: without
/// the placeholder, so without an offset.
pub fn unnumbered(event: &str) -> EventText {
    match event.find(OFFSET_PLACEHOLDER) {
        Some(at) => EventText::from(format!(
            "{}{}",
            &event[..at],
            &event[at + OFFSET_PLACEHOLDER.len()..]
        )),
        None => EventText::from(event),
    }
}

/// What a read asks for.
#[derive(Debug, Clone)]
pub enum ReadKind {
    /// A join: resume after `since` when it can be served, else the latest
    /// `latest` events.
    Join {
        since: Option<Since>,
        latest: usize,
        /// The most a resume returns (`HISTORY_SIZE`).
        most: usize,
    },
    /// `GET /rooms/{R}/history`.
    Page { page: Page, limit: usize },
}

/// The arguments of a [`READ`] call (after the keys).
pub fn read_args(kind: &ReadKind, ttl_s: u64) -> Vec<String> {
    let epoch = Epoch::generate().as_str().to_string();
    let (mode, offset, limit, since_epoch, most) = match kind {
        ReadKind::Join {
            since: Some(since),
            latest,
            most,
        } => ("resume", since.offset, *latest, since.epoch.clone(), *most),
        ReadKind::Join { latest, most, .. } => ("latest", 0, *latest, String::new(), *most),
        ReadKind::Page { page, limit } => match page {
            Page::After(offset) => ("after", *offset, *limit, String::new(), 0),
            Page::Before(offset) => ("before", *offset, *limit, String::new(), 0),
            Page::Latest => ("latest", 0, *limit, String::new(), 0),
        },
    };
    vec![
        epoch,
        ttl_s.to_string(),
        mode.to_string(),
        offset.to_string(),
        limit.to_string(),
        since_epoch,
        most.to_string(),
    ]
}

/// Turns [`READ`]'s answer into a replay; `asked_since` says whether
/// `recovered` is meaningful.
///
/// # Errors
/// The answer is not of the script's shape (a foreign writer, or another
/// version of the script).
pub fn parse_read(value: Value, asked_since: bool) -> redis::RedisResult<Replay> {
    let items: Vec<Value> = Vec::from_redis_value(value)?;
    let bad = || redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, "history read"));
    if items.len() < 3 || items.len() % 2 == 0 {
        return Err(bad());
    }
    let mut items = items.into_iter();
    let mut next = || items.next().ok_or_else(bad);
    let epoch = String::from_redis_value(next()?)?;
    let top = u64::from_redis_value(next()?)?;
    let recovered = u64::from_redis_value(next()?)? == 1;
    let mut events = Vec::new();
    while let (Ok(offset), Ok(event)) = (next(), next()) {
        events.push((
            u64::from_redis_value(offset)?,
            EventText::from(String::from_redis_value(event)?),
        ));
    }
    Ok(Replay {
        epoch: Epoch::from_stored(epoch),
        offset: top,
        recovered: asked_since.then_some(recovered),
        events,
    })
}

/// The scripts, loaded on every new connection (a restarted Redis has
/// forgotten them; a NOSCRIPT error drops the link, and the reconnect loads
/// them again; in a cluster every node is loaded, replicas included, and a
/// node that has not got them gets the script's text instead).
pub struct Scripts {
    append: redis::Script,
    read: redis::Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Self::new(false)
    }
}

impl Scripts {
    /// The scripts for one Redis, or for a cluster (`sharded`), where
    /// APPEND publishes on the room's sharded channel.
    pub fn new(sharded: bool) -> Self {
        let append = if sharded {
            APPEND.replace("redis.call('PUBLISH'", "redis.call('SPUBLISH'")
        } else {
            APPEND.to_string()
        };
        Self {
            append: redis::Script::new(&append),
            read: redis::Script::new(READ),
        }
    }
}

/// One APPEND call of a flush: a run of events of one room, in order, by
/// their outbox sequence numbers.
#[derive(Debug)]
pub struct AppendCall {
    pub room: RoomName,
    pub events: Vec<(u64, EventText)>,
}

impl Scripts {
    /// # Errors
    /// Redis refused or failed.
    pub async fn load(&self, conn: &mut Conn) -> redis::RedisResult<()> {
        self.append.load_async(conn).await?;
        self.read.load_async(conn).await?;
        Ok(())
    }

    /// Adds `batch` to `pipe`: a PUBLISH per plain event, an APPEND per run
    /// of stored events of one room, in the batch's order. Only the APPENDs
    /// answer; the calls returned say, in order, which events each answer
    /// numbers.
    pub fn add_batch(
        &self,
        pipe: &mut redis::Pipeline,
        batch: &[&Queued],
        channels: &Channels,
        settings: &HistorySettings,
        origin: &ServerId,
    ) -> Vec<AppendCall> {
        let mut calls: Vec<AppendCall> = Vec::new();
        let mut run: Option<AppendCall> = None;
        for item in batch {
            match item {
                Queued::Store {
                    seq, room, event, ..
                } => match run.as_mut().filter(|r| r.room == *room) {
                    Some(run) => run.events.push((*seq, event.clone())),
                    None => {
                        if let Some(done) = run.take() {
                            calls.push(self.add_append(pipe, done, channels, settings, origin));
                        }
                        run = Some(AppendCall {
                            room: room.clone(),
                            events: vec![(*seq, event.clone())],
                        });
                    }
                },
                Queued::Publish {
                    channel, envelope, ..
                } => {
                    if let Some(done) = run.take() {
                        calls.push(self.add_append(pipe, done, channels, settings, origin));
                    }
                    pipe.publish(channel, envelope).ignore();
                }
            }
        }
        if let Some(done) = run {
            calls.push(self.add_append(pipe, done, channels, settings, origin));
        }
        calls
    }

    /// Sends `batch` to a cluster, where a pipeline may not span slots:
    /// one APPEND per room with all of the room's events of the batch, in
    /// order, and one PUBLISH per plain event, all sent at once (the cluster
    /// connection pipelines them per node). Answers, as [`Self::add_batch`]
    /// does, which events each APPEND numbered and the numbers.
    ///
    /// # Errors
    /// Any command failed: the whole batch is sent again, and receivers
    /// drop the repeats.
    pub async fn send_to_cluster(
        &self,
        conn: &Conn,
        batch: &[&Queued],
        channels: &Channels,
        settings: &HistorySettings,
        origin: &ServerId,
    ) -> redis::RedisResult<(Vec<AppendCall>, Vec<(String, u64)>)> {
        let mut calls: Vec<AppendCall> = Vec::new();
        let mut publishes = Vec::new();
        for item in batch {
            match item {
                Queued::Store {
                    seq, room, event, ..
                } => match calls.iter_mut().find(|c| c.room == *room) {
                    Some(call) => call.events.push((*seq, event.clone())),
                    None => calls.push(AppendCall {
                        room: room.clone(),
                        events: vec![(*seq, event.clone())],
                    }),
                },
                Queued::Publish {
                    channel, envelope, ..
                } => publishes.push(redis::cmd("PUBLISH").arg(channel).arg(envelope).clone()),
            }
        }
        let appends = calls
            .iter()
            .map(|call| self.append_to_cluster(conn, call, channels, settings, origin));
        let plain = publishes.iter().map(|cmd| {
            let mut conn = conn.clone();
            async move { cmd.exec_async(&mut conn).await }
        });
        let (numbered, published) = futures_util::future::join(
            futures_util::future::try_join_all(appends),
            futures_util::future::try_join_all(plain),
        )
        .await;
        published?;
        Ok((calls, numbered?))
    }

    /// Runs one APPEND call on a cluster, on the master of its room's slot
    /// (a node that lacks the script gets its text). Answers {epoch, first
    /// offset}.
    ///
    /// # Errors
    /// The room's shard failed or is away.
    pub async fn append_to_cluster(
        &self,
        conn: &Conn,
        call: &AppendCall,
        channels: &Channels,
        settings: &HistorySettings,
        origin: &ServerId,
    ) -> redis::RedisResult<(String, u64)> {
        let invocation = self.append_invocation(call, channels, settings, origin);
        let mut conn = conn.clone();
        invocation.invoke_async(&mut conn).await
    }

    fn append_invocation<'a>(
        &'a self,
        call: &AppendCall,
        channels: &Channels,
        settings: &HistorySettings,
        origin: &ServerId,
    ) -> redis::ScriptInvocation<'a> {
        let channel = channels.room(&call.room);
        let (stream, meta) = keys(&channel);
        let mut invocation = self.append.prepare_invoke();
        invocation
            .key(stream)
            .key(meta)
            .arg(channel)
            .arg(settings.size)
            .arg(settings.ttl.as_secs())
            .arg(Epoch::generate().as_str())
            .arg(origin.as_str());
        for (seq, event) in &call.events {
            invocation.arg(*seq).arg(&**event);
        }
        invocation
    }

    fn add_append(
        &self,
        pipe: &mut redis::Pipeline,
        call: AppendCall,
        channels: &Channels,
        settings: &HistorySettings,
        origin: &ServerId,
    ) -> AppendCall {
        pipe.invoke_script(&self.append_invocation(&call, channels, settings, origin));
        call
    }

    /// Reads `room`'s history as `kind` asks.
    ///
    /// # Errors
    /// Redis failed, or answered something else than the script's shape.
    pub async fn read(
        &self,
        conn: &mut Conn,
        channels: &Channels,
        room: &RoomName,
        kind: &ReadKind,
        ttl_s: u64,
    ) -> redis::RedisResult<Replay> {
        let (stream, meta) = keys(&channels.room(room));
        let mut invocation = self.read.prepare_invoke();
        invocation.key(stream).key(meta);
        for arg in read_args(kind, ttl_s) {
            invocation.arg(arg);
        }
        let value: Value = invocation.invoke_async(conn).await?;
        let asked_since = matches!(kind, ReadKind::Join { since: Some(_), .. });
        parse_read(value, asked_since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_room_channel_as_hash_tag() {
        assert_eq!(
            keys("chatd:events:room:ops"),
            (
                "{chatd:events:room:ops}:history".to_string(),
                "{chatd:events:room:ops}:meta".to_string()
            )
        );
    }

    #[test]
    fn the_offset_takes_the_placeholder_s_place_as_the_script_puts_it() {
        let event = r#"{"type":"echo","room":"ops","offset":0,"message":"\"offset\":0,"}"#;
        let stored = with_offset(event, 42);
        assert_eq!(
            &*stored,
            r#"{"type":"echo","room":"ops","offset":42,"message":"\"offset\":0,"}"#
        );
        assert_eq!(
            &*unnumbered(event),
            r#"{"type":"echo","room":"ops","message":"\"offset\":0,"}"#
        );
        let bare = with_offset(r#"{"type":"x"}"#, 7);
        assert_eq!(&*bare, r#"{"offset":7,"type":"x"}"#);
    }

    #[test]
    fn in_a_cluster_the_append_script_publishes_on_the_sharded_channel() {
        let sharded = Scripts::new(true);
        assert_ne!(
            sharded.append.get_hash(),
            Scripts::default().append.get_hash()
        );
        assert!(APPEND.contains("redis.call('PUBLISH'"));
    }

    #[test]
    fn a_read_answer_becomes_a_replay() {
        let answer = Value::Array(vec![
            Value::BulkString(b"k3x9q2vd".to_vec()),
            Value::Int(7),
            Value::Int(1),
            Value::Int(6),
            Value::BulkString(br#"{"offset":6}"#.to_vec()),
            Value::Int(7),
            Value::BulkString(br#"{"offset":7}"#.to_vec()),
        ]);
        let replay = parse_read(answer, true).unwrap();
        assert_eq!(replay.epoch.as_str(), "k3x9q2vd");
        assert_eq!((replay.offset, replay.recovered), (7, Some(true)));
        let offsets: Vec<u64> = replay.events.iter().map(|(o, _)| *o).collect();
        assert_eq!(offsets, [6, 7]);
        let odd = Value::Array(vec![Value::Int(1), Value::Int(2)]);
        assert!(parse_read(odd, false).is_err());
    }
}
