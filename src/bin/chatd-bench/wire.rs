//! Just enough WebSocket (RFC 6455) for a load client: the upgrade request
//! with a fixed key, masked client frames, and unmasked server frames parsed
//! in place from a read buffer. A general library would allocate a message
//! per frame; at a million deliveries a second the tool must not be what is
//! measured.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};

/// The key from RFC 6455 §1.3, and the answer a real server must give.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &[u8] = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// Any fixed key does: masking protects proxies, not a benchmark.
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A server frame larger than this is treated as a fault, not buffered.
const MAX_FRAME: u64 = 16 << 20;

/// Whether connections offer permessage-deflate (`--compress`): set once,
/// before the first connection, for the whole run.
static COMPRESS: AtomicBool = AtomicBool::new(false);

/// What every connection offers when compressing: what browsers offer.
const OFFER: &str = "permessage-deflate; client_max_window_bits";

/// Makes every connection from now on offer permessage-deflate and insist
/// on it, and take compressed frames.
pub fn offer_compression() {
    COMPRESS.store(true, Ordering::Relaxed);
}

fn compressing() -> bool {
    COMPRESS.load(Ordering::Relaxed)
}

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// The HTTP request that opens a WebSocket on `host` at `path` (`/ws` and
/// its query).
pub fn upgrade_request(host: &str, path: &str) -> String {
    let offer = if compressing() {
        format!("Sec-WebSocket-Extensions: {OFFER}\r\n")
    } else {
        String::new()
    };
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n"
    )
}

/// How far the server's answer to the upgrade has come.
#[derive(Debug, PartialEq, Eq)]
pub enum Upgrade {
    /// The headers are not complete yet.
    Incomplete,
    /// 101 with the right accept key; frames start at `header_len`.
    Accepted { header_len: usize },
    /// Anything else, with the status line.
    Refused(String),
}

pub fn parse_upgrade(buf: &[u8]) -> Upgrade {
    let Some(end) = memchr::memmem::find(buf, b"\r\n\r\n") else {
        return Upgrade::Incomplete;
    };
    let head = &buf[..end];
    let status = head.split(|&b| b == b'\r').next().unwrap_or_default();
    if !status.starts_with(b"HTTP/1.1 101") {
        return Upgrade::Refused(String::from_utf8_lossy(status).into_owned());
    }
    if memchr::memmem::find(head, ACCEPT).is_none() {
        return Upgrade::Refused("101 without the expected Sec-WebSocket-Accept".into());
    }
    if compressing() && memchr::memmem::find(head, b"permessage-deflate").is_none() {
        return Upgrade::Refused(
            "101 without permessage-deflate, which --compress asks for".into(),
        );
    }
    Upgrade::Accepted {
        header_len: end + 4,
    }
}

/// Appends one masked client frame.
pub fn encode(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
}

/// One server frame, borrowed from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub fin: bool,
    /// RSV1: the message is compressed (permessage-deflate).
    pub compressed: bool,
    pub opcode: u8,
    pub payload: &'a [u8],
}

impl Frame<'_> {
    /// The message's payload, inflated when it came compressed.
    ///
    /// # Errors
    /// A compressed payload that does not inflate.
    pub fn message(&self) -> Result<Cow<'_, [u8]>, WireError> {
        if !self.compressed {
            return Ok(Cow::Borrowed(self.payload));
        }
        chatd::transport::deflate::inflate(self.payload, MAX_FRAME as usize)
            .map(Cow::Owned)
            .map_err(|_| WireError::Inflate)
    }
}

/// A server frame no client should accept.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("server frame is masked")]
    Masked,
    #[error("server frame uses reserved bits")]
    Reserved,
    #[error("server frame of {0} bytes is too large")]
    TooLarge(u64),
    #[error("server frame does not inflate")]
    Inflate,
}

