//! How a fleet's clients are split into rooms, and the check that a copy
//! came from the receiver's own room.
//!
//! Client `i` is in room `i % rooms` and senders are clients `0..senders`,
//! so sender `s` speaks in room `s % rooms`: with one sender per room
//! (`senders == rooms`) client `r` is room `r`'s sender. A receiver keeps a
//! sequence track only for the senders of its own room (their local index is
//! `s / rooms`), so 10,000 clients in 1,000 rooms cost one track each, not
//! a thousand.
//!
//! A copy is from another room when its tag names a sender of another room,
//! or when the `room` the server put on the `echo` is not the receiver's:
//! either way the server broke isolation, so it is an error and not a
//! delivery.

use memchr::memmem;
use std::sync::LazyLock;

/// How clients are split into rooms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rooms {
    /// Everyone in chatd's default room, named neither at connect nor in
    /// messages: what a v1 client does, and what the one-room modes measure.
    General,
    /// This many rooms, `r-0`, `r-1`, ...; each client names its room at
    /// connect and in every message.
    Named(usize),
}

/// Where a tagged copy came from, as seen by one receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A sender of the receiver's room, with that sender's index among the
    /// room's senders (its sequence track).
    OwnRoom(usize),
    /// A sender of another room, or a copy labelled with another room.
    OtherRoom,
    /// A sender index this fleet does not have: a copy from an earlier run.
    Unknown,
}

/// Where the room label starts in an `echo`.
static ROOM_LABEL: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"\"room\":\""));

impl Rooms {
    pub fn count(self) -> usize {
        match self {
            Self::General => 1,
            Self::Named(count) => count.max(1),
        }
    }

    /// The room of client `index`.
    pub fn of_client(self, index: usize) -> usize {
        index % self.count()
    }

    /// How many of `senders` speak in `room`.
    pub fn senders_in(self, room: usize, senders: usize) -> usize {
        let rooms = self.count();
        (senders + rooms - 1 - room) / rooms
    }

    /// The path a client of `room` opens its WebSocket at.
    pub fn ws_path(self, room: usize) -> String {
        match self {
            Self::General => "/ws".into(),
            Self::Named(_) => format!("/ws?room=r-{room}"),
        }
    }

    /// Appends the `"room":"r-N",` field of a chat message sent in `room`;
    /// nothing in `General`, whose messages go to the default room.
    pub fn write_room_field(self, room: usize, out: &mut Vec<u8>) {
        use std::io::Write;
        if let Self::Named(_) = self {
            let _ = write!(out, "\"room\":\"r-{room}\",");
        }
    }

    /// Where a copy from `sender` (of `senders`), whose `echo` is `event`,
    /// came from for a receiver in `room`.
    pub fn origin(self, room: usize, sender: usize, senders: usize, event: &[u8]) -> Origin {
        if sender >= senders {
            return Origin::Unknown;
        }
        if self.of_client(sender) != room || !self.labelled(room, event) {
            return Origin::OtherRoom;
        }
        Origin::OwnRoom(sender / self.count())
    }

