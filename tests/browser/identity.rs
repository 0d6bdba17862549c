//! Who is who on the chat page: signing in with a token (from a `/#token=…`
//! link, kept in localStorage, refused with the server's reason, running
//! out and renewed), the member list with online dots, and "… is typing".
//! Tokens are HS256, signed in the test with the secret chatd is started
//! with, as the application in front of chatd would sign them.

use std::time::{Duration, Instant};

use crate::helpers::{expired_token, token, token_for_rooms, unix_now, TestChat, WAIT};

#[actix_web::test]
async fn a_sign_in_link_shows_who_you_are_and_leaves_no_token_in_the_address_bar() {
    let Some(mut chat) = TestChat::start_with_tokens() else {
        return;
    };
    let ana = token("u-ana", "Ana Lima", Duration::from_secs(3600));

    let page = chat.open_signed_in_link(Some("ops"), &ana).await;

    page.wait_for_state("connected").await;
    page.wait_for_open_room("ops").await;
    assert_eq!(page.identity().await, ("Ana Lima".to_string(), true));
    let address = page.address().await;
    assert!(
        address.ends_with("/#ops") && !address.contains("token"),
        "the token left the address bar, the room stayed: {address}"
    );
    let mode = page.eval("return document.body.dataset.auth;").await;
    assert_eq!(mode, "on", "the server says it wants tokens");
    page.say("signed message").await;
    let bubble = page.wait_for_bubble("signed message").await;
    assert!(bubble.own, "the user's own message: {bubble:?}");

    // A reload finds the token where the page kept it.
    page.reload().await;
    page.wait_for_pill("You joined as Ana Lima").await;
    page.wait_for_state("connected").await;
    assert_eq!(page.identity().await, ("Ana Lima".to_string(), true));
    page.close().await;
}

#[actix_web::test]
async fn two_signed_in_users_see_each_other_online_and_typing() {
    let Some(mut chat) = TestChat::start_with_tokens() else {
        return;
    };
    let ana = chat.open_chat_signed_in("u-ana", "Ana").await;
    let bob = chat.open_chat_signed_in("u-bob", "Bob").await;

    ana.wait_for_members(&["Ana (you)", "Bob"]).await;
    bob.wait_for_members(&["Bob (you)", "Ana"]).await;

    ana.type_into_composer("hel").await;

    bob.wait_for_typing("Ana is typing…").await;
    assert_eq!(ana.typing_line().await, "", "not shown for yourself");
    // Without another `typing` it goes away by itself.
    bob.wait_until(
        "document.getElementById('typing').hidden",
        "the typing line to go away",
    )
    .await;

    // A second tab of Ana's is still one Ana, and she stays while one is open.
    let ana_again = chat.open_chat_signed_in("u-ana", "Ana").await;
    ana_again.wait_for_members(&["Ana (you)", "Bob"]).await;
    assert_eq!(bob.members().await, ["Bob (you)", "Ana"]);
    ana.close().await;
    chat.wait_for_connections("general", "u-ana", 1).await;
    // Presence diffs go out once a second: a leave would be here by now.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(bob.members().await, ["Bob (you)", "Ana"]);

    ana_again.close().await;
    bob.wait_for_members(&["Bob (you)"]).await;
    bob.close().await;
}

#[actix_web::test]
async fn a_refused_token_is_shown_with_the_server_s_reason_and_not_retried() {
    let Some(mut chat) = TestChat::start_with_tokens() else {
        return;
    };

    let page = chat
        .open_signed_in_link(None, &expired_token("u-ana", "Ana"))
        .await;

    page.wait_for_pill("Not signed in: the token has expired")
        .await;
    page.wait_for_token_request("the token has expired").await;
    let state = page
        .eval("return document.getElementById('state').textContent;")
        .await;
    assert_eq!(state, "not signed in");
    let stored = page
        .eval("return localStorage.getItem('chatd.token');")
        .await;
    assert_eq!(
        stored,
        serde_json::Value::Null,
        "a refused token is dropped"
    );
    // No retry loop: the one attempt stays the only one. (A short wait that
    // must pass quietly; the first retry would be due within half a second.)
    let probes = "performance.getEntriesByType('resource')\
        .filter((e) => new URL(e.name).pathname === '/ws').length";
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(page.eval(&format!("return {probes};")).await, 1);

    // A good token pasted into the field signs in.
    page.paste_token(&token("u-ana", "Ana", Duration::from_secs(3600)))
        .await;

    page.wait_for_state("connected").await;
    page.wait_for_pill("as Ana").await;
    assert_eq!(page.identity().await, ("Ana".to_string(), true));
    page.close().await;
}

