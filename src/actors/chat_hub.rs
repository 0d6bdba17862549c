//! `ChatHub`: the one actor per process that knows who is connected.
//!
//! It owns the membership (session id → the session's [`Recipient<Deliver>`]
//! and display name) and the drain state. Sessions send it [`Join`], [`Leave`]
//! and [`Say`]; the ticker and `POST /notify` send [`Notify`]; the Redis bridge
//! sends [`Remote`] and [`PeerCount`]; the shutdown coordinator sends [`Drain`]
//! and [`ForceClose`]; HTTP handlers ask [`Count`]. It answers with [`Deliver`]
//! to sessions and [`Publish`] to the bridge.
//!
//! Every broadcast event is serialized and encoded as a WebSocket frame once
//! here. The frames of one turn of the hub (everything its mailbox held) go
//! out together at the end of the turn: every session gets the same bytes in
//! one [`Deliver`], so under load the per-client cost of many events is one
//! mailbox push and one socket write. A batch over 64 KiB goes out at once, so
//! a mailbox that never runs dry does not hold it back. Local clients are
//! served without waiting for Redis; only other processes' clients do, and
//! when Redis is away chat on this process goes on.
//!
//! Draining changes three things: every member (and every late joiner) gets a
//! `shutdown_notice` with its own jittered reconnect delay, the hub tells the
//! coordinator when the last member leaves, and [`ForceClose`] closes whoever
//! is left with 1001 (and anyone who joins after that, or after the hub
//! reported itself empty, is closed the same way at once).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::web::{Bytes, BytesMut};
use actix_web_actors::ws::CloseCode;

use crate::protocol::{now_ms, DisplayName, Frame, Sender, ServerEvent, ServerId, SessionId};
use crate::wire;

/// A session joins: the hub welcomes it and starts delivering to it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Join {
    /// The session's number in this process.
    pub id: SessionId,
    /// The checked display name shown on its messages.
    pub name: DisplayName,
    /// Where the hub sends its events.
    pub session: Recipient<Deliver>,
}

/// A session is gone; stop delivering to it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    /// The session that left.
    pub id: SessionId,
}

/// A member sent a chat message (already checked) for everyone.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Say {
    /// The sender, who gets the echo too as its delivery confirmation.
    pub from: SessionId,
    /// The chat text.
    pub text: String,
}

/// A notification for every client; answers how many clients it went to.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Notify {
    /// The notification text.
    pub message: String,
    /// Whether other processes' clients get it too.
    pub scope: Scope,
}

/// How far a [`Notify`] reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// This process's clients only (the periodic ticker runs in every process).
    Local,
    /// Every process's clients, through the Redis bridge when there is one.
    Everywhere,
}

/// An event from another process, already serialized, for local clients only.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Remote {
    /// The event as the origin process serialized it.
    pub frame: Frame,
}

/// The bridge's latest count of clients connected to other live processes.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PeerCount {
    /// Clients on every other process that shares the Redis.
    pub clients: usize,
}

/// Begin draining; answers how many clients were told.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Drain {
    /// When the remaining clients will be closed.
    pub deadline: Instant,
    /// Told once, when the last member has left.
    pub on_empty: Recipient<HubEmpty>,
}

/// Close every remaining session with 1001; answers how many were closed.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct ForceClose;

/// How many sessions are connected to this process.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Count;

/// What the hub hands a session.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub enum Deliver {
    /// One or more events, already encoded as WebSocket text frames, to write
    /// as they are.
    Frames(Bytes),
    /// Close the connection with this code and reason.
    Close(CloseCode, &'static str),
}

/// An event for the other processes, handed to the Redis bridge.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct Publish {
    /// The event as this process serialized it; other processes deliver it as is.
    pub frame: Frame,
}

/// The end of a turn: hand the batched frames to every member.
#[derive(Message)]
#[rtype(result = "()")]
struct Flush;

/// Sent by the hub when a drain has no members left.
#[derive(Message)]
#[rtype(result = "()")]
pub struct HubEmpty;

/// The shortest and longest delay a draining client is told to wait before
/// reconnecting; spreading reconnects keeps a deploy from becoming a storm.
const RETRY_AFTER_MS: std::ops::RangeInclusive<u64> = 1_000..=10_000;

/// A batch this large goes out at once rather than at the end of the turn.
const MAX_BATCH_BYTES: usize = 64 * 1024;

struct Member {
    name: DisplayName,
    session: Recipient<Deliver>,
}

struct DrainState {
    deadline: Instant,
    /// Taken when the hub reports it is empty.
    on_empty: Option<Recipient<HubEmpty>>,
    /// Set by [`ForceClose`].
    closing: bool,
}

