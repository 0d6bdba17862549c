//! WebSocket frames as the server writes them, encoded once.
//!
//! Sessions do not encode per receiver: the hub encodes each broadcast event
//! into a frame once, and every session writes those same bytes. Server
//! frames are never masked, so the bytes are identical for every receiver.
//! A compressed variant of a message (permessage-deflate) is one more frame
//! made beside the plain one with [`append_frame`] and RSV1 set, once per
//! broadcast as well.

use actix_web::web::{Bytes, BytesMut};

use super::deflate::{self, Deflate};
use super::CloseCode;

/// A frame's opcode (RFC 6455 5.2); the others are reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    Continuation = 0x0,
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

impl OpCode {
    /// The opcode of a frame header's low nibble; `None` for a reserved one.
    pub fn from_bits(bits: u8) -> Option<Self> {
        Some(match bits {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            _ => return None,
        })
    }

    /// Close, ping and pong: at most 125 bytes, never fragmented.
    pub fn is_control(self) -> bool {
        self as u8 & 0x8 != 0
    }
}

/// The longest payload of a control frame.
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Appends one unmasked frame: FIN set when `fin`, RSV1 when `rsv1` (a
/// compressed message's first frame), then the length and `payload`.
pub fn append_frame(dst: &mut BytesMut, fin: bool, rsv1: bool, opcode: OpCode, payload: &[u8]) {
    let first = (u8::from(fin) << 7) | (u8::from(rsv1) << 6) | opcode as u8;
    dst.reserve(payload.len() + 10);
    dst.extend_from_slice(&[first]);
    match payload.len() {
        len @ 0..=125 => dst.extend_from_slice(&[len as u8]),
        len @ 126..=0xffff => {
            dst.extend_from_slice(&[126]);
            dst.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            dst.extend_from_slice(&[127]);
            dst.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    dst.extend_from_slice(payload);
}

/// Appends `payload` as one text frame.
pub fn append_text(dst: &mut BytesMut, payload: &[u8]) {
    append_frame(dst, true, false, OpCode::Text, payload);
}

/// Appends the message `payload` as one frame, compressed with `deflate`
/// (RSV1 set) when that makes it smaller.
pub fn append_message(dst: &mut BytesMut, deflate: Deflate, opcode: OpCode, payload: &[u8]) {
    match deflate::compress(deflate, payload) {
        Some(packed) => append_frame(dst, true, true, opcode, &packed),
        None => append_frame(dst, true, false, opcode, payload),
    }
}

/// The message `payload` as one compressed frame (RSV1 set), even when
/// that is no smaller.
pub fn compressed(deflate: Deflate, opcode: OpCode, payload: &[u8]) -> Bytes {
    let packed = deflate::encode(deflate, payload).expect("deflating into memory does not fail");
    let mut dst = BytesMut::with_capacity(packed.len() + 10);
    append_frame(&mut dst, true, true, opcode, &packed);
    dst.freeze()
}

/// `payload` as one text frame.
pub fn text(payload: &[u8]) -> Bytes {
    single(OpCode::Text, payload)
}

/// `payload` as one binary frame.
pub fn binary(payload: &[u8]) -> Bytes {
    single(OpCode::Binary, payload)
}

/// A ping with an empty payload.
pub fn ping() -> Bytes {
    single(OpCode::Ping, b"")
}

/// A pong echoing `payload` (a ping's, so at most 125 bytes).
pub fn pong(payload: &[u8]) -> Bytes {
    single(OpCode::Pong, payload)
}

/// A close frame with `code` and a short `reason`, cut to fit a control
/// frame at a character boundary; `None` closes without a code.
pub fn close(code: Option<CloseCode>, reason: &str) -> Bytes {
    let Some(code) = code else {
        return single(OpCode::Close, b"");
    };
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.0.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    single(OpCode::Close, &payload)
}

fn single(opcode: OpCode, payload: &[u8]) -> Bytes {
    let mut dst = BytesMut::with_capacity(payload.len() + 10);
    append_frame(&mut dst, true, false, opcode, payload);
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
        let huge = binary(&vec![0; 70_000]);
        assert_eq!(&huge[..10], &[0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
        assert_eq!(huge.len(), 70_010);
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
            &close(Some(CloseCode::POLICY), "x")[..],
            &[0x88, 3, 0x03, 0xF0, b'x']
        );
        assert_eq!(&close(None, "ignored")[..], &[0x88, 0]);
    }

    #[test]
    fn a_long_close_reason_is_cut_to_fit_at_a_character_boundary() {
        let frame = close(Some(CloseCode::NORMAL), &"é".repeat(100));
        assert_eq!(frame[1], 124, "2 bytes of code and 61 two-byte characters");
        assert!(std::str::from_utf8(&frame[4..]).is_ok());
    }

    #[test]
    fn rsv1_marks_a_compressed_message() {
        let mut dst = BytesMut::new();
        append_frame(&mut dst, true, true, OpCode::Text, b"z");
        assert_eq!(&dst[..], &[0xC1, 1, b'z']);
    }
}
