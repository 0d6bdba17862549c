//! `RedisBridge`: relays events between the chatd processes that share a Redis.
//!
//! It exists only when Redis is configured (`REDIS_URL` or `REDIS_HOST`). It
//! owns a pub/sub connection following the chat's [`Channels`] (the
//! everyone channel, and one channel per room with local members), a
//! multiplexed publishing connection, the reconnect backoff, a bounded
//! [`Outbox`] for outages, and this process's presence record. The hub sends
//! it [`Publish`] and [`RoomChange`]; it sends the hub [`Remote`] (events from
//! other processes) and [`PeerCount`] (their clients, in all and per room).
//! The shutdown coordinator sends [`Stop`] at the very end of a drain, so the
//! bridge keeps relaying while clients leave.
//!
//! Why it looks the way it does:
//! - A room's channel is followed only while the room has local members: the
//!   hub says when a room opens or closes here, and the bridge brings the
//!   subscriptions in line with one SUBSCRIBE or UNSUBSCRIBE at a time, so
//!   join/leave churn coalesces instead of queueing commands. A room joined
//!   here for the first time misses what others publish in it until Redis
//!   confirms the SUBSCRIBE (one round trip).
//! - A subscription can go half-open (the socket stays up, nothing arrives),
//!   and a process that only receives would never notice from its writes. So
//!   the subscribing connection is pinged every [`SUBSCRIPTION_PING`], and a
//!   ping without its answer within [`REDIS_TIMEOUT`] drops the link.
//! - Everyone-notices reach local clients without waiting for Redis: the hub
//!   delivers them first and then hands the bridge the same frame, so the
//!   bridge drops its own copy when it comes back. Stored events (chat, room
//!   notices) are the other way round: the APPEND script numbers, stores and
//!   publishes them, and local members get this process's own ones when they
//!   come back on the room's channel, like everyone else's. One connection
//!   delivers a room's events in the order Redis published them, which is
//!   offset order, so members never see a step back. Numbered events not yet
//!   back when the link drops, and stored events that could not be sent, go
//!   to local members from here at once (see [`Stored`]).
//! - Every event goes through the outbox, connected or not, and the outbox is
//!   drained in batches of up to [`BATCH`] PUBLISH commands in one pipeline:
//!   one round trip per batch, one batch in flight, so events leave in order.
//!   A batch stays in the outbox until Redis confirms it; a batch that fails
//!   halfway is sent again, and receivers drop the repeats by the origin's
//!   sequence number carried in the [`Envelope`].
//! - The outbox is bounded (`REDIS_OUTBOX`): during a long outage memory stays
//!   flat, the oldest events go first and the log says how many.
//! - Pub/sub keeps no history: a process that is not subscribed misses what is
//!   published. After a reconnect the bridge holds its outbox until as many
//!   processes as it knew before the outage are subscribed again (they are
//!   reconnecting with the same backoff), for at most [`SETTLE_LIMIT`], so
//!   what was said during the outage reaches them.
//! - Presence: every [`PRESENCE_INTERVAL`] the bridge stores the hub's
//!   [`Census`] (see [`presence`](super::presence)) and sums the other live
//!   records into [`PeerCount`]. A process that dies without cleaning up drops
//!   out of the count when its record expires.
//! - Nothing here blocks: every Redis call is a future spawned on the actor's
//!   context, and results from a connection that has since been replaced are
//!   recognised by a generation number and ignored.
//!
//! - On a Redis Cluster (`REDIS_CLUSTER_NODES`) the same actor runs on a
//!   cluster link (see [`link`](super::link)); what differs there, room by
//!   room flushing and following the topology, is in `bridge/cluster.rs`.
//!
//! `/status` reads a [`BridgeStatus`] snapshot of atomics that only the
//! bridge writes, so no lock is shared between actors.

mod cluster;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::history::{self as streams, ReadKind, Scripts};
use super::link::{self, Conn, Incoming, Opened, Subscriber, Target};
use super::presence::{self, PresenceKeys, PRESENCE_INTERVAL};
use super::relay::{backoff, Envelope, Outbox, Queued, Seen};
use super::Channels;
use crate::actors::chat_hub::{
    Census, ChatHub, HistoryPage, HistoryRead, PeerCount, Publish, ReadHistory, ReadPage, Remote,
    RoomChange, StoreEvent, Stored,
};
use crate::actors::ticker::Stop;
use crate::config::{HistorySettings, RedisSettings};
use crate::protocol::{EventText, RoomName, ServerId};

/// A flush on its way: which events each APPEND numbered, and the numbers.
type BatchSend = std::pin::Pin<
    Box<
        dyn std::future::Future<
            Output = redis::RedisResult<(Vec<streams::AppendCall>, Vec<(String, u64)>)>,
        >,
    >,
>;

