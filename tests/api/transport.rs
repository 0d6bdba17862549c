//! The connection after the upgrade, seen from a hand-written client: bytes
//! that arrive early or many frames at once, the welcome coming first, the
//! closing handshake, and a log that no client can make loud.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{spawn_app, Ending, WAIT};
use crate::raw_ws::{RawWs, Upgrade, BINARY, CLOSE, CONTINUATION, PING, RSV1, TEXT};
use crate::server_process::ServerProcess;

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

/// Bad clients of every kind, against a chatd whose log is read: none of
/// them may make it log above `info` (a client could fill the log, or page
/// someone, at will).
#[test]
fn no_client_can_make_the_server_log_above_info() {
    let mut server = ServerProcess::start(&[("RUST_LOG", "info")]);
    let address = server.address;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let battery: Vec<(&str, Vec<u8>)> = vec![
            // actix's codec logged `ERROR Unfinished fragment` for this one.
            (
                "an unfinished fragmented ping",
                RawWs::encode(false, PING, b"half"),
            ),
            (
                "an orphan continuation",
                RawWs::encode(true, CONTINUATION, b"x"),
            ),
            ("invalid UTF-8", RawWs::encode(true, TEXT, b"\xff")),
            (
                "RSV1 with nothing negotiated",
                RawWs::encode(true, RSV1 | TEXT, b"{}"),
            ),
            ("an unmasked frame", RawWs::header(true, TEXT, 0, false)),
            (
                "a gigabyte header",
                [RawWs::header(true, TEXT, 1 << 30, true), vec![0; 4]].concat(),
            ),
            (
                "a bad close code",
                RawWs::encode(true, CLOSE, &1005u16.to_be_bytes()),
            ),
            ("a one-byte close", RawWs::encode(true, CLOSE, &[3])),
            ("a reserved opcode", RawWs::encode(true, 0x3, b"")),
            ("bad JSON", RawWs::encode(true, TEXT, b"{\"type\":")),
            ("a binary message", RawWs::encode(true, BINARY, b"x")),
            (
                "half a frame, then gone",
                RawWs::encode(true, TEXT, &[b'a'; 100])[..20].to_vec(),
            ),
        ];
        for (what, bytes) in battery {
            let mut client = RawWs::connect(address, "?name=vandal").await;
            assert_eq!(client.next_event().await["type"], "welcome", "{what}");
            client.write(&bytes).await;
            // Either an answer, a close, or (for a half frame) nothing: the
            // client hangs up after a short look.
            let _ = client.read_to_end(Duration::from_millis(300)).await;
        }
        for (what, upgrade) in [
            ("no key", Upgrade::new("").without("Sec-WebSocket-Key")),
            (
                "version 8",
                Upgrade::new("").header("Sec-WebSocket-Version", "8"),
            ),
            ("a bad name", Upgrade::new("?name=%00")),
        ] {
            assert_eq!(upgrade.send(address).await.status, 400, "{what}");
        }
        let mut garbage = tokio::net::TcpStream::connect(address).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut garbage, b"\x16\x03\x01 not http\r\n\r\n")
            .await
            .unwrap();
        let _ = tokio::time::timeout(
            WAIT,
            tokio::io::AsyncReadExt::read(&mut garbage, &mut [0u8; 1024]),
        )
        .await;
        // Still serving.
        let mut client = RawWs::connect(address, "?name=after").await;
        assert_eq!(client.next_event().await["type"], "welcome");
    });

    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_for_exit(WAIT), 0);
    let loud: Vec<&String> = server
        .full_log()
        .iter()
        .filter(|line| line.contains(" WARN ") || line.contains(" ERROR "))
        .collect();
    assert!(loud.is_empty(), "lines above info: {loud:#?}");
    assert!(
        server.log.iter().any(|line| line.contains(" 101")),
        "the log was read: {:#?}",
        server.log
    );
}
