//! `GET /status`, `GET /healthz`, `GET /readyz` and `GET /metrics`.

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::actors::chat_hub::{seconds_left, Count, CountRooms};
use crate::http::{ApiError, AppState};
use crate::metrics::{RedisSnapshot, Snapshot};

/// Liveness: answers while the process runs, draining or not.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Readiness: 503 while draining, so load balancers stop routing here.
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if state.lifecycle.is_draining() {
        return Err(ApiError::Draining);
    }
    Ok(HttpResponse::Ok().json(json!({ "status": "ready" })))
}

/// What this process is doing.
pub async fn status(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let connections = state.hub.send(Count).await.map_err(|err| {
        log::error!("status: the hub did not answer: {err}");
        ApiError::Internal
    })?;
    let deadline = state.lifecycle.drain_deadline();
    Ok(HttpResponse::Ok().json(json!({
        "status": if deadline.is_some() { "draining" } else { "ok" },
        "pid": std::process::id(),
        "server": state.server.as_str(),
        "version": env!("CARGO_PKG_VERSION"),
        "connections": connections,
        "redis": state.redis_status(),
        "uptime_s": state.lifecycle.uptime().as_secs(),
        "drain_seconds_left": deadline.map(seconds_left),
    })))
}

/// The Prometheus text format; see `crate::metrics`.
pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let rooms = state.hub.send(CountRooms).await.map_err(|err| {
        log::error!("metrics: the hub did not answer: {err}");
        ApiError::Internal
    })?;
    let snapshot = Snapshot {
        connections_open: state.connections.open(),
        rooms,
        redis: state.redis.as_ref().map(|status| RedisSnapshot {
            connected: status.connected(),
            outbox: status.outbox(),
            dropped: status.dropped(),
        }),
        drain_seconds_left: state.lifecycle.drain_deadline().map(seconds_left),
    };
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render(snapshot)))
}
