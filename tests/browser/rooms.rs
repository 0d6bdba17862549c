//! Rooms on the chat page: each room its own message list, unread counts on
//! the rooms not open, the URL hash naming the open room, rooms remembered
//! across a reload, and the phone's two screens.
//!
//! "Nothing arrives" is checked without sleeping: after the messages that
//! must not show, a `POST /notify` to everyone is sent, and the hub delivers
//! in order, so once its pill is on a page anything sent before it would be
//! there too.

use crate::helpers::{In, Page, RoomEntry, Scheme, TestChat, ENTER};

/// Sends a notification to everyone and waits until every page shows it.
async fn barrier(chat: &TestChat, pages: &[&Page], text: &str) {
    assert_eq!(chat.post_notify(text).await, 200);
    for page in pages {
        page.wait_for_pill(text).await;
    }
}

#[actix_web::test]
async fn pages_in_two_rooms_see_only_their_own_room_s_messages() {
    let Some(mut chat) = TestChat::start() else {
        return;
    };
    let ana = chat.open_chat_as("Ana").await;
    let bob = chat.open_chat_as("Bob").await;
    ana.join_room("ops").await;
    ana.leave_room("general").await;
    bob.join_room("dev").await;
    bob.leave_room("general").await;

    ana.say("only for ops").await;
    ana.wait_for_bubble_in(In::Room("ops"), "only for ops")
        .await;
    bob.say("only for dev").await;
    bob.wait_for_bubble_in(In::Room("dev"), "only for dev")
        .await;
    barrier(&chat, &[&ana, &bob], "barrier").await;

    assert_eq!(bob.rows_anywhere_containing("only for ops").await, 0);
    assert_eq!(ana.rows_anywhere_containing("only for dev").await, 0);
    let names = |rooms: Vec<RoomEntry>| rooms.into_iter().map(|r| r.name).collect::<Vec<_>>();
    assert_eq!(names(ana.rooms().await), ["ops"]);
    assert_eq!(names(bob.rooms().await), ["dev"]);
    ana.close().await;
    bob.close().await;
}

#[actix_web::test]
async fn a_page_in_two_rooms_sees_both_and_counts_unread_on_the_room_not_open() {
    let Some(mut chat) = TestChat::start() else {
        return;
    };
    let ana = chat.open_chat_as("Ana").await;
    let bob = chat.open_chat_as("Bob").await;
    ana.join_room("ops").await;
    bob.join_room("ops").await;
    ana.click_room("general").await;

    bob.say("deploy is green").await;
    bob.say("rolling out now").await;
    ana.wait_for_bubble_in(In::Room("ops"), "rolling out now")
        .await;

    let ops = ana.room("ops").await;
    assert_eq!(ops.unread, 2, "two unread in the room not open: {ops:?}");
    assert_eq!(ops.preview, "Bob: rolling out now");
    assert!(!ops.active);
    let general = ana.room("general").await;
    assert!(general.active && general.unread == 0, "{general:?}");
    assert!(
        ana.bubbles().await.is_empty(),
        "general, the open room, shows no ops message"
    );

    bob.click_room("general").await;
    bob.say("hello general").await;
    let bubble = ana.wait_for_bubble("hello general").await;
    assert_eq!(bubble.who, "Bob");
    assert_eq!(
        ana.room("general").await.unread,
        0,
        "the open room counts nothing"
    );

    ana.click_room("ops").await;
    let texts: Vec<String> = ana.bubbles().await.into_iter().map(|b| b.text).collect();
    assert_eq!(texts, ["deploy is green", "rolling out now"]);
    let ops = ana.room("ops").await;
    assert!(
        ops.active && ops.unread == 0,
        "opening a room reads it: {ops:?}"
    );
    ana.say("thanks").await;
    bob.wait_for_bubble_in(In::Room("ops"), "thanks").await;
    assert_eq!(bob.room("ops").await.unread, 1);
    ana.close().await;
    bob.close().await;
}

#[actix_web::test]
async fn a_room_notification_shows_only_in_that_room_and_one_for_everyone_in_the_open_room() {
    let Some(mut chat) = TestChat::start() else {
        return;
    };
    let ana = chat.open_chat_as("Ana").await;
    let bob = chat.open_chat_as("Bob").await;
    ana.join_room("ops").await;
    ana.click_room("general").await;

    assert_eq!(chat.post_notify_in("ops", "ops: pager test").await, 200);

    ana.wait_for_pill_in(In::Room("ops"), "ops: pager test")
        .await;
    let ops = ana.room("ops").await;
    assert_eq!((ops.unread, ops.preview.as_str()), (1, "ops: pager test"));
    barrier(&chat, &[&ana, &bob], "for everyone").await;
    assert_eq!(
        ana.rows_anywhere_containing("ops: pager test").await,
        1,
        "only in ops"
    );
    assert_eq!(bob.rows_anywhere_containing("ops: pager test").await, 0);
    assert_eq!(
        ana.rows_anywhere_containing("for everyone").await,
        1,
        "a notification without a room shows once, in the open room"
    );
    ana.close().await;
    bob.close().await;
}

