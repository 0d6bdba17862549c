//! Rooms on one process: starting rooms, join and leave, isolation, room
//! notices, `GET /rooms`, and every room error over a real socket.

use serde_json::{json, Value};

use crate::helpers::{rooms_query, spawn_app, spawn_app_with, WsClient};

/// Says `text` in `room` and waits for the sender's own echo.
async fn say_and_confirm(client: &mut WsClient, room: &str, text: &str) -> Value {
    client.say_in(room, text).await;
    let echo = client.next_event_of("echo").await;
    assert_eq!(
        (echo["room"].as_str(), echo["message"].as_str()),
        (Some(room), Some(text))
    );
    echo
}

#[actix_web::test]
async fn a_client_that_names_no_room_is_in_general_and_its_welcome_says_so() {
    let app = spawn_app().await;

    let (mut ana, welcome) = app.connect_ws("ana").await;

    let joined = &welcome["rooms"][0];
    assert_eq!(
        welcome["rooms"],
        json!([{"type": "joined", "room": "general", "epoch": joined["epoch"], "offset": 0,
                "members": 1, "history": [], "ts": joined["ts"]}])
    );
    assert_eq!(joined["epoch"].as_str().map(str::len), Some(8), "{joined}");
    let echo = say_and_confirm(&mut ana, "general", "hello").await;
    assert_eq!(echo["from"]["name"], "ana");
}

#[actix_web::test]
async fn starting_rooms_come_from_the_query_and_a_message_reaches_only_its_room() {
    let app = spawn_app().await;
    let (mut ana, welcome) = app.connect_ws_in("ana", &["ops", "dev", "ops"]).await;
    let (mut bo, _) = app.connect_ws_in("bo", &["ops"]).await;
    let (mut cy, _) = app.connect_ws_in("cy", &["dev"]).await;
    let (mut dee, _) = app.connect_ws("dee").await;

    let rooms: Vec<&str> = welcome["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["room"].as_str().unwrap())
        .collect();
    assert_eq!(rooms, ["ops", "dev"], "in the order given, without repeats");
    say_and_confirm(&mut ana, "ops", "to ops").await;

    assert_eq!(bo.next_event().await["message"], "to ops");
    cy.expect_silence().await;
    dee.expect_silence().await;
    say_and_confirm(&mut cy, "dev", "to dev").await;
    assert_eq!(ana.next_event().await["message"], "to dev");
    bo.expect_silence().await;
}

#[actix_web::test]
async fn join_and_leave_are_answered_and_change_what_arrives() {
    let app = spawn_app().await;
    let (mut ana, _) = app.connect_ws("ana").await;
    let (mut bo, _) = app.connect_ws_in("bo", &["ops"]).await;

    let joined = ana.join("ops").await;
    assert_eq!(joined["members"], 2, "{joined}");
    assert!(joined["ts"].as_u64().is_some());
    say_and_confirm(&mut bo, "ops", "welcome ana").await;
    assert_eq!(ana.next_event().await["message"], "welcome ana");
    let again = ana.join("ops").await;
    assert_eq!(again["members"], 2, "joining twice is still one member");

    ana.leave_room("ops").await;
    say_and_confirm(&mut bo, "ops", "after ana left").await;
    ana.expect_silence().await;
    // Still in general, as before.
    say_and_confirm(&mut ana, "general", "still here").await;
}

#[actix_web::test]
async fn every_room_error_gets_its_code_and_the_connection_stays_open() {
    let app = spawn_app_with(|c| c.limits.max_rooms_per_connection = 3).await;
    let long = "r".repeat(65);
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            "an uppercase room",
            json!({"type": "join", "room": "Ops"}),
            "bad_room",
            "a-z 0-9 - _ . :",
        ),
        (
            "a room with a space",
            json!({"type": "join", "room": "my room"}),
            "bad_room",
            "a-z 0-9 - _ . :",
        ),
        (
            "an empty room",
            json!({"type": "join", "room": ""}),
            "bad_room",
            "room name is empty",
        ),
        (
            "a room over 64 characters",
            json!({"type": "join", "room": long}),
            "bad_room",
            "65 characters",
        ),
        (
            "a number as room",
            json!({"type": "join", "room": 7}),
            "bad_room",
            "must be a string",
        ),
        (
            "a join without room",
            json!({"type": "join"}),
            "bad_room",
            "\"join\" needs a \"room\"",
        ),
        (
            "a leave without room",
            json!({"type": "leave"}),
            "bad_room",
            "\"leave\" needs a \"room\"",
        ),
        (
            "leaving a room it is not in",
            json!({"type": "leave", "room": "ops"}),
            "not_a_member",
            "not a member of room \"ops\"",
        ),
        (
            "speaking in a room it is not in",
            json!({"type": "message", "room": "ops", "message": "hi"}),
            "not_a_member",
            "join it first",
        ),
        (
            "speaking in a bad room",
            json!({"type": "message", "room": "OPS", "message": "hi"}),
            "bad_room",
            "a-z 0-9",
        ),
        (
            "a join past the limit",
            json!({"type": "join", "room": "fourth"}),
            "too_many_rooms",
            "at most 3 rooms",
        ),
    ];
    for (what, frame, code, says) in cases {
        let (mut client, _) = app.connect_ws_in("tester", &["general", "a", "b"]).await;

        client.send_text(&frame.to_string()).await;

        let event = client.next_event().await;
        assert_eq!(
            (event["type"].as_str(), event["code"].as_str()),
            (Some("error"), Some(code)),
            "{what}: {event}"
        );
        let message = event["message"].as_str().unwrap();
        assert!(
            message.contains(says),
            "{what}: {message:?} should say {says:?}"
        );
        say_and_confirm(&mut client, "a", "still here").await;
        client.leave().await;
    }
}

