//! The bad-input battery: every case gets its exact answer (an `error`
//! event, a close code or an HTTP status with a JSON body), and afterwards a
//! fresh client still chats.

use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{spawn_app, spawn_app_with, Ending, TestApp};
use crate::raw_ws::{RawWs, Upgrade, BINARY, CLOSE, CONTINUATION, PING, RSV1, RSV2, RSV3, TEXT};

/// Connects a new client and checks its message comes back as an echo.
pub async fn a_fresh_client_round_trips(app: &TestApp, after: &str) {
    let (mut client, _) = app.connect_ws("fresh").await;
    let text = format!("still fine after {after}");
    client.say(&text).await;
    let echo = client.next_event_of("echo").await;
    assert_eq!(echo["message"], text, "after {after}");
    client.leave().await;
}

#[actix_web::test]
async fn bad_chat_frames_get_an_exact_error_event_and_the_connection_stays_open() {
    let app = spawn_app().await;
    let over_limit = json!({"type": "notification", "message": "x".repeat(4097)}).to_string();
    let unknown = r#"unknown type "dance"; send {"type":"notification","message":"..."}"#;
    let not_object = r#"frame must be a JSON object with a "type" field"#;
    let cases: Vec<(&str, Message, &str)> = vec![
        (
            "not JSON",
            Message::text("hello"),
            "frame is not valid JSON",
        ),
        (
            "truncated JSON",
            Message::text(r#"{"type":"#),
            "frame is not valid JSON",
        ),
        (
            "a JSON array",
            Message::text(r#"[{"type":"notification"}]"#),
            not_object,
        ),
        ("a JSON number", Message::text("42"), not_object),
        ("JSON null", Message::text("null"), not_object),
        ("a JSON string", Message::text(r#""hi""#), not_object),
        (
            "an empty object",
            Message::text("{}"),
            r#"frame has no "type" field"#,
        ),
        (
            "a missing type",
            Message::text(r#"{"message":"hi"}"#),
            r#"frame has no "type" field"#,
        ),
        (
            "an unknown type",
            Message::text(r#"{"type":"dance","message":"hi"}"#),
            unknown,
        ),
        (
            "a number as type",
            Message::text(r#"{"type":5,"message":"hi"}"#),
            r#"unknown type "5"; send {"type":"notification","message":"..."}"#,
        ),
        (
            "a number as message",
            Message::text(r#"{"type":"notification","message":5}"#),
            r#""message" must be a string"#,
        ),
        (
            "an object as message",
            Message::text(r#"{"type":"notification","message":{"html":"<b>"}}"#),
            r#""message" must be a string"#,
        ),
        (
            "no message",
            Message::text(r#"{"type":"notification"}"#),
            "message is empty",
        ),
        (
            "an empty message",
            Message::text(r#"{"type":"notification","message":""}"#),
            "message is empty",
        ),
        (
            "a whitespace-only message",
            Message::text(r#"{"type":"notification","message":" \t\n "}"#),
            "message is empty",
        ),
        (
            "a message over MAX_MESSAGE_BYTES",
            Message::text(over_limit),
            "message is 4097 bytes; the limit is 4096",
        ),
        (
            "a binary frame",
            Message::binary(br#"{"type":"notification","message":"hi"}"#.to_vec()),
            "binary frames are not supported; send JSON text",
        ),
    ];
    for (what, frame, expected) in cases {
        let (mut client, _) = app.connect_ws("tester").await;

        client.send(frame).await;

        let event = client.next_event().await;
        assert_eq!(
            (event["type"].as_str(), event["message"].as_str()),
            (Some("error"), Some(expected)),
            "{what}: {event}"
        );
        assert!(event["ts"].as_u64().is_some(), "{what}: {event}");
        // v2 adds a code for programs; v1 clients ignore it.
        let code = match expected {
            "message is empty" => "empty",
            "message is 4097 bytes; the limit is 4096" => "too_long",
            "binary frames are not supported; send JSON text" => "binary",
            _ => "bad_frame",
        };
        assert_eq!(event["code"], code, "{what}: {event}");
        client.say("still here").await;
        assert_eq!(client.next_event().await["message"], "still here", "{what}");
        a_fresh_client_round_trips(&app, what).await;
    }
}

#[actix_web::test]
async fn protocol_violations_close_with_the_exact_code() {
    let app = spawn_app().await;
    let max_frame = 64 * 1024;
    let fragment = vec![b'a'; 20 * 1024];
    let cases: Vec<(&str, Vec<Vec<u8>>, u16)> = vec![
        (
            "a text frame that is not UTF-8",
            vec![RawWs::encode(true, TEXT, b"{\"type\":\"\xff\xfe\"}")],
            1007,
        ),
        (
            "a fragmented text message that is not UTF-8",
            vec![
                RawWs::encode(false, TEXT, b"caf"),
                RawWs::encode(true, CONTINUATION, b"\xc3\x28"),
            ],
            1007,
        ),
        (
            "a frame over MAX_FRAME_BYTES",
            vec![RawWs::encode(true, TEXT, &vec![b'a'; max_frame + 1])],
            1009,
        ),
        (
            "a fragmented message over MAX_FRAME_BYTES",
            vec![
                RawWs::encode(false, TEXT, &fragment),
                RawWs::encode(false, CONTINUATION, &fragment),
                RawWs::encode(false, CONTINUATION, &fragment),
                RawWs::encode(true, CONTINUATION, &fragment),
            ],
            1009,
        ),
        (
            "a frame header declaring a gigabyte, without the payload",
            vec![[RawWs::header(true, TEXT, 1 << 30, true), vec![1, 2, 3, 4]].concat()],
            1009,
        ),
        (
            "an unmasked frame",
            vec![RawWs::header(true, TEXT, 0, false)],
            1002,
        ),
        (
            "a reserved opcode",
            vec![RawWs::encode(true, 0x3, b"?")],
            1002,
        ),
        (
            "a continuation with nothing to continue",
            vec![RawWs::encode(true, CONTINUATION, b"orphan")],
            1002,
        ),
        (
            "a new message inside a fragmented one",
            vec![
                RawWs::encode(false, TEXT, b"{\"type\":"),
                RawWs::encode(true, TEXT, b"{}"),
            ],
            1002,
        ),
        (
            "a fragmented ping",
            vec![RawWs::encode(false, PING, b"half")],
            1002,
        ),
        (
            "RSV1 (a compressed message) when no extension was negotiated",
            vec![RawWs::encode(true, RSV1 | TEXT, b"{}")],
            1002,
        ),
        ("RSV2", vec![RawWs::encode(true, RSV2 | TEXT, b"{}")], 1002),
        ("RSV3", vec![RawWs::encode(true, RSV3 | BINARY, b"x")], 1002),
        (
            "RSV1 on a control frame",
            vec![RawWs::encode(true, RSV1 | PING, b"")],
            1002,
        ),
        (
            "RSV1 on a continuation frame",
            vec![
                RawWs::encode(false, TEXT, b"{"),
                RawWs::encode(true, RSV1 | CONTINUATION, b"}"),
            ],
            1002,
        ),
        (
            "a ping over 125 bytes",
            vec![RawWs::encode(true, PING, &[b'p'; 126])],
            1002,
        ),
        (
            "a reserved control opcode",
            vec![RawWs::encode(true, 0xB, b"")],
            1002,
        ),
        (
            "a close frame with a one-byte payload",
            vec![RawWs::encode(true, CLOSE, &[0x03])],
            1002,
        ),
        (
            "a close code that must not be on the wire (1005)",
            vec![RawWs::encode(true, CLOSE, &1005u16.to_be_bytes())],
            1002,
        ),
        (
            "an unassigned close code (2000)",
            vec![RawWs::encode(true, CLOSE, &2000u16.to_be_bytes())],
            1002,
        ),
        (
            "a close reason that is not UTF-8",
            vec![RawWs::encode(true, CLOSE, b"\x03\xe8\xff")],
            1007,
        ),
        (
            "a first fragment that is not UTF-8, the rest never sent",
            vec![RawWs::encode(false, TEXT, b"caf\xc3\x28")],
            1007,
        ),
        (
            "a text frame cut short after invalid UTF-8",
            vec![RawWs::encode(
                true,
                TEXT,
                &[b"ok\xf4\x90".as_slice(), &[b'x'; 200][..]].concat(),
            )[..12]
                .to_vec()],
            1007,
        ),
        (
            "a text message ending inside a character",
            vec![RawWs::encode(true, TEXT, &"é".as_bytes()[..1])],
            1007,
        ),
        (
            "a fragmented message whose last fragment ends inside a character",
            vec![
                RawWs::encode(false, TEXT, b"caf"),
                RawWs::encode(true, CONTINUATION, &"é".as_bytes()[..1]),
            ],
            1007,
        ),
    ];
    for (what, frames, expected) in cases {
        let mut client = RawWs::connect(app.address, "?name=raw").await;
        assert_eq!(client.next_event().await["type"], "welcome", "{what}");

        for frame in &frames {
            client.write(frame).await;
        }

        assert_eq!(client.ending().await, Ending::Closed(expected), "{what}");
        a_fresh_client_round_trips(&app, what).await;
    }
    app.wait_for_connections(0).await;
}

#[actix_web::test]
async fn a_16_mib_frame_closes_with_1009_and_is_not_buffered() {
    let app = spawn_app().await;
    let mut client = RawWs::connect(app.address, "?name=giant").await;
    assert_eq!(client.next_event().await["type"], "welcome");
    let frame = RawWs::encode(true, TEXT, &vec![b'a'; 16 << 20]);

    // The server may hang up before taking it all; how much it takes is not
    // the point, the close code is.
    client
        .write_what_is_taken(&frame, std::time::Duration::from_secs(5))
        .await;

    assert_eq!(client.ending().await, Ending::Closed(1009));
    a_fresh_client_round_trips(&app, "a 16 MiB frame").await;
}

#[actix_web::test]
async fn fragmented_messages_within_the_cap_are_put_back_together() {
    let app = spawn_app().await;
    let mut client = RawWs::connect(app.address, "?name=frag").await;
    assert_eq!(client.next_event().await["type"], "welcome");
    let text = "é".repeat(1500); // 3000 bytes, split inside a character below
    let frame = json!({"type": "notification", "message": text}).to_string();
    let (a, rest) = frame.as_bytes().split_at(1001);
    let (b, c) = rest.split_at(1000);

    client.send_frame(false, TEXT, a).await;
    client.send_frame(true, PING, b"between fragments").await;
    client.send_frame(false, CONTINUATION, b).await;
    client.send_frame(true, CONTINUATION, c).await;

    let pong = client.next_frame().await.expect("a pong");
    assert!(pong.fin);
    assert_eq!(
        (pong.opcode, pong.payload.as_slice()),
        (0xA, &b"between fragments"[..])
    );
    let echo = client.next_event().await;
    assert_eq!(echo["type"], "echo");
    assert_eq!(echo["message"], text);

    client.send_frame(false, BINARY, b"{\"type\":").await;
    client.send_frame(true, CONTINUATION, b"1}").await;
    let refusal = client.next_event().await;
    assert_eq!(
        refusal,
        json!({"type": "error", "code": "binary", "message": "binary frames are not supported; send JSON text", "ts": refusal["ts"]})
    );
    client.send_frame(true, CLOSE, &1000u16.to_be_bytes()).await;
    assert_eq!(client.ending().await, Ending::Closed(1000));
}

#[actix_web::test]
async fn bad_upgrades_are_refused_with_a_json_status() {
    let app = spawn_app_with(|c| c.limits.max_name_chars = 8).await;
    let cases = [
        (
            "no Sec-WebSocket-Key",
            Upgrade::new("").without("Sec-WebSocket-Key"),
            400,
        ),
        (
            "a wrong Sec-WebSocket-Version",
            Upgrade::new("").header("Sec-WebSocket-Version", "8"),
            400,
        ),
        (
            "a nonsense Sec-WebSocket-Version",
            Upgrade::new("").header("Sec-WebSocket-Version", "thirteen"),
            400,
        ),
        (
            "the draft Sec-WebSocket-Version 7",
            Upgrade::new("").header("Sec-WebSocket-Version", "7"),
            400,
        ),
        (
            "no Sec-WebSocket-Version",
            Upgrade::new("").without("Sec-WebSocket-Version"),
            400,
        ),
        (
            "no Upgrade header",
            Upgrade::new("").without("Upgrade"),
            400,
        ),
        (
            "an upgrade to another path",
            Upgrade::new("").request_line("GET", "/"),
            400,
        ),
        (
            "an upgrade to an unknown path",
            Upgrade::new("").request_line("GET", "/nowhere"),
            400,
        ),
        (
            "an upgrade with POST",
            Upgrade::new("").request_line("POST", "/ws"),
            405,
        ),
        (
            "an Upgrade header naming more than websocket",
            Upgrade::new("").header("Upgrade", "websocket, h2c"),
            400,
        ),
        (
            "a name over MAX_NAME_CHARS",
            Upgrade::new("?name=abcdefghi"),
            400,
        ),
        (
            "markup in the name",
            Upgrade::new("?name=%3Cb%3Ex%3C%2Fb%3E"),
            400,
        ),
        (
            "a name of control characters",
            Upgrade::new("?name=%00%07"),
            400,
        ),
    ];
    for (what, upgrade, expected) in cases {
        let answer = upgrade.send(app.address).await;

        assert_eq!(answer.status, expected, "{what}: {}", answer.body);
        let body = answer.json();
        assert_eq!(body["status"], "error", "{what}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}"
        );
        if what.contains("Version") {
            assert_eq!(answer.header("Sec-WebSocket-Version"), Some("13"), "{what}");
        }
        a_fresh_client_round_trips(&app, what).await;
    }
    let (_, status) = app.get_json("/status").await;
    assert_eq!(status["connections"], 0, "no refused upgrade joined");
}

const BEARER: Option<&str> = Some("Bearer s3cret-token");

/// One `/notify` request of the battery and the status it must get.
struct NotifyCase {
    what: &'static str,
    method: &'static str,
    query: String,
    authorization: Option<&'static str>,
    body: String,
    status: u16,
}

impl NotifyCase {
    fn new(
        what: &'static str,
        method: &'static str,
        query: &str,
        authorization: Option<&'static str>,
        body: &str,
        status: u16,
    ) -> Self {
        Self {
            what,
            method,
            query: query.into(),
            authorization,
            body: body.into(),
            status,
        }
    }
}

/// `POST /notify` with a token set: each request and its exact status.
#[actix_web::test]
async fn bad_notify_requests_get_the_exact_status_and_a_json_error() {
    let app = spawn_app_with(|c| {
        c.notify_token = Some("s3cret-token".into());
        // The listener reads only at the end, so it answers no pings till then.
        c.limits.client_timeout = std::time::Duration::from_secs(600);
    })
    .await;
    let (mut listener, _) = app.connect_ws("listener").await;
    let long = "x".repeat(4097);
    let long_json = json!({ "message": long }).to_string();
    let huge_body = json!({ "message": "y".repeat(100_000) }).to_string();
    let over_limit = format!("?message={long}");
    let cases = [
        NotifyCase::new("no message", "POST", "", BEARER, "", 400),
        NotifyCase::new("an empty message", "POST", "?message=", BEARER, "", 400),
        NotifyCase::new(
            "a blank JSON message",
            "POST",
            "",
            BEARER,
            r#"{"message":"  "}"#,
            400,
        ),
        NotifyCase::new(
            "a non-string JSON message",
            "POST",
            "",
            BEARER,
            r#"{"message":5}"#,
            400,
        ),
        NotifyCase::new("bad JSON", "POST", "", BEARER, "{not json", 400),
        NotifyCase::new("a JSON array", "POST", "", BEARER, "[1,2]", 400),
        NotifyCase::new(
            "a message over the limit",
            "POST",
            &over_limit,
            BEARER,
            "",
            413,
        ),
        NotifyCase::new(
            "a JSON message over the limit",
            "POST",
            "",
            BEARER,
            &long_json,
            413,
        ),
        NotifyCase::new("a body over 64 KiB", "POST", "", BEARER, &huge_body, 413),
        NotifyCase::new("the wrong method", "GET", "?message=hi", BEARER, "", 405),
        NotifyCase::new("PUT", "PUT", "?message=hi", BEARER, "", 405),
        NotifyCase::new("no token", "POST", "?message=hi", None, "", 401),
        NotifyCase::new(
            "a wrong token",
            "POST",
            "?message=hi",
            Some("Bearer s3cret-tokem"),
            "",
            401,
        ),
        NotifyCase::new(
            "a token prefix",
            "POST",
            "?message=hi",
            Some("Bearer s3cret"),
            "",
            401,
        ),
        NotifyCase::new(
            "no Bearer scheme",
            "POST",
            "?message=hi",
            Some("s3cret-token"),
            "",
            401,
        ),
        NotifyCase::new(
            "basic auth",
            "POST",
            "?message=hi",
            Some("Basic czNjcmV0LXRva2Vu"),
            "",
            401,
        ),
    ];
    for NotifyCase {
        what,
        method,
        query,
        authorization,
        body,
        status: expected,
    } in cases
    {
        let mut request = app
            .http
            .request(method.parse().unwrap(), app.url(&format!("/notify{query}")))
            .insert_header(("content-type", "application/json"));
        if let Some(authorization) = authorization {
            request = request.insert_header(("Authorization", authorization));
        }

        let mut response = request.send_body(body).await.expect(what);

        assert_eq!(response.status().as_u16(), expected, "{what}");
        let body: Value = response.json().limit(1 << 20).await.expect(what);
        assert_eq!(body["status"], "error", "{what}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}"
        );
        if expected == 401 {
            let challenge = response.headers().get("www-authenticate");
            assert_eq!(challenge.unwrap(), "Bearer", "{what}");
        }
        a_fresh_client_round_trips(&app, what).await;
    }
    let mut accepted = app
        .http
        .post(app.url("/notify?message=deploy%20at%20noon"))
        .insert_header(("Authorization", BEARER.unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status().as_u16(), 200);
    let body: Value = accepted.json().await.unwrap();
    assert_eq!(body["message"], "Notification sent to 1 clients");
    // The listener saw the fresh clients' echoes, and no notification but
    // the authorized one.
    let notification = listener.next_event_of("notification").await;
    assert_eq!(notification["message"], "deploy at noon");
}

#[actix_web::test]
async fn without_a_token_notify_stays_open_and_ignores_authorization() {
    let app = spawn_app().await;
    let (mut listener, _) = app.connect_ws("listener").await;

    let (status, _) = app.post_notify("open as before").await;
    let with_header = app
        .http
        .post(app.url("/notify?message=any%20header"))
        .insert_header(("Authorization", "Bearer whatever"))
        .send()
        .await
        .unwrap();

    assert_eq!(status, 200);
    assert_eq!(with_header.status().as_u16(), 200);
    assert_eq!(listener.next_event().await["message"], "open as before");
    assert_eq!(listener.next_event().await["message"], "any header");
}

#[actix_web::test]
async fn markup_in_a_message_comes_back_as_the_same_text() {
    let app = spawn_app().await;
    let (mut ana, _) = app.connect_ws("ana").await;
    let markup = r#"<img src=x onerror="alert(1)"><script>alert(2)</script>&amp;"#;

    ana.say(markup).await;

    assert_eq!(ana.next_event().await["message"], markup);
}