impl DrainState {
    /// The coordinator has been told the hub is empty, or the rest were
    /// closed: the server is on its way down and a newcomer would be cut off.
    fn finished(&self) -> bool {
        self.on_empty.is_none() || self.closing
    }
}

/// The membership of this process; see the module docs.
pub struct ChatHub {
    server: ServerId,
    members: HashMap<SessionId, Member>,
    publisher: Option<Recipient<Publish>>,
    peer_clients: usize,
    next_message: u64,
    draining: Option<DrainState>,
    /// Frames broadcast this turn, not yet handed to the members.
    batch: BytesMut,
    flush_scheduled: bool,
}

impl ChatHub {
    /// A hub for the process `server`; `publisher` (the Redis bridge) gets
    /// every event meant for other processes.
    pub fn new(server: ServerId, publisher: Option<Recipient<Publish>>) -> Self {
        Self {
            server,
            members: HashMap::new(),
            publisher,
            peer_clients: 0,
            next_message: 0,
            draining: None,
            batch: BytesMut::new(),
            flush_scheduled: false,
        }
    }

    fn next_message_id(&mut self) -> String {
        self.next_message += 1;
        format!("{}-m{}", self.server, self.next_message)
    }

    /// Queues `frame` for every local member. The batch goes out when the
    /// hub's mailbox is empty ([`Flush`] runs after the messages already
    /// waiting), so a burst costs each session one delivery.
    fn broadcast(&mut self, frame: &Frame, ctx: &mut Context<Self>) {
        if self.members.is_empty() {
            return;
        }
        wire::append_text(&mut self.batch, frame.as_bytes());
        if self.batch.len() >= MAX_BATCH_BYTES {
            // A mailbox that never runs dry must not hold the batch back.
            self.flush();
        } else if !self.flush_scheduled {
            self.flush_scheduled = true;
            ctx.notify(Flush);
        }
    }

    /// Hands the batch to every member; the bytes are shared, not copied.
    fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let frames = self.batch.split().freeze();
        for member in self.members.values() {
            member.session.do_send(Deliver::Frames(frames.clone()));
        }
    }

    fn publish(&self, frame: Frame) {
        if let Some(publisher) = &self.publisher {
            publisher.do_send(Publish { frame });
        }
    }

    fn send_shutdown_notice(&self, session: &Recipient<Deliver>, deadline: Instant) {
        let deadline_s = deadline.saturating_duration_since(Instant::now());
        let frame = ServerEvent::ShutdownNotice {
            message: "Server is shutting down; please reconnect",
            deadline_s: deadline_s.as_secs_f64().ceil() as u64,
            retry_after_ms: fastrand::u64(RETRY_AFTER_MS),
            ts: now_ms(),
        }
        .to_wire();
        session.do_send(Deliver::Frames(frame));
    }

    fn tell_if_drained(&mut self) {
        if !self.members.is_empty() {
            return;
        }
        if let Some(on_empty) = self.draining.as_mut().and_then(|d| d.on_empty.take()) {
            on_empty.do_send(HubEmpty);
        }
    }
}

impl Actor for ChatHub {
    type Context = Context<Self>;
}

impl Handler<Join> for ChatHub {
    type Result = ();

    fn handle(&mut self, msg: Join, _: &mut Self::Context) {
        // What was broadcast before it joined is not for it.
        self.flush();
        let client_id = msg.id.client_id(&self.server);
        let welcome = ServerEvent::Welcome {
            client_id: &client_id,
            name: msg.name.as_str(),
            online: self.members.len() + 1 + self.peer_clients,
            server: self.server.as_str(),
            ts: now_ms(),
        }
        .to_wire();
        msg.session.do_send(Deliver::Frames(welcome));
        if let Some(drain) = &self.draining {
            // Accepted just before the drain began: it leaves like the others.
            self.send_shutdown_notice(&msg.session, drain.deadline);
            if drain.finished() {
                // Too late even for that: close it now, with 1001, rather
                // than let the stopping server drop it.
                msg.session
                    .do_send(Deliver::Close(CloseCode::Away, "server shutting down"));
                return;
            }
        }
        log::debug!("joined client_id={client_id} name={:?}", msg.name.as_str());
        self.members.insert(
            msg.id,
            Member {
                name: msg.name,
                session: msg.session,
            },
        );
    }
}

impl Handler<Leave> for ChatHub {
    type Result = ();

    fn handle(&mut self, msg: Leave, _: &mut Self::Context) {
        if self.members.remove(&msg.id).is_some() {
            log::debug!("left client_id={}", msg.id.client_id(&self.server));
            self.tell_if_drained();
        }
    }
}

impl Handler<Say> for ChatHub {
    type Result = ();

