//! Everything that talks to Redis, in one place: the [`bridge::RedisBridge`]
//! actor that relays events between chatd processes, the pure pieces it is
//! built from ([`relay`]: the envelope, the outbox, the repeat filter, the
//! backoff) and the names of the channels and keys every process shares.
//! The hub never sees a Redis command: it hands the bridge events and room
//! changes, and gets events back.

pub mod bridge;
pub mod history;
pub mod presence;
pub mod relay;

use crate::actors::chat_hub::Audience;
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
}

impl Channels {
    pub fn new(base: &str) -> Self {
        Self {
            everyone: base.to_string(),
            room_prefix: format!("{base}:room:"),
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
        }
    }

    /// Who a message on `channel` is for; `None` for a channel that is not
    /// one of this chat's.
    pub fn audience(&self, channel: &str) -> Option<Audience> {
        if channel == self.everyone {
            return Some(Audience::Everyone);
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
        for audience in [Audience::Everyone, ops] {
            assert_eq!(channels.audience(&channels.of(&audience)), Some(audience));
        }
        assert_eq!(channels.audience("chatd:events:room:Bad"), None);
        assert_eq!(channels.audience("other"), None);
    }
}
