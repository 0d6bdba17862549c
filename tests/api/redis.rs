//! Several chatd processes relaying through a real `redis-server`.
//!
//! Each test starts its own Redis on a free loopback port and two chatd
//! instances against it: in-process apps for most, real processes where a
//! signal is involved.

use std::time::{Duration, Instant};

use chatd::config::{RedisSettings, RedisTarget};
use libc::SIGTERM;
use serde_json::Value;

use crate::helpers::{get_json, spawn_app_with, TestApp, WsClient, WAIT};
use crate::redis_helpers::{installed_or_skip, RedisServer};
use crate::server_process::ServerProcess;

/// How long duplicates are watched for after the expected events arrived.
const SETTLE: Duration = Duration::from_secs(1);

pub async fn spawn_relay_app(redis_url: &str) -> TestApp {
    spawn_relay_app_with_outbox(redis_url, 10_000).await
}

pub async fn spawn_relay_app_with_outbox(redis_url: &str, outbox_capacity: usize) -> TestApp {
    let settings = RedisSettings {
        target: RedisTarget::Server(redis_url.to_string()),
        channel: "chatd:events".into(),
        outbox_capacity,
    };
    spawn_app_with(move |config| config.redis = Some(settings)).await
}

/// Two apps relaying through `redis`, both connected to it.
pub async fn spawn_relay_pair(redis: &RedisServer) -> (TestApp, TestApp) {
    let (one, two) = (
        spawn_relay_app(&redis.url()).await,
        spawn_relay_app(&redis.url()).await,
    );
    for app in [&one, &two] {
        wait_for_redis(&app.url("/status"), "connected", |r| {
            r["state"] == "connected"
        })
        .await;
    }
    (one, two)
}