    fn handle(&mut self, msg: Say, ctx: &mut Self::Context) {
        if !self.members.contains_key(&msg.from) {
            // A sender that left while its message was in flight has no name
            // to show; its last words are dropped with it.
            return;
        }
        let id = self.next_message_id();
        let client_id = msg.from.client_id(&self.server);
        let name = &self.members[&msg.from].name;
        let frame = ServerEvent::Echo {
            id: &id,
            message: &msg.text,
            from: Sender {
                id: &client_id,
                name: name.as_str(),
            },
            ts: now_ms(),
        }
        .encode();
        self.broadcast(&frame, ctx);
        self.publish(frame);
    }
}

impl Handler<Notify> for ChatHub {
    type Result = usize;

    fn handle(&mut self, msg: Notify, ctx: &mut Self::Context) -> usize {
        let id = self.next_message_id();
        let frame = ServerEvent::Notification {
            id: &id,
            message: &msg.message,
            ts: now_ms(),
        }
        .encode();
        self.broadcast(&frame, ctx);
        match msg.scope {
            Scope::Local => self.members.len(),
            Scope::Everywhere => {
                self.publish(frame);
                self.members.len() + self.peer_clients
            }
        }
    }
}

impl Handler<Remote> for ChatHub {
    type Result = ();

    fn handle(&mut self, msg: Remote, ctx: &mut Self::Context) {
        self.broadcast(&msg.frame, ctx);
    }
}

impl Handler<PeerCount> for ChatHub {
    type Result = ();

    fn handle(&mut self, msg: PeerCount, _: &mut Self::Context) {
        self.peer_clients = msg.clients;
    }
}

impl Handler<Drain> for ChatHub {
    type Result = usize;

    fn handle(&mut self, msg: Drain, _: &mut Self::Context) -> usize {
        self.flush();
        for member in self.members.values() {
            self.send_shutdown_notice(&member.session, msg.deadline);
        }
        self.draining = Some(DrainState {
            deadline: msg.deadline,
            on_empty: Some(msg.on_empty),
            closing: false,
        });
        self.tell_if_drained();
        self.members.len()
    }
}

impl Handler<ForceClose> for ChatHub {
    type Result = usize;

    fn handle(&mut self, _: ForceClose, _: &mut Self::Context) -> usize {
        self.flush();
        if let Some(drain) = self.draining.as_mut() {
            drain.closing = true;
        }
        for member in self.members.values() {
            member
                .session
                .do_send(Deliver::Close(CloseCode::Away, "server shutting down"));
        }
        // Members leave as their sessions stop, which tells the coordinator.
        self.members.len()
    }
}

impl Handler<Flush> for ChatHub {
    type Result = ();

    fn handle(&mut self, _: Flush, _: &mut Self::Context) {
        self.flush_scheduled = false;
        self.flush();
    }
}

impl Handler<Count> for ChatHub {
    type Result = usize;

    fn handle(&mut self, _: Count, _: &mut Self::Context) -> usize {
        self.members.len()
    }
}

