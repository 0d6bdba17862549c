//! `GET /rooms`: every room with members, on every process;
//! `GET /rooms/{R}/history`: part of a room's history; and
//! `GET /rooms/{R}/presence`: who is in a room, on every process.
//!
//! The room list comes from the hub's own membership and the other
//! processes' counts as the Redis bridge last read them (at most
//! [`PRESENCE_INTERVAL`] old), so it costs no Redis round trip. A history
//! page comes from the hub's memory, or with Redis from the room's stream.
//!
//! [`PRESENCE_INTERVAL`]: crate::redis::presence::PRESENCE_INTERVAL

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use crate::actors::chat_hub::{ListRooms, ReadPage, ReadPresence};
use crate::history::Page;
use crate::http::{ApiError, AppState};
use crate::protocol::RoomName;

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

/// `?since=N` (after N), `?before=N` (older than N), `&limit=L`.
#[derive(Deserialize)]
pub struct HistoryQuery {
    since: Option<u64>,
    before: Option<u64>,
    limit: Option<usize>,
}

pub async fn history(
    room: web::Path<String>,
    query: Result<web::Query<HistoryQuery>, actix_web::Error>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let room = RoomName::parse(&room).map_err(|err| ApiError::BadRequest(err.to_string()))?;
    let query = query.map_err(|_| {
        ApiError::BadRequest("since, before and limit must be whole numbers, 0 or more".into())
    })?;
    let page = match (query.since, query.before) {
        (Some(since), None) => Page::After(since),
        (None, Some(before)) => Page::Before(before),
        (None, None) => Page::Latest,
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest(
                "give since or before, not both".into(),
            ))
        }
    };
    let most = state.config.history.size;
    let limit = query.limit.unwrap_or(state.config.history.on_join.max(1));
    if !(1..=most).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be from 1 to {most} (HISTORY_SIZE)"
        )));
    }
    let read = ReadPage {
        room: room.clone(),
        page,
        limit,
    };
    let answer = state.hub.send(read).await.map_err(|err| {
        log::error!("history: the hub did not answer: {err}");
        ApiError::Internal
    })?;
    let Some(page) = answer else {
        return Err(ApiError::HistoryUnavailable);
    };
    let events: Vec<&RawValue> = page
        .events
        .iter()
        .filter_map(|(_, event)| serde_json::from_str(event).ok())
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "room": room,
        "epoch": page.epoch.as_str(),
        "offset": page.offset,
        "events": events,
    })))
}

pub async fn presence(
    room: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let room = RoomName::parse(&room).map_err(|err| ApiError::BadRequest(err.to_string()))?;
    let roster = state
        .hub
        .send(ReadPresence { room: room.clone() })
        .await
        .map_err(|err| {
            log::error!("presence: the hub did not answer: {err}");
            ApiError::Internal
        })?;
    let users: Vec<serde_json::Value> = roster
        .users()
        .map(|(id, name, connections)| json!({"id": id, "name": name, "connections": connections}))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "room": room, "users": users })))
}