#[actix_web::test]
async fn a_bad_starting_room_or_too_many_are_refused_before_the_upgrade() {
    let app = spawn_app_with(|c| c.limits.max_rooms_per_connection = 2).await;
    let cases = [
        ("an uppercase room", "?room=Ops", "a-z 0-9 - _ . :"),
        ("an empty room", "?room=", "room name is empty"),
        ("a slash", "?room=a%2Fb", "a-z 0-9"),
        (
            "three rooms past a limit of two",
            "?room=a&room=b&room=c",
            "at most 2 rooms",
        ),
    ];
    for (what, query, says) in cases {
        let (status, body) = app.get_json(&format!("/ws{query}")).await;

        assert_eq!(status, 400, "{what}: {body}");
        assert_eq!(body["status"], "error", "{what}");
        assert!(
            body["message"].as_str().unwrap().contains(says),
            "{what}: {body}"
        );
    }
    let (_, welcome) = app.connect_ws_in("ok", &["a", "b"]).await;
    assert_eq!(welcome["rooms"].as_array().unwrap().len(), 2);
}

#[actix_web::test]
async fn a_notice_to_a_room_reaches_only_its_members_and_counts_them() {
    let app = spawn_app().await;
    let (mut ana, _) = app.connect_ws_in("ana", &["ops"]).await;
    let (mut bo, _) = app.connect_ws_in("bo", &["ops", "dev"]).await;
    let (mut cy, _) = app.connect_ws("cy").await;

    let (status, body) = app.post_notify_to("ops", "ops only").await;

    assert_eq!(
        (status, body),
        (
            200,
            json!({"status": "success", "message": "Notification sent to 2 clients"})
        )
    );
    for client in [&mut ana, &mut bo] {
        let notice = client.next_event().await;
        assert_eq!(
            (
                notice["type"].as_str(),
                notice["room"].as_str(),
                notice["message"].as_str()
            ),
            (Some("notification"), Some("ops"), Some("ops only"))
        );
    }
    cy.expect_silence().await;
    let (_, body) = app.post_notify("everyone").await;
    assert_eq!(body["message"], "Notification sent to 3 clients");
    let everyone = cy.next_event().await;
    assert!(
        everyone.get("room").is_none(),
        "an everyone-notice names no room: {everyone}"
    );
}

