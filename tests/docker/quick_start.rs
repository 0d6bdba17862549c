//! The README's quick start, word for word, from a fresh checkout.

use std::time::Duration;

use crate::client::{connect_ws, http, http_json, stored_offset, ws_url};
use crate::stack::container_test;

#[test]
fn the_quick_start_from_a_fresh_checkout_chats_notifies_and_serves_the_page() {
    container_test(
        "quick-start",
        Duration::from_secs(300),
        |mut stack| async move {
            // Act: the README's command, in a checkout without .env (compose
            // finds docker/compose.yml through the COMPOSE_FILE of .env).
            stack
                .start(Some("cp .env.example .env && docker compose up -d"))
                .await;
            stack.wait_healthy(&["redis", "chatd"]).await;

            // Assert: chat through the published port, Redis behind it.
            let port = stack.api_port;
            let (mut ana, welcome) = connect_ws(&ws_url(port, "?name=ana")).await;
            let (mut bob, _) = connect_ws(&ws_url(port, "?name=bob")).await;
            assert_eq!(welcome["name"], "ana", "{welcome}");
            ana.say("hello from a container").await;
            for client in [&mut ana, &mut bob] {
                let echo = client.next_echo_of("hello from a container").await;
                assert_eq!(echo["from"]["name"], "ana", "{echo}");
                assert!(stored_offset(&echo).is_some(), "stored in Redis: {echo}");
            }

            let (status, answer) = http_json("POST", port, "/notify?message=hi%20all").await;
            assert_eq!(status, 200, "{answer}");
            assert_eq!(
                answer["message"], "Notification sent to 2 clients",
                "{answer}"
            );
            // (.env.example's periodic notification may come first.)
            bob.next_event_where("the notification", |event| {
                event["type"] == "notification" && event["message"] == "hi all"
            })
            .await;

            let (status, page) = http("GET", port, "/").await;
            assert_eq!(status, 200, "{page}");
            assert!(page.contains("<html"), "the chat page: {page}");
            let (status, state) = http_json("GET", port, "/status").await;
            assert_eq!(status, 200, "{state}");
            assert_eq!(state["redis"]["state"], "connected", "{state}");

            // The image runs chatd as its own user, healthy by `chatd healthcheck`.
            let uid = stack.compose(&["exec", "-T", "chatd", "id", "-u"]).await;
            assert_eq!(uid.trim(), "10001");
            let chatd = stack.inspect("chatd").await;
            assert_eq!(chatd["State"]["Health"]["Status"], "healthy", "{chatd}");
        },
    );
}
