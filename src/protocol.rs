//! The JSON protocol: the messages a client sends and the events the server
//! sends, each the text of one WebSocket text message.
//!
//! Clients send chat as `{"type":"message","room":"ops","message":"Hello!"}`
//! (`"type":"notification"` means the same, and without `room` it goes to
//! [`RoomName::general`], as v1 clients expect), and `join` / `leave` a room.
//! The server sends the events of [`ServerEvent`], each with `type` and `ts`
//! (Unix milliseconds). An event is serialized once into an [`EventText`],
//! and that text is cloned (a reference count) for every receiver; a
//! "frame" is always a WebSocket frame (`transport::frame`).

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::web::Bytes;
use bytestring::ByteString;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::history::{Since, SinceError};

/// A serialized event, shared by every session it is delivered to.
pub type EventText = ByteString;

/// Identifies one chatd process across every process sharing a Redis:
/// its pid and a random suffix, since containers all run as pid 1.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServerId(String);

impl ServerId {
    pub fn generate() -> Self {
        Self(format!(
            "{}-{:06x}",
            std::process::id(),
            fastrand::u32(..0x100_0000)
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A connection's number within this process, handed out by a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(u64);

impl SessionId {
    /// The next unused id of this process.
    pub fn next() -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// The id clients see: unique across processes because it names the server.
    pub fn client_id(self, server: &ServerId) -> String {
        format!("{server}-{self}")
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

/// A display name that passed [`DisplayName::parse`]: trimmed, 1 to
/// `max_chars` characters, letters, digits, spaces and `_-.'` only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DisplayName(String);

/// Why a requested display name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name must not be empty")]
    Empty,
    #[error("name must be at most {0} characters")]
    TooLong(usize),
    #[error("name may contain only letters, digits, spaces and _ - . '")]
    BadCharacter,
}

impl DisplayName {
    /// # Errors
    /// [`NameError`] says what is wrong with `raw`.
    pub fn parse(raw: &str, max_chars: usize) -> Result<Self, NameError> {
        let name = raw.trim();
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.chars().count() > max_chars {
            return Err(NameError::TooLong(max_chars));
        }
        let allowed = |c: char| c.is_alphanumeric() || matches!(c, ' ' | '_' | '-' | '.' | '\'');
        if !name.chars().all(allowed) {
            return Err(NameError::BadCharacter);
        }
        Ok(Self(name.to_string()))
    }

    /// The allowed characters of `raw`, at most `max_chars` of them, for a
    /// name derived from something else (a token's `sub`); `user` if none
    /// is left.
    pub fn lenient(raw: &str, max_chars: usize) -> Self {
        let kept: String = raw
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '_' | '-' | '.' | '\''))
            .take(max_chars)
            .collect();
        Self::parse(&kept, max_chars).unwrap_or_else(|_| Self("user".into()))
    }

    /// A name for a client that asked for none, such as `guest-42`.
    pub fn guest(id: SessionId) -> Self {
        Self(format!("guest-{}", id.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A room name that passed [`RoomName::parse`]: 1 to [`RoomName::MAX_LEN`]
/// characters of `a-z 0-9 - _ . :`. Rooms exist while they have members.
///
/// Held as a shared `str`: every member of a room holds its name, so a clone
/// is a reference count, not a copy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomName(std::sync::Arc<str>);

impl Serialize for RoomName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// Why a room name was refused; the text states the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    #[error("room name is empty; {RULE}")]
    Empty,
    #[error("room name is {0} characters; {RULE}")]
    TooLong(usize),
    #[error("room name {0:?} has a character outside the rule; {RULE}")]
    BadCharacter(String),
    #[error("\"room\" must be a string; {RULE}")]
    NotText,
}

/// The room-name rule as clients read it in refusals.
const RULE: &str = "a room name is 1 to 64 characters of a-z 0-9 - _ . : (lowercase, no spaces)";

impl RoomName {
    /// The longest room name, in characters (all of them ASCII).
    pub const MAX_LEN: usize = 64;

    /// # Errors
    /// [`RoomError`] says what is wrong with `raw`; nothing is trimmed or
    /// lowercased, so a client learns the rule instead of a silent rename.
    pub fn parse(raw: &str) -> Result<Self, RoomError> {
        if raw.is_empty() {
            return Err(RoomError::Empty);
        }
        let allowed = |b: u8| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b':');
        if !raw.bytes().all(allowed) {
            let shown: String = raw.chars().take(Self::MAX_LEN).collect();
            return Err(RoomError::BadCharacter(shown));
        }
        if raw.len() > Self::MAX_LEN {
            return Err(RoomError::TooLong(raw.len()));
        }
        Ok(Self(raw.into()))
    }

    /// `general`: where every client that names no room is.
    pub fn general() -> Self {
        thread_local! {
            static GENERAL: RoomName = RoomName("general".into());
        }
        GENERAL.with(Clone::clone)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A client message that passed [`parse_message`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    /// A chat message for a room; `None` is the default room.
    Chat {
        room: Option<RoomName>,
        text: String,
    },
    /// Join a room (again, if already a member: answered with `joined`),
    /// resuming after `since` when given.
    Join {
        room: RoomName,
        since: Option<Since>,
    },
    /// Leave a room.
    Leave { room: RoomName },
    /// A fresh token for the same user, to extend the connection.
    Refresh { token: String },
    /// The client is typing in a room.
    Typing { room: RoomName },
}

/// Why a client message was refused; the text goes back in an `error` event
/// (its wording, and the `bad_frame` code, are part of the protocol).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("frame is not valid JSON")]
    NotJson,
    #[error("frame must be a JSON object with a \"type\" field")]
    NotAnObject,
    #[error("frame has no \"type\" field")]
    MissingType,
    #[error("unknown type {0:?}; send {{\"type\":\"notification\",\"message\":\"...\"}}")]
    UnknownType(String),
    #[error("\"message\" must be a string")]
    MessageNotText,
    #[error("message is empty")]
    EmptyMessage,
    #[error("message is {size} bytes; the limit is {limit}")]
    MessageTooLong { size: usize, limit: usize },
    #[error("binary frames are not supported; send JSON text")]
    Binary,
    #[error("too many messages; slow down")]
    RateLimited,
    #[error("{0}")]
    BadRoom(#[from] RoomError),
    #[error("\"{0}\" needs a \"room\"")]
    MissingRoom(&'static str),
    #[error("you are not a member of room \"{0}\"; join it first")]
    NotAMember(RoomName),
    #[error("a connection may be in at most {0} rooms; leave one first")]
    TooManyRooms(usize),
    #[error("{0}")]
    BadSince(#[from] SinceError),
    #[error("{0}")]
    NotAllowed(String),
}

impl MessageError {
    /// The `code` of the `error` event: what a program branches on, while
    /// `message` is for people.
    pub fn code(&self) -> &'static str {
        match self {
            MessageError::NotJson
            | MessageError::NotAnObject
            | MessageError::MissingType
            | MessageError::UnknownType(_)
            | MessageError::MessageNotText => "bad_frame",
            MessageError::EmptyMessage => "empty",
            MessageError::MessageTooLong { .. } => "too_long",
            MessageError::Binary => "binary",
            MessageError::RateLimited => "rate_limited",
            MessageError::BadRoom(_) | MessageError::MissingRoom(_) => "bad_room",
            MessageError::NotAMember(_) => "not_a_member",
            MessageError::TooManyRooms(_) => "too_many_rooms",
            MessageError::BadSince(_) => "bad_since",
            MessageError::NotAllowed(_) => "not_allowed",
        }
    }
}

/// Parses one client text message.
///
/// # Errors
/// [`MessageError`] says what was wrong, in words meant for the client.
pub fn parse_message(text: &str, max_message_bytes: usize) -> Result<ClientMessage, MessageError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|_| MessageError::NotJson)?;
    let serde_json::Value::Object(mut fields) = value else {
        return Err(MessageError::NotAnObject);
    };
    let kind = match fields.get("type") {
        None | Some(serde_json::Value::Null) => return Err(MessageError::MissingType),
        Some(serde_json::Value::String(kind)) => kind.as_str(),
        Some(other) => return Err(MessageError::UnknownType(other.to_string())),
    };
    match kind {
        "notification" | "message" => {
            let room = room_field(&fields)?;
            let text = chat_text(fields.remove("message"), max_message_bytes)?;
            Ok(ClientMessage::Chat { room, text })
        }
        "join" => Ok(ClientMessage::Join {
            room: room_field(&fields)?.ok_or(MessageError::MissingRoom("join"))?,
            since: match fields.get("since") {
                None | Some(serde_json::Value::Null) => None,
                Some(since) => Some(Since::from_json(since)?),
            },
        }),
        "leave" => Ok(ClientMessage::Leave {
            room: room_field(&fields)?.ok_or(MessageError::MissingRoom("leave"))?,
        }),
        "typing" => Ok(ClientMessage::Typing {
            room: room_field(&fields)?.ok_or(MessageError::MissingRoom("typing"))?,
        }),
        "refresh" => match fields.remove("token") {
            Some(serde_json::Value::String(token)) if !token.trim().is_empty() => {
                Ok(ClientMessage::Refresh { token })
            }
            _ => Err(MessageError::NotAllowed(
                "\"refresh\" needs a \"token\" string".into(),
            )),
        },
        other => Err(MessageError::UnknownType(other.to_string())),
    }
}

/// The optional `room` field: absent or null is `None`.
fn room_field(
    fields: &serde_json::Map<String, serde_json::Value>,
) -> Result<Option<RoomName>, MessageError> {
    match fields.get("room") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(room)) => Ok(Some(RoomName::parse(room)?)),
        Some(_) => Err(RoomError::NotText.into()),
    }
}

/// Checks a chat text: a non-blank string of at most `max_bytes` bytes.
///
/// # Errors
/// [`MessageError::EmptyMessage`], [`MessageError::MessageNotText`] or
/// [`MessageError::MessageTooLong`].
pub fn chat_text(
    value: Option<serde_json::Value>,
    max_bytes: usize,
) -> Result<String, MessageError> {
    let text = match value {
        Some(serde_json::Value::String(text)) => text,
        None | Some(serde_json::Value::Null) => return Err(MessageError::EmptyMessage),
        Some(_) => return Err(MessageError::MessageNotText),
    };
    if text.trim().is_empty() {
        return Err(MessageError::EmptyMessage);
    }
    if text.len() > max_bytes {
        return Err(MessageError::MessageTooLong {
            size: text.len(),
            limit: max_bytes,
        });
    }
    Ok(text)
}

/// Who sent a chat message.
#[derive(Debug, Clone, Serialize)]
pub struct Sender<'a> {
    pub id: &'a str,
    pub name: &'a str,
}

/// Every event the server sends. Build one, then [`ServerEvent::encode`] it
/// once for all receivers.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerEvent<'a> {
    Welcome {
        client_id: &'a str,
        name: &'a str,
        online: usize,
        server: &'a str,
        /// A `joined` event for each room the connection starts in.
        rooms: Vec<&'a RawValue>,
        /// Who the token says the client is, when tokens are required.
        #[serde(skip_serializing_if = "Option::is_none")]
        user: Option<Sender<'a>>,
        ts: u64,
    },
    Joined {
        room: &'a str,
        /// The room's epoch: what its offsets are numbered in.
        epoch: &'a str,
        /// The room's last offset when the history below was read.
        offset: u64,
        /// Members on every process, this one included.
        members: usize,
        /// Set when the client asked to resume `since` an offset: whether
        /// `history` is exactly what it missed.
        #[serde(skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
        /// Stored events, oldest first, as live members got them.
        history: Vec<&'a RawValue>,
        ts: u64,
    },
    Left {
        room: &'a str,
        ts: u64,
    },
    Echo {
        id: &'a str,
        room: &'a str,
        /// Its place in the room's history; absent while the history store
        /// (Redis) is away.
        #[serde(skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        message: &'a str,
        from: Sender<'a>,
        ts: u64,
    },
    Notification {
        id: &'a str,
        /// Set for a notice to one room; everyone-notices have none.
        #[serde(skip_serializing_if = "Option::is_none")]
        room: Option<&'a str>,
        /// Set with `room`: a room notice is stored like chat.
        #[serde(skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        message: &'a str,
        ts: u64,
    },
    ShutdownNotice {
        message: &'a str,
        deadline_s: u64,
        retry_after_ms: u64,
        ts: u64,
    },
    TokenExpiring {
        seconds_left: u64,
        ts: u64,
    },
    Typing {
        room: &'a str,
        from: Sender<'a>,
        ts: u64,
    },
    Presence {
        room: &'a str,
        joins: Vec<Sender<'a>>,
        leaves: Vec<Sender<'a>>,
        ts: u64,
    },
    Error {
        code: &'static str,
        message: &'a str,
        ts: u64,
    },
}

impl ServerEvent<'_> {
    /// The event as JSON, the text of one WebSocket text message.
    pub fn encode(&self) -> EventText {
        serde_json::to_string(self)
            .expect("server events hold only strings and numbers")
            .into()
    }

    /// The event as an encoded WebSocket text frame, for an event meant for
    /// one client (broadcasts are batched by the hub instead).
    pub fn to_frame(&self) -> Bytes {
        crate::transport::frame::text(self.encode().as_bytes())
    }
}

/// Now, in Unix milliseconds, for `ts` fields.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_type_names_parse_as_chat() {
        for kind in ["notification", "message"] {
            let message = format!(r#"{{"type":"{kind}","message":"hi"}}"#);
            assert_eq!(
                parse_message(&message, 100),
                Ok(ClientMessage::Chat {
                    room: None,
                    text: "hi".into()
                })
            );
        }
    }