/// Most PUBLISH commands sent in one pipeline (one round trip).
pub const BATCH: usize = 256;
/// How often the subscribing connection is pinged.
pub const SUBSCRIPTION_PING: Duration = Duration::from_secs(3);
/// The longest a reconnected bridge holds its outbox for peers to resubscribe:
/// a little more than their longest backoff.
pub const SETTLE_LIMIT: Duration = Duration::from_secs(6);
/// How often a settling bridge counts the channel's subscribers.
const SETTLE_POLL: Duration = Duration::from_millis(100);
/// Bounds a connection attempt, and every command's reply.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// Bounds a history read: longer than a command's, as a recovery storm
/// after a deploy can keep Redis busy.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a cluster link asks which master serves which slots.
pub const TOPOLOGY_POLL: Duration = Duration::from_secs(1);
/// How long a cluster room whose shard failed waits before it is tried again.
pub const CLUSTER_RETRY: Duration = Duration::from_millis(250);
/// Bounds the last flush and the presence removal at exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(1);

/// The bridge's link to Redis, as `/status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum LinkState {
    Connecting = 0,
    Connected = 1,
}

/// A snapshot the bridge writes and HTTP handlers read, without locks.
#[derive(Debug, Default)]
pub struct BridgeStatus {
    state: AtomicU8,
    outbox: AtomicUsize,
    dropped: AtomicU64,
    peer_clients: AtomicUsize,
    /// Room channels followed.
    room_channels: AtomicUsize,
    /// Messages that arrived on the subscription, this process's own included.
    received: AtomicU64,
}

impl BridgeStatus {
    fn set_state(&self, state: LinkState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    /// Whether the link is up.
    pub fn connected(&self) -> bool {
        self.state.load(Ordering::Relaxed) == LinkState::Connected as u8
    }

    /// Events waiting in the outbox.
    pub fn outbox(&self) -> usize {
        self.outbox.load(Ordering::Relaxed)
    }

    /// Events dropped from a full outbox.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The `redis` object of `/status`.
    pub fn to_json(&self) -> serde_json::Value {
        let state = if self.state.load(Ordering::Relaxed) == LinkState::Connected as u8 {
            "connected"
        } else {
            "connecting"
        };
        serde_json::json!({
            "state": state,
            "outbox": self.outbox.load(Ordering::Relaxed),
            "dropped": self.dropped.load(Ordering::Relaxed),
            "peer_clients": self.peer_clients.load(Ordering::Relaxed),
            "room_channels": self.room_channels.load(Ordering::Relaxed),
            "received": self.received.load(Ordering::Relaxed),
        })
    }
}

/// A working link: the publishing connection, the subscribing one and the
/// rooms it follows, and, right after a reconnect, how long to hold the
/// outbox for peers.
struct Link {
    publisher: Conn,
    subscriber: Subscriber,
    subscription: SpawnHandle,
    /// Rooms whose channel Redis confirmed we follow.
    following: HashSet<RoomName>,
    /// A SUBSCRIBE or UNSUBSCRIBE is in flight.
    changing: bool,
    /// Rooms whose UNSUBSCRIBE is in flight: followed no longer, whatever
    /// `following` says until Redis confirms.
    dropping: HashSet<RoomName>,
    settling: Option<Settle>,
    /// In a cluster, the client the link came from: a link that lost a
    /// master is rebuilt from it (see [`RedisBridge::rebuild`]).
    cluster: Option<redis::cluster::ClusterClient>,
    /// A rebuild is under way.
    rebuilding: bool,
    /// In a cluster, the topology (see [`link::topology`]) the link follows.
    topology: Option<String>,
}

impl Link {
    /// Whether `room`'s events reach us: subscribed, and not on the way out.
    fn follows(&self, room: &RoomName) -> bool {
        self.following.contains(room) && !self.dropping.contains(room)
    }
}

struct Settle {
    until: Instant,
    subscribers: usize,
}

/// Relays events through Redis; see the module docs.
pub struct RedisBridge {
    hub: Addr<ChatHub>,
    /// Times each store-and-publish round trip, when metrics are kept.
    round_trip: Option<prometheus::Histogram>,
    server: ServerId,
    target: Target,
    url: String,
    channels: Channels,
    presence: PresenceKeys,
    /// Rooms with local members: the room channels to follow.
    rooms: HashSet<RoomName>,
    history: HistorySettings,
    /// How long our presence record outlives its last refresh.
    presence_ttl: Duration,
    scripts: Arc<Scripts>,
    /// History reads for rooms whose channel is not followed yet: read only
    /// once it is, so nothing published in between is missed.
    waiting_reads: Vec<ReadHistory>,
    /// This process's stored events that Redis numbered, by sequence, until
    /// they come back on their room's channel for local members.
    awaiting: HashMap<u64, (RoomName, u64, EventText)>,
    /// Whether Redis was ever reached: before that, history reads wait for it.
    ever_connected: bool,
    outbox: Outbox,
    status: Arc<BridgeStatus>,
    link: Option<Link>,
    /// Bumped whenever a link is dropped, to ignore its late results.
    generation: u64,
    /// Failed connection attempts since the last success.
    attempts: u32,
    flushing: bool,
    counting_presence: bool,
    /// Other live processes at the last presence count.
    peer_processes: usize,
    seen: Seen,
    /// Events dropped for room since the last log line about it.
    dropped_unlogged: u64,
    /// In a cluster: the channels with a command in flight, or held back
    /// for [`CLUSTER_RETRY`] after a failure; their later events wait.
    sending: HashSet<String>,
    /// In a cluster: rooms whose shard failed their last command. Their
    /// stored events go to local members at once, unstored, as all rooms'
    /// do while a single Redis is away.
    down_rooms: HashSet<RoomName>,
}

impl RedisBridge {
    /// # Errors
    /// `settings.url` is not a Redis URL.
    pub fn new(
        settings: &RedisSettings,
        history: HistorySettings,
        presence_ttl: Duration,
        server: ServerId,
        hub: Addr<ChatHub>,
        status: Arc<BridgeStatus>,
    ) -> redis::RedisResult<Self> {
        let target = Target::new(&settings.target)?;
        let cluster = target.is_cluster();
        Ok(Self {
            hub,
            round_trip: None,
            target,
            url: settings.target.describe(),
            channels: Channels::new(&settings.channel),
            presence: PresenceKeys::new(&settings.channel, &server, cluster),
            rooms: HashSet::new(),
            history,
            presence_ttl,
            scripts: Arc::new(Scripts::new(cluster)),
            waiting_reads: Vec::new(),
            awaiting: HashMap::new(),
            ever_connected: false,
            server,
            outbox: Outbox::new(settings.outbox_capacity),
            status,
            link: None,
            generation: 0,
            attempts: 0,
            flushing: false,
            counting_presence: false,
            peer_processes: 0,
            seen: Seen::default(),
            dropped_unlogged: 0,
            sending: HashSet::new(),
            down_rooms: HashSet::new(),
        })
    }

