//! An echo server on chatd's own WebSocket transport, for conformance
//! testing only (Autobahn's fuzzing client, see `tests/autobahn/run`); it is
//! never part of chatd's routes.
//!
//! `cargo run --release --example echo` listens on `ECHO_ADDR` (default
//! `127.0.0.1:9001`) and, at any path, echoes every text and binary message
//! back as it came, answers pings, and closes as the transport's rules say.
//! Its messages may be up to 16 MiB (Autobahn's case 9 sends that much),
//! far more than chatd's MAX_FRAME_BYTES default.

use std::convert::Infallible;
use std::rc::Rc;

use actix::{Actor, ActorContext, Context, StreamHandler};
use actix_http::body::BodySize;
use actix_http::{h1, ConnectionType, HttpService, Request, Response, StatusCode};
use actix_service::fn_service;
use actix_web::dev::Server;
use futures_util::SinkExt;

use chatd::transport::deflate::Deflate;
use chatd::transport::frame::OpCode;
use chatd::transport::{self, frame, handshake, Decoder, Incoming, Outbound};

/// The largest message echoed.
const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// One connection: whatever comes in goes back out, compressed (with that
/// connection's window) whenever the upgrade agreed on permessage-deflate.
/// chatd itself sends a message uncompressed when compressing would not
/// shrink it, which RFC 7692 allows; the echo always compresses, because
/// kosoku's compression cases (12.*, 13.*) take an uncompressed echo of a
/// short text for a string they cannot hash and report ERROR.
struct Echo {
    outbound: Rc<Outbound>,
    deflate: Option<Deflate>,
}

impl Echo {
    fn echo(&self, opcode: OpCode, payload: &[u8]) {
        let echo = match self.deflate {
            Some(deflate) => frame::compressed(deflate, opcode, payload),
            None if opcode == OpCode::Text => frame::text(payload),
            None => frame::binary(payload),
        };
        self.outbound.push(echo);
    }
}

impl Actor for Echo {
    type Context = Context<Self>;
}

impl StreamHandler<Incoming> for Echo {
    fn handle(&mut self, incoming: Incoming, ctx: &mut Context<Self>) {
        match incoming {
            Incoming::Text(text) => self.echo(OpCode::Text, text.as_bytes()),
            Incoming::Binary(bytes) => self.echo(OpCode::Binary, &bytes),
            Incoming::Ping(payload) => self.outbound.push(frame::pong(&payload)),
            Incoming::Pong => {}
            Incoming::Close(reason) => {
                self.outbound
                    .push(frame::close(reason.map(|(code, _)| code), ""));
                ctx.stop();
            }
            Incoming::Violation(violation) => {
                self.outbound
                    .push(frame::close(Some(violation.code), violation.reason));
                ctx.stop();
            }
        }
    }
}

/// Accepts any valid upgrade, at any path; refuses the rest with a 400.
async fn upgrade((req, mut connection): (Request, transport::Upgrading)) -> Result<(), Infallible> {
    let outcome = match handshake::accept(req.head(), true) {
        Ok(accepted) => {
            drop(req);
            let deflate = accepted.deflate;
            transport::switch(connection, accepted.switching)
                .await
                .map(|socket| {
                    let outbound = Rc::new(Outbound::default());
                    let echo = Echo {
                        outbound: outbound.clone(),
                        deflate,
                    };
                    let decoder = Decoder::new(MAX_MESSAGE_BYTES, deflate.is_some());
                    transport::start(socket, decoder, outbound, echo);
                })
        }
        Err(refusal) => {
            eprintln!("echo: refused an upgrade: {refusal}");
            let mut response = Response::new(StatusCode::BAD_REQUEST).drop_body();
            response
                .head_mut()
                .set_connection_type(ConnectionType::Close);
            connection
                .send(h1::Message::Item((response, BodySize::Sized(0))))
                .await
        }
    };
    if let Err(err) = outcome {
        eprintln!("echo: upgrade failed: {err}");
    }
    Ok(())
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let address = std::env::var("ECHO_ADDR").unwrap_or_else(|_| "127.0.0.1:9001".into());
    let server = Server::build()
        .workers(1)
        .bind("echo", address.as_str(), || {
            HttpService::build()
                .upgrade(fn_service(upgrade))
                .h1(fn_service(|_: Request| async {
                    Ok::<_, actix_http::Error>(Response::new(StatusCode::NOT_FOUND))
                }))
                .tcp()
        })?
        .run();
    eprintln!("echo: listening on ws://{address}");
    server.await
}
