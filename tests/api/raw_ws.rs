//! A WebSocket client written by hand over a plain `TcpStream`, for the input
//! a well-behaved library refuses to produce: handshakes with missing or wrong
//! headers, unmasked or invalid frames, a giant frame, and a client that
//! completes the handshake and then never reads.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Ending, WAIT};

pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CONTINUATION: u8 = 0x0;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
/// The reserved bits, or-ed into an opcode: RSV1 marks a compressed message.
pub const RSV1: u8 = 0x40;
pub const RSV2: u8 = 0x20;
pub const RSV3: u8 = 0x10;

/// An upgrade request to `/ws`, well-formed until a test changes it.
pub struct Upgrade {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    /// Bytes sent in the same write as the request, right behind it.
    early: Vec<u8>,
}

/// The server's answer to an [`Upgrade`]: the HTTP head and body, and the
/// connection when it was switched to WebSocket (101).
pub struct Answer {
    pub status: u16,
    headers: Vec<(String, String)>,
    pub body: String,
    pub socket: Option<RawWs>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; fails the test when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|_| panic!("a JSON body, got {:?}", self.body))
    }

    /// The WebSocket, after checking the upgrade was accepted.
    pub fn accepted(self) -> RawWs {
        assert_eq!(self.status, 101, "upgrade refused: {}", self.body);
        self.socket.expect("a 101 keeps the socket")
    }
}

impl Upgrade {
    /// `GET /ws{query}` with every header a valid upgrade needs.
    pub fn new(query: &str) -> Self {
        let headers = [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
        ];
        Self {
            method: "GET".into(),
            target: format!("/ws{query}"),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            early: Vec::new(),
        }
    }

    /// The same upgrade as `method target`.
    pub fn request_line(mut self, method: &str, target: &str) -> Self {
        self.method = method.into();
        self.target = target.into();
        self
    }

    /// Sends `bytes` right behind the request, in the same write.
    pub fn followed_by(mut self, bytes: &[u8]) -> Self {
        self.early = bytes.to_vec();
        self
    }

    /// Sets `name` to `value`, replacing any earlier value.
    pub fn header(self, name: &str, value: &str) -> Self {
        let mut upgrade = self.without(name);
        upgrade.headers.push((name.into(), value.into()));
        upgrade
    }

    pub fn without(mut self, name: &str) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }

    /// Sends the request and reads the answer; fails after [`WAIT`].
    pub async fn send(self, address: SocketAddr) -> Answer {
        tokio::time::timeout(WAIT, self.exchange(address))
            .await
            .expect("the upgrade is answered in time")
    }

    async fn exchange(self, address: SocketAddr) -> Answer {
        let mut stream = TcpStream::connect(address).await.expect("chatd accepts");
        let mut request = format!(
            "{} {} HTTP/1.1\r\nHost: {address}\r\n",
            self.method, self.target
        );
        for (name, value) in &self.headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        let mut bytes = request.into_bytes();
        bytes.extend_from_slice(&self.early);
        stream.write_all(&bytes).await.unwrap();

        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.expect("the answer is read");
            assert!(n > 0, "the connection closed before an HTTP answer");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|code| code.parse().ok())
            .expect("an HTTP status line");
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        let rest = buf.split_off(head_end);
        if status == 101 {
            return Answer {
                status,
                headers,
                body: String::new(),
                socket: Some(RawWs { stream, buf: rest }),
            };
        }
        let length: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = rest;
        while body.len() < length {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.expect("the body is read");
            assert!(n > 0, "the connection closed inside the body");
            body.extend_from_slice(&chunk[..n]);
        }
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&body[..length]).to_string(),
            socket: None,
        }
    }
}

/// One frame from the server.
#[derive(Debug)]
pub struct Frame {
    pub fin: bool,
    /// RSV1: a compressed message (permessage-deflate).
    pub compressed: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The message it carries, inflated when it came compressed.
    pub fn message(&self) -> Vec<u8> {
        if !self.compressed {
            return self.payload.clone();
        }
        chatd::transport::deflate::inflate(&self.payload, 16 << 20)
            .expect("a compressed frame inflates")
    }
}

/// A WebSocket connection driven byte by byte.
pub struct RawWs {
    stream: TcpStream,
    /// Bytes read from the socket and not yet parsed.
    buf: Vec<u8>,
}