    /// Times every store-and-publish round trip in `metrics`.
    pub fn with_metrics(mut self, metrics: &crate::metrics::Metrics) -> Self {
        self.round_trip = Some(metrics.publish_round_trip_seconds.clone());
        self
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        self.status.set_state(LinkState::Connecting);
        let target = self.target.clone();
        let scripts = self.scripts.clone();
        let rooms: Vec<RoomName> = self.rooms.iter().cloned().collect();
        let room_channels: Vec<String> = rooms.iter().map(|r| self.channels.room(r)).collect();
        let everyone = vec![self.channels.everyone().to_string()];
        let users = self.channels.users_pattern();
        let attempt = async move {
            let opened = tokio::time::timeout(REDIS_TIMEOUT, target.open(REDIS_TIMEOUT))
                .await
                .map_err(|_| "connecting timed out".to_string())?;
            let mut opened = opened.map_err(|e| e.to_string())?;
            let loaded = scripts.load(&mut opened.conn).await;
            // A cluster node without the scripts gets their text instead,
            // so a node that is away does not keep the others from serving.
            if let (Err(err), None) = (loaded, &opened.cluster) {
                return Err(format!("loading the history scripts failed: {err}"));
            }
            let sink = &mut opened.subscriber;
            let subscribe = async {
                sink.subscribe(&everyone).await?;
                if !room_channels.is_empty() {
                    sink.follow_rooms(&room_channels).await?;
                }
                sink.psubscribe(&users).await?;
                Ok::<_, redis::RedisError>(())
            };
            tokio::time::timeout(REDIS_TIMEOUT, subscribe)
                .await
                .map_err(|_| "subscribing timed out".to_string())?
                .map_err(|e| e.to_string())?;
            // What the subscriptions were made on, to notice when it changes.
            let topology = match opened.cluster {
                Some(_) => link::topology(&mut opened.conn).await.ok(),
                None => None,
            };
            Ok::<_, String>((opened, rooms, topology))
        };
        ctx.spawn(
            attempt
                .into_actor(self)
                .map(|result, act, ctx| match result {
                    Ok((opened, rooms, topology)) => act.connected(opened, rooms, topology, ctx),
                    Err(err) => act.retry_later(&err, ctx),
                }),
        );
    }

