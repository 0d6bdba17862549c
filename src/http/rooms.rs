//! `GET /rooms`: every room with members, on every process.
//!
//! The hub answers from its own membership and the other processes' counts
//! as the Redis bridge last read them (at most [`PRESENCE_INTERVAL`] old), so
//! the route costs no Redis round trip.
//!
//! [`PRESENCE_INTERVAL`]: crate::redis::presence::PRESENCE_INTERVAL

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::actors::chat_hub::ListRooms;
use crate::http::{ApiError, AppState};

pub async fn list(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let rooms = state.hub.send(ListRooms).await.map_err(|err| {
        log::error!("rooms: the hub did not answer: {err}");
        ApiError::Internal
    })?;
    let rooms: Vec<serde_json::Value> = rooms
        .iter()
        .map(|(room, members)| json!({ "room": room, "members": members }))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "rooms": rooms })))
}
