//! `GET /metrics`: the process's counters, gauges and histograms in the
//! Prometheus text format.
//!
//! Why it looks the way it does:
//! - One [`Metrics`] per `Application`, handed to the hub, the sessions, the
//!   transport and the bridge at start-up (no global registry), so two apps
//!   in one test binary count apart.
//! - Counting must cost nothing per delivery. Nothing is counted per client
//!   per event: the hub adds the deliveries of a whole turn once, when it
//!   flushes; the transport adds bytes once per socket write (one vectored
//!   write carries everything a session queued in a turn); sessions count
//!   what their own client did (a message accepted or refused, a cut, a
//!   close). Each is one relaxed atomic add.
//! - What another part already knows is read when scraped, not kept twice:
//!   open connections from the connection limiter, rooms from the hub, the
//!   Redis link, outbox and drops from the bridge's status, the drain from
//!   the lifecycle.
//!
//! `prometheus` (the TiKV crate) is used without its protobuf feature: it
//! is the long-kept reference client for Rust, its handles are plain atomics
//! behind an `Arc`, and it needs no global recorder or HTTP server of its own.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Every metric of one process.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// WebSocket connections accepted.
    pub connections_opened: IntCounter,
    /// Connections ended, by the close code sent or received (`none` when
    /// the socket just went away).
    pub connections_closed: IntCounterVec,
    /// Client messages acted on (chat, join, leave, typing, refresh).
    pub messages_accepted: IntCounter,
    /// Client messages refused, by `error` code.
    pub messages_refused: IntCounterVec,
    /// Batches handed to sessions (one per session per hub turn).
    pub deliveries: IntCounter,
    /// Socket writes, and the bytes they wrote.
    pub writes: IntCounter,
    pub bytes_written: IntCounter,
    /// Connections the server cut, by why: `slow_consumer` or `rate_limit`.
    pub cuts: IntCounterVec,
    /// How long a hub flush (one turn's fan-out) took.
    pub hub_turn_seconds: Histogram,
    /// Bytes of events in one hub turn's batch.
    pub hub_batch_bytes: Histogram,
    /// One pipelined store-and-publish round trip to Redis.
    pub publish_round_trip_seconds: Histogram,
    /// Joins that asked to resume, by whether they were recovered.
    pub history_recoveries: IntCounterVec,
    // Read when scraped:
    connections_open: IntGauge,
    rooms: IntGauge,
    redis_connected: IntGauge,
    redis_outbox: IntGauge,
    redis_dropped: IntCounter,
    draining: IntGauge,
    drain_seconds_left: IntGauge,
}