    /// Schedules the next connection attempt after a failed one.
    fn retry_later(&mut self, err: &str, ctx: &mut Context<Self>) {
        self.attempts += 1;
        let delay = backoff(self.attempts);
        // The first failure, then about once a minute at the cap.
        let level = if self.attempts % 12 == 1 {
            log::Level::Warn
        } else {
            log::Level::Debug
        };
        log::log!(
            level,
            "redis unreachable url={} attempt={} retry_in_ms={} outbox={} error={err:?}; \
             chat stays local meanwhile",
            self.url,
            self.attempts,
            delay.as_millis(),
            self.outbox.len()
        );
        ctx.run_later(delay, |act, ctx| act.connect(ctx));
    }

    fn connected(
        &mut self,
        opened: Opened,
        following: Vec<RoomName>,
        topology: Option<String>,
        ctx: &mut Context<Self>,
    ) {
        let Opened {
            conn: publisher,
            subscriber,
            messages,
            cluster,
        } = opened;
        let generation = self.generation;
        let subscription = ctx.spawn(
            actix::fut::wrap_stream(messages)
                .map(|incoming, act: &mut Self, ctx| match incoming {
                    Incoming::Message(msg) => act.relay(&msg),
                    Incoming::ShardChannelDropped(channel) => act.follow_again(&channel, ctx),
                })
                .finish()
                .map(move |(), act, ctx| act.link_lost(generation, "subscription ended", ctx)),
        );
        // Peers known before an outage are reconnecting too; wait for them.
        // (Before the first connection there were none.)
        let settling = (self.peer_processes > 0).then(|| Settle {
            until: Instant::now() + SETTLE_LIMIT,
            subscribers: self.peer_processes + 1,
        });
        log::info!(
            "redis connected url={} channel={} server={} rooms={} outbox={} waiting_for_peers={}",
            self.url,
            self.channels.everyone(),
            self.server,
            following.len(),
            self.outbox.len(),
            settling.as_ref().map_or(0, |s| s.subscribers - 1),
        );
        self.attempts = 0;
        self.status
            .room_channels
            .store(following.len(), Ordering::Relaxed);
        self.link = Some(Link {
            publisher,
            subscriber,
            subscription,
            following: following.into_iter().collect(),
            changing: false,
            dropping: HashSet::new(),
            settling,
            cluster,
            rebuilding: false,
            topology,
        });
        self.status.set_state(LinkState::Connected);
        self.ever_connected = true;
        self.follow_rooms(ctx);
        self.serve_waiting_reads(ctx);
        self.count_presence(ctx);
        self.settle(ctx);
    }

    /// Brings the room subscriptions in line with the rooms that have local
    /// members: one SUBSCRIBE and one UNSUBSCRIBE at most in flight, then
    /// again until nothing differs.
    fn follow_rooms(&mut self, ctx: &mut Context<Self>) {
        let Some(link) = self.link.as_mut().filter(|l| !l.changing) else {
            return;
        };
        let add: Vec<RoomName> = self.rooms.difference(&link.following).cloned().collect();
        let drop: Vec<RoomName> = link.following.difference(&self.rooms).cloned().collect();
        if add.is_empty() && drop.is_empty() {
            return;
        }
        link.changing = true;
        link.dropping.extend(drop.iter().cloned());
        let mut subscriber = link.subscriber.clone();
        let subscribe: Vec<String> = add.iter().map(|r| self.channels.room(r)).collect();
        let unsubscribe: Vec<String> = drop.iter().map(|r| self.channels.room(r)).collect();
        let generation = self.generation;
        let change = async move {
            if !subscribe.is_empty() {
                subscriber.follow_rooms(&subscribe).await?;
            }
            if !unsubscribe.is_empty() {
                subscriber.unfollow_rooms(&unsubscribe).await?;
            }
            Ok::<_, redis::RedisError>(())
        };
        let change = tokio::time::timeout(REDIS_TIMEOUT, change);
        ctx.spawn(change.into_actor(self).map(move |result, act, ctx| {
            if generation != act.generation {
                return;
            }
            let Some(link) = act.link.as_mut() else {
                return;
            };
            link.changing = false;
            link.dropping.clear();
            match result {
                Ok(Ok(())) => {
                    link.following.extend(add);
                    for room in &drop {
                        link.following.remove(room);
                    }
                    act.status
                        .room_channels
                        .store(link.following.len(), Ordering::Relaxed);
                    act.serve_waiting_reads(ctx);
                    act.follow_rooms(ctx);
                }
                Ok(Err(err)) => {
                    act.link_lost(generation, &format!("subscribing failed: {err}"), ctx)
                }
                Err(_) => act.link_lost(generation, "subscribing timed out", ctx),
            }
        }));
    }

    /// Pings the subscribing connection, and drops the link when the answer
    /// does not come in time: a half-open subscription is noticed even by a
    /// process that never publishes.
    fn ping_subscription(&mut self, ctx: &mut Context<Self>) {
        let Some(link) = &self.link else {
            return;
        };
        let mut subscriber = link.subscriber.clone();
        let generation = self.generation;
        let ping = async move { subscriber.ping(REDIS_TIMEOUT).await };
        ctx.spawn(ping.into_actor(self).map(move |result, act, ctx| {
            if let Err(err) = result {
                act.link_lost(generation, &format!("subscription ping failed: {err}"), ctx)
            }
        }));
    }