    /// Whether `event` carries `room`'s label. In `General` any label does:
    /// v1 servers put none, v2 servers `general`. In `Named` the label must
    /// be there, since every v2 `echo` names its room.
    fn labelled(self, room: usize, event: &[u8]) -> bool {
        let Self::Named(_) = self else {
            return true;
        };
        let Some(at) = ROOM_LABEL.find(event) else {
            return false;
        };
        let label = &event[at + b"\"room\":\"".len()..];
        let Some(digits) = label.strip_prefix(b"r-") else {
            return false;
        };
        let len = digits.iter().take_while(|b| b.is_ascii_digit()).count();
        if len == 0 || len > 19 || digits.get(len) != Some(&b'"') {
            return false;
        }
        let number = digits[..len]
            .iter()
            .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        // No leading zeros: "r-07" is another room than "r-7".
        number == room as u64 && (len == 1 || digits[0] != b'0')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo(room: &str) -> String {
        format!(
            r#"{{"type":"echo","id":"1-a","room":"{room}","message":"B1 3 0 9","from":{{"id":"c1","name":"x"}},"ts":1}}"#
        )
    }

    #[test]
    fn clients_are_dealt_round_the_rooms_with_one_sender_each() {
        let rooms = Rooms::Named(1000);
        assert_eq!(rooms.of_client(0), 0);
        assert_eq!(rooms.of_client(17), 17);
        assert_eq!(rooms.of_client(1017), 17);
        assert_eq!(rooms.of_client(9999), 999);
        let members = (0..10_000).filter(|&i| rooms.of_client(i) == 17).count();
        assert_eq!(members, 10, "10,000 clients in 1,000 rooms of 10");
        for room in [0, 17, 999] {
            assert_eq!(rooms.senders_in(room, 1000), 1, "room {room}");
        }
        assert_eq!(rooms.ws_path(17), "/ws?room=r-17");
        let mut field = Vec::new();
        rooms.write_room_field(17, &mut field);
        assert_eq!(field, br#""room":"r-17","#);
    }

    #[test]
    fn senders_are_shared_out_when_they_do_not_divide_evenly() {
        // Five senders in three rooms: 0 and 3 in r-0, 1 and 4 in r-1, 2 in r-2.
        let rooms = Rooms::Named(3);
        let counts: Vec<_> = (0..3).map(|room| rooms.senders_in(room, 5)).collect();
        assert_eq!(counts, [2, 2, 1]);
        let e = |room: usize| echo(&format!("r-{room}"));
        assert_eq!(rooms.origin(1, 4, 5, e(1).as_bytes()), Origin::OwnRoom(1));
        assert_eq!(rooms.origin(0, 3, 5, e(0).as_bytes()), Origin::OwnRoom(1));
        assert_eq!(rooms.origin(2, 2, 5, e(2).as_bytes()), Origin::OwnRoom(0));
    }

    #[test]
    fn the_general_room_is_the_one_room_of_before() {
        let general = Rooms::General;
        assert_eq!(general.count(), 1);
        assert_eq!(general.of_client(12_345), 0);
        assert_eq!(general.senders_in(0, 10), 10);
        assert_eq!(general.ws_path(0), "/ws");
        let mut field = Vec::new();
        general.write_room_field(0, &mut field);
        assert!(field.is_empty());
        let v1 = br#"{"type":"echo","id":"1","message":"B1 3 0 9","ts":1}"#;
        assert_eq!(general.origin(0, 3, 10, v1), Origin::OwnRoom(3));
        assert_eq!(
            general.origin(0, 3, 10, echo("general").as_bytes()),
            Origin::OwnRoom(3)
        );
        assert_eq!(general.origin(0, 10, 10, v1), Origin::Unknown);
    }

    #[test]
    fn a_copy_from_or_labelled_with_another_room_is_told_apart() {
        let rooms = Rooms::Named(1000);
        let cases = [
            (
                "own sender, own label",
                17,
                17,
                echo("r-17"),
                Origin::OwnRoom(0),
            ),
            (
                "another room's sender",
                17,
                18,
                echo("r-17"),
                Origin::OtherRoom,
            ),
            (
                "another room's label",
                17,
                17,
                echo("r-18"),
                Origin::OtherRoom,
            ),
            (
                "label with a longer number",
                17,
                17,
                echo("r-170"),
                Origin::OtherRoom,
            ),
            (
                "label with a leading zero",
                7,
                7,
                echo("r-07"),
                Origin::OtherRoom,
            ),
            (
                "label with a suffix",
                17,
                17,
                echo("r-17x"),
                Origin::OtherRoom,
            ),
            (
                "the default room",
                17,
                17,
                echo("general"),
                Origin::OtherRoom,
            ),
            (
                "no label (a v1 server)",
                17,
                17,
                r#"{"type":"echo","id":"1","message":"B1 17 0 9","ts":1}"#.into(),
                Origin::OtherRoom,
            ),
            ("room 0", 0, 0, echo("r-0"), Origin::OwnRoom(0)),
            (
                "a sender the fleet lacks",
                17,
                1017,
                echo("r-17"),
                Origin::Unknown,
            ),
        ];
        for (what, room, sender, event, expected) in cases {
            assert_eq!(
                rooms.origin(room, sender, 1000, event.as_bytes()),
                expected,
                "{what}"
            );
        }
    }
}
