//! Every expected HTTP failure, answered as JSON: `{"status":"error","message":…}`.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

/// What went wrong with a request; each variant's doc names its status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed; the text says how.
    #[error("{0}")]
    BadRequest(String),
    /// 400 with `Sec-WebSocket-Version: 13`: an upgrade for another protocol
    /// version.
    #[error("unsupported WebSocket version; this server speaks version 13")]
    WebSocketVersion,
    /// 401: `/notify` needs `Authorization: Bearer <NOTIFY_TOKEN>`.
    #[error("missing or wrong bearer token")]
    Unauthorized,
    /// 401 with `WWW-Authenticate: Bearer`: `/ws` needs a valid token; the
    /// text says what was wrong with it.
    #[error("{0}")]
    BadToken(crate::auth::TokenError),
    /// 403: a browser page from another origin tried to open a socket.
    #[error("origin not allowed")]
    OriginNotAllowed,
    /// 403: the token does not allow this room.
    #[error("{0}")]
    NotAllowed(String),
    /// 404: no such route.
    #[error("not found")]
    NotFound,
    /// 405: the route exists, the method does not.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409: a request with the same `Idempotency-Key` is still being sent.
    #[error("a request with this Idempotency-Key is still in progress; retry shortly")]
    InProgress,
    /// 413: a body or message over its limit.
    #[error("{0}")]
    TooLarge(String),
    /// 503 with `Retry-After`: the process is draining for shutdown.
    #[error("server is shutting down; try again shortly")]
    Draining,
    /// 503 with `Retry-After`: MAX_CONNECTIONS reached.
    #[error("too many connections; try again shortly")]
    TooManyConnections,
    /// 503 with `Retry-After`: the history lives in Redis, which is away.
    #[error("history is unavailable while Redis is away; try again shortly")]
    HistoryUnavailable,
    /// 500: something unexpected, already logged where it happened.
    #[error("internal error")]
    Internal,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::WebSocketVersion => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized | ApiError::BadToken(_) => StatusCode::UNAUTHORIZED,
            ApiError::OriginNotAllowed | ApiError::NotAllowed(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::InProgress => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Draining | ApiError::TooManyConnections | ApiError::HistoryUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        match self {
            ApiError::Draining | ApiError::TooManyConnections | ApiError::HistoryUnavailable => {
                response.insert_header((header::RETRY_AFTER, "5"));
            }
            ApiError::InProgress => {
                response.insert_header((header::RETRY_AFTER, "1"));
            }
            ApiError::Unauthorized | ApiError::BadToken(_) => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            ApiError::WebSocketVersion => {
                response.insert_header((header::SEC_WEBSOCKET_VERSION, "13"));
            }
            _ => {}
        }
        response.json(json!({ "status": "error", "message": self.to_string() }))
    }
}

/// The default service: unknown routes get a JSON 404.
pub async fn not_found() -> HttpResponse {
    ApiError::NotFound.error_response()
}

/// For known routes called with the wrong method.
pub async fn method_not_allowed() -> HttpResponse {
    ApiError::MethodNotAllowed.error_response()
}