/// How long until `deadline`, rounded up to whole seconds, for logs and `/status`.
pub fn seconds_left(deadline: Instant) -> u64 {
    let left: Duration = deadline.saturating_duration_since(Instant::now());
    left.as_secs() + u64::from(left.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    /// Stands in for a session: forwards every event it is delivered, one
    /// JSON text at a time, to a channel.
    struct Probe(mpsc::UnboundedSender<String>);

    impl Actor for Probe {
        type Context = Context<Self>;
    }

    impl Handler<Deliver> for Probe {
        type Result = ();
        fn handle(&mut self, msg: Deliver, _: &mut Self::Context) {
            match msg {
                Deliver::Frames(frames) => {
                    for event in wire::text_payloads(&frames) {
                        let _ = self.0.send(event);
                    }
                }
                Deliver::Close(code, _) => {
                    let _ = self.0.send(format!("close {}", u16::from(code)));
                }
            }
        }
    }

    fn probe() -> (Recipient<Deliver>, mpsc::UnboundedReceiver<String>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Probe(tx).start().recipient(), rx)
    }

    async fn next_event(rx: &mut mpsc::UnboundedReceiver<String>) -> serde_json::Value {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Some(event)) => serde_json::from_str(&event).expect(&event),
            other => panic!("expected an event, got {other:?}"),
        }
    }

    fn join(hub: &Addr<ChatHub>, name: &str) -> mpsc::UnboundedReceiver<String> {
        let (session, rx) = probe();
        hub.do_send(Join {
            id: SessionId::next(),
            name: DisplayName::parse(name, 32).unwrap(),
            session,
        });
        rx
    }

    #[actix_rt::test]
    async fn a_say_reaches_every_member_with_the_same_bytes() {
        let hub = ChatHub::new(ServerId::generate(), None).start();
        let (ana_session, mut ana) = probe();
        let ana_id = SessionId::next();
        hub.do_send(Join {
            id: ana_id,
            name: DisplayName::parse("ana", 32).unwrap(),
            session: ana_session,
        });
        let mut bo = join(&hub, "bo");
        assert_eq!(next_event(&mut ana).await["type"], "welcome");
        assert_eq!(next_event(&mut bo).await["online"], 2);

        hub.do_send(Say {
            from: ana_id,
            text: "hi".into(),
        });

        let (a, b) = (next_event(&mut ana).await, next_event(&mut bo).await);
        assert_eq!(a, b);
        assert_eq!(a["type"], "echo");
        assert_eq!(a["from"]["name"], "ana");
    }

    #[actix_rt::test]
    async fn a_session_that_joins_after_the_drain_finished_is_closed_with_1001() {
        struct Ignore;
        impl Actor for Ignore {
            type Context = Context<Self>;
        }
        impl Handler<HubEmpty> for Ignore {
            type Result = ();
            fn handle(&mut self, _: HubEmpty, _: &mut Self::Context) {}
        }
        let hub = ChatHub::new(ServerId::generate(), None).start();
        let told = hub
            .send(Drain {
                deadline: Instant::now() + Duration::from_secs(30),
                on_empty: Ignore.start().recipient(),
            })
            .await
            .unwrap();
        assert_eq!(told, 0, "empty at once, so the coordinator is already told");

        let mut late = join(&hub, "late");

        assert_eq!(next_event(&mut late).await["type"], "welcome");
        assert_eq!(next_event(&mut late).await["type"], "shutdown_notice");
        let close = tokio::time::timeout(Duration::from_secs(5), late.recv()).await;
        assert_eq!(close.unwrap().as_deref(), Some("close 1001"));
        assert_eq!(hub.send(Count).await.unwrap(), 0);
    }

    #[actix_rt::test]
    async fn the_messages_of_one_turn_reach_a_session_in_one_delivery() {
        struct Counter(mpsc::UnboundedSender<usize>);
        impl Actor for Counter {
            type Context = Context<Self>;
        }
        impl Handler<Deliver> for Counter {
            type Result = ();
            fn handle(&mut self, msg: Deliver, _: &mut Self::Context) {
                if let Deliver::Frames(frames) = msg {
                    let _ = self.0.send(wire::text_payloads(&frames).len());
                }
            }
        }
        let hub = ChatHub::new(ServerId::generate(), None).start();
        let (tx, mut deliveries) = mpsc::unbounded_channel();
        let id = SessionId::next();
        hub.do_send(Join {
            id,
            name: DisplayName::guest(id),
            session: Counter(tx).start().recipient(),
        });

        for n in 0..3 {
            hub.do_send(Say {
                from: id,
                text: format!("burst {n}"),
            });
        }

        let mut sizes = Vec::new();
        for _ in 0..2 {
            let size = tokio::time::timeout(Duration::from_secs(5), deliveries.recv())
                .await
                .expect("a delivery in time")
                .expect("the counter is alive");
            sizes.push(size);
        }
        assert_eq!(
            sizes,
            [1, 3],
            "the welcome alone, then the burst in one delivery"
        );
    }

    #[actix_rt::test]
    async fn a_drain_tells_every_member_and_reports_when_the_last_leaves() {
        struct Watcher(mpsc::UnboundedSender<()>);
        impl Actor for Watcher {
            type Context = Context<Self>;
        }
        impl Handler<HubEmpty> for Watcher {
            type Result = ();
            fn handle(&mut self, _: HubEmpty, _: &mut Self::Context) {
                let _ = self.0.send(());
            }
        }
        let hub = ChatHub::new(ServerId::generate(), None).start();
        let (session, mut rx) = probe();
        let id = SessionId::next();
        hub.do_send(Join {
            id,
            name: DisplayName::guest(id),
            session,
        });
        let (empty_tx, mut empty_rx) = mpsc::unbounded_channel();
        let deadline = Instant::now() + Duration::from_secs(30);

        let told = hub
            .send(Drain {
                deadline,
                on_empty: Watcher(empty_tx).start().recipient(),
            })
            .await
            .unwrap();

        assert_eq!(told, 1);
        next_event(&mut rx).await; // welcome
        let notice = next_event(&mut rx).await;
        assert_eq!(notice["type"], "shutdown_notice");
        assert_eq!(notice["deadline_s"], 30);
        let retry = notice["retry_after_ms"].as_u64().unwrap();
        assert!(RETRY_AFTER_MS.contains(&retry), "{retry}");
        assert!(empty_rx.try_recv().is_err(), "not empty yet");
        hub.do_send(Leave { id });
        tokio::time::timeout(Duration::from_secs(5), empty_rx.recv())
            .await
            .expect("told when the last member left");
    }
}
