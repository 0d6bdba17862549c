//! The Redis Cluster half of the [`RedisBridge`]: what it does only when
//! `REDIS_CLUSTER_NODES` is set.
//!
//! - The outbox goes out room by room ([`RedisBridge::flush_cluster`]): a
//!   cluster pipeline cannot span slots, and a shard that is slow or away
//!   must hold back only its own rooms. A room whose command fails goes
//!   local (its members get its events unstored) and is tried again after
//!   [`CLUSTER_RETRY`].
//! - The repeat filter keys on the channel too ([`RedisBridge::seen_scope`]):
//!   channels of different shards overtake each other.
//! - The link follows the topology: a node that stops serving a room's
//!   sharded channel says so, and the channel is followed again
//!   ([`RedisBridge::follow_again`]); every [`TOPOLOGY_POLL`] the slot map is
//!   compared, and a change rebuilds the link make-before-break
//!   ([`RedisBridge::rebuild`]), which is how a killed master's rooms reach
//!   its promoted replica.

use std::sync::atomic::Ordering;

use actix::prelude::*;

#[cfg(doc)]
use super::TOPOLOGY_POLL;
use super::{BatchSend, RedisBridge, BATCH, CLUSTER_RETRY, REDIS_TIMEOUT};
use crate::actors::chat_hub::Stored;
use crate::protocol::RoomName;
use crate::redis::history as streams;
use crate::redis::link::{self, Conn};
use crate::redis::relay::Queued;

impl RedisBridge {
    /// A cluster node stopped serving `channel` (its slot moved to another
    /// master): follows it again, which reaches the new owner. What the room
    /// published between the move and the new SSUBSCRIBE does not reach
    /// this process live (pub/sub keeps nothing); it is in the room's
    /// history for any client that resumes.
    pub(super) fn follow_again(&mut self, channel: &str, ctx: &mut Context<Self>) {
        let Some(crate::actors::chat_hub::Audience::Room(room)) = self.channels.audience(channel)
        else {
            return;
        };
        let Some(link) = self.link.as_mut() else {
            return;
        };
        if self.rooms.contains(&room)
            && !link.dropping.contains(&room)
            && link.following.remove(&room)
        {
            log::info!(
                "redis cluster moved the slot of room={room}; following it on its new master"
            );
            self.follow_rooms(ctx);
        }
    }

    /// A cluster: each room's events go to its own shard, one command per
    /// room in flight, so a shard that is slow or away holds back only its
    /// own rooms. A room whose command fails is held for [`CLUSTER_RETRY`]
    /// and then tried again; meanwhile its local members get its events
    /// unstored, as every room's while a single Redis is away. (Plain
    /// events, the notices to everyone and to a user, go the same way, per
    /// channel.)
    pub(super) fn flush_cluster(&mut self, ctx: &mut Context<Self>) {
        let Some(link) = self.link.as_ref().filter(|l| l.settling.is_none()) else {
            return;
        };
        let channels = &self.channels;
        let channel_of = |item: &Queued| match item {
            Queued::Store { room, .. } => channels.room(room),
            Queued::Publish { channel, .. } => channel.clone(),
        };
        let mut groups: Vec<(String, Vec<Queued>)> = Vec::new();
        for item in self
            .outbox
            .unsent(BATCH, |q| self.sending.contains(&channel_of(q)))
        {
            let channel = channel_of(item);
            match groups.iter_mut().find(|(c, _)| *c == channel) {
                Some((_, items)) => items.push(item.clone()),
                None => groups.push((channel, vec![item.clone()])),
            }
        }
        let conn = link.publisher.clone();
        let generation = self.generation;
        for (channel, items) in groups {
            self.sending.insert(channel.clone());
            let seqs: Vec<u64> = items.iter().map(Queued::seq).collect();
            let room = match &items[0] {
                Queued::Store { room, .. } => Some(room.clone()),
                Queued::Publish { .. } => None,
            };
            let send = self.send_group(conn.clone(), items);
            ctx.spawn(send.into_actor(self).map(move |result, act, ctx| {
                match result {
                    Ok(stored) => {
                        // Even from a replaced link: Redis has these events.
                        if let Some((call, numbered)) = stored {
                            act.note_stored(vec![call], vec![numbered]);
                        }
                        act.outbox.remove(&seqs);
                        act.status.outbox.store(act.outbox.len(), Ordering::Relaxed);
                        if generation == act.generation {
                            act.sending.remove(&channel);
                            if let Some(room) = room.filter(|r| act.down_rooms.remove(r)) {
                                log::debug!("redis cluster shard back room={room}");
                                if act.down_rooms.is_empty() {
                                    log::info!("redis cluster: every room's shard answers again");
                                }
                            }
                        }
                        act.flush(ctx);
                    }
                    Err(_) if generation != act.generation => {}
                    Err(err) => act.shard_failed(channel, room, &err, ctx),
                }
            }));
        }
    }

