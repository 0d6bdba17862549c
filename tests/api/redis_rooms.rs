//! Rooms across chatd processes relaying through a real `redis-server`:
//! isolation, per-room subscriptions that follow membership, room notices
//! and counts on every process, and a stalled subscription that heals.

use std::time::{Duration, Instant};

use chatd::config::{RedisSettings, RedisTarget};

use crate::helpers::{spawn_app_with, TestApp, WsClient, WAIT};
use crate::redis::{copies_of, events_for, spawn_relay_app, wait_for_redis};
use crate::redis_helpers::RedisServer;
use crate::stall_proxy::StallProxy;

/// An app on `redis_url` with the rate limit out of the way.
pub async fn spawn_chatty_app(redis_url: &str) -> TestApp {
    let settings = RedisSettings {
        target: RedisTarget::Server(redis_url.to_string()),
        channel: "chatd:events".into(),
        outbox_capacity: 10_000,
    };
    spawn_app_with(move |config| {
        config.redis = Some(settings);
        config.limits.rate_per_second = 100_000;
        config.limits.rate_burst = 100_000;
    })
    .await
}

/// Waits until `app` follows exactly `rooms` room channels.
async fn wait_for_room_channels(app: &TestApp, rooms: u64) {
    let what = format!("followed {rooms} room channels");
    wait_for_redis(&app.url("/status"), &what, |r| {
        r["state"] == "connected" && r["room_channels"] == rooms
    })
    .await;
}