    #[test]
    fn bad_messages_are_refused_with_a_reason() {
        let cases = [
            ("not json", "hello", MessageError::NotJson),
            ("array", "[1,2]", MessageError::NotAnObject),
            ("number", "42", MessageError::NotAnObject),
            ("null", "null", MessageError::NotAnObject),
            ("no type", r#"{"message":"x"}"#, MessageError::MissingType),
            (
                "unknown type",
                r#"{"type":"dance","message":"x"}"#,
                MessageError::UnknownType("dance".into()),
            ),
            (
                "number message",
                r#"{"type":"message","message":5}"#,
                MessageError::MessageNotText,
            ),
            (
                "no message",
                r#"{"type":"message"}"#,
                MessageError::EmptyMessage,
            ),
            (
                "blank",
                r#"{"type":"message","message":" \n\t"}"#,
                MessageError::EmptyMessage,
            ),
            (
                "too long",
                r#"{"type":"message","message":"abcdefghijk"}"#,
                MessageError::MessageTooLong {
                    size: 11,
                    limit: 10,
                },
            ),
        ];
        for (what, message, expected) in cases {
            assert_eq!(parse_message(message, 10), Err(expected), "{what}");
        }
    }

    #[test]
    fn room_messages_parse_with_their_room() {
        let ops = RoomName::parse("ops").unwrap();
        let cases = [
            (
                r#"{"type":"join","room":"ops"}"#,
                ClientMessage::Join {
                    room: ops.clone(),
                    since: None,
                },
            ),
            (
                r#"{"type":"leave","room":"ops"}"#,
                ClientMessage::Leave { room: ops.clone() },
            ),
            (
                r#"{"type":"message","room":"ops","message":"hi"}"#,
                ClientMessage::Chat {
                    room: Some(ops.clone()),
                    text: "hi".into(),
                },
            ),
            (
                r#"{"type":"message","room":null,"message":"hi"}"#,
                ClientMessage::Chat {
                    room: None,
                    text: "hi".into(),
                },
            ),
        ];
        for (message, expected) in cases {
            assert_eq!(parse_message(message, 100), Ok(expected), "{message}");
        }
    }

    #[test]
    fn bad_room_messages_are_refused_with_their_code() {
        let cases = [
            ("join without room", r#"{"type":"join"}"#, "bad_room"),
            ("leave without room", r#"{"type":"leave"}"#, "bad_room"),
            ("uppercase", r#"{"type":"join","room":"Ops"}"#, "bad_room"),
            ("space", r#"{"type":"join","room":"a b"}"#, "bad_room"),
            ("empty", r#"{"type":"join","room":""}"#, "bad_room"),
            ("number", r#"{"type":"join","room":7}"#, "bad_room"),
            (
                "chat to a bad room",
                r#"{"type":"message","room":"A","message":"x"}"#,
                "bad_room",
            ),
            ("unknown type", r#"{"type":"dance"}"#, "bad_frame"),
            (
                "since not an object",
                r#"{"type":"join","room":"a","since":3}"#,
                "bad_since",
            ),
            (
                "negative since",
                r#"{"type":"join","room":"a","since":{"offset":-1,"epoch":"e"}}"#,
                "bad_since",
            ),
            ("blank chat", r#"{"type":"message","message":" "}"#, "empty"),
            (
                "long chat",
                r#"{"type":"message","message":"abcdefghijk"}"#,
                "too_long",
            ),
        ];
        for (what, message, code) in cases {
            let error = parse_message(message, 10).expect_err(what);
            assert_eq!(error.code(), code, "{what}: {error}");
        }
    }

    #[test]
    fn room_names_follow_the_rule() {
        for good in ["general", "a", "ops-2", "team_x.y:z", &"r".repeat(64)] {
            assert_eq!(RoomName::parse(good).unwrap().as_str(), good);
        }
        assert_eq!(RoomName::parse(""), Err(RoomError::Empty));
        assert_eq!(
            RoomName::parse(&"r".repeat(65)),
            Err(RoomError::TooLong(65))
        );
        for bad in ["Ops", "a b", "é", "a/b", " ops"] {
            let error = RoomName::parse(bad).unwrap_err();
            assert!(matches!(error, RoomError::BadCharacter(_)), "{bad}");
            assert!(error.to_string().contains("a-z 0-9 - _ . :"), "{error}");
        }
    }

    #[test]
    fn display_names_are_checked() {
        assert_eq!(DisplayName::parse("  Ana ", 10).unwrap().as_str(), "Ana");
        assert_eq!(DisplayName::parse("José_1", 10).unwrap().as_str(), "José_1");
        assert_eq!(DisplayName::parse(" ", 10), Err(NameError::Empty));
        assert_eq!(
            DisplayName::parse("abcdefghijk", 10),
            Err(NameError::TooLong(10))
        );
        assert_eq!(
            DisplayName::parse("<b>x</b>", 10),
            Err(NameError::BadCharacter)
        );
    }

    #[test]
    fn events_carry_their_type_tag() {
        let frame = ServerEvent::Notification {
            id: "m1",
            room: None,
            offset: None,
            message: "hi",
            ts: 5,
        }
        .encode();
        let value: serde_json::Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(value["type"], "notification");
        assert_eq!(value["message"], "hi");
        assert_eq!(value["ts"], 5);
    }
}
