//! The replicas profile: two chatd behind nginx, relaying through Redis.

use std::time::Duration;

use crate::client::{connect_to_server, connect_ws, stored_offset, ws_url};
use crate::stack::container_test;

#[test]
fn clients_through_nginx_reach_both_replicas_and_a_stopped_one_sends_new_ones_to_the_other() {
    container_test(
        "replicas",
        Duration::from_secs(300),
        |mut stack| async move {
            // Arrange
            stack = stack.with_replicas();
            // A .env written for `cargo run` (loopback, a local Redis): the
            // compose file's pinned settings win, or nothing would relay.
            stack.write_env(
                "SHUTDOWN_TIMEOUT=5\nPERIODIC_NOTIFICATION=0\n\
                 API_HOST=127.0.0.1\nREDIS_URL=redis://127.0.0.1:6379/0",
            );
            stack.up().await;
            let a = stack.server_id("chatd-a", 1).await;
            let b = stack.server_id("chatd-b", 1).await;
            assert_ne!(a, b);
            let port = stack.proxy_port;

            // Act and assert: one client on each replica, chatting.
            let (mut ana, _) = connect_to_server(port, "ana", &a).await;
            let (mut bob, _) = connect_to_server(port, "bob", &b).await;
            ana.say("from a").await;
            bob.say("from b").await;
            for client in [&mut ana, &mut bob] {
                for echo in client.next_echoes_of(&["from a", "from b"]).await {
                    assert!(stored_offset(&echo).is_some(), "{echo}");
                }
            }

            // Act: stop chatd-a while ana is on it.
            let stop = async { stack.compose(&["stop", "chatd-a"]).await };
            let watch = async {
                let notice = ana.next_event_of("shutdown_notice").await;
                // While chatd-a drains, new connections go to chatd-b (chatd-a
                // answers 503 and nginx tries the other).
                let mut landed = Vec::new();
                for n in 0..4 {
                    let (client, welcome) =
                        connect_ws(&ws_url(port, &format!("?name=new{n}"))).await;
                    landed.push(welcome["server"].as_str().unwrap().to_string());
                    client.leave().await;
                }
                ana.leave().await;
                (notice, landed)
            };
            let (_, (notice, during_drain)) = tokio::join!(stop, watch);

            // Assert
            assert!(notice["retry_after_ms"].as_u64().is_some(), "{notice}");
            assert!(
            during_drain.iter().all(|server| *server == b),
            "while chatd-a ({a}) drained, connections went to {during_drain:?}, not only chatd-b ({b})"
        );
            let chatd_a = stack.inspect("chatd-a").await;
            assert_eq!(chatd_a["State"]["ExitCode"], 0, "{}", chatd_a["State"]);
            for n in 0..3 {
                let (client, welcome) = connect_ws(&ws_url(port, &format!("?name=after{n}"))).await;
                assert_eq!(
                    welcome["server"],
                    b.as_str(),
                    "after chatd-a stopped: {welcome}"
                );
                client.leave().await;
            }
            bob.say("still here").await;
            bob.next_echo_of("still here").await;
        },
    );
}