/// Polls `/status` at `status_url` until `check` holds for its `redis` object.
pub async fn wait_for_redis(
    status_url: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Duration {
    let http = awc::Client::default();
    let started = Instant::now();
    loop {
        let (_, status) = get_json(&http, status_url).await;
        if check(&status["redis"]) {
            return started.elapsed();
        }
        assert!(started.elapsed() < WAIT, "redis never {what}: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the process at `status_url` counts `clients` on its peers.
pub async fn wait_for_peer_clients(status_url: &str, clients: u64) {
    let what = format!("counted {clients} clients on its peers");
    wait_for_redis(status_url, &what, |r| r["peer_clients"] == clients).await;
}

/// Waits until `app` has noticed that Redis is gone and is reconnecting.
async fn wait_for_outage(app: &TestApp) {
    wait_for_redis(&app.url("/status"), "noticed the outage", |r| {
        r["state"] == "connecting"
    })
    .await;
}

/// Every event `client` receives during `period`.
pub async fn events_for(client: &mut WsClient, period: Duration) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + period;
    let mut events = Vec::new();
    while let Ok(event) = tokio::time::timeout_at(deadline, client.next_event()).await {
        events.push(event);
    }
    events
}

/// Waits until `client` has received an event with `message`, then watches
/// for [`SETTLE`] more; answers how many copies arrived in all.
pub async fn copies_of(client: &mut WsClient, message: &str) -> usize {
    let deadline = Instant::now() + WAIT;
    let mut copies = 0;
    while copies == 0 {
        assert!(Instant::now() < deadline, "{message:?} never arrived");
        copies += usize::from(client.next_event().await["message"] == message);
    }
    let more = events_for(client, SETTLE).await;
    copies + more.iter().filter(|e| e["message"] == message).count()
}

/// Reads events until one carries `message`; fails after [`WAIT`].
pub async fn wait_for_message(client: &mut WsClient, message: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let event = client.next_event().await;
        if event["message"] == message {
            return event;
        }
        assert!(Instant::now() < deadline, "{message:?} never arrived");
    }
}

#[actix_web::test]
async fn a_message_from_either_process_reaches_every_client_exactly_once() {
    let Some(redis) = RedisServer::start_or_skip("exactly_once") else {
        return;
    };
    let (one, two) = spawn_relay_pair(&redis).await;
    let (mut ana, _) = one.connect_ws("ana").await;
    let (mut al, _) = one.connect_ws("al").await;
    let (mut bo, _) = two.connect_ws("bo").await;
    let (mut bea, _) = two.connect_ws("bea").await;

    ana.say("from process one").await;
    bo.say("from process two").await;

    for (name, client) in [
        ("ana", &mut ana),
        ("al", &mut al),
        ("bo", &mut bo),
        ("bea", &mut bea),
    ] {
        let events = events_for(client, SETTLE * 2).await;
        for message in ["from process one", "from process two"] {
            let copies = events.iter().filter(|e| e["message"] == message).count();
            assert_eq!(
                copies, 1,
                "{name} got {message:?} {copies} times: {events:?}"
            );
        }
        assert!(events.iter().all(|e| e["type"] == "echo"), "{events:?}");
    }
}

#[actix_web::test]
async fn notify_on_one_process_reaches_the_other_and_counts_every_client() {
    let Some(redis) = RedisServer::start_or_skip("notify_counts_both") else {
        return;
    };
    let (one, two) = spawn_relay_pair(&redis).await;
    let (mut ana, _) = one.connect_ws("ana").await;
    let (mut bo, _) = two.connect_ws("bo").await;
    let (mut bea, _) = two.connect_ws("bea").await;
    wait_for_peer_clients(&one.url("/status"), 2).await;

    let (status, body) = one.post_notify("maintenance at noon").await;

    assert_eq!(status, 200);
    assert_eq!(body["message"], "Notification sent to 3 clients");
    for client in [&mut ana, &mut bo, &mut bea] {
        assert_eq!(copies_of(client, "maintenance at noon").await, 1);
    }
    let (_, welcome) = one.connect_ws("cy").await;
    assert_eq!(welcome["online"], 4, "{welcome}");
}

#[actix_web::test]
async fn when_redis_dies_both_processes_stay_up_and_local_chat_goes_on() {
    let Some(mut redis) = RedisServer::start_or_skip("redis_dies") else {
        return;
    };
    let (one, two) = spawn_relay_pair(&redis).await;
    let (mut ana, _) = one.connect_ws("ana").await;
    let (mut al, _) = one.connect_ws("al").await;
    let (mut bo, _) = two.connect_ws("bo").await;

    redis.kill();
    for app in [&one, &two] {
        wait_for_outage(app).await;
    }
    ana.say("still here").await;

    assert_eq!(
        wait_for_message(&mut ana, "still here").await["type"],
        "echo"
    );
    assert_eq!(
        wait_for_message(&mut al, "still here").await["type"],
        "echo"
    );
    let (_, status) = one.get_json("/status").await;
    assert_eq!(status["redis"]["outbox"], 1, "{status}");
    let (code, body) = two.post_notify("local only").await;
    assert_eq!(
        (code, &body["message"]),
        (200, &"Notification sent to 1 clients".into())
    );
    assert_eq!(
        wait_for_message(&mut bo, "local only").await["type"],
        "notification"
    );
    let (_, welcome) = two.connect_ws("late").await;
    assert_eq!(welcome["online"], 2, "{welcome}");
    assert_eq!(one.get_json("/healthz").await.0, 200);
}

#[actix_web::test]
async fn when_redis_returns_relay_resumes_and_the_outage_backlog_arrives_once() {
    let Some(mut redis) = RedisServer::start_or_skip("redis_returns") else {
        return;
    };
    let (one, two) = spawn_relay_pair(&redis).await;
    let (mut ana, _) = one.connect_ws("ana").await;
    let (mut bo, _) = two.connect_ws("bo").await;
    for app in [&one, &two] {
        wait_for_peer_clients(&app.url("/status"), 1).await;
    }
    redis.kill();
    for app in [&one, &two] {
        wait_for_outage(app).await;
    }
    ana.say("said during the outage").await;
    bo.say("also said during the outage").await;
    wait_for_message(&mut ana, "said during the outage").await;
    wait_for_message(&mut bo, "also said during the outage").await;
    // A longer outage lets the reconnect backoff grow and the two processes'
    // jittered retries drift apart, as they would in production.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let restarted = Instant::now();
    redis.restart();

    wait_for_message(&mut bo, "said during the outage").await;
    wait_for_message(&mut ana, "also said during the outage").await;
    eprintln!(
        "redis_returns: the outage backlog crossed {:?} after the restart",
        restarted.elapsed()
    );
    ana.say("after the outage").await;
    assert_eq!(copies_of(&mut bo, "after the outage").await, 1);
    assert_eq!(copies_of(&mut ana, "after the outage").await, 1);
    let rest = events_for(&mut bo, SETTLE).await;
    assert!(rest.is_empty(), "nothing twice: {rest:?}");
    for app in [&one, &two] {
        let (_, status) = app.get_json("/status").await;
        assert_eq!(status["redis"]["outbox"], 0, "{status}");
    }
}

#[actix_web::test]
async fn a_full_outbox_drops_the_oldest_events_and_counts_them() {
    let Some(mut redis) = RedisServer::start_or_skip("outbox_overflow") else {
        return;
    };
    let one = spawn_relay_app_with_outbox(&redis.url(), 2).await;
    let two = spawn_relay_app(&redis.url()).await;
    let (mut ana, _) = one.connect_ws("ana").await;
    let (mut bo, _) = two.connect_ws("bo").await;
    wait_for_peer_clients(&one.url("/status"), 1).await;
    redis.kill();
    wait_for_outage(&one).await;

    for n in 1..=5 {
        ana.say(&format!("queued {n}")).await;
        wait_for_message(&mut ana, &format!("queued {n}")).await;
    }
    let (_, status) = one.get_json("/status").await;
    assert_eq!(status["redis"]["outbox"], 2, "{status}");
    assert_eq!(status["redis"]["dropped"], 3, "{status}");
    redis.restart();

    let first = bo.next_event_of("echo").await;
    assert_eq!(
        first["message"], "queued 4",
        "the oldest three were dropped"
    );
    assert_eq!(copies_of(&mut bo, "queued 5").await, 1);
}

#[actix_web::test]
async fn chatd_starts_without_redis_and_connects_when_it_appears() {
    if !installed_or_skip("redis_late") {
        return;
    }
    let port = RedisServer::unused_port();
    let url = format!("redis://127.0.0.1:{port}");
    let app = spawn_relay_app(&url).await;
    let (mut ana, _) = app.connect_ws("ana").await;

    ana.say("anyone?").await;

    assert_eq!(wait_for_message(&mut ana, "anyone?").await["type"], "echo");
    let (_, status) = app.get_json("/status").await;
    assert_eq!(status["redis"]["state"], "connecting", "{status}");
    assert_eq!(status["redis"]["outbox"], 1, "{status}");
    let _redis = RedisServer::start_on(port);
    wait_for_redis(&app.url("/status"), "connected and flushed", |r| {
        r["state"] == "connected" && r["outbox"] == 0
    })
    .await;
}

#[actix_web::test]
async fn a_draining_process_keeps_relaying_until_its_clients_leave() {
    let Some(redis) = RedisServer::start_or_skip("drain_with_redis") else {
        return;
    };
    let env = [
        ("REDIS_URL", redis.url()),
        ("SHUTDOWN_TIMEOUT", "60".into()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut leaving = ServerProcess::start(&env);
    let staying = ServerProcess::start(&env);
    let (mut ana, _) = leaving.connect_ws("ana").await;
    let (mut bo, _) = staying.connect_ws("bo").await;
    for server in [&leaving, &staying] {
        wait_for_peer_clients(&server.url("/status"), 1).await;
    }

    leaving.signal(SIGTERM);

    assert_eq!(ana.next_event().await["type"], "shutdown_notice");
    bo.say("are you still there?").await;
    assert_eq!(copies_of(&mut ana, "are you still there?").await, 1);
    ana.say("leaving now").await;
    assert_eq!(copies_of(&mut bo, "leaving now").await, 1);
    ana.leave().await;
    assert_eq!(leaving.wait_for_exit(Duration::from_secs(10)), 0);
    leaving.wait_for_line("presence removed");
    wait_for_peer_clients(&staying.url("/status"), 0).await;
    bo.say("alone").await;
    assert_eq!(copies_of(&mut bo, "alone").await, 1);
}

#[actix_web::test]
async fn a_presence_record_that_is_not_a_count_does_not_break_the_relay() {
    let Some(redis) = RedisServer::start_or_skip("bad_presence") else {
        return;
    };
    // A record in the presence index that no chatd wrote, as another program
    // (or another version) might leave behind.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let () = redis::pipe()
        .sadd("chatd:events:presence", "stray")
        .ignore()
        .set("chatd:events:presence:stray", "not a number")
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();
    let (one, two) = spawn_relay_pair(&redis).await;

    let (mut ana, _) = one.connect_ws("ana").await;
    let (mut bo, _) = two.connect_ws("bo").await;

    // The counts still add up: presence rounds keep working.
    wait_for_peer_clients(&one.url("/status"), 1).await;
    wait_for_peer_clients(&two.url("/status"), 1).await;
    ana.say("past the stray record").await;
    assert_eq!(
        bo.next_event_of("echo").await["message"],
        "past the stray record"
    );
}
