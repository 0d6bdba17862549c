//! chatd on a real Redis Cluster (three masters, three replicas, started by
//! each test): rooms on different shards, exactly once across two
//! processes, history recovered on the other process, a master killed while
//! its rooms are busy, and the whole cluster away and back.

use std::time::{Duration, Instant};

use chatd::config::{AuthSetting, RedisSettings, RedisTarget};
use serde_json::Value;

use crate::cluster_helpers::{RedisCluster, CLUSTER_WAIT};
use crate::helpers::{messages, offsets, spawn_app_with, TestApp, WsClient, WAIT};
use crate::identity::{token_for, SECRET};
use crate::redis::{
    copies_of, events_for, wait_for_message, wait_for_peer_clients, wait_for_redis,
};

/// An app on `cluster`, with the rate limit out of the way.
async fn spawn_cluster_app(cluster: &RedisCluster) -> TestApp {
    spawn_cluster_app_with(cluster, |_| {}).await
}

async fn spawn_cluster_app_with(
    cluster: &RedisCluster,
    adjust: impl FnOnce(&mut chatd::config::Config),
) -> TestApp {
    let settings = RedisSettings {
        target: RedisTarget::Cluster(cluster.seeds()),
        channel: "chatd:events".into(),
        outbox_capacity: 10_000,
    };
    let app = spawn_app_with(move |config| {
        config.redis = Some(settings);
        config.limits.rate_per_second = 100_000;
        config.limits.rate_burst = 100_000;
        adjust(config);
    })
    .await;
    wait_for_redis(&app.url("/status"), "connected", |r| {
        r["state"] == "connected"
    })
    .await;
    app
}

/// Waits until `app` follows `rooms` room channels.
async fn wait_for_room_channels(app: &TestApp, rooms: u64) {
    wait_for_redis(&app.url("/status"), "following the rooms", |r| {
        r["state"] == "connected" && r["room_channels"] == rooms
    })
    .await;
}

/// Two apps on `cluster`, and on each a client in every one of `rooms`.
async fn two_processes_in(
    cluster: &RedisCluster,
    rooms: &[&str],
) -> ((TestApp, WsClient), (TestApp, WsClient)) {
    let (one, two) = (
        spawn_cluster_app(cluster).await,
        spawn_cluster_app(cluster).await,
    );
    let (ana, _) = one.connect_ws_in("ana", rooms).await;
    let (bo, _) = two.connect_ws_in("bo", rooms).await;
    for app in [&one, &two] {
        wait_for_room_channels(app, rooms.len() as u64).await;
    }
    ((one, ana), (two, bo))
}

/// The `echo` events among `events` for `room`, as (message, offset).
fn echoes_in<'a>(events: &'a [Value], room: &str) -> Vec<(&'a str, Option<u64>)> {
    events
        .iter()
        .filter(|e| e["type"] == "echo" && e["room"] == room)
        .map(|e| (e["message"].as_str().unwrap(), e["offset"].as_u64()))
        .collect()
}

/// Reads `client`'s events until `last` has arrived in `room`.
async fn events_until(client: &mut WsClient, room: &str, last: &str) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    let mut events = Vec::new();
    loop {
        let event = client.next_event().await;
        let done = event["room"] == room && event["message"] == last;
        events.push(event);
        if done {
            return events;
        }
        assert!(Instant::now() < deadline, "{last:?} never arrived");
    }
}