#[actix_web::test]
async fn a_page_without_a_token_asks_for_one_and_a_link_followed_later_signs_in() {
    let Some(mut chat) = TestChat::start_with_tokens() else {
        return;
    };

    let page = chat.open_page("/").await;

    page.wait_for_token_request("needs a sign-in token").await;
    let (_, name_hidden) = page.identity().await;
    assert!(name_hidden, "no name field: the token names the user");

    // Following a sign-in link in the same tab signs in.
    let ana = token("u-ana", "Ana", Duration::from_secs(3600));
    page.eval(&format!("location.hash = 'token={ana}'; return true;"))
        .await;
    page.wait_for_state("connected").await;
    assert_eq!(page.identity().await, ("Ana".to_string(), true));
    assert!(!page.address().await.contains("token"));
    page.close().await;
}

#[actix_web::test]
async fn an_expiring_session_is_renewed_with_a_new_token_and_stays_connected() {
    let Some(mut chat) = TestChat::start_with_tokens() else {
        return;
    };
    // Inside the 30 s warning from the start.
    let short = token("u-ana", "Ana", Duration::from_secs(6));
    let exp = unix_now() + 6;
    let page = chat.open_signed_in_link(None, &short).await;
    page.wait_for_state("connected").await;

    page.wait_for_pill("Your session ends in").await;
    page.wait_for_token_request("Your session ends in").await;
    page.paste_token(&token("u-ana", "Ana", Duration::from_secs(3600)))
        .await;

    // Past the old expiry (and the server's leeway), the page is still on.
    wait_until_unix(exp + 2).await;
    assert_eq!(chat.post_notify("still here").await, 200);
    page.wait_for_pill("still here").await;
    assert_eq!(page.rows_anywhere_containing("session expired").await, 0);
    page.wait_for_state("connected").await;
    page.close().await;
}

#[actix_web::test]
async fn at_expiry_the_page_says_the_session_expired_and_a_new_token_signs_in_again() {
    let Some(mut chat) = TestChat::start_with_tokens() else {
        return;
    };
    let page = chat
        .open_signed_in_link(None, &token("u-ana", "Ana", Duration::from_secs(4)))
        .await;
    page.wait_for_state("connected").await;

    page.wait_for_pill("Your session expired.").await;

    page.wait_for_token_request("Your session expired.").await;
    let state = page
        .eval("return document.getElementById('state').textContent;")
        .await;
    assert_eq!(state, "session expired", "stopped, not reconnecting");
    page.paste_token(&token("u-ana", "Ana", Duration::from_secs(3600)))
        .await;
    page.wait_for_pill("Reconnected as Ana").await;
    page.wait_for_state("connected").await;
    page.close().await;
}

#[actix_web::test]
async fn a_join_outside_the_token_s_rooms_is_refused_and_the_room_dropped() {
    let Some(mut chat) = TestChat::start_with_tokens() else {
        return;
    };
    let limited = token_for_rooms("u-ana", "Ana", &["general"]);

    // The link names a room the token does not allow.
    let page = chat.open_signed_in_link(Some("ops"), &limited).await;

    page.wait_for_state("connected").await;
    page.wait_for_pill("ops: ").await;
    page.wait_for_open_room("general").await;
    let rooms: Vec<String> = page.rooms().await.into_iter().map(|r| r.name).collect();
    assert_eq!(rooms, ["general"], "ops is dropped");
    page.close().await;
}

#[actix_web::test]
async fn in_open_mode_the_member_list_shows_the_connected_pages() {
    let Some(mut chat) = TestChat::start() else {
        return;
    };
    let ana = chat.open_chat_as("Ana").await;
    let bob = chat.open_chat_as("Bob").await;

    ana.wait_for_members(&["Ana (you)", "Bob"]).await;
    bob.wait_for_members(&["Bob (you)", "Ana"]).await;
    let (_, name_hidden) = ana.identity().await;
    assert!(!name_hidden, "the name field as before");
    let mode = ana.eval("return document.body.dataset.auth;").await;
    assert_eq!(mode, "off");

    bob.type_into_composer("x").await;
    ana.wait_for_typing("Bob is typing…").await;

    bob.close().await;
    ana.wait_for_members(&["Ana (you)"]).await;
    ana.close().await;
}

/// Waits (bounded) until the clock reaches `unix` seconds.
async fn wait_until_unix(unix: u64) {
    let deadline = Instant::now() + WAIT;
    while unix_now() < unix {
        assert!(Instant::now() < deadline, "the clock stood still");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
