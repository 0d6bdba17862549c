//! `GET /ws`: the checks an upgrade must pass before it becomes a session.
//!
//! Refusals happen before the handshake, as plain HTTP answers: 503 while
//! draining or at MAX_CONNECTIONS, 403 for a foreign origin, 400 for a bad
//! `?name=`, a bad `?room=` or more than MAX_ROOMS_PER_CONNECTION of them, or
//! a malformed handshake (with `Sec-WebSocket-Version: 13` when
//! the version is what is wrong). actix-http hands every request that asks
//! for `Upgrade: websocket` to `http::upgrade`, which runs these checks; the
//! route here answers the `GET /ws` requests that do not ask for it.

use actix_http::RequestHead;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};

use crate::auth::Identity;
use crate::config::{AllowedOrigins, Limits};
use crate::history::Since;
use crate::http::{ApiError, AppState};
use crate::protocol::{DisplayName, RoomName};
use crate::state::ConnectionPermit;
use crate::transport::handshake::{self, Refusal};

/// What a client asks for in the `/ws` query, checked.
#[derive(Debug, PartialEq)]
struct WsQuery {
    name: Option<DisplayName>,
    /// `?token=`, not yet verified.
    token: Option<String>,
    /// The starting rooms, in the order given, without repeats, each with
    /// the `since` to resume after; `general` when none is named.
    rooms: Vec<(RoomName, Option<Since>)>,
}

impl WsQuery {
    /// Reads `name`, every `room` and every `since=ROOM:OFFSET:EPOCH` (which
    /// starts in ROOM too); other keys are left for other uses.
    fn parse(query: &str, limits: &Limits) -> Result<Self, ApiError> {
        let mut name = None;
        let mut token = None;
        let mut rooms: Vec<(RoomName, Option<Since>)> = Vec::new();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "name" if !value.trim().is_empty() => {
                    let parsed = DisplayName::parse(&value, limits.max_name_chars)
                        .map_err(|err| ApiError::BadRequest(err.to_string()))?;
                    name = Some(parsed);
                }
                "token" => token = Some(value.into_owned()),
                "room" => {
                    let room = RoomName::parse(&value)
                        .map_err(|err| ApiError::BadRequest(err.to_string()))?;
                    if !rooms.iter().any(|(r, _)| *r == room) {
                        rooms.push((room, None));
                    }
                }
                "since" => {
                    let bad = |err: &dyn std::fmt::Display| ApiError::BadRequest(err.to_string());
                    let (room, since) = Since::from_query(&value).map_err(|e| bad(&e))?;
                    let room = RoomName::parse(&room).map_err(|e| bad(&e))?;
                    match rooms.iter_mut().find(|(r, _)| *r == room) {
                        Some((_, resume)) => *resume = Some(since),
                        None => rooms.push((room, Some(since))),
                    }
                }
                _ => {}
            }
        }
        let max = limits.max_rooms_per_connection;
        if rooms.len() > max {
            return Err(ApiError::BadRequest(format!(
                "a connection may be in at most {max} rooms; {} were asked for",
                rooms.len()
            )));
        }
        if rooms.is_empty() {
            rooms.push((RoomName::general(), None));
        }
        Ok(Self { name, token, rooms })
    }
}

/// An upgrade that passed every check: the 101 answer to send, and what the
/// session starts with.
pub struct Admission {
    /// The 101, and what it agreed on.
    pub accepted: handshake::Accepted,
    pub name: Option<DisplayName>,
    pub rooms: Vec<(RoomName, Option<Since>)>,
    /// Who the token says the client is, when tokens are required.
    pub identity: Option<Identity>,
    pub permit: ConnectionPermit,
}

/// Runs every check on an upgrade request, in the order a client should
/// hear about them, and takes a connection slot.
///
/// # Errors
/// The refusal to answer with.
pub fn admit(head: &RequestHead, state: &AppState) -> Result<Admission, ApiError> {
    if state.lifecycle.is_draining() {
        return Err(ApiError::Draining);
    }
    if !origin_allowed(head, &state.config.allowed_origins) {
        return Err(ApiError::OriginNotAllowed);
    }
    let WsQuery { name, token, rooms } =
        WsQuery::parse(head.uri.query().unwrap_or_default(), &state.config.limits)?;
    let identity = match &state.verifier {
        None => None,
        Some(verifier) => {
            let token = token.or_else(|| bearer(head)).unwrap_or_default();
            let identity = verifier
                .verify(&token, state.config.limits.max_name_chars)
                .map_err(ApiError::BadToken)?;
            if let Some((room, _)) = rooms.iter().find(|(r, _)| !identity.rooms.allows(r)) {
                return Err(ApiError::NotAllowed(format!(
                    "the token does not allow room \"{room}\""
                )));
            }
            Some(identity)
        }
    };
    let accepted =
        handshake::accept(head, state.config.compression).map_err(|refusal| match refusal {
            Refusal::Version => ApiError::WebSocketVersion,
            Refusal::Malformed(_) => ApiError::BadRequest(refusal.to_string()),
        })?;
    let permit = state
        .connections
        .try_acquire()
        .ok_or(ApiError::TooManyConnections)?;
    Ok(Admission {
        accepted,
        name,
        rooms,
        identity,
        permit,
    })
}