#[actix_web::test]
async fn notify_to_an_unknown_room_sends_to_nobody_and_a_bad_room_is_a_400() {
    let app = spawn_app().await;
    let (mut ana, _) = app.connect_ws("ana").await;

    let (status, body) = app.post_notify_to("nobody-here", "hello?").await;
    assert_eq!(
        (status, body["message"].as_str()),
        (200, Some("Notification sent to 0 clients"))
    );
    ana.expect_silence().await;

    let (status, body) = app.post_notify_to("Bad Room", "x").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("a-z 0-9"),
        "{body}"
    );

    let mut response = app
        .http
        .post(app.url("/notify"))
        .send_json(&json!({"message": "by body", "room": "general"}))
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["message"], "Notification sent to 1 clients");
    assert_eq!(ana.next_event().await["room"], "general");
    let mut response = app
        .http
        .post(app.url("/notify"))
        .send_json(&json!({"message": "x", "room": 5}))
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["message"], "\"room\" must be a string");
}

#[actix_web::test]
async fn rooms_are_listed_while_they_have_members() {
    let app = spawn_app().await;
    assert!(app.rooms().await.is_empty());
    let (ana, _) = app.connect_ws_in("ana", &["ops", "dev"]).await;
    let (mut bo, _) = app.connect_ws_in("bo", &["ops"]).await;

    assert_eq!(
        app.rooms().await,
        [("dev".to_string(), 1), ("ops".to_string(), 2)].into()
    );
    bo.join("general").await;
    bo.leave_room("ops").await;
    assert_eq!(
        app.rooms().await,
        [
            ("dev".to_string(), 1),
            ("general".to_string(), 1),
            ("ops".to_string(), 1)
        ]
        .into()
    );
    ana.leave().await;
    bo.leave().await;
    app.wait_for_connections(0).await;
    assert!(app.rooms().await.is_empty());
}

#[actix_web::test]
async fn a_client_in_fifty_rooms_that_disconnects_leaves_all_of_them() {
    let app = spawn_app().await;
    let names: Vec<String> = (0..50).map(|n| format!("room-{n}")).collect();
    let rooms: Vec<&str> = names.iter().map(String::as_str).collect();
    let (client, welcome) = app.connect_ws_in("many", &rooms).await;
    assert_eq!(welcome["rooms"].as_array().unwrap().len(), 50);
    assert_eq!(app.rooms().await.len(), 50);

    client.leave().await;
    app.wait_for_connections(0).await;

    assert!(app.rooms().await.is_empty());
}

#[actix_web::test]
async fn joining_and_leaving_a_thousand_times_leaves_nothing_behind() {
    let app = spawn_app_with(|c| {
        c.limits.rate_per_second = 100_000;
        c.limits.rate_burst = 100_000;
    })
    .await;
    let (mut churner, _) = app.connect_ws("churner").await;
    let (mut watcher, _) = app.connect_ws_in("watcher", &["steady"]).await;

    for n in 0..1000 {
        let room = format!("churn-{}", n % 10);
        churner.join(&room).await;
        churner.leave_room(&room).await;
    }

    assert_eq!(
        app.rooms().await,
        [("general".to_string(), 1), ("steady".to_string(), 1)].into()
    );
    say_and_confirm(&mut watcher, "steady", "still fine").await;
    say_and_confirm(&mut churner, "general", "and me").await;
}

#[actix_web::test]
async fn v1_clients_and_room_clients_share_general() {
    let app = spawn_app().await;
    let (mut v1, _) = app.connect_ws("old").await;
    let (mut v2, _) = app.connect_ws_in("new", &["general", "ops"]).await;

    v1.say("from v1").await;
    let echo = v2.next_event_of("echo").await;
    assert_eq!(
        (echo["room"].as_str(), echo["message"].as_str()),
        (Some("general"), Some("from v1"))
    );
    v2.say_in("general", "from v2").await;
    let seen = v1.next_event_of("echo").await;
    assert_eq!(seen["message"], "from v1");
    assert_eq!(v1.next_event_of("echo").await["message"], "from v2");
}

/// Keeps the query helper honest: it is what the browser page sends too.
#[test]
fn the_rooms_query_repeats_room() {
    assert_eq!(rooms_query("ana", &["a", "b"]), "?name=ana&room=a&room=b");
}
