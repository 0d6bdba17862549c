//! The connection after the upgrade, seen from a hand-written client: bytes
//! that arrive early or many frames at once, the welcome coming first, and
//! the closing handshake.

use serde_json::json;

use crate::helpers::{spawn_app, Ending};
use crate::raw_ws::{RawWs, Upgrade, CLOSE, CONTINUATION, PING, TEXT};

fn chat_frame(text: &str) -> Vec<u8> {
    let frame = json!({"type": "notification", "message": text}).to_string();
    RawWs::encode(true, TEXT, frame.as_bytes())
}

#[actix_web::test]
async fn frames_sent_right_behind_the_upgrade_request_are_served() {
    let app = spawn_app().await;
    let early = [chat_frame("first"), chat_frame("second")].concat();

    let mut client = Upgrade::new("?name=eager")
        .followed_by(&early)
        .send(app.address)
        .await
        .accepted();

    assert_eq!(client.next_event().await["type"], "welcome");
    for text in ["first", "second"] {
        let echo = client.next_event().await;
        assert_eq!(
            (&echo["type"], &echo["message"]),
            (&json!("echo"), &json!(text))
        );
    }
}

#[actix_web::test]
async fn thousands_of_frames_in_one_write_are_each_answered_in_order() {
    const PINGS: usize = 5_000;
    let app = spawn_app().await;
    let mut client = RawWs::connect(app.address, "?name=burst").await;
    assert_eq!(client.next_event().await["type"], "welcome");

    let mut burst: Vec<u8> = (0..PINGS)
        .flat_map(|n| RawWs::encode(true, PING, format!("p{n}").as_bytes()))
        .collect();
    burst.extend(chat_frame("after the pings"));
    client.write(&burst).await;

    for n in 0..PINGS {
        let pong = client.next_frame().await.expect("a pong");
        assert_eq!(pong.opcode, 0xA, "frame {n}");
        assert_eq!(pong.payload, format!("p{n}").into_bytes(), "pong {n}");
    }
    let echo = client.next_event().await;
    assert_eq!(echo["message"], "after the pings");
}

#[actix_web::test]
async fn after_the_close_handshake_the_server_closes_the_connection() {
    let app = spawn_app().await;
    let mut client = RawWs::connect(app.address, "?name=leaving").await;
    assert_eq!(client.next_event().await["type"], "welcome");

    client.send_frame(true, CLOSE, &1000u16.to_be_bytes()).await;

    assert_eq!(client.ending().await, Ending::Closed(1000));
    assert!(
        client.next_frame().await.is_none(),
        "the server closes the TCP connection after its close frame"
    );
    let (_, status) = app.get_json("/status").await;
    assert_eq!(status["connections"], 0, "{status}");
}

#[actix_web::test]
async fn a_client_that_breaks_the_rules_right_behind_its_upgrade_still_gets_its_welcome_first() {
    let app = spawn_app().await;
    let early = [
        RawWs::encode(true, TEXT, b"not json"),
        RawWs::encode(true, CONTINUATION, b"orphan"),
    ]
    .concat();

    let mut client = Upgrade::new("?name=hasty")
        .followed_by(&early)
        .send(app.address)
        .await
        .accepted();

    assert_eq!(client.next_event().await["type"], "welcome");
    let refusal = client.next_event().await;
    assert_eq!(
        (&refusal["type"], &refusal["code"]),
        (&json!("error"), &json!("bad_frame")),
        "{refusal}"
    );
    assert_eq!(client.ending().await, Ending::Closed(1002));
}

#[actix_web::test]
async fn a_client_close_is_answered_with_its_own_code() {
    let app = spawn_app().await;
    for (what, payload, expected) in [
        (
            "an application code",
            [&4000u16.to_be_bytes()[..], b"bye".as_slice()].concat(),
            Ending::Closed(4000),
        ),
        (
            "going away",
            1001u16.to_be_bytes().to_vec(),
            Ending::Closed(1001),
        ),
        ("no code", Vec::new(), Ending::ClosedWithoutCode),
    ] {
        let mut client = RawWs::connect(app.address, "?name=polite").await;
        assert_eq!(client.next_event().await["type"], "welcome", "{what}");

        client.send_frame(true, CLOSE, &payload).await;

        assert_eq!(client.ending().await, expected, "{what}");
    }
}
