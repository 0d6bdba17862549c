//! WebSocket upgrades, taken from actix-http before the HTTP dispatcher would
//! keep serving the connection.
//!
//! actix-http hands every request that asks for `Upgrade: websocket` here
//! with its socket. A refused upgrade gets its JSON answer and the connection
//! is closed; an accepted one gets its 101 from the transport, which takes
//! the socket (see `transport::switch`), and the session runs on it without
//! the dispatcher's buffers.

use std::convert::Infallible;
use std::io;
use std::rc::Rc;

use actix_http::body::{BodySize, MessageBody};
use actix_http::header::HeaderValue;
use actix_http::{h1, ConnectionType, Method, Request, Response};
use actix_web::web;
use actix_web::ResponseError;
use futures_util::SinkExt;

use super::ws::{self, Admission};
use super::{ApiError, AppState};
use crate::actors::ws_session::WsSession;
use crate::transport::{self, Decoder, Outbound};

type Connection = transport::Upgrading;

/// The upgrade service: answers the upgrade request on `connection`, and for
/// an accepted one runs the session until it ends.
pub async fn upgrade(
    state: web::Data<AppState>,
    (req, connection): (Request, Connection),
) -> Result<(), Infallible> {
    let head = req.head();
    let admitted = if head.uri.path() != "/ws" {
        Err(ApiError::BadRequest(
            "WebSocket upgrades are served at /ws only".into(),
        ))
    } else if head.method != Method::GET {
        Err(ApiError::MethodNotAllowed)
    } else {
        ws::admit(head, &state)
    };
    let status = admitted
        .as_ref()
        .map_or_else(ResponseError::status_code, |_| {
            actix_http::StatusCode::SWITCHING_PROTOCOLS
        });
    log::info!(
        "{} \"{}\" {}",
        head.peer_addr
            .map_or_else(|| "-".to_string(), |addr| addr.ip().to_string()),
        super::request_line(
            head.method.as_str(),
            &head.uri,
            &format!("{:?}", head.version)
        ),
        status.as_u16(),
    );
    // The request is not needed past here, and the connection may last for
    // hours.
    drop(req);
    let outcome = match admitted {
        Ok(admission) => accept(&state, admission, connection).await,
        Err(refusal) => refuse(&refusal, connection).await,
    };
    if let Err(err) = outcome {
        log::debug!("websocket upgrade failed: {err}");
    }
    Ok(())
}

/// Sends the refusal as JSON and closes the connection.
async fn refuse(refusal: &ApiError, mut connection: Connection) -> io::Result<()> {
    let (head, body) = refusal.error_response().into_parts();
    let mut head: Response<()> = head.into();
    head.head_mut().set_connection_type(ConnectionType::Close);
    for (name, value) in [super::NOSNIFF, super::NO_REFERRER] {
        head.headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    let body = body.try_into_bytes().unwrap_or_default();
    let size = BodySize::Sized(body.len() as u64);
    connection.feed(h1::Message::Item((head, size))).await?;
    connection.feed(h1::Message::Chunk(Some(body))).await?;
    connection.send(h1::Message::Chunk(None)).await
}

/// Sends the 101, then builds the session and runs it on the bare socket.
async fn accept(
    state: &AppState,
    admission: Admission,
    connection: transport::Upgrading,
) -> io::Result<()> {
    let Admission {
        accepted,
        name,
        rooms,
        identity,
        permit,
    } = admission;
    let deflate = accepted.deflate;
    let socket = transport::switch(connection, accepted.switching).await?;
    let outbound = Rc::new(Outbound::counted(&state.metrics));
    let session = WsSession::new(
        name,
        rooms,
        identity.map(|identity| {
            (
                identity,
                state.verifier.clone().expect("a token was checked"),
            )
        }),
        state.hub.clone(),
        state.config.clone(),
        outbound.clone(),
        permit,
    )
    .with_metrics(state.metrics.clone())
    .with_deflate(deflate);
    let decoder = Decoder::new(state.config.limits.max_frame_bytes, deflate.is_some());
    transport::start(socket, decoder, outbound, session);
    Ok(())
}