#[actix_web::test]
async fn rooms_on_three_shards_reach_the_other_process_exactly_once_and_in_order() {
    let Some(cluster) = RedisCluster::start_or_skip("cluster_exactly_once") else {
        return;
    };
    let rooms = cluster.rooms_on_each_master("shard");
    let names: Vec<&str> = rooms.iter().map(|(r, _)| r.as_str()).collect();
    let ((one, mut ana), (_two, mut bo)) = two_processes_in(&cluster, &names).await;

    for n in 0..20 {
        for room in &names {
            ana.say_in(room, &format!("{room} {n}")).await;
        }
    }
    let (status, _) = one.post_notify("to everyone").await;
    assert_eq!(status, 200);

    let mut seen = events_until(&mut bo, names[2], &format!("{} 19", names[2])).await;
    seen.extend(events_for(&mut bo, Duration::from_secs(1)).await);
    for room in &names {
        let echoes = echoes_in(&seen, room);
        let texts: Vec<&str> = echoes.iter().map(|(m, _)| *m).collect();
        let expected: Vec<String> = (0..20).map(|n| format!("{room} {n}")).collect();
        assert_eq!(texts, expected, "{room}: each once, in order");
        let numbered: Vec<u64> = echoes.iter().map(|(_, o)| o.expect("an offset")).collect();
        assert_eq!(numbered, (1..=20).collect::<Vec<_>>(), "{room}: offsets");
    }
    let notices = seen
        .iter()
        .filter(|e| e["message"] == "to everyone")
        .count();
    assert_eq!(notices, 1, "the notice to everyone, once: {seen:?}");
    // Each room's traffic went to its own shard.
    let calls = cluster.calls_per_master("evalsha");
    assert!(calls.iter().all(|(_, n)| *n >= 1), "{calls:?}");
    let sharded = cluster.calls_per_master("ssubscribe");
    assert!(
        sharded.iter().all(|(_, n)| *n >= 2),
        "both processes per shard: {sharded:?}"
    );
}

#[actix_web::test]
async fn history_said_on_one_process_is_recovered_on_the_other() {
    let Some(cluster) = RedisCluster::start_or_skip("cluster_history") else {
        return;
    };
    let rooms = cluster.rooms_on_each_master("hist");
    let names: Vec<&str> = rooms.iter().map(|(r, _)| r.as_str()).collect();
    let ((_one, mut ana), (two, mut bo)) = two_processes_in(&cluster, &names).await;
    let mut positions = Vec::new();
    for room in &names {
        ana.say_in(room, &format!("{room} before")).await;
        let echo = wait_for_message(&mut bo, &format!("{room} before")).await;
        positions.push(format!(
            "{room}:{}:{}",
            echo["offset"],
            epoch_of(&two, room).await
        ));
    }
    for room in &names {
        for n in 0..3 {
            ana.say_in(room, &format!("{room} missed {n}")).await;
        }
    }
    // Each room's echoes come in order, but rooms on different shards
    // may overtake each other.
    let mut stored: Vec<String> = names.iter().map(|r| format!("{r} missed 2")).collect();
    while !stored.is_empty() {
        let event = ana.next_event().await;
        stored.retain(|m| event["message"] != m.as_str());
    }

    let query: String = positions.iter().map(|p| format!("&since={p}")).collect();
    let (_back, welcome) = two.connect_ws_with(&format!("?name=bo{query}")).await;

    let joined = welcome["rooms"].as_array().expect("the rooms joined");
    for room in &names {
        let joined = joined.iter().find(|j| j["room"] == *room).expect("joined");
        assert_eq!(joined["recovered"], true, "{joined}");
        let expected: Vec<String> = (0..3).map(|n| format!("{room} missed {n}")).collect();
        assert_eq!(messages(&joined["history"]), expected, "{room}");
        assert_eq!(offsets(&joined["history"]), [2, 3, 4], "{room}");
    }
}

async fn epoch_of(app: &TestApp, room: &str) -> String {
    let (_, page) = app
        .get_json(&format!("/rooms/{room}/history?limit=1"))
        .await;
    page["epoch"].as_str().expect("an epoch").to_string()
}

#[actix_web::test]
async fn a_notice_to_everyone_and_to_a_room_reaches_every_process() {
    let Some(cluster) = RedisCluster::start_or_skip("cluster_notices") else {
        return;
    };
    let rooms = cluster.rooms_on_each_master("note");
    let names: Vec<&str> = rooms.iter().map(|(r, _)| r.as_str()).collect();
    let ((one, _ana), (_two, mut bo)) = two_processes_in(&cluster, &names).await;

    let (status, _) = one.post_notify_to(names[1], "room notice").await;
    assert_eq!(status, 200);

    assert_eq!(copies_of(&mut bo, "room notice").await, 1);
}

