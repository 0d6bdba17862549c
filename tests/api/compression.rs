//! permessage-deflate (RFC 7692) on `/ws`, over real sockets with a client
//! written by hand: what is agreed, that a broadcast's compressed bytes are
//! the same for every receiver, and the close paths of compressed input.

use chatd::transport::deflate::{self, Deflate};
use serde_json::Value;

use crate::helpers::{spawn_app, spawn_app_with, Ending};
use crate::raw_ws::{Frame, RawWs, Upgrade, RSV1, TEXT};

/// What browsers offer.
const OFFER: &str = "permessage-deflate; client_max_window_bits";

/// What chatd answers to it.
const ANSWER: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// A chat message long enough that compressing it pays.
fn long_text() -> String {
    "the quick brown fox jumps over the lazy dog; ".repeat(8)
}

/// A compressed client text frame of `text`, as one that agreed sends it.
fn compressed_text(text: &str) -> Vec<u8> {
    let packed = deflate::compress(Deflate::FULL, text.as_bytes()).expect("it compresses");
    RawWs::encode(true, RSV1 | TEXT, &packed)
}

/// Opens `/ws{query}` offering `offer`; the socket and the answer's
/// `Sec-WebSocket-Extensions`.
async fn open(address: std::net::SocketAddr, query: &str, offer: &str) -> (RawWs, Option<String>) {
    let answer = Upgrade::new(query)
        .header("Sec-WebSocket-Extensions", offer)
        .send(address)
        .await;
    let extensions = answer
        .header("Sec-WebSocket-Extensions")
        .map(str::to_string);
    (answer.accepted(), extensions)
}

/// The next text frame, skipping pings.
async fn next_text(ws: &mut RawWs) -> Frame {
    loop {
        let frame = ws.next_frame().await.expect("the connection is open");
        if frame.opcode == TEXT {
            return frame;
        }
    }
}

fn json(frame: &Frame) -> Value {
    serde_json::from_slice(&frame.message()).expect("events are JSON")
}

#[actix_rt::test]
async fn a_broadcast_is_compressed_once_and_the_same_bytes_reach_every_receiver() {
    let app = spawn_app().await;
    let (mut ana, agreed) = open(app.address, "?name=ana", OFFER).await;
    assert_eq!(agreed.as_deref(), Some(ANSWER));
    let (mut bo, _) = open(app.address, "?name=bo", OFFER).await;
    let mut plain = RawWs::connect(app.address, "?name=cy").await;
    for ws in [&mut ana, &mut bo, &mut plain] {
        assert_eq!(ws.next_event().await["type"], "welcome");
    }

    // Ana sends it compressed, as a browser would.
    let text = long_text();
    let message = serde_json::json!({ "type": "message", "message": text }).to_string();
    ana.write(&compressed_text(&message)).await;

    let to_ana = next_text(&mut ana).await;
    let to_bo = next_text(&mut bo).await;
    let to_cy = next_text(&mut plain).await;
    assert!(
        to_ana.compressed && to_bo.compressed,
        "RSV1 for those that agreed"
    );
    assert_eq!(to_ana.payload, to_bo.payload, "one compression for both");
    assert!(
        !to_cy.compressed,
        "no RSV1 for a client that offered nothing"
    );
    assert!(to_ana.payload.len() < to_cy.payload.len());
    for frame in [&to_ana, &to_bo, &to_cy] {
        let echo = json(frame);
        assert_eq!(
            (echo["type"].as_str(), echo["message"].as_str()),
            (Some("echo"), Some(text.as_str()))
        );
    }
    assert_eq!(to_ana.message(), to_cy.payload, "the same event either way");
}

#[actix_rt::test]
async fn offers_chatd_cannot_take_are_declined_and_the_connection_goes_plain() {
    let app = spawn_app().await;
    for offer in [
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; no_such_parameter",
        "x-webkit-deflate-frame",
    ] {
        let (mut ws, agreed) = open(app.address, "", offer).await;
        assert_eq!(agreed, None, "{offer}");
        assert_eq!(ws.next_event().await["type"], "welcome");
        ws.write(&compressed_text(&long_text())).await;
        assert_eq!(
            ws.ending().await,
            Ending::Closed(1002),
            "{offer}: RSV1 was not agreed"
        );
    }
    // The first acceptable offer of a list is taken, with a smaller window.
    let (_, agreed) = open(
        app.address,
        "",
        "foo, permessage-deflate; server_max_window_bits=10",
    )
    .await;
    assert_eq!(agreed, Some(format!("{ANSWER}; server_max_window_bits=10")));
}

#[actix_rt::test]
async fn with_compression_off_nothing_is_agreed() {
    let app = spawn_app_with(|config| config.compression = false).await;
    let (mut ws, agreed) = open(app.address, "", OFFER).await;
    assert_eq!(agreed, None);
    assert_eq!(ws.next_event().await["type"], "welcome");
    ws.write(&compressed_text(&long_text())).await;
    assert_eq!(ws.ending().await, Ending::Closed(1002));
}

#[actix_rt::test]
async fn a_compression_bomb_closes_with_1009_and_harms_no_one_else() {
    let app = spawn_app_with(|config| config.limits.max_frame_bytes = 64 * 1024).await;
    let (mut bomber, _) = open(app.address, "?name=bomber", OFFER).await;
    let (mut bystander, _) = open(app.address, "?name=bystander", OFFER).await;
    for ws in [&mut bomber, &mut bystander] {
        assert_eq!(ws.next_event().await["type"], "welcome");
    }
    // 4 MiB of one letter in a message of some 40 KiB: under the limit as
    // sent, far over it inflated.
    let inflated = format!(
        r#"{{"type":"message","message":"{}"}}"#,
        "a".repeat(4 << 20)
    );
    let bomb = deflate::compress(Deflate::FULL, inflated.as_bytes()).expect("it compresses");
    assert!(bomb.len() < 64 * 1024, "{} bytes", bomb.len());
    bomber.write(&RawWs::encode(true, RSV1 | TEXT, &bomb)).await;
    assert_eq!(bomber.ending().await, Ending::Closed(1009));

    let text = long_text();
    let message = serde_json::json!({ "type": "message", "message": text }).to_string();
    bystander.write(&compressed_text(&message)).await;
    let echo = bystander.next_event().await;
    assert_eq!(
        (echo["type"].as_str(), echo["message"].as_str()),
        (Some("echo"), Some(text.as_str()))
    );
}

#[actix_rt::test]
async fn compressed_input_that_does_not_inflate_to_utf8_closes_with_1007() {
    let app = spawn_app().await;
    for (what, payload) in [
        ("not deflate data", vec![0xff; 12]),
        (
            "deflate data of Latin-1 text",
            deflate::compress(Deflate::FULL, &b"caf\xe9 ".repeat(20)).expect("it compresses"),
        ),
    ] {
        let (mut ws, _) = open(app.address, "", OFFER).await;
        assert_eq!(ws.next_event().await["type"], "welcome");
        ws.write(&RawWs::encode(true, RSV1 | TEXT, &payload)).await;
        assert_eq!(ws.ending().await, Ending::Closed(1007), "{what}");
    }
}
