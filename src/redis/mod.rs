//! Everything that talks to Redis, in one place: the [`bridge::RedisBridge`]
//! actor that relays events between chatd processes, the pure pieces it is
//! built from ([`relay`]: the envelope, the outbox, the repeat filter, the
//! backoff), the `Idempotency-Key`s of `/notify` ([`idempotency`]), one
//! server or a Redis Cluster behind one surface ([`link`]) and the names of
//! the channels and keys every process shares.
//! The hub never sees a Redis command: it hands the bridge events and room
//! changes, and gets events back.

pub mod bridge;
pub mod history;
pub mod idempotency;
pub mod link;
pub mod presence;
pub mod relay;

use crate::actors::chat_hub::Audience;
use crate::auth::UserId;
use crate::protocol::RoomName;

/// The pub/sub channels of one chat (`REDIS_CHANNEL`): the channel itself
/// for everyone-notices, which every process follows, and
/// `<REDIS_CHANNEL>:room:<name>` per room, which a process follows only
/// while the room has members there. So a process's Redis traffic grows
/// with the rooms its clients are in, not with all the chat's traffic.
#[derive(Debug, Clone)]
pub struct Channels {
    everyone: String,
    room_prefix: String,
    user_prefix: String,
}

impl Channels {
    pub fn new(base: &str) -> Self {
        Self {
            everyone: base.to_string(),
            room_prefix: format!("{base}:room:"),
            user_prefix: format!("{base}:user:"),
        }
    }

    /// The channel every process follows.
    pub fn everyone(&self) -> &str {
        &self.everyone
    }

    pub fn room(&self, room: &RoomName) -> String {
        format!("{}{room}", self.room_prefix)
    }

    /// Where an event for `audience` is published.
    pub fn of(&self, audience: &Audience) -> String {
        match audience {
            Audience::Everyone => self.everyone.clone(),
            Audience::Room(room) => self.room(room),
            Audience::User(user) => format!("{}{user}", self.user_prefix),
        }
    }

    /// The pattern every process follows for notices to a person: such
    /// notices are rare next to chat, so every process reading all of them
    /// costs little, and no subscription changes as users come and go.
    pub fn users_pattern(&self) -> String {
        let escaped: String = self
            .user_prefix
            .chars()
            .flat_map(|c| match c {
                '*' | '?' | '[' | ']' | '\\' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        format!("{escaped}*")
    }

    /// Who a message on `channel` is for; `None` for a channel that is not
    /// one of this chat's.
    pub fn audience(&self, channel: &str) -> Option<Audience> {
        if channel == self.everyone {
            return Some(Audience::Everyone);
        }
        if let Some(user) = channel.strip_prefix(&self.user_prefix) {
            return UserId::parse(user).map(Audience::User);
        }
        let room = channel.strip_prefix(&self.room_prefix)?;
        RoomName::parse(room).ok().map(Audience::Room)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_name_their_audience_and_back() {
        let channels = Channels::new("chatd:events");
        let ops = Audience::Room(RoomName::parse("ops").unwrap());
        assert_eq!(channels.of(&Audience::Everyone), "chatd:events");
        assert_eq!(channels.of(&ops), "chatd:events:room:ops");
        let ana = Audience::User(UserId::parse("ana@example").unwrap());
        assert_eq!(channels.of(&ana), "chatd:events:user:ana@example");
        assert_eq!(channels.users_pattern(), "chatd:events:user:*");
        assert_eq!(Channels::new("a*b").users_pattern(), "a\\*b:user:*");
        for audience in [Audience::Everyone, ops, ana] {
            assert_eq!(channels.audience(&channels.of(&audience)), Some(audience));
        }
        assert_eq!(channels.audience("chatd:events:room:Bad"), None);
        assert_eq!(channels.audience("other"), None);
    }
}
