//! A network fault: one replica cut off from Redis (`docker network
//! disconnect`) while Redis and the other replica stay up.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::client::{connect_to_server, connect_ws, stored_offset, ws_url};
use crate::stack::container_test;

#[test]
fn a_replica_cut_off_from_redis_keeps_its_clients_and_they_recover_what_they_missed() {
    container_test(
        "network-fault",
        Duration::from_secs(300),
        |mut stack| async move {
            // Arrange: ana on chatd-a, bob on chatd-b, one stored message seen.
            stack = stack.with_replicas();
            stack.write_env("SHUTDOWN_TIMEOUT=5\nPERIODIC_NOTIFICATION=0");
            stack.up().await;
            let a = stack.server_id("chatd-a", 1).await;
            let b = stack.server_id("chatd-b", 1).await;
            let port = stack.proxy_port;
            let (mut ana, welcome) = connect_to_server(port, "ana", &a).await;
            let (mut bob, _) = connect_to_server(port, "bob", &b).await;
            let epoch = welcome["rooms"][0]["epoch"].as_str().unwrap().to_string();
            bob.say("before").await;
            let last_seen =
                stored_offset(&ana.next_echo_of("before").await).expect("stored before the fault");
            bob.next_echo_of("before").await;

            // Act: cut chatd-a off from Redis; its clients stay connected.
            let store = format!("{}_store", stack.project);
            let chatd_a = stack.container("chatd-a").await;
            stack
                .docker(&["network", "disconnect", &store, &chatd_a])
                .await;
            stack
                .wait_for_log("chatd-a", "redis connection lost", 1)
                .await;
            let (from_b, from_a) = (["b1", "b2", "b3", "b4"], ["a1", "a2", "a3"]);
            for text in from_b {
                bob.say(text).await;
                let echo = bob.next_echo_of(text).await;
                assert!(stored_offset(&echo).is_some(), "chatd-b stores on: {echo}");
            }
            for text in from_a {
                ana.say(text).await;
                let echo = ana.next_echo_of(text).await;
                assert_eq!(stored_offset(&echo), None, "chatd-a has no Redis: {echo}");
            }
            stack
                .docker(&["network", "connect", &store, &chatd_a])
                .await;
            stack.wait_for_log("chatd-a", "redis connected", 2).await;

            // Assert: chatd-a's outbox reaches bob, stored...
            for echo in bob.next_echoes_of(&from_a).await {
                assert!(
                    stored_offset(&echo).is_some(),
                    "stored after the fault: {echo}"
                );
            }
            // ...and ana, resuming from her last offset, gets all she missed.
            ana.leave().await;
            let query = format!("?name=ana&since=general:{last_seen}:{epoch}");
            let (_ana, welcome) = connect_ws(&ws_url(port, &query)).await;
            let joined = &welcome["rooms"][0];
            assert_eq!(joined["recovered"], true, "{joined}");
            let history = joined["history"].as_array().expect("a history");
            let recovered: BTreeSet<&str> = history
                .iter()
                .filter_map(|event| event["message"].as_str())
                .collect();
            let missed: Vec<&str> = from_b
                .iter()
                .chain(&from_a)
                .filter(|text| !recovered.contains(**text))
                .copied()
                .collect();
            assert!(missed.is_empty(), "lost: {missed:?}; recovered: {joined}");
            assert_eq!(
                history.len(),
                from_b.len() + from_a.len(),
                "nothing twice: {joined}"
            );
        },
    );
}