    /// A cluster command for `channel` failed: its room's local members get
    /// its events now, unstored, and the channel is tried again after
    /// [`CLUSTER_RETRY`].
    pub(super) fn shard_failed(
        &mut self,
        channel: String,
        room: Option<RoomName>,
        err: &redis::RedisError,
        ctx: &mut Context<Self>,
    ) {
        if let Some(room) = room {
            for event in self.outbox.deliver_room(&room) {
                self.hub.do_send(Stored {
                    room: room.clone(),
                    offset: None,
                    event: streams::unnumbered(&event),
                });
            }
            // One line when rooms start going local, not one per room: a
            // shard holds many.
            if self.down_rooms.insert(room.clone()) && self.down_rooms.len() == 1 {
                log::warn!(
                    "redis cluster shard unreachable room={room} error={err:?}; \
                     rooms on it stay local until it answers"
                );
            } else {
                log::debug!("redis cluster shard unreachable room={room} error={err:?}");
            }
        } else {
            log::debug!("redis cluster publish failed channel={channel} error={err:?}");
        }
        let generation = self.generation;
        ctx.run_later(CLUSTER_RETRY, move |act, ctx| {
            if generation == act.generation {
                act.sending.remove(&channel);
                act.flush(ctx);
            }
        });
    }

    /// Sends one channel's events to a cluster: a room's as one APPEND,
    /// plain ones as PUBLISH after PUBLISH, in order.
    pub(super) fn send_group(
        &self,
        mut conn: Conn,
        items: Vec<Queued>,
    ) -> impl std::future::Future<
        Output = redis::RedisResult<Option<(streams::AppendCall, (String, u64))>>,
    > + 'static {
        let scripts = self.scripts.clone();
        let channels = self.channels.clone();
        let history = self.history.clone();
        let server = self.server.clone();
        let round_trip = self.round_trip.clone();
        async move {
            let _timer = round_trip.as_ref().map(prometheus::Histogram::start_timer);
            let Some(Queued::Store { room, .. }) = items.first() else {
                for item in &items {
                    if let Queued::Publish {
                        channel, envelope, ..
                    } = item
                    {
                        redis::cmd("PUBLISH")
                            .arg(channel)
                            .arg(envelope)
                            .exec_async(&mut conn)
                            .await?;
                    }
                }
                return Ok(None);
            };
            let call = streams::AppendCall {
                room: room.clone(),
                events: items
                    .iter()
                    .filter_map(|item| match item {
                        Queued::Store { seq, event, .. } => Some((*seq, event.clone())),
                        Queued::Publish { .. } => None,
                    })
                    .collect(),
            };
            let numbered = scripts
                .append_to_cluster(&conn, &call, &channels, &history, &server)
                .await?;
            Ok(Some((call, numbered)))
        }
    }

    /// In a cluster, every [`TOPOLOGY_POLL`]: asks any node which master
    /// serves which slots, and rebuilds the link when that changed.
    pub(super) fn watch_topology(&mut self, ctx: &mut Context<Self>) {
        let Some(link) = self
            .link
            .as_ref()
            .filter(|l| l.cluster.is_some() && !l.rebuilding)
        else {
            return;
        };
        let mut conn = link.publisher.clone();
        let generation = self.generation;
        let fetch =
            async move { tokio::time::timeout(REDIS_TIMEOUT, link::topology(&mut conn)).await };
        ctx.spawn(fetch.into_actor(self).map(move |result, act, ctx| {
            let Ok(Ok(topology)) = result else {
                return;
            };
            let Some(link) = act.link.as_mut().filter(|_| generation == act.generation) else {
                return;
            };
            match &link.topology {
                None => link.topology = Some(topology),
                Some(known) if *known == topology => {}
                Some(_) => {
                    log::info!(
                        "redis cluster topology changed; following the rooms on their masters"
                    );
                    act.rebuild(generation, topology, ctx);
                }
            }
        }));
    }

    /// A cluster link whose topology changed (a master was lost and its
    /// replica took over, or slots moved): a fresh connection from the same
    /// client learns the topology anew, follows every channel again (the
    /// moved rooms on their new masters) and then takes the old one's
    /// place. Both deliver meanwhile; the repeat filter drops the doubles.
    /// If the fresh connection cannot follow every room yet, the next poll
    /// tries again.
    pub(super) fn rebuild(&mut self, generation: u64, topology: String, ctx: &mut Context<Self>) {
        if generation != self.generation {
            return;
        }
        let Some(link) = self.link.as_mut().filter(|l| !l.rebuilding && !l.changing) else {
            return;
        };
        let Some(client) = link.cluster.clone() else {
            return;
        };
        link.rebuilding = true;
        link.changing = true;
        let rooms: Vec<RoomName> = link.following.iter().cloned().collect();
        let room_channels: Vec<String> = rooms.iter().map(|r| self.channels.room(r)).collect();
        let everyone = vec![self.channels.everyone().to_string()];
        let users = self.channels.users_pattern();
        let reopen = async move {
            let (conn, mut subscriber) = link::reopen(&client).await?;
            subscriber.subscribe(&everyone).await?;
            if !room_channels.is_empty() {
                subscriber.follow_rooms(&room_channels).await?;
            }
            subscriber.psubscribe(&users).await?;
            Ok::<_, redis::RedisError>((conn, subscriber))
        };
        let reopen = tokio::time::timeout(REDIS_TIMEOUT, reopen);
        ctx.spawn(reopen.into_actor(self).map(move |result, act, ctx| {
            if generation != act.generation {
                return;
            }
            let Some(link) = act.link.as_mut() else {
                return;
            };
            link.rebuilding = false;
            link.changing = false;
            match result {
                Ok(Ok((conn, subscriber))) => {
                    log::info!(
                        "redis cluster link rebuilt; following rooms={} on the current masters",
                        rooms.len()
                    );
                    link.topology = Some(topology);
                    link.publisher = conn;
                    link.subscriber = subscriber;
                    link.following = rooms.into_iter().collect();
                    link.dropping.clear();
                }
                Ok(Err(err)) => {
                    log::info!("redis cluster link not rebuilt yet: {err}; trying again")
                }
                Err(_) => log::info!("redis cluster link not rebuilt yet: timed out; trying again"),
            }
            act.follow_rooms(ctx);
        }));
    }

    /// A cluster: a command per room (see [`Scripts::send_to_cluster`]).
    pub(super) fn send_to_cluster(&self, publisher: Conn, batch: &[&Queued]) -> BatchSend {
        // The batch borrows the outbox; the commands are built from a copy.
        let batch: Vec<Queued> = batch.iter().map(|item| (*item).clone()).collect();
        let scripts = self.scripts.clone();
        let channels = self.channels.clone();
        let history = self.history.clone();
        let server = self.server.clone();
        Box::pin(async move {
            let batch: Vec<&Queued> = batch.iter().collect();
            scripts
                .send_to_cluster(&publisher, &batch, &channels, &history, &server)
                .await
        })
    }

    /// What the repeat filter keys on besides the origin: nothing with one
    /// server, the channel in a cluster (see [`Seen`]).
    pub(super) fn seen_scope<'a>(&self, channel: &'a str) -> &'a str {
        if self.target.is_cluster() {
            channel
        } else {
            ""
        }
    }
}