/// What is read from other parts when `/metrics` is scraped.
#[derive(Debug, Default, Clone, Copy)]
pub struct Snapshot {
    pub connections_open: usize,
    pub rooms: usize,
    /// `None` without Redis.
    pub redis: Option<RedisSnapshot>,
    /// Seconds until the drain deadline, while draining.
    pub drain_seconds_left: Option<u64>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct RedisSnapshot {
    pub connected: bool,
    pub outbox: usize,
    pub dropped: u64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let counter = IntCounter::new(name, help).expect("a valid metric name");
    registry
        .register(Box::new(counter.clone()))
        .expect("registered once");
    counter
}

fn counters(registry: &Registry, name: &str, help: &str, label: &str) -> IntCounterVec {
    let counter = IntCounterVec::new(Opts::new(name, help), &[label]).expect("a valid metric");
    registry
        .register(Box::new(counter.clone()))
        .expect("registered once");
    counter
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let gauge = IntGauge::new(name, help).expect("a valid metric name");
    registry
        .register(Box::new(gauge.clone()))
        .expect("registered once");
    gauge
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let histogram =
        Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).expect("valid");
    registry
        .register(Box::new(histogram.clone()))
        .expect("registered once");
    histogram
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        let seconds = prometheus::exponential_buckets(0.000_05, 4.0, 10).expect("valid buckets");
        let metrics = Self {
            connections_opened: counter(
                &r,
                "chatd_connections_opened_total",
                "WebSocket connections accepted",
            ),
            connections_closed: counters(
                &r,
                "chatd_connections_closed_total",
                "WebSocket connections ended, by close code (none: the socket went away)",
                "code",
            ),
            messages_accepted: counter(
                &r,
                "chatd_client_messages_accepted_total",
                "Client messages acted on",
            ),
            messages_refused: counters(
                &r,
                "chatd_client_messages_refused_total",
                "Client messages refused, by error code",
                "code",
            ),
            deliveries: counter(
                &r,
                "chatd_deliveries_total",
                "Batches of events handed to sessions (one per session per hub turn)",
            ),
            writes: counter(&r, "chatd_socket_writes_total", "WebSocket socket writes"),
            bytes_written: counter(
                &r,
                "chatd_bytes_written_total",
                "Bytes written to WebSocket sockets",
            ),
            cuts: counters(
                &r,
                "chatd_connections_cut_total",
                "Connections closed by the server for a client's behaviour",
                "reason",
            ),
            hub_turn_seconds: histogram(
                &r,
                "chatd_hub_turn_seconds",
                "How long one hub turn's fan-out took",
                seconds.clone(),
            ),
            hub_batch_bytes: histogram(
                &r,
                "chatd_hub_batch_bytes",
                "Bytes of events in one hub turn's batch",
                prometheus::exponential_buckets(64.0, 4.0, 10).expect("valid buckets"),
            ),
            publish_round_trip_seconds: histogram(
                &r,
                "chatd_redis_publish_round_trip_seconds",
                "One pipelined store-and-publish round trip to Redis",
                seconds,
            ),
            history_recoveries: counters(
                &r,
                "chatd_history_recoveries_total",
                "Joins that asked to resume, by whether every missed event was given",
                "recovered",
            ),
            connections_open: gauge(&r, "chatd_connections_open", "WebSocket connections open"),
            rooms: gauge(&r, "chatd_rooms", "Rooms with members on this process"),
            redis_connected: gauge(
                &r,
                "chatd_redis_connected",
                "1 while the Redis link is up, 0 while it is away (absent without Redis)",
            ),
            redis_outbox: gauge(
                &r,
                "chatd_redis_outbox_events",
                "Events waiting for Redis in the outbox",
            ),
            redis_dropped: counter(
                &r,
                "chatd_redis_events_dropped_total",
                "Events dropped from a full outbox",
            ),
            draining: gauge(&r, "chatd_draining", "1 while the process drains, else 0"),
            drain_seconds_left: gauge(
                &r,
                "chatd_drain_seconds_left",
                "Seconds until the drain deadline (0 when not draining)",
            ),
            registry: r,
        };
        // Present from the start, so a dashboard shows 0 rather than nothing.
        for recovered in ["true", "false"] {
            metrics.history_recoveries.with_label_values(&[recovered]);
        }
        for reason in ["slow_consumer", "rate_limit"] {
            metrics.cuts.with_label_values(&[reason]);
        }
        metrics
    }

    /// A connection ended with `code` (`None`: no close frame either way).
    pub fn connection_closed(&self, code: Option<u16>) {
        let code = code.map_or_else(|| "none".to_string(), |c| c.to_string());
        self.connections_closed.with_label_values(&[&code]).inc();
    }

    /// The text exposition, with the scraped values of `snapshot`.
    pub fn render(&self, snapshot: Snapshot) -> String {
        self.connections_open
            .set(i64::try_from(snapshot.connections_open).unwrap_or(i64::MAX));
        self.rooms
            .set(i64::try_from(snapshot.rooms).unwrap_or(i64::MAX));
        if let Some(redis) = snapshot.redis {
            self.redis_connected.set(i64::from(redis.connected));
            self.redis_outbox
                .set(i64::try_from(redis.outbox).unwrap_or(i64::MAX));
            let seen = self.redis_dropped.get();
            self.redis_dropped
                .inc_by(redis.dropped.saturating_sub(seen));
        }
        self.draining
            .set(i64::from(snapshot.drain_seconds_left.is_some()));
        self.drain_seconds_left.set(
            snapshot
                .drain_seconds_left
                .map_or(0, |s| i64::try_from(s).unwrap_or(i64::MAX)),
        );
        let mut families = self.registry.gather();
        if snapshot.redis.is_none() {
            families.retain(|f| !f.get_name().starts_with("chatd_redis_"));
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&families, &mut out)
            .expect("the text encoder writes to memory");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_names_every_metric_and_leaves_redis_out_without_it() {
        let metrics = Metrics::new();
        metrics.connections_opened.inc();
        metrics.connection_closed(Some(1001));
        let text = metrics.render(Snapshot {
            connections_open: 3,
            ..Snapshot::default()
        });
        assert!(text.contains("chatd_connections_open 3"), "{text}");
        assert!(text.contains("chatd_connections_closed_total{code=\"1001\"} 1"));
        assert!(!text.contains("chatd_redis_"), "{text}");
        let text = metrics.render(Snapshot {
            redis: Some(RedisSnapshot {
                connected: true,
                outbox: 2,
                dropped: 5,
            }),
            ..Snapshot::default()
        });
        assert!(text.contains("chatd_redis_connected 1"), "{text}");
        assert!(
            text.contains("chatd_redis_events_dropped_total 5"),
            "{text}"
        );
    }

    #[test]
    fn every_metric_the_grafana_dashboard_queries_exists() {
        let dashboard = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docker/grafana-dashboard.json"
        ))
        .expect("docker/grafana-dashboard.json is readable");
        let _: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
        let metrics = Metrics::new();
        // Labelled families appear once they have a label.
        metrics.connection_closed(Some(1000));
        metrics
            .messages_refused
            .with_label_values(&["bad_frame"])
            .inc();
        let text = metrics.render(Snapshot {
            redis: Some(RedisSnapshot::default()),
            ..Snapshot::default()
        });
        let mut rest = dashboard.as_str();
        while let Some(at) = rest.find("chatd_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            let base = name.trim_end_matches("_bucket");
            assert!(
                text.contains(&format!("# TYPE {base} ")),
                "the dashboard queries {name}, which /metrics does not have"
            );
            rest = &rest[at + name.len()..];
        }
    }
}
