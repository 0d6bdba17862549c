//! `WsSession`: one actor per WebSocket connection.
//!
//! It owns the client's side of things: the heartbeat clock, the rate-limit
//! buckets, the display name and the rooms it is in. The transport hands it
//! whole messages ([`Incoming`]); frames, fragments and the protocol's close
//! rules stay there. Client messages are checked here: only
//! well-formed chat to a room it is in reaches the hub as [`Say`], and joins
//! and leaves within MAX_ROOMS_PER_CONNECTION as [`Join`] and [`Leave`] (the
//! hub answers those with `joined` and `left`); everything else gets an
//! `error` event with its code, or a close code. Keeping its own list of rooms
//! lets it refuse at once, without asking the hub.
//! From the hub it receives [`Deliver`]: frames encoded once for every
//! receiver, which it queues as they are, or the order to close. Everything it
//! writes goes to its [`Outbound`] queue, in order.
//!
//! `welcome` is always the client's first event: until the hub's welcome
//! arrives, the session holds what it has to say itself (refusals, warnings,
//! its close), and sends it right behind the welcome.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::web::Bytes;
use bytestring::ByteString;

use crate::actors::chat_hub::{ChatHub, Connect, Deliver, Disconnect, Join, Leave, Say, Typing};
use crate::auth::{Identity, Verifier};
use crate::config::Config;
use crate::history::Since;
use crate::metrics::Metrics;
use crate::protocol::{
    now_ms, parse_message, ClientMessage, DisplayName, MessageError, RoomName, ServerEvent,
    SessionId,
};
use crate::rate_limit::TokenBucket;
use crate::state::ConnectionPermit;
use crate::transport::deflate::Deflate;
use crate::transport::{frame, CloseCode, Incoming, Outbound, Violation};

/// A session's own output from before its welcome.
#[derive(Default)]
struct Early {
    /// Refusals and warnings, in order.
    events: Vec<Bytes>,
    /// The close frame, when the session ended before its welcome came.
    close: Option<Bytes>,
}

/// How long a session that must close waits for its welcome, so the client
/// still hears, in order, why it is closed.
const WELCOME_WAIT: Duration = Duration::from_secs(2);

/// A session's token, checked.
struct Token {
    identity: Identity,
    verifier: Arc<Verifier>,
    /// The `token_expiring` warning and the 4001 close.
    expiry: Vec<SpawnHandle>,
}

/// How long before its token expires a client is warned.
const EXPIRY_WARNING: Duration = Duration::from_secs(30);

/// The close code of a session whose token expired.
const TOKEN_EXPIRED: CloseCode = CloseCode(4001);

/// One connected client; see the module docs.
pub struct WsSession {
    id: SessionId,
    name: DisplayName,
    /// The rooms it is in, as the hub will have them once it has read this
    /// session's messages so far.
    rooms: Vec<RoomName>,
    /// What it asked to resume after in its starting rooms, until it
    /// connects to the hub.
    resume: Vec<Option<Since>>,
    /// Who its token says it is, with the verifier for its refreshes and the
    /// timers of its expiry; `None` when identity is self-chosen (boxed:
    /// most of a session's life it is not looked at).
    identity: Option<Box<Token>>,
    hub: Addr<ChatHub>,
    /// The settings, shared by every session (the limits among them).
    config: Arc<Config>,
    last_seen: Instant,
    /// Chat messages allowed, refilled at RATE_LIMIT_PER_SEC.
    rate: TokenBucket,
    /// Refusals tolerated before a flood counts as abuse and is closed.
    patience: TokenBucket,
    outbound: Rc<Outbound>,
    /// Until its welcome arrives, what the session itself had to say: the
    /// welcome is always a client's first event, and with Redis it waits
    /// for the rooms' histories.
    early: Option<Box<Early>>,
    closing: bool,
    /// The permessage-deflate its upgrade agreed on: the hub then hands it
    /// compressed broadcasts.
    deflate: Option<Deflate>,
    /// The close code sent or received, for the metrics.
    close_code: Option<u16>,
    metrics: Option<Metrics>,
    _permit: ConnectionPermit,
}