    /// Drops the link `generation` (if it is still the current one) and
    /// schedules a reconnect.
    fn link_lost(&mut self, generation: u64, why: &str, ctx: &mut Context<Self>) {
        if generation != self.generation {
            return;
        }
        let Some(link) = self.link.take() else {
            return;
        };
        ctx.cancel_future(link.subscription);
        self.generation += 1;
        self.flushing = false;
        self.counting_presence = false;
        self.sending.clear();
        self.down_rooms.clear();
        self.status.set_state(LinkState::Connecting);
        self.status.peer_clients.store(0, Ordering::Relaxed);
        self.status.room_channels.store(0, Ordering::Relaxed);
        // Other processes' clients are out of reach until Redis is back.
        self.hub.do_send(PeerCount::default());
        // Local members get now, unstored, what waited to be stored; it is
        // stored (for the others and for later recoveries) when Redis is back.
        let mut stored: Vec<(u64, (RoomName, u64, EventText))> = self.awaiting.drain().collect();
        stored.sort_unstable_by_key(|(seq, _)| *seq);
        for (_, (room, offset, event)) in stored {
            self.hub.do_send(Stored {
                room,
                offset: Some(offset),
                event: streams::with_offset(&event, offset),
            });
        }
        for (room, event) in self.outbox.deliver_all() {
            self.hub.do_send(Stored {
                room,
                offset: None,
                event: streams::unnumbered(&event),
            });
        }
        for read in std::mem::take(&mut self.waiting_reads) {
            self.answer_read(read, None);
        }
        log::warn!(
            "redis connection lost url={} reason={why:?} outbox={}; chat stays local, reconnecting",
            self.url,
            self.outbox.len()
        );
        self.attempts = 1;
        ctx.run_later(backoff(1), |act, ctx| act.connect(ctx));
    }

    /// Delivers one message from a channel to local clients, unless it is
    /// our own (already delivered) or a repeat.
    fn relay(&mut self, msg: &redis::Msg) {
        self.status.received.fetch_add(1, Ordering::Relaxed);
        let channel = msg.get_channel_name();
        let Some(audience) = self.channels.audience(channel) else {
            log::debug!("ignoring a message on a foreign channel={channel:?}");
            return;
        };
        let envelope: Envelope<String> = match serde_json::from_slice(msg.get_payload_bytes()) {
            Ok(envelope) => envelope,
            Err(err) => {
                log::warn!("ignoring a malformed message channel={channel} error={err}");
                return;
            }
        };
        if envelope.origin == self.server.as_str() {
            // Our own stored events come back this way, so that a room's
            // events reach local members in Redis's order, which is offset
            // order; everything else of ours was delivered already.
            if envelope.offset.is_none() || !self.own_event_back(envelope.seq) {
                return;
            }
        } else if !self
            .seen
            .is_new(envelope.origin, self.seen_scope(channel), envelope.seq)
        {
            log::debug!("dropping a repeated event seq={}", envelope.seq);
            return;
        }
        self.hub.do_send(Remote {
            audience,
            offset: envelope.offset,
            event: EventText::from(envelope.frame),
        });
    }

