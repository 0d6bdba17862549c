//! `GET /metrics`: the Prometheus text format, read with a parser, and the
//! counters moving as a scripted session expects.

use prometheus_parse::{Scrape, Value};

use crate::helpers::{spawn_app, TestApp};

/// `GET /metrics`, parsed.
async fn scrape(app: &TestApp) -> Scrape {
    let mut response = app.get("/metrics").await;
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let body = response.body().await.expect("a body");
    let text = String::from_utf8(body.to_vec()).expect("UTF-8");
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("the exposition format")
}

/// The value of `metric` with these labels (0 when absent).
fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            _ => panic!("{metric} is not a single number"),
        })
        .sum()
}

/// How many observations a histogram has.
fn observations(scrape: &Scrape, metric: &str) -> f64 {
    let sample = scrape
        .samples
        .iter()
        .find(|s| s.metric == metric)
        .unwrap_or_else(|| panic!("no {metric}"));
    match &sample.value {
        Value::Histogram(buckets) => buckets.iter().map(|b| b.count).fold(0.0, f64::max),
        other => panic!("{metric} is not a histogram: {other:?}"),
    }
}

#[actix_web::test]
async fn the_metrics_parse_and_count_a_scripted_session() {
    let app = spawn_app().await;
    let before = scrape(&app).await;
    for (metric, expected) in [
        ("chatd_connections_open", 0.0),
        ("chatd_connections_opened_total", 0.0),
        ("chatd_rooms", 0.0),
        ("chatd_draining", 0.0),
        ("chatd_drain_seconds_left", 0.0),
    ] {
        assert_eq!(value(&before, metric, &[]), expected, "{metric}");
    }
    assert!(
        !before
            .samples
            .iter()
            .any(|s| s.metric.starts_with("chatd_redis_")),
        "no Redis metrics without Redis"
    );

    // Two clients; one speaks, sends a bad frame, and leaves; the other
    // resumes the room.
    let (mut ana, welcome) = app.connect_ws("ana").await;
    let (mut bo, _) = app.connect_ws("bo").await;
    ana.say("hi").await;
    ana.next_event_of("echo").await;
    bo.next_event_of("echo").await;
    ana.send_text("not json").await;
    assert_eq!(ana.next_event_of("error").await["code"], "bad_frame");
    let epoch = welcome["rooms"][0]["epoch"].as_str().unwrap().to_string();
    let resume = serde_json::json!({
        "type": "join", "room": "general", "since": {"offset": 0, "epoch": epoch},
    });
    bo.send_text(&resume.to_string()).await;
    assert_eq!(bo.next_event_of("joined").await["recovered"], true);
    ana.leave().await;
    app.wait_for_connections(1).await;

    let after = scrape(&app).await;
    assert_eq!(value(&after, "chatd_connections_opened_total", &[]), 2.0);
    assert_eq!(value(&after, "chatd_connections_open", &[]), 1.0);
    assert_eq!(
        value(
            &after,
            "chatd_connections_closed_total",
            &[("code", "1005")]
        ),
        1.0,
        "a close without a code"
    );
    assert_eq!(
        value(&after, "chatd_client_messages_accepted_total", &[]),
        2.0
    );
    assert_eq!(
        value(
            &after,
            "chatd_client_messages_refused_total",
            &[("code", "bad_frame")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &after,
            "chatd_history_recoveries_total",
            &[("recovered", "true")]
        ),
        1.0
    );
    assert_eq!(value(&after, "chatd_rooms", &[]), 1.0);
    // Welcome ×2, the echo to both, the error, the joined: at least 4
    // batches handed out, and every one written.
    assert!(value(&after, "chatd_deliveries_total", &[]) >= 2.0);
    assert!(value(&after, "chatd_socket_writes_total", &[]) >= 4.0);
    assert!(value(&after, "chatd_bytes_written_total", &[]) > 100.0);
    assert!(observations(&after, "chatd_hub_turn_seconds") >= 1.0);
    assert!(observations(&after, "chatd_hub_batch_bytes") >= 1.0);
    assert_eq!(
        value(
            &after,
            "chatd_connections_cut_total",
            &[("reason", "slow_consumer")]
        ),
        0.0
    );

    app.begin_shutdown();
    bo.next_event_of("shutdown_notice").await;
    let draining = scrape(&app).await;
    assert_eq!(value(&draining, "chatd_draining", &[]), 1.0);
    assert!(value(&draining, "chatd_drain_seconds_left", &[]) > 0.0);
}

#[actix_web::test]
async fn with_redis_the_link_and_the_publish_round_trips_are_reported() {
    let Some(redis) = crate::redis_helpers::RedisServer::start_or_skip("metrics_redis") else {
        return;
    };
    let (one, _two) = crate::redis::spawn_relay_pair(&redis).await;
    let (mut ana, _) = one.connect_ws("ana").await;

    ana.say("stored").await;
    ana.next_event_of("echo").await;

    let scraped = scrape(&one).await;
    assert_eq!(value(&scraped, "chatd_redis_connected", &[]), 1.0);
    assert_eq!(value(&scraped, "chatd_redis_outbox_events", &[]), 0.0);
    assert_eq!(
        value(&scraped, "chatd_redis_events_dropped_total", &[]),
        0.0
    );
    assert!(observations(&scraped, "chatd_redis_publish_round_trip_seconds") >= 1.0);
}
