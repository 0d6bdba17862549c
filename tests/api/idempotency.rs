//! `POST /notify` with an `Idempotency-Key`: sent once per key, on one
//! process and across processes that share a Redis.

use crate::helpers::{post_notify_keyed, spawn_app, WAIT};
use crate::redis::{copies_of, wait_for_peer_clients};
use crate::redis_helpers::RedisServer;
use crate::server_process::ServerProcess;

#[actix_web::test]
async fn a_repeated_key_is_sent_once_and_gets_the_first_answer() {
    let app = spawn_app().await;
    let (mut ana, _) = app.connect_ws("ana").await;

    let first = app.post_notify_keyed("deploy-42", "deploy at noon").await;
    let (_bo, _) = app.connect_ws("bo").await;
    let repeat = app.post_notify_keyed("deploy-42", "deploy at noon").await;

    assert_eq!(first.0, 200, "{first:?}");
    assert_eq!(first.1["message"], "Notification sent to 1 clients");
    assert_eq!(
        repeat, first,
        "the repeat gets the first answer, count and all"
    );
    assert_eq!(copies_of(&mut ana, "deploy at noon").await, 1);
}

#[actix_web::test]
async fn another_key_or_no_key_is_sent_again() {
    let app = spawn_app().await;
    let (mut ana, _) = app.connect_ws("ana").await;

    app.post_notify_keyed("a", "hello").await;
    app.post_notify_keyed("b", "hello").await;
    app.post_notify("hello").await;
    app.post_notify("hello").await;

    assert_eq!(copies_of(&mut ana, "hello").await, 4);
}

#[actix_web::test]
async fn a_bad_idempotency_key_is_rejected_with_400() {
    let app = spawn_app().await;
    let (mut ana, _) = app.connect_ws("ana").await;
    let too_long = "k".repeat(129);
    let cases = [
        ("empty", ""),
        ("129 characters", too_long.as_str()),
        ("a tab", "a\tb"),
        ("not ASCII", "caf\u{e9}"),
    ];
    for (description, key) in cases {
        let mut response = app
            .http
            .post(app.url("/notify?message=hi"))
            .insert_header((
                "Idempotency-Key",
                awc::http::header::HeaderValue::from_bytes(key.as_bytes()).unwrap(),
            ))
            .send()
            .await
            .expect("POST /notify answers");
        let body: serde_json::Value = response.json().await.expect("a JSON body");
        assert_eq!(response.status().as_u16(), 400, "{description}: {body}");
        assert_eq!(body["status"], "error", "{description}: {body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("Idempotency-Key"),
            "{description}: {body}"
        );
    }
    ana.expect_silence().await;
}

#[actix_web::test]
async fn a_retry_on_another_process_reaches_each_client_once() {
    let Some(redis) = RedisServer::start_or_skip("idempotent_across_processes") else {
        return;
    };
    let env = [("REDIS_URL", redis.url())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let one = ServerProcess::start(&env);
    let two = ServerProcess::start(&env);
    let (mut ana, _) = one.connect_ws("ana").await;
    let (mut bo, _) = two.connect_ws("bo").await;
    wait_for_peer_clients(&one.url("/status"), 1).await;
    wait_for_peer_clients(&two.url("/status"), 1).await;
    let http = awc::Client::builder().timeout(WAIT).finish();
    let (at_one, at_two) = (one.url("/notify"), two.url("/notify"));

    // The retry goes out while the first may still be in flight.
    let (first, retry) = tokio::join!(
        post_notify_keyed(&http, &at_one, "rollout-7", "rolling out"),
        post_notify_keyed(&http, &at_two, "rollout-7", "rolling out"),
    );
    let later = post_notify_keyed(&http, &at_two, "rollout-7", "rolling out").await;

    assert_eq!(first.0, 200, "{first:?}");
    assert_eq!(first.1["message"], "Notification sent to 2 clients");
    assert_eq!(retry, first);
    assert_eq!(later, first);
    for client in [&mut ana, &mut bo] {
        assert_eq!(copies_of(client, "rolling out").await, 1);
    }
    let stored: String = redis
        .query(redis::cmd("GET").arg("chatd:events:idempotency:rollout-7"))
        .await;
    assert_eq!(stored, r#"{"sent":2}"#);
    let ttl: i64 = redis
        .query(redis::cmd("TTL").arg("chatd:events:idempotency:rollout-7"))
        .await;
    assert!((290..=300).contains(&ttl), "expires in {ttl} s");
}