#[actix_web::test]
async fn a_link_to_a_room_opens_it_joining_it_and_changing_the_hash_switches_rooms() {
    let Some(mut chat) = TestChat::start() else {
        return;
    };
    let ana = chat.open_chat_at("/#ops").await;
    ana.wait_for_open_room("ops").await;
    let bob = chat.open_chat_at("/#ops").await;
    bob.wait_for_open_room("ops").await;

    ana.say("came in through a link").await;
    let bubble = bob.wait_for_bubble("came in through a link").await;
    assert!(!bubble.own);

    bob.set_hash("dev").await;
    bob.wait_for_open_room("dev").await;
    let names: Vec<String> = bob.rooms().await.into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["ops", "dev"], "a link joins that room only");
    assert!(bob.bubbles().await.is_empty(), "dev has its own empty list");
    bob.set_hash("ops").await;
    bob.wait_for_open_room("ops").await;
    bob.wait_for_bubble("came in through a link").await;
    let hash = bob.eval("return location.hash;").await;
    assert_eq!(hash, "#ops");
    bob.click_room("dev").await;
    let hash = bob.eval("return location.hash;").await;
    assert_eq!(hash, "#dev", "the hash names the open room");
    ana.close().await;
    bob.close().await;
}

#[actix_web::test]
async fn joined_rooms_are_remembered_across_a_reload_and_left_rooms_stay_left() {
    let Some(mut chat) = TestChat::start() else {
        return;
    };
    let ana = chat.open_chat_as("Ana").await;
    ana.join_room("ops").await;
    ana.join_room("release-1.4").await;
    ana.leave_room("general").await;
    let stored = ana
        .eval("return localStorage.getItem('chatd.rooms');")
        .await;
    assert_eq!(stored, r#"["ops","release-1.4"]"#);

    ana.reload().await;
    ana.wait_for_pill("You joined as Ana").await;
    ana.wait_for_state("connected").await;
    // Leaving general (open at the time) opened the first room left, ops.
    ana.wait_for_open_room("ops").await;

    let names: Vec<String> = ana.rooms().await.into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["ops", "release-1.4"], "general stays left");
    let bob = chat.open_chat_at("/#ops").await;
    bob.wait_for_open_room("ops").await;
    bob.say("still there?").await;
    ana.wait_for_bubble("still there?").await;
    bob.set_hash("release-1.4").await;
    bob.wait_for_open_room("release-1.4").await;
    bob.say("and here?").await;
    ana.wait_for_bubble_in(In::Room("release-1.4"), "and here?")
        .await;
    assert_eq!(
        ana.room("release-1.4").await.unread,
        1,
        "rejoined on connect, and counted while not open"
    );

    // A reconnect (here: a new name) starts in every room it is in.
    ana.eval(
        "const Real = window.WebSocket; window.wsUrls = []; \
         window.WebSocket = function (url) { window.wsUrls.push(url); return new Real(url); }; \
         window.WebSocket.OPEN = Real.OPEN; return true;",
    )
    .await;
    ana.set_name("Ana B").await;
    // (Clearing the field first reconnected once without a name.)
    let url = ana.eval("return window.wsUrls.pop();").await;
    let url = url.as_str().expect("the page connected again");
    // Each room it has seen resumes after its last message: since=R:N:E.
    let (_, query) = url.split_once("/ws?").expect("a /ws URL with a query");
    let params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    assert_eq!(params.len(), 3, "{url}");
    assert_eq!(params[0], ("name".into(), "Ana B".into()), "{url}");
    for ((key, value), room) in params[1..].iter().zip(["ops", "release-1.4"]) {
        let parts: Vec<&str> = value.split(':').collect();
        assert!(
            key == "since"
                && parts.len() == 3
                && parts[0] == room
                && parts[1].parse::<u64>().is_ok()
                && !parts[2].is_empty()
                && parts[2].chars().all(|c| c.is_ascii_alphanumeric()),
            "{room} resumes with since={room}:N:EPOCH: {url}"
        );
    }

    ana.leave_room("ops").await;
    ana.leave_room("release-1.4").await;
    ana.reload().await;
    ana.wait_for_pill("You joined as Ana B").await;
    assert!(ana.rooms().await.is_empty(), "no room, even after a reload");
    let empty = ana
        .eval(
            "return [!document.getElementById('no-rooms').hidden, \
             document.getElementById('text').disabled];",
        )
        .await;
    assert_eq!(
        empty,
        serde_json::json!([true, true]),
        "the empty state shows"
    );
    ana.join_room("general").await;
    ana.close().await;
    bob.close().await;
}

