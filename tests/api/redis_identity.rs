//! Identity and presence across chatd processes on a real `redis-server`:
//! a notice to a user with connections on two processes, presence on every
//! process, a SIGKILLed process's users leaving within PRESENCE_TTL, and no
//! token in any log line.

use std::time::Instant;

use libc::SIGKILL;
use serde_json::{json, Value};

use crate::helpers::{post_notify, WsClient, WAIT};
use crate::identity::token_for;
use crate::redis::wait_for_redis;
use crate::redis_helpers::RedisServer;
use crate::server_process::ServerProcess;

const SECRET: &str = "test-secret-0123456789";

fn start(redis: &RedisServer) -> ServerProcess {
    let url = redis.url();
    let env = [
        ("REDIS_URL", url.as_str()),
        ("AUTH_JWT_SECRET", SECRET),
        ("PRESENCE_TTL", "3"),
    ];
    ServerProcess::start(&env)
}

async fn connect(process: &ServerProcess, sub: &str, name: &str) -> WsClient {
    let url = process.ws_url(&format!("?token={}", token_for(sub, name)));
    let mut client = WsClient::connect(&url).await;
    assert_eq!(client.next_event().await["type"], "welcome");
    client
}

/// Polls `GET /rooms/general/presence` on `process` until `check` holds.
async fn wait_for_presence(process: &ServerProcess, what: &str, check: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, presence) = process.get_json("/rooms/general/presence").await;
        if check(&presence["users"]) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "presence never {what}: {presence}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[actix_web::test]
async fn presence_and_user_notices_span_processes_and_a_killed_process_leaves() {
    let Some(redis) = RedisServer::start_or_skip("identity_across") else {
        return;
    };
    let one = start(&redis);
    let mut two = start(&redis);
    for process in [&one, &two] {
        wait_for_redis(&process.url("/status"), "connected", |r| {
            r["state"] == "connected"
        })
        .await;
    }
    let mut ana = connect(&one, "u-ana", "Ana").await;
    let mut ana_elsewhere = connect(&two, "u-ana", "Ana").await;
    let _bo = connect(&two, "u-bo", "Bo").await;

    wait_for_presence(&one, "showed both users", |users| {
        *users
            == json!([
                {"id": "u-ana", "name": "Ana", "connections": 2},
                {"id": "u-bo", "name": "Bo", "connections": 1},
            ])
    })
    .await;

    let (status, body) = post_notify_user(&one, "u-ana", "for ana").await;
    assert_eq!(
        (status, body["message"].as_str()),
        (200, Some("Notification sent to 2 clients"))
    );
    for client in [&mut ana, &mut ana_elsewhere] {
        let notice = client.next_event_of("notification").await;
        assert_eq!(notice["message"], "for ana");
    }

    two.signal(SIGKILL);
    two.wait_for_exit(WAIT);
    wait_for_presence(&one, "dropped the killed process's users", |users| {
        *users == json!([{"id": "u-ana", "name": "Ana", "connections": 1}])
    })
    .await;
    let deadline = Instant::now() + WAIT;
    loop {
        let event = ana.next_event_of("presence").await;
        if event["leaves"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["id"] == "u-bo")
        {
            break;
        }
        assert!(Instant::now() < deadline, "bo never left");
    }
    let mut one = one;
    one.wait_for_line("GET /ws?token=*** HTTP/1.1\" 101");
    assert!(
        one.log
            .iter()
            .all(|line| !line.contains(&token_for("u-ana", "Ana")[..20])),
        "a token reached the log"
    );
}

async fn post_notify_user(process: &ServerProcess, user: &str, message: &str) -> (u16, Value) {
    let http = awc::Client::builder().timeout(WAIT).finish();
    post_notify(
        &http,
        &process.url("/notify"),
        &[("message", message), ("user", user)],
    )
    .await
}