impl WsSession {
    /// A session for a client that asked for `name` (or gets a guest name),
    /// starting in `rooms` (checked, deduplicated, within the limit), each
    /// resumed after its `since` when given.
    pub fn new(
        name: Option<DisplayName>,
        rooms: Vec<(RoomName, Option<Since>)>,
        identity: Option<(Identity, Arc<Verifier>)>,
        hub: Addr<ChatHub>,
        config: Arc<Config>,
        outbound: Rc<Outbound>,
        permit: ConnectionPermit,
    ) -> Self {
        let id = SessionId::next();
        Self {
            id,
            name: identity
                .as_ref()
                .map(|(identity, _)| identity.name.clone())
                .or(name)
                .unwrap_or_else(|| DisplayName::guest(id)),
            identity: identity.map(|(identity, verifier)| {
                Box::new(Token {
                    identity,
                    verifier,
                    expiry: Vec::new(),
                })
            }),
            resume: rooms.iter().map(|(_, since)| since.clone()).collect(),
            // Not collected in place: that would keep the larger buffer of
            // `rooms` for the life of the connection.
            rooms: {
                let mut names = Vec::with_capacity(rooms.len());
                names.extend(rooms.into_iter().map(|(room, _)| room));
                names
            },
            rate: TokenBucket::new(config.limits.rate_per_second, config.limits.rate_burst),
            patience: TokenBucket::new(config.limits.rate_per_second, config.limits.rate_burst),
            hub,
            config,
            last_seen: Instant::now(),
            outbound,
            early: Some(Box::default()),
            closing: false,
            deflate: None,
            close_code: None,
            metrics: None,
            _permit: permit,
        }
    }

    /// Takes compressed broadcasts, as its upgrade agreed on `deflate`.
    pub fn with_deflate(mut self, deflate: Option<Deflate>) -> Self {
        self.deflate = deflate;
        self
    }