/// `GET /ws` without `Upgrade: websocket` (the upgrades themselves never get
/// here): the same refusal a bad upgrade gets.
pub async fn not_an_upgrade(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let refusal = match admit(req.head(), &state) {
        Err(refusal) => refusal,
        Ok(_) => ApiError::BadRequest(
            "not a valid WebSocket upgrade: the Upgrade header must be exactly \"websocket\""
                .into(),
        ),
    };
    refusal.error_response()
}

/// The token of `Authorization: Bearer <token>`, for clients that can set
/// headers (browsers cannot, and use `?token=`).
fn bearer(head: &RequestHead) -> Option<String> {
    let value = head.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

/// Browsers send `Origin`; other clients usually do not, and are let in.
/// The same-host policy compares it with the `Host` the client asked for.
fn origin_allowed(head: &RequestHead, allowed: &AllowedOrigins) -> bool {
    let Some(origin) = head.headers().get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    match allowed {
        AllowedOrigins::Any => true,
        AllowedOrigins::List(list) => list.contains(&origin),
        AllowedOrigins::SameHost => {
            let host = head
                .headers()
                .get(header::HOST)
                .and_then(|host| host.to_str().ok())
                .or_else(|| head.uri.authority().map(|a| a.as_str()))
                .map(str::to_ascii_lowercase);
            let origin_host = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"));
            origin_host.is_some() && origin_host == host.as_deref()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn the_query_names_the_starting_rooms() {
        let limits = crate::Config::default_for_tests().limits;
        let rooms = |query: &str| {
            WsQuery::parse(query, &limits).map(|q| {
                q.rooms
                    .iter()
                    .map(|(r, _)| r.as_str().to_string())
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(rooms("").unwrap(), ["general"]);
        assert_eq!(rooms("name=ana").unwrap(), ["general"]);
        assert_eq!(rooms("room=ops&room=dev&room=ops").unwrap(), ["ops", "dev"]);
        assert_eq!(rooms("room=a%3Ab&token=x").unwrap(), ["a:b"]);
        assert!(rooms("room=Ops").is_err());
        assert!(rooms("room=").is_err());
        let fifty_one: Vec<String> = (0..51).map(|n| format!("room=r{n}")).collect();
        assert!(rooms(&fifty_one.join("&")).is_err());
        assert_eq!(rooms(&fifty_one[..50].join("&")).unwrap().len(), 50);
        let named = WsQuery::parse("name=Ana+B", &limits).unwrap();
        assert_eq!(named.name.unwrap().as_str(), "Ana B");
        let resumed = WsQuery::parse("room=ops&since=ops:7:abc&since=dev:0:xyz", &limits).unwrap();
        let since: Vec<(&str, Option<u64>)> = resumed
            .rooms
            .iter()
            .map(|(r, s)| (r.as_str(), s.as_ref().map(|s| s.offset)))
            .collect();
        assert_eq!(since, [("ops", Some(7)), ("dev", Some(0))]);
        for bad in [
            "since=ops",
            "since=ops:x:abc",
            "since=Ops:1:abc",
            "since=ops:1:a-b",
        ] {
            assert!(WsQuery::parse(bad, &limits).is_err(), "{bad}");
        }
    }

    #[test]
    fn origins_are_checked_against_the_policy() {
        let list = AllowedOrigins::List(vec!["https://chat.example".into()]);
        let cases = [
            ("no origin", None, "a:8000", &AllowedOrigins::SameHost, true),
            (
                "same host",
                Some("http://a:8000"),
                "a:8000",
                &AllowedOrigins::SameHost,
                true,
            ),
            (
                "same host, any case",
                Some("HTTP://A:8000"),
                "a:8000",
                &AllowedOrigins::SameHost,
                true,
            ),
            (
                "other host",
                Some("http://evil:8000"),
                "a:8000",
                &AllowedOrigins::SameHost,
                false,
            ),
            (
                "other port",
                Some("http://a:9000"),
                "a:8000",
                &AllowedOrigins::SameHost,
                false,
            ),
            (
                "null origin",
                Some("null"),
                "a:8000",
                &AllowedOrigins::SameHost,
                false,
            ),
            (
                "star",
                Some("http://evil"),
                "a:8000",
                &AllowedOrigins::Any,
                true,
            ),
            (
                "listed",
                Some("https://chat.example/"),
                "a:8000",
                &list,
                true,
            ),
            ("unlisted", Some("https://a:8000"), "a:8000", &list, false),
        ];
        for (what, origin, host, policy, expected) in cases {
            let mut req = TestRequest::get().insert_header((header::HOST, host));
            if let Some(origin) = origin {
                req = req.insert_header((header::ORIGIN, origin));
            }
            assert_eq!(
                origin_allowed(req.to_http_request().head(), policy),
                expected,
                "{what}"
            );
        }
    }
}