#[actix_web::test]
async fn a_notice_to_a_user_and_presence_span_processes_on_a_cluster() {
    let Some(cluster) = RedisCluster::start_or_skip("cluster_user_notice") else {
        return;
    };
    let with_tokens = |c: &mut chatd::config::Config| {
        c.auth = Some(AuthSetting::Secret(SECRET.into()));
    };
    let one = spawn_cluster_app_with(&cluster, with_tokens).await;
    let two = spawn_cluster_app_with(&cluster, with_tokens).await;
    let token = |sub, name| format!("?token={}", token_for(sub, name));
    let (mut ana, _) = one.connect_ws_with(&token("u-ana", "Ana")).await;
    let (mut ana_elsewhere, _) = two.connect_ws_with(&token("u-ana", "Ana")).await;
    let (_bo, _) = two.connect_ws_with(&token("u-bo", "Bo")).await;

    // Presence lives on one shard under one hash tag, read by every process.
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, presence) = one.get_json("/rooms/general/presence").await;
        let both = serde_json::json!([
            {"id": "u-ana", "name": "Ana", "connections": 2},
            {"id": "u-bo", "name": "Bo", "connections": 1},
        ]);
        if presence["users"] == both {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "presence never showed both: {presence}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = one
        .post_notify_with(&[("message", "for ana"), ("user", "u-ana")])
        .await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"], "Notification sent to 2 clients");
    for client in [&mut ana, &mut ana_elsewhere] {
        assert_eq!(copies_of(client, "for ana").await, 1);
    }
}

/// Says `text` in `room` through `client`, and waits until `other` has it.
async fn relayed(client: &mut WsClient, other: &mut WsClient, room: &str, text: &str) {
    client.say_in(room, text).await;
    let event = wait_for_message(other, text).await;
    assert_eq!(event["room"], room, "{event}");
}

