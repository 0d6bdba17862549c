//! `GET /ws`: checks an upgrade and hands the connection to a `WsSession`.
//!
//! Refusals happen here, before the handshake, as plain HTTP answers: 503
//! while draining or at MAX_CONNECTIONS, 403 for a foreign origin, 400 for a
//! bad `?name=` or a malformed handshake (with `Sec-WebSocket-Version: 13`
//! when the version is what is wrong).

use std::rc::Rc;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws;
use serde::Deserialize;

use crate::actors::ws_session::WsSession;
use crate::config::AllowedOrigins;
use crate::frame_guard::FrameGuard;
use crate::http::{ApiError, AppState};
use crate::protocol::DisplayName;
use crate::transport::{self, Outbound, PeerSocket};

#[derive(Deserialize)]
struct WsQuery {
    name: Option<String>,
}

pub async fn upgrade(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if state.lifecycle.is_draining() {
        return Err(ApiError::Draining);
    }
    if !origin_allowed(&req, &state.config.allowed_origins) {
        return Err(ApiError::OriginNotAllowed);
    }
    let limits = &state.limits;
    let query = web::Query::<WsQuery>::from_query(req.query_string())
        .map_err(|_| ApiError::BadRequest("query string is malformed".into()))?;
    let name = match query.into_inner().name.filter(|n| !n.trim().is_empty()) {
        Some(raw) => Some(
            DisplayName::parse(&raw, limits.max_name_chars)
                .map_err(|err| ApiError::BadRequest(err.to_string()))?,
        ),
        None => None,
    };
    let mut response = handshake(&req)?;
    let permit = state
        .connections
        .try_acquire()
        .ok_or(ApiError::TooManyConnections)?;

    let outbound = Rc::new(Outbound::default());
    let session = WsSession::new(
        name,
        state.hub.clone(),
        state.limits.clone(),
        outbound.clone(),
        permit,
    );
    let codec = actix_http::ws::Codec::new().max_size(limits.max_frame_bytes);
    let payload = FrameGuard::new(payload, limits.max_frame_bytes);
    let session_stream = ws::WebsocketContext::with_codec(session, payload, codec);
    let socket = req.conn_data::<PeerSocket>().copied();
    Ok(response.streaming(transport::spawn(session_stream, outbound, socket)))
}

/// Checks the upgrade headers and starts the 101 answer.
///
/// actix also accepts the pre-RFC drafts 7 and 8; chatd speaks RFC 6455 only,
/// and says so in `Sec-WebSocket-Version` as the RFC asks.
fn handshake(req: &HttpRequest) -> Result<actix_web::HttpResponseBuilder, ApiError> {
    let version_13 = req
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v == "13");
    match ws::handshake(req) {
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
fn origin_allowed(req: &HttpRequest, allowed: &AllowedOrigins) -> bool {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
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
            let host = req.connection_info().host().to_ascii_lowercase();
            let origin_host = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"));
            origin_host == Some(host.as_str())
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
                origin_allowed(&req.to_http_request(), policy),
                expected,
                "{what}"
            );
        }
    }
}
