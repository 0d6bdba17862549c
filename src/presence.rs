//! Presence: who is in a room, as one list of users per room, and what
//! changed since members were last told.
//!
//! A user is its token's `sub` (with tokens) or the connection's client id
//! (without): a user with three tabs is one entry with three connections, it
//! joins with its first and leaves with its last. The hub builds each room's
//! [`Roster`] from its own members and the other processes' (as the Redis
//! presence records last said), once a second, and tells a room's members the
//! [`Roster::changes`] since the last time: so a thousand clients
//! reconnecting after a deploy cost one `presence` event per room per second,
//! not a million. Nothing here touches chat fan-out.

use std::collections::BTreeMap;

/// The users of one room: key → (display name, connections), sorted by key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roster(BTreeMap<String, (String, usize)>);

/// Users who came or went: (key, display name).
pub type Changes = (Vec<(String, String)>, Vec<(String, String)>);

impl Roster {
    /// Counts `connections` more of user `key`, shown as `name`.
    pub fn add(&mut self, key: &str, name: &str, connections: usize) {
        let entry = self
            .0
            .entry(key.to_string())
            .or_insert_with(|| (name.to_string(), 0));
        entry.1 += connections;
    }

    /// Adds every user of `other`.
    pub fn merge(&mut self, other: &Roster) {
        for (key, (name, connections)) in &other.0 {
            self.add(key, name, *connections);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// (key, name, connections), sorted by key.
    pub fn users(&self) -> impl Iterator<Item = (&str, &str, usize)> {
        self.0
            .iter()
            .map(|(k, (n, c))| (k.as_str(), n.as_str(), *c))
    }

    /// Who is here and was not in `before` (joins), and who was and is not
    /// (leaves). More or fewer connections of a user who stays is no change.
    pub fn changes(&self, before: &Roster) -> Changes {
        let joins = self
            .0
            .iter()
            .filter(|(key, _)| !before.0.contains_key(*key))
            .map(|(key, (name, _))| (key.clone(), name.clone()))
            .collect();
        let leaves = before
            .0
            .iter()
            .filter(|(key, _)| !self.0.contains_key(*key))
            .map(|(key, (name, _))| (key.clone(), name.clone()))
            .collect();
        (joins, leaves)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_with_several_connections_joins_once_and_leaves_with_the_last() {
        let mut before = Roster::default();
        before.add("bo", "Bo", 1);
        let mut now = before.clone();
        now.add("ana", "Ana", 1);
        now.add("ana", "Ana", 2);
        let names = |v: Vec<(String, String)>| v.into_iter().map(|(_, n)| n).collect::<Vec<_>>();

        let (joins, leaves) = now.changes(&before);
        assert_eq!(
            (names(joins), names(leaves)),
            (vec!["Ana".to_string()], vec![])
        );
        assert_eq!(now.users().find(|u| u.0 == "ana").map(|u| u.2), Some(3));

        let mut later = Roster::default();
        later.add("ana", "Ana", 1);
        let (joins, leaves) = later.changes(&now);
        assert!(joins.is_empty(), "ana stays while one tab is open");
        assert_eq!(names(leaves), ["Bo"]);
    }
}