#[actix_web::test]
async fn a_killed_master_s_rooms_resume_after_failover_and_other_shards_never_stop() {
    let Some(mut cluster) = RedisCluster::start_or_skip("cluster_failover") else {
        return;
    };
    let rooms = cluster.rooms_on_each_master("fail");
    let names: Vec<&str> = rooms.iter().map(|(r, _)| r.as_str()).collect();
    let ((_one, mut ana), (two, mut bo)) = two_processes_in(&cluster, &names).await;
    let (hit, hit_master) = (names[0], rooms[0].1);
    // Acknowledged history: what the sender saw echoed with an offset,
    // once the master's replica has it too.
    for n in 0..10 {
        ana.say_in(hit, &format!("acked {n}")).await;
    }
    wait_for_message(&mut ana, "acked 9").await;
    wait_for_message(&mut bo, "acked 9").await;
    let window = cluster.wait_replicated(hit_master);

    cluster.kill(hit_master);
    let killed = Instant::now();
    // The hit room stays busy, and the other shards carry on: each of
    // their messages reaches the other process, some of them while the
    // killed master still owns its slots (the replica takes over only after
    // the node timeout).
    let mut before_failover = 0;
    let mut n = 0;
    while cluster.owns_slots(hit_master) || n < 5 {
        ana.say_in(hit, &format!("{hit} during {n}")).await;
        for room in &names[1..] {
            relayed(&mut ana, &mut bo, room, &format!("{room} during {n}")).await;
        }
        before_failover += usize::from(cluster.owns_slots(hit_master));
        n += 1;
        assert!(killed.elapsed() < CLUSTER_WAIT, "no failover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        before_failover > 0,
        "no message relayed before the failover"
    );
    let promoted = killed.elapsed();
    cluster.wait_for_failover(hit_master);
    // The hit room: a message said after the failover reaches the other
    // process, once chatd follows the new master.
    resumes(&mut ana, &mut bo, hit, "after").await;
    let resumed = killed.elapsed();
    for room in &names[1..] {
        relayed(&mut ana, &mut bo, room, &format!("{room} still")).await;
    }
    // What was acknowledged and replicated before the kill is in the new
    // master's history, under the same epoch.
    let (_, page) = two
        .get_json(&format!("/rooms/{hit}/history?limit=100"))
        .await;
    let kept: Vec<&str> = messages(&page["events"]);
    let acked_kept = (0..10)
        .filter(|n| kept.contains(&format!("acked {n}").as_str()))
        .count();
    eprintln!(
        "cluster failover: replication window {window:?}; replica promoted after {promoted:?} \
         (node timeout 2 s); room {hit} relayed again {resumed:?} after the kill; \
         {before_failover} rounds on the other shards relayed before the promotion; \
         acknowledged events kept {acked_kept}/10"
    );
    assert_eq!(acked_kept, 10, "acknowledged history lost: {kept:?}");
}

#[actix_web::test]
async fn a_room_follows_its_slot_to_the_new_master_after_a_graceful_failover() {
    let Some(cluster) = RedisCluster::start_or_skip("cluster_graceful_failover") else {
        return;
    };
    let rooms = cluster.rooms_on_each_master("move");
    let (room, master) = (rooms[0].0.as_str(), rooms[0].1);
    let ((one, mut ana), (two, mut bo)) = two_processes_in(&cluster, &[room]).await;
    relayed(&mut ana, &mut bo, room, "before").await;

    // The old master tells its subscribers it no longer serves the room's
    // sharded channel; both processes follow it on the new master.
    cluster.fail_over_gracefully(master);

    for app in [&one, &two] {
        wait_for_room_channels(app, 1).await;
    }
    resumes(&mut ana, &mut bo, room, "after").await;
    resumes(&mut bo, &mut ana, room, "and back").await;
}

/// Says `<label> <ms>` in `room` through `client` until `other` gets one of
/// them, and answers how long that took: what is published between a slot's
/// move and the new subscription does not reach a process live.
async fn resumes(client: &mut WsClient, other: &mut WsClient, room: &str, label: &str) -> Duration {
    let started = Instant::now();
    loop {
        client
            .say_in(room, &format!("{label} {}", started.elapsed().as_millis()))
            .await;
        let got = events_for(other, Duration::from_millis(200)).await;
        let arrived = got.iter().any(|e| {
            e["room"] == room && e["message"].as_str().is_some_and(|m| m.starts_with(label))
        });
        if arrived {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < CLUSTER_WAIT,
            "{room} never resumed ({label})"
        );
    }
}

#[actix_web::test]
async fn the_whole_cluster_away_and_back_keeps_chat_local_then_relays_again() {
    let Some(mut cluster) = RedisCluster::start_or_skip("cluster_away") else {
        return;
    };
    let rooms = cluster.rooms_on_each_master("away");
    let names: Vec<&str> = rooms.iter().map(|(r, _)| r.as_str()).collect();
    let ((one, mut ana), (two, mut bo)) = two_processes_in(&cluster, &names).await;
    // Each knows the other, so after the outage each holds its outbox until
    // the other follows its channels again.
    for app in [&one, &two] {
        wait_for_peer_clients(&app.url("/status"), 1).await;
    }

    cluster.kill_all();
    for app in [&one, &two] {
        wait_for_redis(&app.url("/status"), "connecting", |r| {
            r["state"] == "connecting"
        })
        .await;
    }
    ana.say_in(names[0], "while away").await;
    let local = wait_for_message(&mut ana, "while away").await;
    assert_eq!(local["offset"], Value::Null, "unstored while away: {local}");

    cluster.restart_stopped();
    for app in [&one, &two] {
        wait_for_room_channels(app, names.len() as u64).await;
    }
    assert_eq!(
        copies_of(&mut bo, "while away").await,
        1,
        "the outbox flushed once"
    );
    for room in &names {
        relayed(&mut ana, &mut bo, room, &format!("{room} back")).await;
    }
}
