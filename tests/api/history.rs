//! Room history and recovery on one process (the in-memory store): what a
//! join carries, resuming with `since`, the cases that cannot be resumed,
//! bad `since` values, and `GET /rooms/{R}/history`.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{
    messages, offsets, since_of, spawn_app, spawn_app_with, TestApp, WsClient, WAIT,
};

/// Says each of `texts` in `room` from `client`, waiting for each echo;
/// answers the last echo.
async fn say_all(client: &mut WsClient, room: &str, texts: &[&str]) -> Value {
    let mut last = Value::Null;
    for text in texts {
        client.say_in(room, text).await;
        last = client.next_event_of("echo").await;
        assert_eq!(last["message"], *text);
    }
    last
}

async fn chatty_app() -> TestApp {
    spawn_app_with(|c| {
        c.limits.rate_per_second = 10_000;
        c.limits.rate_burst = 10_000;
    })
    .await
}

#[actix_web::test]
async fn echoes_carry_consecutive_offsets_and_a_join_carries_the_latest() {
    let app = spawn_app_with(|c| c.history.on_join = 2).await;
    let (mut ana, welcome) = app.connect_ws("ana").await;
    let epoch = welcome["rooms"][0]["epoch"].clone();

    let mut seen = Vec::new();
    for text in ["one", "two", "three"] {
        ana.say(text).await;
        seen.push(ana.next_event_of("echo").await["offset"].as_u64().unwrap());
    }
    let (_, late) = app.connect_ws("late").await;

    assert_eq!(seen, [1, 2, 3]);
    let joined = &late["rooms"][0];
    assert_eq!(
        (&joined["epoch"], joined["offset"].as_u64()),
        (&epoch, Some(3))
    );
    assert_eq!(
        messages(&joined["history"]),
        ["two", "three"],
        "HISTORY_ON_JOIN = 2"
    );
    assert!(
        joined.get("recovered").is_none(),
        "no since, no claim: {joined}"
    );
    let three = &joined["history"][1];
    assert_eq!(
        (three["type"].as_str(), three["offset"].as_u64()),
        (Some("echo"), Some(3))
    );
    assert_eq!(three["from"]["name"], "ana");
}

#[actix_web::test]
async fn a_client_that_resumes_gets_exactly_what_it_missed_then_live_events() {
    let app = chatty_app().await;
    let (mut ana, _) = app.connect_ws("ana").await;
    let (bo, welcome) = app.connect_ws("bo").await;
    say_all(&mut ana, "general", &["before"]).await;
    let mut since = welcome["rooms"][0].clone();
    since["offset"] = json!(1);
    bo.leave().await;

    say_all(&mut ana, "general", &["missed 1", "missed 2", "missed 3"]).await;
    let (mut bo, welcome) = app
        .connect_ws_with(&format!("?name=bo&since={}", since_of(&since)))
        .await;
    ana.say("live").await;

    let joined = &welcome["rooms"][0];
    assert_eq!(joined["recovered"], true, "{joined}");
    assert_eq!(
        messages(&joined["history"]),
        ["missed 1", "missed 2", "missed 3"]
    );
    assert_eq!(offsets(&joined["history"]), [2, 3, 4]);
    let live = bo.next_event().await;
    assert_eq!(
        (live["message"].as_str(), live["offset"].as_u64()),
        (Some("live"), Some(5))
    );
}

#[actix_web::test]
async fn a_join_frame_with_since_resumes_too() {
    let app = chatty_app().await;
    let (mut ana, _) = app.connect_ws_in("ana", &["ops"]).await;
    let (mut bo, _) = app.connect_ws("bo").await;
    let joined = bo.join("ops").await;
    bo.leave_room("ops").await;
    say_all(&mut ana, "ops", &["a", "b"]).await;

    let frame = json!({"type": "join", "room": "ops", "since": {"offset": joined["offset"], "epoch": joined["epoch"]}});
    bo.send_text(&frame.to_string()).await;
    let again = bo.next_event_of("joined").await;

    assert_eq!(again["recovered"], true, "{again}");
    assert_eq!(messages(&again["history"]), ["a", "b"]);
}