impl RawWs {
    /// Connects to `/ws{query}` with a valid handshake.
    pub async fn connect(address: SocketAddr, query: &str) -> Self {
        Upgrade::new(query).send(address).await.accepted()
    }

    /// The encoded bytes of a client frame, masked as clients must;
    /// `opcode` may carry reserved bits ([`RSV1`], ...).
    pub fn encode(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut frame = Self::header(fin, opcode, payload.len() as u64, true);
        let mask: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        frame
    }

    /// A frame header declaring `length` payload bytes (the mask key follows
    /// when `masked`).
    pub fn header(fin: bool, opcode: u8, length: u64, masked: bool) -> Vec<u8> {
        let mut header = vec![(u8::from(fin) << 7) | opcode];
        let mask_bit = u8::from(masked) << 7;
        match length {
            0..=125 => header.push(mask_bit | length as u8),
            126..=0xffff => {
                header.push(mask_bit | 126);
                header.extend_from_slice(&(length as u16).to_be_bytes());
            }
            _ => {
                header.push(mask_bit | 127);
                header.extend_from_slice(&length.to_be_bytes());
            }
        }
        header
    }

    pub async fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        self.write(&Self::encode(fin, opcode, payload)).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.send_frame(true, TEXT, text.as_bytes()).await;
    }

    /// Writes bytes as they are; fails after [`WAIT`].
    pub async fn write(&mut self, bytes: &[u8]) {
        tokio::time::timeout(WAIT, self.stream.write_all(bytes))
            .await
            .expect("the bytes are written in time")
            .expect("the bytes are written");
    }

    /// Writes as much of `bytes` as the server takes within `within`, and
    /// says how much that was; a server that hangs up ends the write early.
    pub async fn write_what_is_taken(&mut self, bytes: &[u8], within: Duration) -> usize {
        let mut written = 0;
        let _ = tokio::time::timeout(within, async {
            while written < bytes.len() {
                let end = (written + 64 * 1024).min(bytes.len());
                match self.stream.write(&bytes[written..end]).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => written += n,
                }
            }
        })
        .await;
        written
    }

    /// The next frame, or `None` when the connection ended; fails after
    /// [`WAIT`].
    pub async fn next_frame(&mut self) -> Option<Frame> {
        tokio::time::timeout(WAIT, self.read_frame())
            .await
            .expect("a frame or the end arrives in time")
    }

    /// The next text frame as JSON, skipping pings; fails when the
    /// connection ends or after [`WAIT`].
    pub async fn next_event(&mut self) -> Value {
        loop {
            let frame = self.next_frame().await.expect("the connection is open");
            match frame.opcode {
                TEXT => return serde_json::from_slice(&frame.message()).expect("events are JSON"),
                PING => continue,
                other => panic!("expected an event, got opcode {other}: {frame:?}"),
            }
        }
    }

    /// Reads until the server closes; fails after [`WAIT`].
    pub async fn ending(&mut self) -> Ending {
        loop {
            match self.next_frame().await {
                Some(frame) if frame.opcode == CLOSE => {
                    return match frame.payload.get(..2) {
                        Some(code) => Ending::Closed(u16::from_be_bytes([code[0], code[1]])),
                        None => Ending::ClosedWithoutCode,
                    }
                }
                Some(_) => continue,
                None => return Ending::Dropped,
            }
        }
    }

    /// Reads and throws away everything until the connection ends; `None`
    /// when it is still open after `within`, else the bytes read.
    pub async fn read_to_end(&mut self, within: Duration) -> Option<usize> {
        let mut total = self.buf.len();
        self.buf.clear();
        tokio::time::timeout(within, async {
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return total,
                    Ok(n) => total += n,
                }
            }
        })
        .await
        .ok()
    }

    async fn read_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// A complete unmasked frame at the start of `buf`, and its length in bytes.
fn parse_server_frame(buf: &[u8]) -> Option<(Frame, usize)> {
    let (&first, &second) = (buf.first()?, buf.get(1)?);
    assert_eq!(second & 0x80, 0, "server frames are never masked");
    let (length, start) = match second & 0x7f {
        126 => (
            u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (usize::from(n), 2),
    };
    let payload = buf.get(start..start + length)?.to_vec();
    let frame = Frame {
        fin: first & 0x80 != 0,
        compressed: first & 0x40 != 0,
        opcode: first & 0x0f,
        payload,
    };
    Some((frame, start + length))
}