    /// Publishes the oldest batch when connected, settled and idle; repeats
    /// until the outbox is empty.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.target.is_cluster() {
            return self.flush_cluster(ctx);
        }
        if self.flushing {
            return;
        }
        let Some(link) = self.link.as_ref().filter(|l| l.settling.is_none()) else {
            return;
        };
        let Some((last, batch)) = self.outbox.batch(BATCH) else {
            return;
        };
        let publisher = link.publisher.clone();
        let send = if publisher.is_cluster() {
            self.send_to_cluster(publisher, &batch)
        } else {
            self.send_pipeline(publisher, &batch)
        };
        let generation = self.generation;
        self.flushing = true;
        let round_trip = self.round_trip.clone();
        let send = async move {
            let _timer = round_trip.as_ref().map(prometheus::Histogram::start_timer);
            send.await
        };
        ctx.spawn(send.into_actor(self).map(move |result, act, ctx| {
            if generation == act.generation {
                act.flushing = false;
            }
            match result {
                Ok((calls, numbered)) => {
                    // Even from a replaced link: Redis has these events.
                    act.note_stored(calls, numbered);
                    act.outbox.confirm(last);
                    act.status.outbox.store(act.outbox.len(), Ordering::Relaxed);
                    act.flush(ctx);
                }
                Err(err) => act.link_lost(generation, &format!("publish failed: {err}"), ctx),
            }
        }));
    }

    /// One server: the whole batch in one pipeline, one round trip.
    fn send_pipeline(&self, mut publisher: Conn, batch: &[&Queued]) -> BatchSend {
        let mut pipe = redis::pipe();
        let calls = self.scripts.add_batch(
            &mut pipe,
            batch,
            &self.channels,
            &self.history,
            &self.server,
        );
        Box::pin(async move {
            let numbered: Vec<(String, u64)> = pipe.query_async(&mut publisher).await?;
            Ok((calls, numbered))
        })
    }

    /// Notes the offsets a flush gave this process's stored events. Local
    /// members get each when it comes back on the room's channel; until
    /// then it waits here, in case the link drops first.
    fn note_stored(&mut self, calls: Vec<streams::AppendCall>, numbered: Vec<(String, u64)>) {
        for (call, (_epoch, first)) in calls.into_iter().zip(numbered) {
            for (offset, (seq, event)) in (first..).zip(call.events) {
                if self.outbox.deliver(seq) {
                    self.awaiting
                        .insert(seq, (call.room.clone(), offset, event));
                }
            }
        }
    }

    /// Whether an own stored event that came back on its channel is still
    /// owed to local members (and now no longer is).
    fn own_event_back(&mut self, seq: u64) -> bool {
        self.outbox.deliver(seq) || self.awaiting.remove(&seq).is_some()
    }

    /// Whether stored events can go to Redis now: connected and not holding
    /// the outbox for peers. Otherwise local members get them unstored.
    fn storing(&self) -> bool {
        self.link.as_ref().is_some_and(|l| l.settling.is_none())
    }

    /// Counts an event dropped from a full outbox, and delivers it locally if
    /// it was a stored event local members had not got yet.
    fn dropped(&mut self, item: Option<Queued>, ctx: &mut Context<Self>) {
        let Some(item) = item else {
            return;
        };
        if let Queued::Store {
            room,
            event,
            delivered: false,
            ..
        } = item
        {
            self.hub.do_send(Stored {
                room,
                offset: None,
                event: streams::unnumbered(&event),
            });
        }
        self.status.dropped.fetch_add(1, Ordering::Relaxed);
        // One log line per second of overflow, not one per event.
        if self.dropped_unlogged == 0 {
            ctx.run_later(Duration::from_secs(1), |act, _| act.log_dropped());
        }
        self.dropped_unlogged += 1;
    }

    /// Reads a joining session's history, once the room's channel is
    /// followed; answers at once (without history) while Redis is away.
    fn read_history(&mut self, read: ReadHistory, ctx: &mut Context<Self>) {
        let Some(link) = &self.link else {
            if self.ever_connected {
                return self.answer_read(read, None);
            }
            // A process just started: Redis is most likely a moment away,
            // and a resuming client would rather wait for it than lose its
            // place. Answered when the link comes, or without history after
            // READ_TIMEOUT.
            let (session, request) = (read.session, read.request);
            self.waiting_reads.push(read);
            ctx.run_later(READ_TIMEOUT, move |act, _| {
                if act.link.is_none() {
                    let waiting = std::mem::take(&mut act.waiting_reads);
                    let (late, rest): (Vec<_>, Vec<_>) = waiting
                        .into_iter()
                        .partition(|r| r.session == session && r.request == request);
                    act.waiting_reads = rest;
                    for read in late {
                        act.answer_read(read, None);
                    }
                }
            });
            return;
        };
        if !link.follows(&read.room) {
            self.waiting_reads.push(read);
            return;
        }
        let mut conn = link.publisher.clone();
        let scripts = self.scripts.clone();
        let channels = self.channels.clone();
        let kind = ReadKind::Join {
            since: read.since.clone(),
            latest: read.latest,
            most: self.history.size,
        };
        let ttl = self.history.ttl.as_secs();
        let generation = self.generation;
        let room = read.room.clone();
        let fetch = async move {
            let read = scripts.read(&mut conn, &channels, &room, &kind, ttl);
            tokio::time::timeout(READ_TIMEOUT, read).await
        };
        ctx.spawn(
            fetch
                .into_actor(self)
                .map(move |result, act, ctx| match result {
                    Ok(Ok(replay)) => act.answer_read(read, Some(replay)),
                    Ok(Err(err))
                        if !act.target.is_cluster()
                            && (err.is_io_error() || err.is_connection_dropped()) =>
                    {
                        act.answer_read(read, None);
                        act.link_lost(generation, &format!("history read failed: {err}"), ctx);
                    }
                    Ok(Err(err)) => {
                        log::warn!("history read failed room={}: {err}", read.room);
                        act.answer_read(read, None);
                    }
                    // A slow Redis is not a lost one: the subscription's
                    // pings tell when the link is gone, and dropping it here
                    // would cost every local member what is published
                    // meanwhile.
                    Err(_) => {
                        log::info!("history read timed out room={}", read.room);
                        act.answer_read(read, None);
                    }
                }),
        );
    }

    fn serve_waiting_reads(&mut self, ctx: &mut Context<Self>) {
        let Some(link) = &self.link else {
            return;
        };
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting_reads)
            .into_iter()
            .partition(|read| link.follows(&read.room));
        self.waiting_reads = waiting;
        for read in ready {
            self.read_history(read, ctx);
        }
    }

    fn answer_read(&self, read: ReadHistory, replay: Option<crate::history::Replay>) {
        self.hub.do_send(HistoryRead {
            session: read.session,
            room: read.room,
            request: read.request,
            asked_since: read.since.is_some(),
            replay,
        });
    }

    /// Holds the outbox after a reconnect until enough processes subscribe
    /// again or [`SETTLE_LIMIT`] passes, then flushes.
    fn settle(&mut self, ctx: &mut Context<Self>) {
        let Some(link) = self.link.as_mut() else {
            return;
        };
        let Some(settle) = &link.settling else {
            self.flush(ctx);
            return;
        };
        if Instant::now() >= settle.until {
            log::info!(
                "redis peers did not all return within {}s; publishing the outbox anyway",
                SETTLE_LIMIT.as_secs()
            );
            link.settling = None;
            self.flush(ctx);
            return;
        }
        let wanted = settle.subscribers;
        let mut publisher = link.publisher.clone();
        let channel = self.channels.everyone().to_string();
        let generation = self.generation;
        let count = async move {
            redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(&channel)
                .query_async::<(String, usize)>(&mut publisher)
                .await
        };
        ctx.spawn(count.into_actor(self).map(move |result, act, ctx| {
            if generation != act.generation {
                return;
            }
            match result {
                Ok((_, subscribers)) if subscribers >= wanted => {
                    if let Some(link) = act.link.as_mut() {
                        link.settling = None;
                    }
                    act.flush(ctx);
                }
                Ok(_) => {
                    ctx.run_later(SETTLE_POLL, move |act, ctx| {
                        if generation == act.generation {
                            act.settle(ctx);
                        }
                    });
                }
                Err(err) => act.link_lost(generation, &format!("PUBSUB failed: {err}"), ctx),
            }
        }));
    }

    /// Refreshes this process's presence record and tells the hub how many
    /// clients the other live processes have, in all and per room.
    fn count_presence(&mut self, ctx: &mut Context<Self>) {
        if self.counting_presence {
            return;
        }
        let Some(link) = &self.link else {
            return;
        };
        self.counting_presence = true;
        let mut conn = link.publisher.clone();
        let hub = self.hub.clone();
        let keys = self.presence.clone();
        let ttl = self.presence_ttl;
        let generation = self.generation;
        let count = async move {
            // A busy hub is no fault of the link: skip this round.
            let census = match tokio::time::timeout(REDIS_TIMEOUT, hub.send(Census)).await {
                Ok(Ok(census)) => census,
                _ => return Err(PresenceError::Skipped("the hub did not answer in time")),
            };
            presence::round(&mut conn, &keys, census, ttl)
                .await
                .map_err(PresenceError::Link)
        };
        ctx.spawn(count.into_actor(self).map(move |result, act, ctx| {
            if generation != act.generation {
                return;
            }
            act.counting_presence = false;
            match result {
                Ok(peers) => {
                    act.peer_processes = peers.processes;
                    act.status
                        .peer_clients
                        .store(peers.counts.clients, Ordering::Relaxed);
                    act.hub.do_send(peers.counts);
                }
                Err(PresenceError::Skipped(why)) => {
                    log::debug!("presence round skipped: {why}");
                }
                // In a cluster the presence keys live on one shard, whose
                // loss is no loss of the link: the counts wait for it, and
                // the ping tells when the whole cluster is gone.
                Err(PresenceError::Link(err)) if act.target.is_cluster() => {
                    log::info!("presence round failed (its shard is away?): {err}");
                }
                Err(PresenceError::Link(err)) => {
                    act.link_lost(generation, &format!("presence failed: {err}"), ctx)
                }
            }
        }));
    }

    fn log_dropped(&mut self) {
        if self.dropped_unlogged > 0 {
            log::warn!(
                "redis outbox full capacity={} dropped_oldest={}",
                self.outbox.capacity(),
                self.dropped_unlogged
            );
            self.dropped_unlogged = 0;
        }
    }
}