#[actix_web::test]
async fn what_cannot_be_resumed_comes_back_as_recovered_false_with_the_latest() {
    let app = spawn_app_with(|c| {
        c.history.size = 5;
        c.history.on_join = 3;
        c.limits.rate_per_second = 10_000;
        c.limits.rate_burst = 10_000;
    })
    .await;
    let (mut ana, welcome) = app.connect_ws("ana").await;
    let epoch = welcome["rooms"][0]["epoch"].as_str().unwrap().to_string();
    let texts: Vec<String> = (1..=8).map(|n| format!("m{n}")).collect();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    say_all(&mut ana, "general", &texts).await;

    let cases = [
        (
            "a gap larger than the history (5 held, 6 missed)",
            format!("general:2:{epoch}"),
        ),
        ("another epoch", "general:8:zzzzzzzz".to_string()),
        ("an offset above the top", format!("general:99:{epoch}")),
    ];
    for (what, since) in cases {
        let (_, welcome) = app.connect_ws_with(&format!("?since={since}")).await;
        let joined = &welcome["rooms"][0];
        assert_eq!(joined["recovered"], false, "{what}: {joined}");
        assert_eq!(messages(&joined["history"]), ["m6", "m7", "m8"], "{what}");
    }
    let (_, welcome) = app
        .connect_ws_with(&format!("?since=general:3:{epoch}"))
        .await;
    assert_eq!(
        welcome["rooms"][0]["recovered"], true,
        "the oldest held is m4"
    );
    assert_eq!(offsets(&welcome["rooms"][0]["history"]), [4, 5, 6, 7, 8]);
}

#[actix_web::test]
async fn a_restart_without_redis_is_a_new_epoch() {
    let before = spawn_app().await;
    let (mut ana, welcome) = before.connect_ws("ana").await;
    say_all(&mut ana, "general", &["lost with the process"]).await;
    let old = welcome["rooms"][0]["epoch"].as_str().unwrap().to_string();

    let after = spawn_app().await;
    let (_, welcome) = after
        .connect_ws_with(&format!("?since=general:1:{old}"))
        .await;

    let joined = &welcome["rooms"][0];
    assert_ne!(joined["epoch"].as_str(), Some(old.as_str()));
    assert_eq!(
        (joined["recovered"].as_bool(), joined["offset"].as_u64()),
        (Some(false), Some(0))
    );
}

#[actix_web::test]
async fn bad_since_values_get_their_documented_answers() {
    let app = spawn_app().await;
    let frames = [
        (
            "since is a number",
            json!({"type": "join", "room": "ops", "since": 5}),
        ),
        (
            "a negative offset",
            json!({"type": "join", "room": "ops", "since": {"offset": -1, "epoch": "abc"}}),
        ),
        (
            "an offset as text",
            json!({"type": "join", "room": "ops", "since": {"offset": "7", "epoch": "abc"}}),
        ),
        (
            "no epoch",
            json!({"type": "join", "room": "ops", "since": {"offset": 7}}),
        ),
        (
            "an epoch with a space",
            json!({"type": "join", "room": "ops", "since": {"offset": 7, "epoch": "a b"}}),
        ),
    ];
    for (what, frame) in frames {
        let (mut client, _) = app.connect_ws("tester").await;
        client.send_text(&frame.to_string()).await;
        let error = client.next_event().await;
        assert_eq!(
            (error["type"].as_str(), error["code"].as_str()),
            (Some("error"), Some("bad_since")),
            "{what}: {error}"
        );
        client.say("still here").await;
        assert_eq!(
            client.next_event_of("echo").await["message"],
            "still here",
            "{what}"
        );
    }
    let queries = [
        ("no offset", "?since=general"),
        ("an offset that is not a number", "?since=general:x:abc"),
        ("a negative offset", "?since=general:-1:abc"),
        ("an empty epoch", "?since=general:1:"),
        ("a bad room", "?since=Gen:1:abc"),
    ];
    for (what, query) in queries {
        let (status, body) = app.get_json(&format!("/ws{query}")).await;
        assert_eq!(status, 400, "{what}: {body}");
        assert!(
            body["message"].as_str().unwrap().len() > 10,
            "{what}: {body}"
        );
    }
    // Well-formed but unknown: answered, not refused.
    let (_, welcome) = app.connect_ws_with("?since=never-used:4:abcdefgh").await;
    let joined = &welcome["rooms"][0];
    assert_eq!(
        (joined["room"].as_str(), joined["recovered"].as_bool()),
        (Some("never-used"), Some(false))
    );
    assert_eq!(joined["history"], json!([]));
}

