//! `GET /ws`: the checks an upgrade must pass before it becomes a session.
//!
//! Refusals happen before the handshake, as plain HTTP answers: 503 while
//! draining or at MAX_CONNECTIONS, 403 for a foreign origin, 400 for a bad
//! `?name=` or a malformed handshake (with `Sec-WebSocket-Version: 13` when
//! the version is what is wrong). actix-http hands every request that asks
//! for `Upgrade: websocket` to `http::upgrade`, which runs these checks; the
//! route here answers the `GET /ws` requests that do not ask for it.

use actix_http::ws;
use actix_http::{RequestHead, ResponseBuilder};
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde::Deserialize;

use crate::config::AllowedOrigins;
use crate::http::{ApiError, AppState};
use crate::protocol::DisplayName;
use crate::state::ConnectionPermit;

#[derive(Deserialize)]
struct WsQuery {
    name: Option<String>,
}

/// An upgrade that passed every check: the 101 answer to send, and what the
/// session starts with.
pub struct Admission {
    pub response: ResponseBuilder,
    pub name: Option<DisplayName>,
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
    let query = web::Query::<WsQuery>::from_query(head.uri.query().unwrap_or_default())
        .map_err(|_| ApiError::BadRequest("query string is malformed".into()))?;
    let name = match query.into_inner().name.filter(|n| !n.trim().is_empty()) {
        Some(raw) => Some(
            DisplayName::parse(&raw, state.limits.max_name_chars)
                .map_err(|err| ApiError::BadRequest(err.to_string()))?,
        ),
        None => None,
    };
    let response = handshake(head)?;
    let permit = state
        .connections
        .try_acquire()
        .ok_or(ApiError::TooManyConnections)?;
    Ok(Admission {
        response,
        name,
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

/// Checks the upgrade headers and starts the 101 answer.
///
/// actix also accepts the pre-RFC drafts 7 and 8; chatd speaks RFC 6455 only,
/// and says so in `Sec-WebSocket-Version` as the RFC asks.
fn handshake(head: &RequestHead) -> Result<ResponseBuilder, ApiError> {
    let version_13 = head
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v == "13");
    match ws::handshake(head) {
        Ok(response) if version_13 => Ok(response),
        Ok(_)
        | Err(ws::HandshakeError::NoVersionHeader | ws::HandshakeError::UnsupportedVersion) => {
            Err(ApiError::WebSocketVersion)
        }
        Err(err) => Err(ApiError::BadRequest(format!(
            "not a valid WebSocket upgrade: {err}"
        ))),
    }
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