/// Why a presence round did not finish.
enum PresenceError {
    /// Nothing wrong with the link (the hub was busy); try next round.
    Skipped(&'static str),
    /// Redis failed: the link is lost.
    Link(redis::RedisError),
}

impl Actor for RedisBridge {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.connect(ctx);
        ctx.run_interval(PRESENCE_INTERVAL, |act, ctx| act.count_presence(ctx));
        ctx.run_interval(SUBSCRIPTION_PING, |act, ctx| act.ping_subscription(ctx));
        if self.target.is_cluster() {
            ctx.run_interval(TOPOLOGY_POLL, |act, ctx| act.watch_topology(ctx));
        }
    }
}

impl Handler<RoomChange> for RedisBridge {
    type Result = ();

    fn handle(&mut self, msg: RoomChange, ctx: &mut Self::Context) {
        match msg {
            RoomChange::Opened(room) => self.rooms.insert(room),
            RoomChange::Closed(room) => {
                // Nobody here is left to get what was on its way back.
                self.awaiting.retain(|_, (r, _, _)| *r != room);
                self.seen.forget(&self.channels.room(&room));
                self.rooms.remove(&room)
            }
        };
        self.follow_rooms(ctx);
    }
}

impl Handler<Publish> for RedisBridge {
    type Result = ();