#[actix_web::test]
async fn a_room_name_that_breaks_the_rule_is_refused_with_the_rule() {
    let Some(mut chat) = TestChat::start() else {
        return;
    };
    let page = chat.open_chat().await;

    for (typed, says) in [
        ("Ops", "lowercase: try “ops”"),
        ("team chat", "no spaces: try “team-chat”"),
        ("ops!", "only a-z, 0-9 and - _ . :"),
        (&"x".repeat(65), "at most 64 characters"),
    ] {
        page.type_into_room_field(&format!("{typed}{}", ENTER))
            .await;
        let hint = page
            .eval("return document.getElementById('join-hint').textContent;")
            .await;
        assert!(
            hint.as_str().is_some_and(|h| h.contains(says)),
            "{typed:?}: the hint says {says:?}, got {hint}"
        );
        let names: Vec<String> = page.rooms().await.into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["general"], "{typed:?} joined nothing");
    }
    page.join_room("a-z_0.9:ok").await;
    let hint = page
        .eval("return document.getElementById('join-hint').textContent;")
        .await;
    assert_eq!(hint, "", "a good name clears the hint");
    page.close().await;
}

#[actix_web::test]
async fn on_a_phone_the_room_list_and_the_chat_are_two_screens() {
    let Some(mut chat) = TestChat::start() else {
        return;
    };
    let page = chat.open_chat_with(Scheme::Light, (390, 760)).await;
    page.wait_for_state("connected").await;
    let screens = "return ['.side', '.conversation'].map((s) => \
                   getComputedStyle(document.querySelector(s)).display !== 'none');";
    page.wait_until("!!roomLink('general')", "general in the room list")
        .await;
    assert_eq!(
        page.eval(screens).await,
        serde_json::json!([true, false]),
        "the list first"
    );

    page.click_room("general").await;
    assert_eq!(
        page.eval(screens).await,
        serde_json::json!([false, true]),
        "then the chat"
    );
    page.say("from my phone").await;
    page.wait_for_bubble("from my phone").await;

    page.find_and_click("#back").await;
    page.wait_until(
        "getComputedStyle(document.querySelector('.side')).display !== 'none'",
        "the list again",
    )
    .await;
    assert_eq!(page.eval(screens).await, serde_json::json!([true, false]));
    assert_eq!(page.room("general").await.preview, "You: from my phone");
    page.close().await;
}

#[actix_web::test]
async fn a_join_the_server_refuses_is_dropped_and_its_reason_shown() {
    let Some(mut chat) = TestChat::start_with(&[("MAX_ROOMS_PER_CONNECTION", "2")]) else {
        return;
    };
    let page = chat.open_chat().await;
    page.join_room("ops").await;

    page.type_into_room_field(&format!("dev{ENTER}")).await;

    page.wait_for_pill("dev: a connection may be in at most 2 rooms")
        .await;
    let hint = page
        .eval("return document.getElementById('join-hint').textContent;")
        .await;
    assert!(
        hint.as_str().is_some_and(|h| h.contains("at most 2 rooms")),
        "the server's reason is shown by the field: {hint}"
    );
    let names: Vec<String> = page.rooms().await.into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["general", "ops"], "dev is dropped");
    let stored = page
        .eval("return localStorage.getItem('chatd.rooms');")
        .await;
    assert_eq!(stored, r#"["general","ops"]"#, "and not remembered");
    page.wait_for_open_room("general").await;

    // Remembered from a server that allowed more: /ws?room=… with three
    // rooms is a 400 here, so the page names fewer and joins the rest.
    page.eval("localStorage.setItem('chatd.rooms', '[\"general\",\"ops\",\"dev\"]'); return true;")
        .await;
    page.reload().await;
    page.wait_for_pill("dev: a connection may be in at most 2 rooms")
        .await;
    let names: Vec<String> = page.rooms().await.into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["general", "ops"]);
    page.close().await;
}
