//! The HTTP side: routes, shared state and the JSON error type.

mod error;
mod notify;
mod page;
mod rooms;
mod status;
mod upgrade;
mod ws;

use std::path::PathBuf;
use std::sync::Arc;

use actix::Addr;
use actix_web::http::header;
use actix_web::middleware::DefaultHeaders;
use actix_web::web;

pub use error::ApiError;
pub use page::render as render_page;
pub use upgrade::upgrade;

use crate::actors::chat_hub::ChatHub;
use crate::config::Config;
use crate::protocol::ServerId;
use crate::redis::bridge::BridgeStatus;
use crate::state::{ConnectionLimiter, Lifecycle};

/// Sent with every HTTP answer: no MIME sniffing, no referrer.
pub const NOSNIFF: (header::HeaderName, &str) = (header::X_CONTENT_TYPE_OPTIONS, "nosniff");
pub const NO_REFERRER: (header::HeaderName, &str) = (header::REFERRER_POLICY, "no-referrer");

/// What every handler shares, built once at start-up.
pub struct AppState {
    pub config: Arc<Config>,
    pub hub: Addr<ChatHub>,
    /// The Redis bridge's snapshot; `None` when Redis is not configured.
    pub redis: Option<Arc<BridgeStatus>>,
    pub server: ServerId,
    pub lifecycle: Arc<Lifecycle>,
    pub connections: ConnectionLimiter,
    /// Checks `/ws` tokens; `None` when identity is self-chosen.
    pub verifier: Option<Arc<crate::auth::Verifier>>,
    /// The rendered chat page.
    pub page: web::Bytes,
    /// Where `static/` is served from.
    pub static_dir: PathBuf,
    /// What `GET /metrics` reports.
    pub metrics: crate::metrics::Metrics,
    /// The `Idempotency-Key`s of `POST /notify`.
    pub idempotency: crate::idempotency::Idempotency,
}

impl AppState {
    /// The Redis bridge's state for `/status`: `disabled`, or the link state,
    /// the outbox length and the other processes' clients.
    pub fn redis_status(&self) -> serde_json::Value {
        match &self.redis {
            Some(status) => status.to_json(),
            None => serde_json::json!({ "state": "disabled" }),
        }
    }
}

/// The request line for access logs, with the value of any `token` query
/// parameter replaced: tokens are secrets and never reach a log.
pub fn request_line(method: &str, uri: &actix_web::http::Uri, version: &str) -> String {
    let Some(query) = uri.query() else {
        return format!("{method} {uri} {version}");
    };
    let redacted: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some(("token", _)) => "token=***".to_string(),
            _ => pair.to_string(),
        })
        .collect();
    format!("{method} {}?{} {version}", uri.path(), redacted.join("&"))
}

/// Wires every route. `state` must be in the app data.
pub fn configure(cfg: &mut web::ServiceConfig, state: &AppState) {
    cfg.service(
        web::resource("/")
            .route(web::get().to(page::index))
            .default_service(web::to(error::method_not_allowed)),
    )
    .service(
        web::resource("/ws")
            .route(web::get().to(ws::not_an_upgrade))
            .default_service(web::to(error::method_not_allowed)),
    )
    .service(
        web::resource("/notify")
            .route(web::post().to(notify::notify))
            .default_service(web::to(error::method_not_allowed)),
    )
    .route("/rooms", web::get().to(rooms::list))
    .route("/rooms/{room}/history", web::get().to(rooms::history))
    .route("/rooms/{room}/presence", web::get().to(rooms::presence))
    .route("/status", web::get().to(status::status))
    .route("/healthz", web::get().to(status::healthz))
    .route("/metrics", web::get().to(status::metrics))
    .route("/readyz", web::get().to(status::readyz))
    .service(
        web::scope("/static")
            .wrap(DefaultHeaders::new().add((header::CACHE_CONTROL, "public, max-age=3600")))
            .service(actix_files::Files::new("", &state.static_dir)),
    )
    .default_service(web::to(error::not_found));
}
