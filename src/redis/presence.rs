//! Presence: how many clients, and how many members per room, every live
//! chatd process has, kept in Redis so any process can count them all.
//!
//! Every [`PRESENCE_INTERVAL`] each process writes, in one MULTI:
//! - `<channel>:presence:<server id>` = its client count, expiring after
//!   `PRESENCE_TTL` (default 10 s);
//! - `<channel>:presence:<server id>:rooms`, a hash of room → local members,
//!   `…:users`, a hash of user → local connections (with tokens), and
//!   `…:members`, a hash of `room<TAB>user` → `connections<TAB>name`, all
//!   rewritten whole and expiring with it;
//! - its id in the set `<channel>:presence`, the index of processes.
//!
//! It then reads the other processes' records. A record that expired belongs
//! to a process that is gone (killed without a drain), and is dropped from
//! the index; one that is not a count was not written by a chatd and counts
//! as gone too, so a stray key never breaks the relay.
//!
//! In a Redis Cluster every presence key has the hash tag
//! `{<channel>:presence}` (the index is `{<channel>:presence}`, a record
//! `{<channel>:presence}:<server id>`), so the MULTI and the reads of all
//! records run on one shard: presence is a few small keys per process,
//! written every two seconds, far from a shard's load.

use std::collections::HashMap;
use std::time::Duration;

use super::link::Conn;

use crate::actors::chat_hub::{CensusReport, PeerCount};
use crate::auth::UserId;
use crate::presence::Roster;
use crate::protocol::{RoomName, ServerId};

/// How often the presence record is refreshed and the peers are counted.
pub const PRESENCE_INTERVAL: Duration = Duration::from_secs(2);

/// The presence keys of one process.
#[derive(Debug, Clone)]
pub struct PresenceKeys {
    index: String,
    me: String,
}

/// What one round learned about the other live processes.
#[derive(Debug, Default)]
pub struct PeerPresence {
    /// How many other processes are live.
    pub processes: usize,
    /// Their clients, in all and per room.
    pub counts: PeerCount,
}

impl PresenceKeys {
    /// The keys of `server`'s record; `cluster` gives them one hash tag.
    pub fn new(channel: &str, server: &ServerId, cluster: bool) -> Self {
        Self {
            index: if cluster {
                format!("{{{channel}:presence}}")
            } else {
                format!("{channel}:presence")
            },
            me: server.to_string(),
        }
    }

    fn count_key(&self, server: &str) -> String {
        format!("{}:{server}", self.index)
    }

    fn rooms_key(&self, server: &str) -> String {
        format!("{}:{server}:rooms", self.index)
    }

    fn users_key(&self, server: &str) -> String {
        format!("{}:{server}:users", self.index)
    }

    fn members_key(&self, server: &str) -> String {
        format!("{}:{server}:members", self.index)
    }

    /// Adds to `pipe` the commands that remove this process's records, for
    /// the end of a drain.
    pub fn remove(&self, pipe: &mut redis::Pipeline) {
        pipe.del(self.count_key(&self.me))
            .ignore()
            .del(self.rooms_key(&self.me))
            .ignore()
            .del(self.users_key(&self.me))
            .ignore()
            .del(self.members_key(&self.me))
            .ignore()
            .srem(&self.index, &self.me)
            .ignore();
    }
}

