use std::time::Duration;

use crate::helpers::{spawn_app, spawn_app_with, Ending, WsClient};

#[actix_web::test]
async fn welcome_names_the_client_and_counts_who_is_online() {
    let app = spawn_app().await;

    let (_ana, welcome) = app.connect_ws("ana").await;
    let (_bo, second) = app.connect_ws("bo").await;

    assert_eq!(welcome["name"], "ana");
    assert_eq!(welcome["online"], 1);
    assert_eq!(second["online"], 2);
    assert!(welcome["client_id"]
        .as_str()
        .is_some_and(|id| !id.is_empty()));
    assert_ne!(welcome["client_id"], second["client_id"]);
    assert!(welcome["server"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(welcome["ts"]
        .as_u64()
        .is_some_and(|ts| ts > 1_600_000_000_000));
}

#[actix_web::test]
async fn a_client_without_a_name_gets_a_guest_name() {
    let app = spawn_app().await;

    let mut client = WsClient::connect(&app.ws_url("")).await;
    let welcome = client.next_event().await;

    assert!(
        welcome["name"].as_str().unwrap().starts_with("guest-"),
        "{welcome}"
    );
}

#[actix_web::test]
async fn a_message_reaches_every_connected_client_the_sender_included() {
    let app = spawn_app().await;
    let (mut ana, ana_welcome) = app.connect_ws("ana").await;
    let (mut bo, bo_welcome) = app.connect_ws("bo").await;

    ana.say("hello from ana").await;
    let ana_own = ana.next_event().await;
    let bo_copy = bo.next_event().await;
    bo.say("hi ana").await;
    let bo_own = bo.next_event().await;
    let ana_copy = ana.next_event().await;

    assert_eq!(ana_own, bo_copy, "every client gets the same event");
    assert_eq!(ana_own["type"], "echo");
    assert_eq!(ana_own["message"], "hello from ana");
    assert_eq!(ana_own["from"]["id"], ana_welcome["client_id"]);
    assert_eq!(ana_own["from"]["name"], "ana");
    assert!(ana_own["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert!(ana_own["ts"].as_u64().is_some());
    assert_eq!(bo_own, ana_copy);
    assert_eq!(bo_own["from"]["id"], bo_welcome["client_id"]);
    assert_ne!(ana_own["id"], bo_own["id"], "message ids are unique");
}

#[actix_web::test]
async fn the_message_type_name_is_accepted_too() {
    let app = spawn_app().await;
    let (mut ana, _) = app.connect_ws("ana").await;

    ana.send_text(r#"{"type":"message","message":"typed as message"}"#)
        .await;

    let echo = ana.next_event().await;
    assert_eq!(echo["type"], "echo");
    assert_eq!(echo["message"], "typed as message");
}

#[actix_web::test]
async fn a_periodic_notification_reaches_every_client() {
    let app = spawn_app_with(|c| c.periodic_notification = Some(Duration::from_secs(1))).await;
    let (mut ana, _) = app.connect_ws("ana").await;
    let (mut bo, _) = app.connect_ws("bo").await;

    let first = ana.next_event_of("notification").await;
    let second = ana.next_event_of("notification").await;
    let bo_notice = bo.next_event_of("notification").await;

    assert!(
        first["message"].as_str().unwrap().contains("Periodic"),
        "{first}"
    );
    assert_ne!(first["id"], second["id"]);
    assert!(bo_notice["message"].as_str().unwrap().contains("Periodic"));
}

#[actix_web::test]
async fn a_silent_client_is_closed_after_the_client_timeout() {
    let app = spawn_app_with(|c| {
        c.limits.heartbeat_interval = Duration::from_secs(1);
        c.limits.client_timeout = Duration::from_secs(2);
    })
    .await;
    // tungstenite answers pings only while it is read, and nothing reads this
    // client's socket until the server has given up on it.
    let mut silent = WsClient::connect(&app.ws_url("?name=silent")).await;
    let (mut lively, _) = app.connect_ws("lively").await;
    // The lively client talks, and so answers pings, for longer than the timeout.
    for n in 0..8 {
        lively.say(&format!("tick {n}")).await;
        assert_eq!(
            lively.next_event_of("echo").await["message"],
            format!("tick {n}")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    assert_eq!(silent.ending().await, Ending::Closed(1008));
    app.wait_for_connections(1).await;
}
