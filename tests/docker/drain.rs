//! The drain in a container: `docker compose stop` sends SIGTERM and chatd
//! closes its clients itself, well within the grace period.

use std::time::{Duration, Instant};

use crate::client::{connect_ws, http, ws_url, Ending};
use crate::stack::container_test;

#[test]
fn compose_stop_drains_chatd_which_tells_its_client_and_exits_0_in_the_grace_period() {
    container_test("drain", Duration::from_secs(300), |mut stack| async move {
        // Arrange: a short drain, as the README suggests for development.
        stack.write_env("SHUTDOWN_TIMEOUT=4\nSHUTDOWN_PROGRESS_INTERVAL=1");
        stack.up().await;
        let port = stack.api_port;
        let (mut ana, _) = connect_ws(&ws_url(port, "?name=ana")).await;

        // Act
        let started = Instant::now();
        let stop = {
            let args = ["stop", "chatd"];
            let stack = &stack;
            async move { stack.compose(&args).await }
        };
        let watch = async {
            let notice = ana.next_event_of("shutdown_notice").await;
            let (ready, _) = http("GET", port, "/readyz").await;
            // Ana stays: at SHUTDOWN_TIMEOUT chatd closes her itself.
            let ending = ana.ending(Duration::from_secs(30)).await;
            (notice, ready, ending)
        };
        let (_, (notice, ready, ending)) = tokio::join!(stop, watch);
        let took = started.elapsed();

        // Assert
        assert_eq!(notice["deadline_s"], 4, "{notice}");
        assert!(notice["retry_after_ms"].as_u64().is_some(), "{notice}");
        assert_eq!(ready, 503, "/readyz while draining");
        assert_eq!(ending, Ending::Closed(1001));
        assert!(
            took < Duration::from_secs(30),
            "chatd exited by itself, long before the 31 min grace: {took:?}"
        );
        let chatd = stack.inspect("chatd").await;
        assert_eq!(chatd["State"]["ExitCode"], 0, "{}", chatd["State"]);
        assert_eq!(chatd["State"]["OOMKilled"], false);
        let log = stack.logs("chatd").await;
        for line in [
            "drain started pid=1 cause=SIGTERM connections=1",
            "draining pid=1 connections=1 seconds_left=",
            "closing remaining clients with 1001 pid=1 closed=1",
            "drain finished pid=1",
        ] {
            assert!(log.contains(line), "no {line:?} in the log:\n{log}");
        }
    });
}