/// Waits until `app`'s `GET /rooms` says `room` has `members` in all.
async fn wait_for_members(app: &TestApp, room: &str, members: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let rooms = app.rooms().await;
        if rooms.get(room) == Some(&members) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{room} never had {members}: {rooms:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn received(app: &TestApp) -> u64 {
    let (_, status) = app.get_json("/status").await;
    status["redis"]["received"]
        .as_u64()
        .expect("a received count")
}

#[actix_web::test]
async fn rooms_stay_apart_across_two_processes() {
    let Some(redis) = RedisServer::start_or_skip("rooms_apart") else {
        return;
    };
    let (one, two) = (
        spawn_relay_app(&redis.url()).await,
        spawn_relay_app(&redis.url()).await,
    );
    let (mut ana, _) = one.connect_ws_in("ana", &["ops"]).await;
    let (mut bo, _) = two.connect_ws_in("bo", &["ops"]).await;
    let (mut cy, _) = two.connect_ws_in("cy", &["dev"]).await;
    wait_for_room_channels(&one, 1).await;
    wait_for_room_channels(&two, 2).await;

    ana.say_in("ops", "ops from one").await;
    cy.say_in("dev", "dev from two").await;

    assert_eq!(copies_of(&mut bo, "ops from one").await, 1);
    let ana_saw = events_for(&mut ana, Duration::from_millis(500)).await;
    assert!(ana_saw.iter().all(|e| e["room"] == "ops"), "{ana_saw:?}");
    let cy_saw = events_for(&mut cy, Duration::from_millis(500)).await;
    assert!(cy_saw.iter().all(|e| e["room"] == "dev"), "{cy_saw:?}");
    assert_eq!(cy_saw.len(), 1, "only its own echo: {cy_saw:?}");
}

#[actix_web::test]
async fn a_process_with_no_member_in_a_room_receives_none_of_its_traffic() {
    let Some(redis) = RedisServer::start_or_skip("no_members_no_traffic") else {
        return;
    };
    let (busy, quiet) = (
        spawn_chatty_app(&redis.url()).await,
        spawn_chatty_app(&redis.url()).await,
    );
    let (mut ana, _) = busy.connect_ws_in("ana", &["ops", "general"]).await;
    let (mut bo, _) = quiet.connect_ws("bo").await;
    wait_for_room_channels(&busy, 2).await;
    wait_for_room_channels(&quiet, 1).await;
    let before = received(&quiet).await;

    for n in 0..200 {
        ana.say_in("ops", &format!("busy {n}")).await;
    }
    ana.say_in("general", "marker").await;

    assert_eq!(copies_of(&mut bo, "marker").await, 1);
    let after = received(&quiet).await;
    assert_eq!(after - before, 1, "the quiet process got ops traffic");
    let subscribers: Vec<(String, u64)> = redis
        .query(
            redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg("chatd:events:room:ops"),
        )
        .await;
    assert_eq!(subscribers[0].1, 1, "only the busy process follows ops");
}

#[actix_web::test]
async fn membership_churn_leaves_no_subscription_behind() {
    let Some(redis) = RedisServer::start_or_skip("churn_subscriptions") else {
        return;
    };
    let (one, two) = (
        spawn_chatty_app(&redis.url()).await,
        spawn_chatty_app(&redis.url()).await,
    );
    let (mut churner, _) = one.connect_ws("churner").await;
    let (mut bo, _) = two.connect_ws("bo").await;

    for n in 0..1000 {
        let room = format!("churn-{n}");
        churner.join(&room).await;
        churner.leave_room(&room).await;
    }

    wait_for_room_channels(&one, 1).await;
    let channels: Vec<String> = redis
        .query(
            redis::cmd("PUBSUB")
                .arg("CHANNELS")
                .arg("chatd:events:room:*"),
        )
        .await;
    assert_eq!(channels, ["chatd:events:room:general"]);
    wait_for_members(&one, "general", 2).await;
    assert_eq!(one.rooms().await.len(), 1, "only general is left");
    churner.say("after the churn").await;
    assert_eq!(copies_of(&mut bo, "after the churn").await, 1);
}

#[actix_web::test]
async fn a_room_notice_reaches_its_members_on_three_processes_once_and_counts_them() {
    let Some(redis) = RedisServer::start_or_skip("room_notice_three") else {
        return;
    };
    let apps = [
        spawn_relay_app(&redis.url()).await,
        spawn_relay_app(&redis.url()).await,
        spawn_relay_app(&redis.url()).await,
    ];
    let mut members: Vec<WsClient> = Vec::new();
    for app in &apps {
        members.push(app.connect_ws_in("member", &["ops"]).await.0);
    }
    let (mut outsider, _) = apps[1].connect_ws("outsider").await;
    for app in &apps {
        wait_for_room_channels(app, if std::ptr::eq(app, &apps[1]) { 2 } else { 1 }).await;
        wait_for_members(app, "ops", 3).await;
    }

    let (status, body) = apps[0].post_notify_to("ops", "ops maintenance").await;

    assert_eq!(
        (status, body["message"].as_str()),
        (200, Some("Notification sent to 3 clients"))
    );
    for member in &mut members {
        assert_eq!(copies_of(member, "ops maintenance").await, 1);
    }
    outsider.expect_silence().await;
    let rooms = apps[2].rooms().await;
    assert_eq!(
        rooms,
        [("general".to_string(), 1), ("ops".to_string(), 3)].into()
    );
}

#[actix_web::test]
async fn a_stalled_subscription_is_noticed_and_relay_resumes() {
    let Some(redis) = RedisServer::start_or_skip("stalled_subscription") else {
        return;
    };
    let proxy = StallProxy::start(redis.port()).await;
    let speaker = spawn_relay_app(&redis.url()).await;
    let listener = spawn_relay_app(&proxy.url()).await;
    let (mut ana, _) = speaker.connect_ws("ana").await;
    let (mut bo, _) = listener.connect_ws("bo").await;
    wait_for_room_channels(&speaker, 1).await;
    wait_for_room_channels(&listener, 1).await;
    ana.say("before the stall").await;
    assert_eq!(copies_of(&mut bo, "before the stall").await, 1);

    assert_eq!(
        proxy.stall_subscriptions(),
        1,
        "the listener's subscription"
    );

    // The listener only receives, so nothing it writes fails: only its
    // pings on the subscription can tell. Keep talking until bo hears again.
    let deadline = Instant::now() + 3 * WAIT;
    let mut n = 0;
    loop {
        n += 1;
        ana.say(&format!("during the stall {n}")).await;
        let heard = events_for(&mut bo, Duration::from_millis(500)).await;
        if heard.iter().any(|e| e["type"] == "echo") {
            break;
        }
        assert!(Instant::now() < deadline, "the listener never resubscribed");
    }
    ana.say("after the stall").await;
    assert_eq!(copies_of(&mut bo, "after the stall").await, 1);
}