/// Writes this process's `census` and counts the other live processes.
///
/// # Errors
/// Redis failed or timed out: the link is in trouble.
pub async fn round(
    conn: &mut Conn,
    keys: &PresenceKeys,
    census: CensusReport,
    ttl: Duration,
) -> redis::RedisResult<PeerPresence> {
    let ttl = ttl.as_secs();
    let rooms_key = keys.rooms_key(&keys.me);
    let users_key = keys.users_key(&keys.me);
    let members_key = keys.members_key(&keys.me);
    let mut pipe = redis::pipe();
    pipe.atomic()
        .set_ex(keys.count_key(&keys.me), census.clients, ttl)
        .ignore()
        .del(&rooms_key)
        .ignore()
        .del(&users_key)
        .ignore()
        .del(&members_key)
        .ignore();
    let rooms: Vec<(&str, usize)> = census.rooms.iter().map(|(r, n)| (r.as_str(), *n)).collect();
    let users: Vec<(&str, usize)> = census.users.iter().map(|(u, n)| (u.as_str(), *n)).collect();
    for (key, fields) in [(&rooms_key, &rooms), (&users_key, &users)] {
        if !fields.is_empty() {
            pipe.hset_multiple(key, fields)
                .ignore()
                .expire(key, ttl as i64)
                .ignore();
        }
    }
    let members: Vec<(String, String)> = census
        .rosters
        .iter()
        .flat_map(|(room, roster)| {
            roster
                .users()
                .map(move |(user, name, n)| (format!("{room}\t{user}"), format!("{n}\t{name}")))
        })
        .collect();
    if !members.is_empty() {
        pipe.hset_multiple(&members_key, &members)
            .ignore()
            .expire(&members_key, ttl as i64)
            .ignore();
    }
    pipe.sadd(&keys.index, &keys.me)
        .ignore()
        .smembers(&keys.index);
    let (members,): (Vec<String>,) = pipe.query_async(conn).await?;
    let others: Vec<String> = members.into_iter().filter(|id| *id != keys.me).collect();
    if others.is_empty() {
        return Ok(PeerPresence::default());
    }
    let count_keys: Vec<String> = others.iter().map(|id| keys.count_key(id)).collect();
    let records: Vec<Option<String>> = redis::cmd("MGET")
        .arg(&count_keys)
        .query_async(conn)
        .await?;
    let counts: Vec<Option<usize>> = records
        .iter()
        .map(|record| record.as_deref().and_then(|r| r.parse().ok()))
        .collect();
    let (live, gone): (Vec<_>, Vec<_>) = others.iter().zip(&counts).partition(|(_, c)| c.is_some());
    if !gone.is_empty() {
        let gone: Vec<&String> = gone.into_iter().map(|(id, _)| id).collect();
        redis::cmd("SREM")
            .arg(&keys.index)
            .arg(&gone)
            .exec_async(conn)
            .await?;
    }
    let mut presence = PeerPresence {
        processes: live.len(),
        ..PeerPresence::default()
    };
    if live.is_empty() {
        return Ok(presence);
    }
    let mut pipe = redis::pipe();
    for (id, count) in &live {
        presence.counts.clients += count.unwrap_or(0);
        pipe.hgetall(keys.rooms_key(id))
            .hgetall(keys.users_key(id))
            .hgetall(keys.members_key(id));
    }
    let hashes: Vec<HashMap<String, String>> = pipe.query_async(conn).await?;
    let mut hashes = hashes.into_iter().enumerate();
    let (mut rooms, mut users) = (Vec::new(), Vec::new());
    while let (Some((_, r)), Some((_, u)), Some((_, m))) =
        (hashes.next(), hashes.next(), hashes.next())
    {
        rooms.push((0, r));
        users.push((0, u));
        add_members(&mut presence.counts.rosters, m);
    }
    presence.counts.rooms = sum_counts(rooms.into_iter().map(|(_, h)| h), |r| {
        RoomName::parse(r).ok()
    });
    presence.counts.users = sum_counts(users.into_iter().map(|(_, h)| h), UserId::parse);
    Ok(presence)
}

/// Adds one process's `members` hash to the rosters, skipping any field not
/// of the shape written above.
fn add_members(rosters: &mut HashMap<RoomName, Roster>, members: HashMap<String, String>) {
    for (field, value) in members {
        let (Some((room, user)), Some((count, name))) =
            (field.split_once('\t'), value.split_once('\t'))
        else {
            continue;
        };
        if let (Ok(room), Ok(count)) = (RoomName::parse(room), count.parse::<usize>()) {
            rosters.entry(room).or_default().add(user, name, count);
        }
    }
}

/// Adds up the count hashes of several processes, skipping any field whose
/// name `parse` refuses or whose value is not a count.
fn sum_counts<K: std::hash::Hash + Eq>(
    hashes: impl Iterator<Item = HashMap<String, String>>,
    parse: impl Fn(&str) -> Option<K>,
) -> HashMap<K, usize> {
    let mut counts: HashMap<K, usize> = HashMap::new();
    for (name, count) in hashes.flatten() {
        if let (Some(key), Ok(count)) = (parse(&name), count.parse::<usize>()) {
            *counts.entry(key).or_default() += count;
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_a_cluster_every_presence_key_shares_one_hash_tag() {
        let server = ServerId::generate();
        let keys = PresenceKeys::new("chatd:events", &server, true);
        assert_eq!(keys.index, "{chatd:events:presence}");
        for key in [
            keys.count_key("s"),
            keys.rooms_key("s"),
            keys.members_key("s"),
        ] {
            assert!(key.starts_with("{chatd:events:presence}:"), "{key}");
        }
        let single = PresenceKeys::new("chatd:events", &server, false);
        assert_eq!(single.count_key("s"), "chatd:events:presence:s");
    }

    #[test]
    fn room_counts_add_up_across_processes_and_skip_strays() {
        let hash = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let rooms = sum_counts(
            vec![
                hash(&[("general", "3"), ("ops", "1")]),
                hash(&[("general", "2"), ("Bad Room", "9"), ("dev", "many")]),
            ]
            .into_iter(),
            |r| RoomName::parse(r).ok(),
        );
        assert_eq!(rooms.len(), 2, "{rooms:?}");
        assert_eq!(rooms[&RoomName::general()], 5);
        assert_eq!(rooms[&RoomName::parse("ops").unwrap()], 1);
    }
}
