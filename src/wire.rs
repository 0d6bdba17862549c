//! WebSocket frames as the server writes them, encoded once.
//!
//! Sessions do not hand their output to actix's per-session encoder: the hub
//! encodes each broadcast event into a frame once, and every session writes
//! those same bytes. Server frames are never masked, so the bytes are
//! identical for every receiver.

use actix_http::ws::{CloseCode, CloseReason, OpCode, Parser};
use actix_web::web::{Bytes, BytesMut};

/// Appends `payload` as one text frame.
pub fn append_text(dst: &mut BytesMut, payload: &[u8]) {
    Parser::write_message(dst, payload, OpCode::Text, true, false);
}

/// `payload` as one text frame.
pub fn text(payload: &[u8]) -> Bytes {
    let mut dst = BytesMut::with_capacity(payload.len() + 10);
    append_text(&mut dst, payload);
    dst.freeze()
}

/// A ping with an empty payload.
pub fn ping() -> Bytes {
    control(OpCode::Ping, b"")
}

/// A pong echoing `payload`.
pub fn pong(payload: &[u8]) -> Bytes {
    control(OpCode::Pong, payload)
}

/// A close frame; `None` closes without a code.
pub fn close(reason: Option<CloseReason>) -> Bytes {
    let mut dst = BytesMut::new();
    Parser::write_close(&mut dst, reason, false);
    dst.freeze()
}

/// A close frame with `code` and a short `reason`.
pub fn close_with(code: CloseCode, reason: &str) -> Bytes {
    close(Some(CloseReason {
        code,
        description: Some(reason.to_string()),
    }))
}

fn control(op: OpCode, payload: &[u8]) -> Bytes {
    let mut dst = BytesMut::with_capacity(payload.len() + 2);
    Parser::write_message(&mut dst, payload, op, true, false);
    dst.freeze()
}

/// Splits `bytes` back into the text payloads of its frames, for tests.
///
/// # Panics
/// On anything but unmasked, unfragmented text frames with short lengths.
#[cfg(test)]
pub fn text_payloads(bytes: &[u8]) -> Vec<String> {
    let mut payloads = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        assert_eq!(rest[0], 0x81, "a final text frame");
        let (len, header) = match rest[1] {
            126 => (usize::from(u16::from_be_bytes([rest[2], rest[3]])), 4),
            n if n < 126 => (usize::from(n), 2),
            other => panic!("unexpected length byte {other}"),
        };
        payloads.push(String::from_utf8(rest[header..header + len].to_vec()).unwrap());
        rest = &rest[header + len..];
    }
    payloads
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_frames_are_unmasked_and_carry_their_length() {
        assert_eq!(&text(b"hi")[..], &[0x81, 2, b'h', b'i']);
        let long = vec![b'x'; 300];
        let frame = text(&long);
        assert_eq!(&frame[..4], &[0x81, 126, 1, 44]);
        assert_eq!(frame.len(), 304);
    }

    #[test]
    fn appended_frames_split_back_into_their_payloads() {
        let mut dst = BytesMut::new();
        append_text(&mut dst, b"one");
        append_text(&mut dst, &[b'y'; 200]);
        let payloads = text_payloads(&dst);
        assert_eq!(payloads.len(), 2);
        assert_eq!(payloads[0], "one");
        assert_eq!(payloads[1].len(), 200);
    }

    #[test]
    fn control_frames_have_their_opcodes() {
        assert_eq!(&ping()[..], &[0x89, 0]);
        assert_eq!(&pong(b"a")[..], &[0x8A, 1, b'a']);
        assert_eq!(
            &close_with(CloseCode::Policy, "x")[..],
            &[0x88, 3, 0x03, 0xF0, b'x']
        );
        assert_eq!(&close(None)[..], &[0x88, 0]);
    }
}
