//! `POST /notify`: a notification for every connected client, for the
//! members of one room, or for every connection of one user (`user`: a
//! token's `sub`), on every process.
//!
//! The message and the optional room come from the query (`?message=…&room=…`)
//! or a JSON body (`{"message":…,"room":…}`); for each, the query wins when
//! both are given. The text is checked by the same rules as chat
//! ([`protocol::chat_text`]). A room with no members anywhere is no error: the
//! answer says 0 clients. When NOTIFY_TOKEN is set the request needs
//! `Authorization: Bearer <token>`.
//!
//! With an `Idempotency-Key` header (1 to 128 printable ASCII characters) a
//! request is sent once per key within 5 minutes, on every process that
//! shares the Redis, and a repeat gets the first answer, the same count
//! included; see [`crate::idempotency`]. The key names the request alone: a
//! repeat with another message still gets the first answer.

use std::collections::HashMap;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;

use crate::actors::chat_hub::{Audience, Notify, Scope};
use crate::auth::UserId;
use crate::http::{ApiError, AppState};
use crate::idempotency::{Answer, IdempotencyKey, OnceError};
use crate::protocol::{self, MessageError, RoomName};

/// The largest body `/notify` reads.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The header that makes a request idempotent.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The fields `/notify` reads, from the query or the body.
#[derive(Deserialize, Default)]
struct NotifyParams {
    message: Option<serde_json::Value>,
    room: Option<serde_json::Value>,
    user: Option<serde_json::Value>,
}

pub async fn notify(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if let Some(token) = &state.config.notify_token {
        authorize(&req, token)?;
    }
    if state.lifecycle.is_draining() {
        return Err(ApiError::Draining);
    }
    let key = idempotency_key(&req)?;
    let body = read_body(payload).await?;
    let params = params_from(&req, &body)?;
    let message = protocol::chat_text(params.message, state.config.limits.max_message_bytes)
        .map_err(|err| match err {
            MessageError::MessageTooLong { .. } => ApiError::TooLarge(err.to_string()),
            MessageError::EmptyMessage => ApiError::BadRequest(
                "message is missing or empty: use ?message=… or a JSON body {\"message\":…}".into(),
            ),
            other => ApiError::BadRequest(other.to_string()),
        })?;
    let text = |field: &'static str, value: Option<serde_json::Value>| match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(value)) => Ok(Some(value)),
        Some(_) => Err(ApiError::BadRequest(format!(
            "\"{field}\" must be a string"
        ))),
    };
    let audience = match (text("room", params.room)?, text("user", params.user)?) {
        (None, None) => Audience::Everyone,
        (Some(room), None) => Audience::Room(
            RoomName::parse(&room).map_err(|err| ApiError::BadRequest(err.to_string()))?,
        ),
        (None, Some(user)) => Audience::User(UserId::parse(&user).ok_or_else(|| {
            ApiError::BadRequest(
                "\"user\" must be 1 to 128 characters, no control characters".into(),
            )
        })?),
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest("give room or user, not both".into()))
        }
    };
    let send = async {
        let sent = state
            .hub
            .send(Notify {
                message,
                audience,
                scope: Scope::Everywhere,
            })
            .await
            .map_err(|err| {
                log::error!("notify: the hub did not answer: {err}");
                ApiError::Internal
            })?;
        Ok(Answer { sent })
    };
    let Answer { sent } = match &key {
        None => send.await?,
        Some(key) => state
            .idempotency
            .once(key, send)
            .await
            .map_err(|err| match err {
                OnceError::InFlight => ApiError::InProgress,
                OnceError::Send(err) => err,
            })?,
    };
    Ok(HttpResponse::Ok().json(json!({
        "status": "success",
        "message": format!("Notification sent to {sent} clients"),
    })))
}

/// The request's `Idempotency-Key`, checked, when it has one.
fn idempotency_key(req: &HttpRequest) -> Result<Option<IdempotencyKey>, ApiError> {
    let mut values = req.headers().get_all(IDEMPOTENCY_KEY);
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::BadRequest(
            "give one Idempotency-Key header, not several".into(),
        ));
    }
    IdempotencyKey::parse(value.as_bytes())
        .map(Some)
        .map_err(|err| ApiError::BadRequest(err.to_string()))
}

async fn read_body(mut payload: web::Payload) -> Result<web::BytesMut, ApiError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|err| ApiError::BadRequest(format!("reading the body failed: {err}")))?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(ApiError::TooLarge(format!(
                "body is over {MAX_BODY_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The query's fields, each falling back to the JSON body's.
fn params_from(req: &HttpRequest, body: &[u8]) -> Result<NotifyParams, ApiError> {
    let query: NotifyParams = web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .map_err(|_| ApiError::BadRequest("query string is malformed".into()))
        .map(|q| {
            let mut q = q.into_inner();
            NotifyParams {
                message: q.remove("message").map(serde_json::Value::String),
                room: q.remove("room").map(serde_json::Value::String),
                user: q.remove("user").map(serde_json::Value::String),
            }
        })?;
    let body: NotifyParams = if body.iter().all(u8::is_ascii_whitespace) {
        NotifyParams::default()
    } else {
        match serde_json::from_slice(body) {
            Ok(body) => body,
            // The query's message is enough; a body beside it is not read.
            Err(_) if query.message.is_some() => NotifyParams::default(),
            Err(_) => {
                return Err(ApiError::BadRequest(
                    r#"body must be JSON such as {"message":"Hello"}"#.into(),
                ))
            }
        }
    };
    Ok(NotifyParams {
        message: query.message.or(body.message),
        room: query.room.or(body.room),
        user: query.user.or(body.user),
    })
}

fn authorize(req: &HttpRequest, token: &str) -> Result<(), ApiError> {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map_or("", |(_, token)| token);
    if constant_time_eq(presented.trim().as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// Compares without stopping at the first difference, so the time taken does
/// not reveal how much of a guessed token was right. (The length can leak; the
/// token's length is not the secret.)
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_required() {
        use actix_web::test::TestRequest;
        let cases = [
            ("Bearer s3cret", true),
            ("bearer s3cret", true),
            ("BEARER  s3cret ", true),
            ("Bearer s3cre", false),
            ("s3cret", false),
            ("Basic s3cret", false),
            ("Bearer", false),
        ];
        for (header, expected) in cases {
            let req = TestRequest::post()
                .insert_header((header::AUTHORIZATION, header))
                .to_http_request();
            assert_eq!(authorize(&req, "s3cret").is_ok(), expected, "{header:?}");
        }
        let bare = TestRequest::post().to_http_request();
        assert!(authorize(&bare, "s3cret").is_err());
    }

    #[test]
    fn tokens_compare_equal_only_when_identical() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret!"));
        assert!(!constant_time_eq(b"", b"secret"));
    }
}