    fn handle(&mut self, msg: Publish, ctx: &mut Self::Context) {
        let channel = self.channels.of(&msg.audience);
        let dropped = self.outbox.publish(&self.server, channel, &msg.event);
        self.dropped(dropped, ctx);
        self.status
            .outbox
            .store(self.outbox.len(), Ordering::Relaxed);
        self.flush(ctx);
    }
}

impl Handler<StoreEvent> for RedisBridge {
    type Result = ();

    fn handle(&mut self, msg: StoreEvent, ctx: &mut Self::Context) {
        let deliver_now = !self.storing() || self.down_rooms.contains(&msg.room);
        if deliver_now {
            self.hub.do_send(Stored {
                room: msg.room.clone(),
                offset: None,
                event: streams::unnumbered(&msg.event),
            });
        }
        let dropped = self.outbox.store(msg.room, msg.event, deliver_now);
        self.dropped(dropped, ctx);
        self.status
            .outbox
            .store(self.outbox.len(), Ordering::Relaxed);
        self.flush(ctx);
    }
}

impl Handler<ReadHistory> for RedisBridge {
    type Result = ();

    fn handle(&mut self, msg: ReadHistory, ctx: &mut Self::Context) {
        self.read_history(msg, ctx);
    }
}

impl Handler<ReadPage> for RedisBridge {
    type Result = ResponseFuture<Option<HistoryPage>>;

    fn handle(&mut self, msg: ReadPage, _: &mut Self::Context) -> Self::Result {
        let Some(link) = &self.link else {
            return Box::pin(std::future::ready(None));
        };
        let mut conn = link.publisher.clone();
        let scripts = self.scripts.clone();
        let channels = self.channels.clone();
        let ttl = self.history.ttl.as_secs();
        Box::pin(async move {
            let kind = ReadKind::Page {
                page: msg.page,
                limit: msg.limit,
            };
            let read = scripts.read(&mut conn, &channels, &msg.room, &kind, ttl);
            match tokio::time::timeout(REDIS_TIMEOUT, read).await {
                Ok(Ok(replay)) => Some(HistoryPage {
                    epoch: replay.epoch,
                    offset: replay.offset,
                    events: replay.events,
                }),
                Ok(Err(err)) => {
                    log::warn!("history page read failed room={}: {err}", msg.room);
                    None
                }
                Err(_) => None,
            }
        })
    }
}

impl Handler<Stop> for RedisBridge {
    type Result = ();

    /// Publishes what is still queued and removes the presence record, both
    /// bounded by one second, then stops.
    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        self.log_dropped();
        let Some(link) = &self.link else {
            log::info!("redis bridge stopped; outbox={} unsent", self.outbox.len());
            ctx.stop();
            return;
        };
        let publisher = link.publisher.clone();
        let flush = match self.outbox.batch(usize::MAX) {
            Some((_, batch)) if publisher.is_cluster() => {
                Some(self.send_to_cluster(publisher.clone(), &batch))
            }
            Some((_, batch)) => Some(self.send_pipeline(publisher.clone(), &batch)),
            None => None,
        };
        let mut pipe = redis::pipe();
        self.presence.remove(&mut pipe);
        let mut publisher = publisher;
        let last = async move {
            let both = async {
                if let Some(flush) = flush {
                    flush.await?;
                }
                pipe.exec_async(&mut publisher).await
            };
            tokio::time::timeout(EXIT_TIMEOUT, both).await
        };
        ctx.wait(last.into_actor(self).map(|result, act, ctx| {
            match result {
                Ok(Ok(())) => log::info!("redis bridge stopped; presence removed"),
                Ok(Err(err)) => log::warn!("redis bridge stopped; last publish failed: {err}"),
                Err(_) => log::warn!("redis bridge stopped; last publish timed out"),
            }
            act.link = None;
            ctx.stop();
        }));
    }
}