#[actix_web::test]
async fn room_notices_are_stored_and_everyone_notices_are_not() {
    let app = spawn_app().await;
    let (mut ana, _) = app.connect_ws_in("ana", &["ops"]).await;

    app.post_notify_to("ops", "stored").await;
    app.post_notify("not stored").await;
    let notice = ana.next_event().await;
    assert_eq!(
        (notice["room"].as_str(), notice["offset"].as_u64()),
        (Some("ops"), Some(1))
    );
    let everyone = ana.next_event().await;
    assert!(everyone.get("offset").is_none(), "{everyone}");

    let (status, page) = app.get_json("/rooms/ops/history").await;
    assert_eq!(status, 200);
    assert_eq!(messages(&page["events"]), ["stored"]);
}

#[actix_web::test]
async fn the_history_route_pages_forwards_and_backwards() {
    let app = chatty_app().await;
    let (mut ana, _) = app.connect_ws("ana").await;
    let texts: Vec<String> = (1..=10).map(|n| format!("m{n}")).collect();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    say_all(&mut ana, "general", &texts).await;

    let page = |query: &'static str| {
        let app = &app;
        async move {
            app.get_json(&format!("/rooms/general/history{query}"))
                .await
        }
    };
    let (_, latest) = page("?limit=3").await;
    assert_eq!(offsets(&latest["events"]), [8, 9, 10]);
    assert_eq!(
        (latest["room"].as_str(), latest["offset"].as_u64()),
        (Some("general"), Some(10))
    );
    assert_eq!(latest["epoch"].as_str().map(str::len), Some(8));
    let (_, older) = page("?before=8&limit=3").await;
    assert_eq!(offsets(&older["events"]), [5, 6, 7]);
    let (_, newer) = page("?since=8").await;
    assert_eq!(offsets(&newer["events"]), [9, 10]);

    let bad = [
        ("/rooms/Bad/history", "a-z 0-9"),
        (
            "/rooms/general/history?limit=0",
            "limit must be from 1 to 100",
        ),
        (
            "/rooms/general/history?limit=101",
            "limit must be from 1 to 100",
        ),
        ("/rooms/general/history?since=1&before=3", "not both"),
        ("/rooms/general/history?since=x", "whole numbers"),
    ];
    for (path, says) in bad {
        let (status, body) = app.get_json(path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(says),
            "{path}: {body}"
        );
    }
}

#[actix_web::test]
async fn an_idle_history_expires_after_its_ttl() {
    let app = spawn_app_with(|c| c.history.ttl = Duration::from_secs(1)).await;
    let (mut ana, welcome) = app.connect_ws("ana").await;
    say_all(&mut ana, "general", &["soon gone"]).await;
    let old = welcome["rooms"][0]["epoch"].clone();

    let deadline = Instant::now() + WAIT;
    loop {
        let (_, page) = app.get_json("/rooms/general/history").await;
        if page["epoch"] != old {
            assert_eq!(
                (
                    page["offset"].as_u64(),
                    page["events"].as_array().map(Vec::len)
                ),
                (Some(0), Some(0))
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the history never expired: {page}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
