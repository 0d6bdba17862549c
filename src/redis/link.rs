//! How chatd reaches Redis: one server (`REDIS_URL`) or a Redis Cluster
//! (`REDIS_CLUSTER_NODES`), behind one small surface so that the bridge,
//! the history scripts, presence and the idempotency keys do not care
//! which.
//!
//! - [`Conn`] runs commands. With one server it is a multiplexed connection;
//!   in a cluster it is the `redis` crate's cluster connection, which routes
//!   each command to the master of its key's slot and follows MOVED and ASK
//!   after a failover or a resharding.
//! - [`Subscriber`] follows channels. With one server it is a dedicated
//!   pub/sub connection (RESP2, SUBSCRIBE/PSUBSCRIBE). In a cluster it is
//!   the same cluster connection on RESP3: a room channel is a *sharded*
//!   channel (SSUBSCRIBE), followed on the master that owns its slot, and
//!   the crate resubscribes it on the new owner when the topology changes;
//!   the everyone channel and the per-user pattern stay plain pub/sub, which
//!   a cluster broadcasts to every node, so following them on any one node
//!   is enough.
//!
//! What was given up: a cluster pipeline must stay within one slot, so in a
//! cluster the bridge sends each room's APPEND as a command of its own (the
//! cluster connection still pipelines them per node), where one server gets
//! one pipeline per batch.

use std::time::Duration;

use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use redis::aio::{ConnectionLike, MultiplexedConnection, PubSubSink};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

use crate::config::RedisTarget;

/// Where to connect; cheap to clone.
#[derive(Clone)]
pub enum Target {
    Server(redis::Client),
    Cluster(Vec<String>),
}

/// A link's two halves and the messages of its subscriptions.
pub struct Opened {
    pub conn: Conn,
    pub subscriber: Subscriber,
    pub messages: BoxStream<'static, Incoming>,
    /// In a cluster, the client: another connection from it shares
    /// `messages` (see [`reopen`]).
    pub cluster: Option<ClusterClient>,
}

impl Target {
    /// # Errors
    /// A URL does not parse (the start-up check has already read them).
    pub fn new(target: &RedisTarget) -> RedisResult<Self> {
        Ok(match target {
            RedisTarget::Server(url) => Target::Server(redis::Client::open(url.as_str())?),
            RedisTarget::Cluster(nodes) => {
                // Builds (and so checks) the client once; each link builds its own.
                ClusterClientBuilder::new(nodes.clone()).build()?;
                Target::Cluster(nodes.clone())
            }
        })
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Target::Cluster(_))
    }

    /// A connection for commands only, each bounded by `timeout`.
    ///
    /// # Errors
    /// Redis could not be reached.
    pub async fn connect(&self, timeout: Duration) -> RedisResult<Conn> {
        match self {
            Target::Server(client) => {
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout));
                let conn = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                Ok(Conn::Server(conn))
            }
            Target::Cluster(nodes) => {
                let client = cluster_builder(nodes, timeout).build()?;
                Ok(Conn::Cluster(client.get_async_connection().await?))
            }
        }
    }

    /// A connection for commands and one that follows channels, whose
    /// messages come out of `messages`.
    ///
    /// # Errors
    /// Redis could not be reached.
    pub async fn open(&self, timeout: Duration) -> RedisResult<Opened> {
        match self {
            Target::Server(client) => {
                let Conn::Server(conn) = self.connect(timeout).await? else {
                    unreachable!("a server target gives a server connection");
                };
                let (sink, stream) = client.get_async_pubsub().await?.split();
                Ok(Opened {
                    conn: Conn::Server(conn),
                    subscriber: Subscriber::Server(sink),
                    messages: stream.map(Incoming::Message).boxed(),
                    cluster: None,
                })
            }
            Target::Cluster(nodes) => {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                let client = cluster_builder(nodes, timeout)
                    .use_protocol(redis::ProtocolVersion::RESP3)
                    .push_sender(tx)
                    .build()?;
                let conn = client.get_async_connection().await?;
                let messages = tokio_stream_of(rx)
                    .filter_map(|push| std::future::ready(Incoming::from_push(push)))
                    .boxed();
                Ok(Opened {
                    conn: Conn::Cluster(conn.clone()),
                    subscriber: Subscriber::Cluster(conn),
                    messages,
                    cluster: Some(client),
                })
            }
        }
    }
}

/// A fresh connection from a link's cluster `client`: it learns the
/// topology anew from the cluster, and its subscriptions' messages come out
/// of the link's stream.
///
/// # Errors
/// No node could be reached.
pub async fn reopen(client: &ClusterClient) -> RedisResult<(Conn, Subscriber)> {
    let conn = client.get_async_connection().await?;
    Ok((Conn::Cluster(conn.clone()), Subscriber::Cluster(conn)))
}

/// What a link's subscriptions bring.
#[derive(Debug)]
pub enum Incoming {
    /// A message on a followed channel.
    Message(redis::Msg),
    /// A cluster node stopped serving a sharded channel: its slot moved
    /// (a failover, a resharding). The channel must be followed again, on
    /// the slot's new owner; the client does not do it by itself, as it
    /// takes the node's word that the channel is no longer followed.
    ShardChannelDropped(String),
}

impl Incoming {
    fn from_push(push: redis::PushInfo) -> Option<Self> {
        if push.kind == redis::PushKind::SUnsubscribe {
            let channel = push.data.first()?;
            return redis::from_redis_value_ref::<String>(channel)
                .ok()
                .map(Incoming::ShardChannelDropped);
        }
        redis::Msg::from_push_info(push).map(Incoming::Message)
    }
}