/// Parses the frame at the start of `buf`: the frame and its length in
/// bytes, or `None` when `buf` holds only part of it.
///
/// # Errors
/// A frame a server must not send.
pub fn parse_frame(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, WireError> {
    let [first, second, ..] = *buf else {
        return Ok(None);
    };
    let compressed = first & 0x40 != 0;
    if first & 0x30 != 0 || (compressed && !compressing()) {
        return Err(WireError::Reserved);
    }
    if second & 0x80 != 0 {
        return Err(WireError::Masked);
    }
    let (len, header) = match second & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => (u64::from_be_bytes(b.try_into().expect("eight bytes")), 10),
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if len > MAX_FRAME {
        return Err(WireError::TooLarge(len));
    }
    let total = header + len as usize;
    let Some(payload) = buf.get(header..total) else {
        return Ok(None);
    };
    let frame = Frame {
        fin: first & 0x80 != 0,
        compressed,
        opcode: first & 0x0f,
        payload,
    };
    Ok(Some((frame, total)))
}

/// The status code of a close frame's payload, 1005 when it has none.
pub fn close_code(payload: &[u8]) -> u16 {
    match payload {
        [a, b, ..] => u16::from_be_bytes([*a, *b]),
        _ => 1005,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => out.push(n as u8),
            n if n <= 65_535 => {
                out.push(126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn frames_of_every_length_form_parse_whole_and_wait_when_partial() {
        for size in [0, 5, 125, 126, 300, 65_535, 65_536, 70_000] {
            let payload = vec![b'a'; size];
            let bytes = server_frame(OP_TEXT, &payload);
            let (frame, used) = parse_frame(&bytes).unwrap().unwrap();
            assert_eq!(used, bytes.len(), "size {size}");
            assert_eq!(frame.payload.len(), size);
            assert!(frame.fin);
            assert_eq!(frame.opcode, OP_TEXT);
            for cut in [0, 1, 3, bytes.len() - 1]
                .into_iter()
                .filter(|&c| c < bytes.len())
            {
                assert_eq!(
                    parse_frame(&bytes[..cut]),
                    Ok(None),
                    "size {size} cut {cut}"
                );
            }
        }
    }

    #[test]
    fn back_to_back_frames_parse_one_after_another() {
        let mut bytes = server_frame(OP_TEXT, b"one");
        bytes.extend(server_frame(OP_PING, b""));
        bytes.extend(server_frame(OP_CLOSE, &1001u16.to_be_bytes()));
        let mut at = 0;
        let mut seen = Vec::new();
        while let Some((frame, used)) = parse_frame(&bytes[at..]).unwrap() {
            seen.push((frame.opcode, frame.payload.to_vec()));
            at += used;
        }
        assert_eq!(at, bytes.len());
        assert_eq!(seen[0], (OP_TEXT, b"one".to_vec()));
        assert_eq!(seen[1].0, OP_PING);
        assert_eq!(close_code(&seen[2].1), 1001);
        assert_eq!(close_code(b""), 1005);
    }

    #[test]
    fn frames_a_server_must_not_send_are_refused() {
        assert_eq!(
            parse_frame(&[0x81, 0x81, 0, 0, 0, 0, 0]),
            Err(WireError::Masked)
        );
        assert_eq!(parse_frame(&[0xC1, 0x00]), Err(WireError::Reserved));
        let mut huge = vec![0x81, 127];
        huge.extend_from_slice(&(1u64 << 40).to_be_bytes());
        assert_eq!(parse_frame(&huge), Err(WireError::TooLarge(1 << 40)));
    }

    #[test]
    fn client_frames_are_masked_and_unmask_to_the_payload() {
        for size in [3, 200, 70_000] {
            let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let mut out = Vec::new();
            encode(&mut out, OP_TEXT, &payload);
            assert_eq!(out[0], 0x81);
            assert_ne!(out[1] & 0x80, 0, "mask bit");
            let header = match out[1] & 0x7f {
                126 => 4,
                127 => 10,
                _ => 2,
            };
            let mask = &out[header..header + 4];
            let unmasked: Vec<u8> = out[header + 4..]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            assert_eq!(unmasked, payload, "size {size}");
        }
    }

    #[test]
    fn the_upgrade_answer_is_checked() {
        let ok = format!(
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\
             sec-websocket-accept: {}\r\n\r\n\x01\x02hi",
            std::str::from_utf8(ACCEPT).unwrap()
        );
        let header_len = ok.len() - 4;
        assert_eq!(
            parse_upgrade(ok.as_bytes()),
            Upgrade::Accepted { header_len }
        );
        assert_eq!(parse_upgrade(&ok.as_bytes()[..20]), Upgrade::Incomplete);
        let cases = [
            (
                "busy",
                "HTTP/1.1 503 Service Unavailable\r\n\r\n",
                "HTTP/1.1 503 Service Unavailable",
            ),
            (
                "wrong key",
                "HTTP/1.1 101 Switching Protocols\r\nsec-websocket-accept: x\r\n\r\n",
                "101 without the expected Sec-WebSocket-Accept",
            ),
        ];
        for (what, answer, status) in cases {
            assert_eq!(
                parse_upgrade(answer.as_bytes()),
                Upgrade::Refused(status.into()),
                "{what}"
            );
        }
        let request = upgrade_request("127.0.0.1:1", "/ws?room=r-3");
        assert!(request.starts_with("GET /ws?room=r-3 HTTP/1.1\r\n"));
        assert!(request.contains(KEY));
    }
}