    /// Counts what this client does in `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn count(&self, add: impl FnOnce(&Metrics)) {
        if let Some(metrics) = &self.metrics {
            add(metrics);
        }
    }

    /// Sends the client an `error` event; the connection stays open.
    fn refuse(&mut self, error: &MessageError) {
        self.count(|m| m.messages_refused.with_label_values(&[error.code()]).inc());
        let message = error.to_string();
        let event = ServerEvent::Error {
            code: error.code(),
            message: &message,
            ts: now_ms(),
        }
        .to_frame();
        self.send_own(event);
    }

    /// Queues an event of the session's own (not the hub's): held until the
    /// welcome has gone out.
    fn send_own(&mut self, event: Bytes) {
        match self.early.as_mut() {
            Some(early) => early.events.push(event),
            None => self.outbound.push(event),
        }
    }

    fn close(&mut self, ctx: &mut Context<Self>, code: CloseCode, reason: &str) {
        if self.closing {
            return;
        }
        self.closing = true;
        self.close_code = Some(u16::from(code));
        let frame = frame::close(Some(code), reason);
        let Some(early) = self.early.as_mut() else {
            self.outbound.push(frame);
            ctx.stop();
            return;
        };
        // Not welcomed yet: the close follows the welcome and the warnings
        // before it, or goes out alone if the welcome is long in coming.
        early.close = Some(frame);
        ctx.run_later(WELCOME_WAIT, |act, ctx| {
            if let Some(close) = act.early.take().and_then(|early| early.close) {
                act.outbound.push(close);
                ctx.stop();
            }
        });
    }

    /// Takes a rate-limit token for one data message. Past the rate the
    /// client is warned, and once its patience runs out too, closed with
    /// 1008. `false` when the message must be dropped.
    fn admit(&mut self, ctx: &mut Context<Self>) -> bool {
        let now = Instant::now();
        if self.rate.try_take(now) {
            return true;
        }
        if self.patience.try_take(now) {
            self.refuse(&MessageError::RateLimited);
        } else {
            log::info!("closing a flooding client={}", self.id);
            self.count(|m| m.cuts.with_label_values(&["rate_limit"]).inc());
            self.close(ctx, CloseCode::POLICY, "rate limit exceeded");
        }
        false
    }

    /// Closes the session with 1008 once more than MAX_PENDING_BYTES wait for
    /// a client that does not read; `true` when it did.
    fn close_if_backlogged(&mut self, ctx: &mut Context<Self>) -> bool {
        let pending = self.outbound.pending_bytes();
        if pending <= self.config.limits.max_pending_bytes {
            return false;
        }
        // A client can cause this at will, so it is not a warning.
        log::info!(
            "closing a slow consumer client={} pending_bytes={pending}",
            self.id
        );
        self.count(|m| m.cuts.with_label_values(&["slow_consumer"]).inc());
        self.close(
            ctx,
            CloseCode::POLICY,
            "too slow: output backlog over limit",
        );
        true
    }

    fn on_text(&mut self, text: &str, ctx: &mut Context<Self>) {
        if !self.admit(ctx) {
            return;
        }
        let message = parse_message(text, self.config.limits.max_message_bytes);
        match message.and_then(|message| self.on_client_message(message, ctx)) {
            Ok(()) => self.count(|m| m.messages_accepted.inc()),
            Err(error) => self.refuse(&error),
        }
    }

    /// Acts on a well-formed client message, or says why it cannot.
    fn on_client_message(
        &mut self,
        message: ClientMessage,
        ctx: &mut Context<Self>,
    ) -> Result<(), MessageError> {
        match message {
            ClientMessage::Chat { room, text } => {
                let room = room.unwrap_or_else(RoomName::general);
                if !self.rooms.contains(&room) {
                    return Err(MessageError::NotAMember(room));
                }
                self.hub.do_send(Say {
                    from: self.id,
                    room,
                    text,
                });
            }
            ClientMessage::Join { room, since } => {
                if let Some(token) = self.identity.as_deref() {
                    if !token.identity.rooms.allows(&room) {
                        return Err(MessageError::NotAllowed(format!(
                            "your token does not allow room \"{room}\""
                        )));
                    }
                }
                if !self.rooms.contains(&room) {
                    let max = self.config.limits.max_rooms_per_connection;
                    if self.rooms.len() >= max {
                        return Err(MessageError::TooManyRooms(max));
                    }
                    self.rooms.push(room.clone());
                }
                // Asked again when already in: `joined` says how many are there.
                self.hub.do_send(Join {
                    id: self.id,
                    room,
                    since,
                });
            }
            ClientMessage::Leave { room } => {
                let at = self.rooms.iter().position(|r| *r == room);
                let at = at.ok_or_else(|| MessageError::NotAMember(room.clone()))?;
                self.rooms.swap_remove(at);
                self.hub.do_send(Leave { id: self.id, room });
            }
            ClientMessage::Typing { room } => {
                if !self.rooms.contains(&room) {
                    return Err(MessageError::NotAMember(room));
                }
                self.hub.do_send(Typing { id: self.id, room });
            }
            ClientMessage::Refresh { token } => return self.refresh(&token, ctx),
        }
        Ok(())
    }

    /// Takes a fresh token for the same user: its expiry and rooms replace
    /// the old ones (the display name stays).
    fn refresh(&mut self, token: &str, ctx: &mut Context<Self>) -> Result<(), MessageError> {
        let Some(current) = self.identity.as_deref_mut() else {
            return Err(MessageError::NotAllowed(
                "this server does not use tokens".into(),
            ));
        };
        let fresh = current
            .verifier
            .verify(token, self.config.limits.max_name_chars)
            .map_err(|err| MessageError::NotAllowed(format!("refresh refused: {err}")))?;
        if fresh.user != current.identity.user {
            return Err(MessageError::NotAllowed(
                "refresh refused: the token is for another user".into(),
            ));
        }
        current.identity.expires = fresh.expires;
        current.identity.rooms = fresh.rooms;
        self.schedule_expiry(ctx);
        Ok(())
    }

    /// Warns the client 30 s before its token expires, and closes it with
    /// 4001 when it does, unless a refresh comes first.
    fn schedule_expiry(&mut self, ctx: &mut Context<Self>) {
        let Some(token) = self.identity.as_deref_mut() else {
            return;
        };
        for handle in token.expiry.drain(..) {
            ctx.cancel_future(handle);
        }
        let left = token.identity.expires.saturating_sub(now_ms() / 1000);
        let warn_in = left.saturating_sub(EXPIRY_WARNING.as_secs());
        let warn = ctx.run_later(Duration::from_secs(warn_in), move |act, _| {
            let seconds_left = left - warn_in;
            let event = ServerEvent::TokenExpiring {
                seconds_left,
                ts: now_ms(),
            };
            act.send_own(event.to_frame());
        });
        let close = ctx.run_later(Duration::from_secs(left), |act, ctx| {
            log::debug!("closing client={}: token expired", act.id);
            act.close(ctx, TOKEN_EXPIRED, "token expired");
        });
        if let Some(token) = self.identity.as_deref_mut() {
            token.expiry = vec![warn, close];
        }
    }

    /// Binary messages are refused, and count against the rate like text.
    fn on_binary(&mut self, ctx: &mut Context<Self>) {
        if self.admit(ctx) {
            self.refuse(&MessageError::Binary);
        }
    }

    /// Closes a client that broke the protocol with the violation's code.
    fn on_violation(&mut self, violation: Violation, ctx: &mut Context<Self>) {
        // Any client can do this at will: not worth more than debug.
        log::debug!(
            "websocket protocol error client={} code={} reason=\"{}\"",
            self.id,
            violation.code,
            violation.reason
        );
        self.close(ctx, violation.code, violation.reason);
    }

    /// Answers the client's close with the same code, and stops.
    fn on_close(&mut self, reason: Option<(CloseCode, ByteString)>, ctx: &mut Context<Self>) {
        self.closing = true;
        let code = reason.map(|(code, _)| code);
        self.close_code = Some(code.map_or(1005, u16::from));
        self.outbound.push(frame::close(code, ""));
        ctx.stop();
    }

    /// Pings the client, and closes it if it has been silent too long.
    fn heartbeat(&mut self, ctx: &mut Context<Self>) {
        if self.last_seen.elapsed() > self.config.limits.client_timeout {
            log::info!("closing a silent client={}", self.id);
            return self.close(ctx, CloseCode::POLICY, "heartbeat timeout");
        }
        self.outbound.push(frame::ping());
    }
}

