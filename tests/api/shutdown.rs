//! Graceful shutdown, driven by real signals to a chatd process.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use libc::{SIGINT, SIGTERM};
use serde_json::Value;

use crate::helpers::{spawn_app, spawn_app_with, Ending, WsClient};
use crate::server_process::ServerProcess;

#[actix_web::test]
async fn sigterm_sends_every_client_a_shutdown_notice_with_the_deadline() {
    let server = ServerProcess::start(&[("SHUTDOWN_TIMEOUT", "60")]);
    let (mut ana, _) = server.connect_ws("ana").await;
    let (mut bo, _) = server.connect_ws("bo").await;

    server.signal(SIGTERM);

    for client in [&mut ana, &mut bo] {
        let notice = client.next_event().await;
        assert_eq!(notice["type"], "shutdown_notice");
        let deadline = notice["deadline_s"].as_u64().unwrap();
        assert!((55..=60).contains(&deadline), "{notice}");
        let retry = notice["retry_after_ms"].as_u64().unwrap();
        assert!((1_000..=10_000).contains(&retry), "{notice}");
        assert!(notice["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
}

#[actix_web::test]
async fn a_draining_server_refuses_new_work_but_keeps_chat_going() {
    let server = ServerProcess::start(&[("SHUTDOWN_TIMEOUT", "60")]);
    let (mut ana, _) = server.connect_ws("ana").await;
    let (mut bo, _) = server.connect_ws("bo").await;

    server.signal(SIGTERM);
    ana.next_event_of("shutdown_notice").await;
    bo.next_event_of("shutdown_notice").await;

    let upgrade = tokio_tungstenite::connect_async(server.ws_url("?name=late")).await;
    match upgrade {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 503);
            assert!(response.headers().contains_key("retry-after"));
        }
        other => panic!("expected 503, got {other:?}"),
    }
    let (ready, _) = server.get_json("/readyz").await;
    assert_eq!(ready, 503);
    let (healthy, _) = server.get_json("/healthz").await;
    assert_eq!(healthy, 200);
    let (_, status) = server.get_json("/status").await;
    assert_eq!(status["status"], "draining");
    assert!(
        status["drain_seconds_left"]
            .as_u64()
            .is_some_and(|s| s > 50),
        "{status}"
    );
    let mut notify = awc::Client::default()
        .post(server.url("/notify?message=hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(notify.status().as_u16(), 503);
    assert_eq!(notify.json::<Value>().await.unwrap()["status"], "error");

    ana.say("still talking").await;
    assert_eq!(bo.next_event_of("echo").await["message"], "still talking");
    assert_eq!(ana.next_event_of("echo").await["message"], "still talking");
}

#[actix_web::test]
async fn the_drain_logs_progress_with_the_pid_and_exits_0_when_the_last_client_leaves() {
    let mut server = ServerProcess::start(&[
        ("SHUTDOWN_TIMEOUT", "60"),
        ("SHUTDOWN_PROGRESS_INTERVAL", "1"),
    ]);
    let (mut ana, _) = server.connect_ws("ana").await;
    let (mut bo, _) = server.connect_ws("bo").await;
    let pid = server.pid();

    server.signal(SIGTERM);
    ana.next_event_of("shutdown_notice").await;
    bo.next_event_of("shutdown_notice").await;
    let progress = server.wait_for_line(&format!("draining pid={pid} connections=2"));
    ana.leave().await;
    server.wait_for_line(&format!("draining pid={pid} connections=1"));
    bo.leave().await;

    assert!(progress.contains("seconds_left="), "{progress}");
    assert_eq!(server.wait_for_exit(Duration::from_secs(5)), 0);
    server.wait_for_line("all clients left");
}

#[actix_web::test]
async fn clients_still_connected_at_the_deadline_are_closed_with_1001() {
    let mut server = ServerProcess::start(&[("SHUTDOWN_TIMEOUT", "2")]);
    let (mut stayer, _) = server.connect_ws("stayer").await;

    server.signal(SIGTERM);

    assert_eq!(stayer.next_event().await["type"], "shutdown_notice");
    assert_eq!(stayer.ending().await, Ending::Closed(1001));
    assert_eq!(server.wait_for_exit(Duration::from_secs(10)), 0);
    server.wait_for_line("closed=1");
}

#[actix_web::test]
async fn a_second_signal_skips_the_wait() {
    let mut server = ServerProcess::start(&[("SHUTDOWN_TIMEOUT", "600")]);
    let (mut stayer, _) = server.connect_ws("stayer").await;

    server.signal(SIGINT);
    assert_eq!(stayer.next_event().await["type"], "shutdown_notice");
    server.signal(SIGTERM);

    assert_eq!(stayer.ending().await, Ending::Closed(1001));
    assert_eq!(server.wait_for_exit(Duration::from_secs(10)), 0);
}

#[actix_web::test]
async fn an_idle_server_exits_at_once_on_sigterm() {
    let mut server = ServerProcess::start(&[]);

    server.signal(SIGTERM);

    assert_eq!(server.wait_for_exit(Duration::from_secs(5)), 0);
}

#[actix_web::test]
async fn a_drain_started_in_process_notifies_and_stops_the_server() {
    let app = spawn_app().await;
    let (mut ana, _) = app.connect_ws("ana").await;

    app.begin_shutdown();

    assert_eq!(ana.next_event().await["type"], "shutdown_notice");
    ana.leave().await;
    app.wait_until_stopped().await;
}

#[actix_web::test]
async fn clients_left_at_the_deadline_are_closed_over_the_spread_not_in_one_instant() {
    const CLIENTS: usize = 1000;
    let spread = Duration::from_secs(2);
    let app = spawn_app_with(|config| {
        config.shutdown_timeout = Duration::from_secs(1);
        config.shutdown_close_spread = spread;
    })
    .await;
    let mut clients: Vec<WsClient> = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS / 50 {
        let batch = join_all((0..50).map(|_| app.connect_ws("stayer"))).await;
        clients.extend(batch.into_iter().map(|(client, _)| client));
    }
    app.wait_for_connections(CLIENTS as u64).await;

    app.begin_shutdown();
    let endings = join_all(clients.iter_mut().map(|client| async {
        let ending = client.ending().await;
        (ending, Instant::now())
    }))
    .await;

    let mut closed_at: Vec<Instant> = endings
        .iter()
        .map(|(ending, at)| {
            assert_eq!(*ending, Ending::Closed(1001));
            *at
        })
        .collect();
    closed_at.sort();
    let took = closed_at[CLIENTS - 1] - closed_at[0];
    assert!(
        took >= spread / 2 && took <= spread + Duration::from_secs(2),
        "the closes took {took:?}, the spread is {spread:?}"
    );
    let window = Duration::from_millis(10);
    let busiest = (0..CLIENTS)
        .map(|i| closed_at[i..].partition_point(|at| *at - closed_at[i] < window))
        .max()
        .unwrap();
    assert!(
        busiest <= CLIENTS / 4,
        "{busiest} of {CLIENTS} clients were closed within one {window:?} window"
    );
    app.wait_until_stopped().await;
}

#[actix_web::test]
async fn a_second_signal_during_the_spread_closes_the_rest_at_once() {
    let mut server = ServerProcess::start(&[
        ("SHUTDOWN_TIMEOUT", "1"),
        ("SHUTDOWN_CLOSE_SPREAD", "600"),
        ("SHUTDOWN_PROGRESS_INTERVAL", "1"),
    ]);
    let (mut ana, _) = server.connect_ws("ana").await;
    let (mut bo, _) = server.connect_ws("bo").await;
    let pid = server.pid();

    server.signal(SIGTERM);
    // Of two clients over 600 s, one is closed at the deadline, the other
    // 300 s later.
    let first = tokio::select! {
        ending = ana.ending() => { assert_eq!(ending, Ending::Closed(1001)); "ana" }
        ending = bo.ending() => { assert_eq!(ending, Ending::Closed(1001)); "bo" }
    };
    server.wait_for_line(&format!("closing pid={pid} connections=1"));
    server.signal(SIGTERM);

    let rest = if first == "ana" { &mut bo } else { &mut ana };
    assert_eq!(rest.ending().await, Ending::Closed(1001));
    assert_eq!(server.wait_for_exit(Duration::from_secs(10)), 0);
}