/// A cluster client with chatd's bounds: every command and connection
/// attempt within `timeout`, and few retries, so a shard that is gone
/// shows up as an error the bridge handles rather than a long stall.
fn cluster_builder(nodes: &[String], timeout: Duration) -> ClusterClientBuilder {
    ClusterClientBuilder::new(nodes.to_vec())
        .connection_timeout(timeout)
        .response_timeout(timeout)
        .retries(3)
        .min_retry_wait(50)
        .max_retry_wait(500)
}

fn tokio_stream_of<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<T>,
) -> BoxStream<'static, T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

/// Runs commands on one server or a cluster.
#[derive(Clone)]
pub enum Conn {
    Server(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Conn {
    pub fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Server(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Server(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Server(conn) => conn.get_db(),
            Conn::Cluster(conn) => conn.get_db(),
        }
    }
}

/// Follows the chat's channels.
#[derive(Clone)]
pub enum Subscriber {
    Server(PubSubSink),
    Cluster(ClusterConnection),
}

impl Subscriber {
    /// Follows plain channels (the everyone channel).
    ///
    /// # Errors
    /// Redis failed.
    pub async fn subscribe(&mut self, channels: &[String]) -> RedisResult<()> {
        match self {
            Subscriber::Server(sink) => sink.subscribe(channels).await,
            Subscriber::Cluster(conn) => {
                for channel in channels {
                    conn.subscribe(channel).await?;
                }
                Ok(())
            }
        }
    }

    /// Follows a channel pattern (the per-user notices).
    ///
    /// # Errors
    /// Redis failed.
    pub async fn psubscribe(&mut self, pattern: &str) -> RedisResult<()> {
        match self {
            Subscriber::Server(sink) => sink.psubscribe(pattern).await,
            Subscriber::Cluster(conn) => conn.psubscribe(pattern).await,
        }
    }

    /// Follows room channels: plain channels on one server, sharded ones
    /// in a cluster, one command per channel there, since a command's
    /// channels must share a slot.
    ///
    /// # Errors
    /// Redis failed.
    pub async fn follow_rooms(&mut self, channels: &[String]) -> RedisResult<()> {
        match self {
            Subscriber::Server(sink) => sink.subscribe(channels).await,
            Subscriber::Cluster(conn) => {
                let each = channels.iter().map(|channel| {
                    let mut conn = conn.clone();
                    async move { conn.ssubscribe(channel).await }
                });
                futures_util::future::try_join_all(each).await.map(drop)
            }
        }
    }

    /// Stops following room channels.
    ///
    /// # Errors
    /// Redis failed.
    pub async fn unfollow_rooms(&mut self, channels: &[String]) -> RedisResult<()> {
        match self {
            Subscriber::Server(sink) => sink.unsubscribe(channels).await,
            Subscriber::Cluster(conn) => {
                let each = channels.iter().map(|channel| {
                    let mut conn = conn.clone();
                    async move { conn.sunsubscribe(channel).await }
                });
                futures_util::future::try_join_all(each).await.map(drop)
            }
        }
    }

    /// Checks that the subscription still answers within `timeout`: with
    /// one server, that server; in a cluster, any node this link reaches
    /// (a master that is gone is the topology's business, see [`topology`]).
    ///
    /// # Errors
    /// Redis failed or did not answer in time.
    pub async fn ping(&mut self, timeout: Duration) -> RedisResult<()> {
        let ping = async {
            match self {
                Subscriber::Server(sink) => sink.ping::<Value>().await.map(drop),
                Subscriber::Cluster(conn) => {
                    let any = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
                    conn.route_command(redis::cmd("PING"), any).await.map(drop)
                }
            }
        };
        tokio::time::timeout(timeout, ping)
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
    }
}

/// Which master serves which slots, as one comparable string
/// (`0-5460@127.0.0.1:7000 ...`), from `CLUSTER SLOTS` on any node: when it
/// changes (a replica took over, slots moved) the link follows its rooms
/// on the new masters.
///
/// # Errors
/// No node answered, or the answer is not `CLUSTER SLOTS`'s shape.
pub async fn topology(conn: &mut Conn) -> RedisResult<String> {
    let Conn::Cluster(conn) = conn else {
        return Ok(String::new());
    };
    let any = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
    let slots = conn
        .route_command(redis::cmd("CLUSTER").arg("SLOTS").clone(), any)
        .await?;
    let bad = || redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, "CLUSTER SLOTS"));
    let Value::Array(ranges) = slots else {
        return Err(bad());
    };
    let mut masters: Vec<String> = Vec::with_capacity(ranges.len());
    for range in &ranges {
        let Value::Array(items) = range else {
            return Err(bad());
        };
        let (Some(from), Some(to), Some(Value::Array(master))) =
            (items.first(), items.get(1), items.get(2))
        else {
            return Err(bad());
        };
        let (Some(host), Some(port)) = (master.first(), master.get(1)) else {
            return Err(bad());
        };
        masters.push(format!(
            "{}-{}@{}:{}",
            redis::from_redis_value_ref::<u16>(from)?,
            redis::from_redis_value_ref::<u16>(to)?,
            redis::from_redis_value_ref::<String>(host)?,
            redis::from_redis_value_ref::<u16>(port)?
        ));
    }
    masters.sort_unstable();
    Ok(masters.join(" "))
}