impl Actor for WsSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.count(|m| m.connections_opened.inc());
        self.schedule_expiry(ctx);
        self.hub.do_send(Connect {
            id: self.id,
            name: self.name.clone(),
            user: self.identity.as_deref().map(|t| t.identity.user.clone()),
            session: ctx.address().recipient(),
            deflate: self.deflate,
            rooms: self
                .rooms
                .iter()
                .cloned()
                .zip(std::mem::take(&mut self.resume))
                .collect(),
        });
        ctx.run_interval(self.config.limits.heartbeat_interval, |act, ctx| {
            act.heartbeat(ctx)
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        let code = self.close_code;
        self.count(|m| m.connection_closed(code));
        self.hub.do_send(Disconnect { id: self.id });
    }
}

impl Handler<Deliver> for WsSession {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) {
        if let (Deliver::Frames(welcome), Some(early)) = (&msg, self.early.take()) {
            // The hub's first delivery is the welcome; then what the session
            // said meanwhile, and its close if it had to end.
            self.outbound.push(welcome.clone());
            for event in early.events {
                self.outbound.push(event);
            }
            if let Some(close) = early.close {
                self.outbound.push(close);
                ctx.stop();
            }
            return;
        }
        if self.closing {
            return;
        }
        match msg {
            Deliver::Frames(frames) => {
                if !self.close_if_backlogged(ctx) {
                    self.outbound.push(frames);
                }
            }
            Deliver::FrameLists(lists) => {
                if !self.close_if_backlogged(ctx) {
                    for frames in lists {
                        self.outbound.push(frames);
                    }
                }
            }
            Deliver::Close(code, reason) => self.close(ctx, code, reason),
        }
    }
}

impl StreamHandler<Incoming> for WsSession {
    fn handle(&mut self, incoming: Incoming, ctx: &mut Self::Context) {
        if self.closing {
            return;
        }
        self.last_seen = Instant::now();
        // Pongs and error events queue up too: a client that writes but never
        // reads must not grow its backlog without bound either.
        if self.close_if_backlogged(ctx) {
            return;
        }
        match incoming {
            Incoming::Text(text) => self.on_text(&text, ctx),
            Incoming::Binary(_) => self.on_binary(ctx),
            Incoming::Ping(payload) => self.outbound.push(frame::pong(&payload)),
            Incoming::Pong => {}
            Incoming::Close(reason) => self.on_close(reason, ctx),
            Incoming::Violation(violation) => self.on_violation(violation, ctx),
        }
    }

    /// The client hung up, or its close or violation was the last thing it
    /// sent: a session that is not closing already stops now.
    fn finished(&mut self, ctx: &mut Self::Context) {
        if !self.closing {
            ctx.stop();
        }
    }
}
