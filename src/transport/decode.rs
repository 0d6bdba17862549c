//! [`Decoder`]: a client's bytes in, whole messages out, with every rule of
//! RFC 6455 checked as soon as the bytes that break it arrive.
//!
//! Why it looks the way it does:
//! - It is fed whatever the socket had, a piece of a frame or a thousand
//!   frames, and gives back at most one [`Incoming`] per call, so a flood of
//!   small frames never piles up decoded and the caller decides when to read
//!   more.
//! - A header is checked the moment its bytes are in: reserved bits, opcode,
//!   masking and control-frame rules after its first two bytes, the length
//!   against MAX_FRAME_BYTES before a payload byte is buffered. A client that
//!   declares a 1 GiB frame is closed with 1009 at once, not after 1 GiB.
//! - Payload bytes are unmasked straight into the message being put
//!   together (fragments included), which MAX_FRAME_BYTES bounds as a whole.
//!   Text is validated as it arrives, across fragments and partial frames,
//!   so invalid UTF-8 is failed with 1007 on the offending bytes, not when
//!   the message ends.
//! - Control frames (close, ping, pong) may come between the fragments of a
//!   message; their payload (at most 125 bytes) has a buffer of its own.
//! - RSV1 marks a compressed message (permessage-deflate). Without the
//!   extension negotiated it is a protocol error; with it, the message is
//!   put together compressed and inflated in [`Decoder::finish_message`],
//!   to at most MAX_FRAME_BYTES (a bomb closes with 1009 once it inflates
//!   past the limit), and its text is checked after.
//!
//! An idle connection's decoder holds no heap memory: the buffers are taken
//! whole when a message is handed over.

use actix_web::web::{Bytes, BytesMut};
use bytestring::ByteString;

use super::deflate::{self, InflateError};
use super::frame::{OpCode, MAX_CONTROL_PAYLOAD};
use super::CloseCode;

/// What a client sent: a whole message, a control frame's content, or why
/// the connection must be closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A text message, valid UTF-8.
    Text(ByteString),
    /// A binary message.
    Binary(Bytes),
    /// A ping, to be answered with a pong carrying its payload.
    Ping(Bytes),
    /// A pong.
    Pong,
    /// The client's close, with its code (sendable) and reason (UTF-8);
    /// `None` when it gave no code. Nothing follows it.
    Close(Option<(CloseCode, ByteString)>),
    /// The client broke the protocol; the connection is closed with the
    /// violation's code. Nothing follows it.
    Violation(Violation),
}

/// A broken rule: the close code it earns and a short reason for the close
/// frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Violation {
    pub code: CloseCode,
    pub reason: &'static str,
}

const fn protocol(reason: &'static str) -> Violation {
    Violation {
        code: CloseCode::PROTOCOL,
        reason,
    }
}

const INVALID_UTF8: Violation = Violation {
    code: CloseCode::INVALID_DATA,
    reason: "invalid UTF-8",
};

const INVALID_DEFLATE: Violation = Violation {
    code: CloseCode::INVALID_DATA,
    reason: "invalid compressed data",
};

const TOO_BIG: Violation = Violation {
    code: CloseCode::TOO_BIG,
    reason: "message too big",
};

/// The longest frame header: 2 bytes, an 8-byte length and a 4-byte mask.
const MAX_HEADER: usize = 14;

/// A complete frame header.
#[derive(Debug, Clone, Copy)]
struct Head {
    fin: bool,
    /// Set on a compressed message's first frame.
    rsv1: bool,
    opcode: OpCode,
    mask: [u8; 4],
    length: u64,
}

/// Where the decoder is in the client's byte stream.
#[derive(Debug)]
enum State {
    /// Inside a header, with `have` of its bytes so far.
    Header { bytes: [u8; MAX_HEADER], have: u8 },
    /// Inside a payload, with `read` of its bytes so far.
    Payload { head: Head, read: u64 },
}

const FRAME_START: State = State::Header {
    bytes: [0; MAX_HEADER],
    have: 0,
};

/// A data message being put together from its frames.
#[derive(Debug)]
struct Message {
    text: bool,
    /// Its first frame had RSV1: the payload is compressed.
    compressed: bool,
    bytes: BytesMut,
    /// How far `bytes` is known to be UTF-8 (text only); past it at most an
    /// incomplete character waiting for its next bytes.
    checked: usize,
}

/// The decoding state of one connection; see the module docs.
#[derive(Debug)]
pub struct Decoder {
    max_message_bytes: u64,
    /// RSV1 is allowed on a message's first frame: an extension that
    /// compresses messages was negotiated.
    compression: bool,
    state: State,
    message: Option<Message>,
    /// The payload of the control frame being read.
    control: BytesMut,
}

impl Decoder {
    /// A decoder for messages of at most `max_message_bytes` (inflated, when
    /// compressed); `compression` when permessage-deflate was negotiated.
    pub fn new(max_message_bytes: usize, compression: bool) -> Self {
        Self {
            max_message_bytes: max_message_bytes as u64,
            compression,
            state: FRAME_START,
            message: None,
            control: BytesMut::new(),
        }
    }

    /// Decodes from the front of `input`, the next bytes from the client,
    /// up to the end of the next whole message or control frame, and
    /// returns it; `None` once `input` is used up without completing one.
    /// The bytes used are removed from `input`.
    ///
    /// # Errors
    /// The first rule the bytes break. The decoder is not to be used after.
    pub fn decode(&mut self, input: &mut Bytes) -> Result<Option<Incoming>, Violation> {
        loop {
            let head = match self.state {
                State::Payload { head, .. } => head,
                State::Header { .. } => {
                    let Some(head) = self.read_header(input)? else {
                        return Ok(None);
                    };
                    self.start_frame(&head)?;
                    self.state = State::Payload { head, read: 0 };
                    head
                }
            };
            if !self.read_payload(input)? {
                return Ok(None);
            }
            self.state = FRAME_START;
            if let Some(incoming) = self.finish_frame(&head)? {
                return Ok(Some(incoming));
            }
        }
    }

    /// Takes header bytes from `input`; the header once it is complete.
    fn read_header(&mut self, input: &mut Bytes) -> Result<Option<Head>, Violation> {
        let State::Header { bytes, have } = &mut self.state else {
            unreachable!("called inside a header only");
        };
        loop {
            let len = usize::from(*have);
            let needed = header_len(&bytes[..len]);
            if len == needed {
                return Ok(Some(parse_header(&bytes[..len])));
            }
            if input.is_empty() {
                return Ok(None);
            }
            let take = (needed - len).min(input.len());
            bytes[len..len + take].copy_from_slice(&input.split_to(take));
            *have += take as u8;
            if len < 2 && usize::from(*have) >= 2 {
                check_start(bytes[0], bytes[1], self.compression, self.message.is_some())?;
            }
        }
    }

    /// Checks the declared length and starts the message or control payload.
    fn start_frame(&mut self, head: &Head) -> Result<(), Violation> {
        if head.length >> 63 != 0 {
            return Err(protocol("frame length has its most significant bit set"));
        }
        if head.opcode.is_control() {
            self.control.clear();
            return Ok(());
        }
        let so_far = self.message.as_ref().map_or(0, |m| m.bytes.len() as u64);
        if so_far + head.length > self.max_message_bytes {
            return Err(TOO_BIG);
        }
        // Nothing is reserved for the declared length: a 14-byte header must
        // not cost the server 64 KiB. The buffer grows as the bytes come.
        self.message.get_or_insert_with(|| Message {
            text: head.opcode == OpCode::Text,
            compressed: head.rsv1,
            bytes: BytesMut::new(),
            checked: 0,
        });
        Ok(())
    }

    /// Takes payload bytes from `input`, unmasked into the message or the
    /// control buffer; `true` once the frame is complete.
    fn read_payload(&mut self, input: &mut Bytes) -> Result<bool, Violation> {
        let State::Payload { head, read } = &mut self.state else {
            unreachable!("called inside a payload only");
        };
        let take = (head.length - *read).min(input.len() as u64) as usize;
        let offset = (*read % 4) as usize;
        *read += take as u64;
        let complete = *read == head.length;
        if take == 0 {
            return Ok(complete);
        }
        let chunk = input.split_to(take);
        if head.opcode.is_control() {
            let start = self.control.len();
            self.control.extend_from_slice(&chunk);
            unmask(&mut self.control[start..], head.mask, offset);
            return Ok(complete);
        }
        let message = self.message.as_mut().expect("a data frame has a message");
        let start = message.bytes.len();
        message.bytes.extend_from_slice(&chunk);
        unmask(&mut message.bytes[start..], head.mask, offset);
        if message.text && !message.compressed {
            check_utf8(&message.bytes, &mut message.checked)?;
        }
        Ok(complete)
    }

    /// What a complete frame amounts to: a control frame's content, a whole
    /// message after its last frame, or `None` after any other fragment.
    fn finish_frame(&mut self, head: &Head) -> Result<Option<Incoming>, Violation> {
        let take_control = |control: &mut BytesMut| std::mem::take(control).freeze();
        Ok(Some(match head.opcode {
            OpCode::Ping => Incoming::Ping(take_control(&mut self.control)),
            OpCode::Pong => {
                take_control(&mut self.control);
                Incoming::Pong
            }
            OpCode::Close => Incoming::Close(close_payload(take_control(&mut self.control))?),
            _ if !head.fin => return Ok(None),
            _ => self.finish_message()?,
        }))
    }

    /// Hands over the message whose last frame just arrived.
    fn finish_message(&mut self) -> Result<Incoming, Violation> {
        let message = self
            .message
            .take()
            .expect("a final data frame has a message");
        if message.compressed {
            let limit = self.max_message_bytes as usize;
            let bytes = match deflate::inflate(&message.bytes, limit) {
                Ok(inflated) => Bytes::from(inflated),
                Err(InflateError::TooBig) => return Err(TOO_BIG),
                Err(InflateError::Invalid) => return Err(INVALID_DEFLATE),
            };
            if !message.text {
                return Ok(Incoming::Binary(bytes));
            }
            let text = ByteString::try_from(bytes).map_err(|_| INVALID_UTF8)?;
            return Ok(Incoming::Text(text));
        }
        let bytes = message.bytes.freeze();
        if !message.text {
            return Ok(Incoming::Binary(bytes));
        }
        if message.checked != bytes.len() {
            // The message ends inside a character.
            return Err(INVALID_UTF8);
        }
        let text = ByteString::try_from(bytes).map_err(|_| INVALID_UTF8)?;
        Ok(Incoming::Text(text))
    }
}

/// How long the header that starts with `partial` is: 2 bytes until the
/// second byte tells the length encoding (clients always mask).
fn header_len(partial: &[u8]) -> usize {
    let Some(second) = partial.get(1) else {
        return 2;
    };
    let extended = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + extended + 4
}

/// The rules a header's first two bytes must keep.
fn check_start(
    first: u8,
    second: u8,
    compression: bool,
    in_message: bool,
) -> Result<(), Violation> {
    let fin = first & 0x80 != 0;
    let rsv1 = first & 0x40 != 0;
    if first & 0x30 != 0 {
        return Err(protocol("reserved bits RSV2/RSV3 set"));
    }
    let opcode = OpCode::from_bits(first & 0x0f).ok_or(protocol("reserved opcode"))?;
    if second & 0x80 == 0 {
        return Err(protocol("client frames must be masked"));
    }
    if opcode.is_control() {
        if rsv1 {
            return Err(protocol("RSV1 set on a control frame"));
        }
        if !fin {
            return Err(protocol("fragmented control frame"));
        }
        if usize::from(second & 0x7f) > MAX_CONTROL_PAYLOAD {
            return Err(protocol("control frame over 125 bytes"));
        }
        return Ok(());
    }
    match (opcode, in_message) {
        (OpCode::Continuation, false) => Err(protocol("continuation frame with no message")),
        (OpCode::Continuation, true) if rsv1 => Err(protocol("RSV1 set on a continuation frame")),
        (OpCode::Text | OpCode::Binary, true) => {
            Err(protocol("new message inside a fragmented one"))
        }
        _ if rsv1 && !compression => Err(protocol("RSV1 set, but no extension was negotiated")),
        _ => Ok(()),
    }
}

/// A complete header of `header_len` bytes.
fn parse_header(bytes: &[u8]) -> Head {
    let (length, mask_at) = match bytes[1] & 0x7f {
        126 => (u64::from(u16::from_be_bytes([bytes[2], bytes[3]])), 4),
        127 => (
            u64::from_be_bytes(bytes[2..10].try_into().expect("8 bytes")),
            10,
        ),
        short => (u64::from(short), 2),
    };
    Head {
        fin: bytes[0] & 0x80 != 0,
        rsv1: bytes[0] & 0x40 != 0,
        opcode: OpCode::from_bits(bytes[0] & 0x0f).expect("checked by check_start"),
        mask: bytes[mask_at..mask_at + 4].try_into().expect("4 bytes"),
        length,
    }
}

/// XORs `bytes`, which start `offset` bytes into a payload, with `mask`.
fn unmask(bytes: &mut [u8], mask: [u8; 4], offset: usize) {
    let mask: [u8; 4] = std::array::from_fn(|i| mask[(offset + i) % 4]);
    let mut words = bytes.chunks_exact_mut(4);
    for word in &mut words {
        for (byte, m) in word.iter_mut().zip(mask) {
            *byte ^= m;
        }
    }
    for (byte, m) in words.into_remainder().iter_mut().zip(mask) {
        *byte ^= m;
    }
}

/// Moves `checked` past the UTF-8 that `bytes` holds beyond it, leaving at
/// most an incomplete last character unchecked.
///
/// # Errors
/// [`INVALID_UTF8`] as soon as a byte cannot be part of valid UTF-8.
fn check_utf8(bytes: &[u8], checked: &mut usize) -> Result<(), Violation> {
    match std::str::from_utf8(&bytes[*checked..]) {
        Ok(_) => *checked = bytes.len(),
        // `error_len` is `None` when the input merely ends inside a
        // character that more bytes could complete.
        Err(err) if err.error_len().is_none() => *checked += err.valid_up_to(),
        Err(_) => return Err(INVALID_UTF8),
    }
    Ok(())
}

/// A close frame's payload, checked: empty, or a sendable code and a UTF-8
/// reason.
fn close_payload(payload: Bytes) -> Result<Option<(CloseCode, ByteString)>, Violation> {
    match payload.len() {
        0 => return Ok(None),
        1 => return Err(protocol("close frame with a one-byte payload")),
        _ => {}
    }
    let code = CloseCode(u16::from_be_bytes([payload[0], payload[1]]));
    if !code.is_sendable() {
        return Err(protocol("invalid close code"));
    }
    let reason = ByteString::try_from(payload.slice(2..)).map_err(|_| INVALID_UTF8)?;
    Ok(Some((code, reason)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// A masked client frame; `first` is the whole first byte (FIN, RSV,
    /// opcode).
    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut bytes = vec![first];
        match payload.len() {
            len @ 0..=125 => bytes.push(0x80 | len as u8),
            len @ 126..=0xffff => {
                bytes.push(0x80 | 126);
                bytes.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                bytes.push(0x80 | 127);
                bytes.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        bytes.extend_from_slice(&MASK);
        bytes.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
        bytes
    }

    const TEXT: u8 = 0x81;
    const BINARY: u8 = 0x82;

    /// Everything `bytes` decodes to when fed in pieces of `size`, ending
    /// with the violation if one comes.
    fn decode_in_pieces(bytes: &[u8], size: usize, max: usize) -> Vec<Incoming> {
        let mut decoder = Decoder::new(max, false);
        let mut out = Vec::new();
        for piece in bytes.chunks(size) {
            let mut input = Bytes::copy_from_slice(piece);
            loop {
                match decoder.decode(&mut input) {
                    Ok(Some(incoming)) => out.push(incoming),
                    Ok(None) => break,
                    Err(violation) => {
                        out.push(Incoming::Violation(violation));
                        return out;
                    }
                }
            }
            assert!(input.is_empty(), "a piece is used up");
        }
        out
    }

    fn decode_all(bytes: &[u8]) -> Vec<Incoming> {
        decode_in_pieces(bytes, bytes.len().max(1), 1 << 20)
    }

    fn text(s: &str) -> Incoming {
        Incoming::Text(ByteString::from(s))
    }

    #[test]
    fn messages_come_out_whole_whatever_the_chunking() {
        let long = "é".repeat(40_000);
        let bytes = [
            frame(TEXT, b"hello"),
            frame(0x01, "caf".as_bytes()),
            frame(0x89, b"between"),
            frame(0x00, &"é!".as_bytes()[..1]),
            frame(0x80, &"é!".as_bytes()[1..]),
            frame(BINARY, &[0, 1, 2]),
            frame(TEXT, long.as_bytes()),
            frame(TEXT, b""),
            frame(0x8A, b""),
            frame(0x88, &[0x03, 0xe8, b'b', b'y', b'e']),
        ]
        .concat();
        let expected = vec![
            text("hello"),
            Incoming::Ping(Bytes::from_static(b"between")),
            text("café!"),
            Incoming::Binary(Bytes::from_static(&[0, 1, 2])),
            text(&long),
            text(""),
            Incoming::Pong,
            Incoming::Close(Some((CloseCode::NORMAL, ByteString::from("bye")))),
        ];
        for size in [1, 2, 3, 5, 13, 1000, bytes.len()] {
            assert_eq!(decode_in_pieces(&bytes, size, 1 << 20), expected, "{size}");
        }
    }

    #[test]
    fn each_broken_rule_gets_its_close_code() {
        let cases: Vec<(&str, Vec<u8>, CloseCode)> = vec![
            (
                "RSV1 without an extension",
                frame(0xC1, b"x"),
                CloseCode::PROTOCOL,
            ),
            ("RSV2", frame(0xA1, b"x"), CloseCode::PROTOCOL),
            ("RSV3", frame(0x91, b"x"), CloseCode::PROTOCOL),
            ("RSV1 on a ping", frame(0xC9, b""), CloseCode::PROTOCOL),
            (
                "reserved data opcode",
                frame(0x83, b""),
                CloseCode::PROTOCOL,
            ),
            (
                "reserved control opcode",
                frame(0x8B, b""),
                CloseCode::PROTOCOL,
            ),
            ("unmasked", vec![0x81, 0x00], CloseCode::PROTOCOL),
            ("fragmented ping", frame(0x09, b"half"), CloseCode::PROTOCOL),
            ("ping over 125", frame(0x89, &[0; 126]), CloseCode::PROTOCOL),
            (
                "orphan continuation",
                frame(0x80, b"x"),
                CloseCode::PROTOCOL,
            ),
            (
                "text inside a fragmented message",
                [frame(0x01, b"a"), frame(TEXT, b"b")].concat(),
                CloseCode::PROTOCOL,
            ),
            (
                "RSV1 on a continuation",
                [frame(0x01, b"a"), frame(0xC0, b"b")].concat(),
                CloseCode::PROTOCOL,
            ),
            ("close of one byte", frame(0x88, &[3]), CloseCode::PROTOCOL),
            (
                "close code 1005",
                frame(0x88, &[0x03, 0xed]),
                CloseCode::PROTOCOL,
            ),
            (
                "close code 999",
                frame(0x88, &[0x03, 0xe7]),
                CloseCode::PROTOCOL,
            ),
            (
                "close code 5000",
                frame(0x88, &[0x13, 0x88]),
                CloseCode::PROTOCOL,
            ),
            (
                "close reason not UTF-8",
                frame(0x88, &[0x03, 0xe8, 0xff]),
                CloseCode::INVALID_DATA,
            ),
            (
                "text not UTF-8",
                frame(TEXT, b"\xff"),
                CloseCode::INVALID_DATA,
            ),
            (
                "text ending inside a character",
                frame(TEXT, &"é".as_bytes()[..1]),
                CloseCode::INVALID_DATA,
            ),
            (
                "frame over the limit",
                frame(TEXT, &[b'a'; 101]),
                CloseCode::TOO_BIG,
            ),
            (
                "fragments over the limit",
                [frame(0x01, &[b'a'; 60]), frame(0x80, &[b'a'; 41])].concat(),
                CloseCode::TOO_BIG,
            ),
            (
                "a 63-bit length",
                [
                    vec![0x82, 0xff],
                    vec![0x80, 0, 0, 0, 0, 0, 0, 0],
                    MASK.to_vec(),
                ]
                .concat(),
                CloseCode::PROTOCOL,
            ),
        ];
        for (what, bytes, code) in cases {
            let out = decode_in_pieces(&bytes, bytes.len(), 100);
            match out.last() {
                Some(Incoming::Violation(v)) => assert_eq!(v.code, code, "{what}: {v:?}"),
                other => panic!("{what}: expected a violation, got {other:?}"),
            }
        }
    }

    #[test]
    fn invalid_utf8_fails_on_the_offending_bytes_not_at_the_end() {
        // A fragment that can never become UTF-8, then a fragment that would
        // end the message: the first is enough.
        let mut decoder = Decoder::new(1 << 20, false);
        let mut first = Bytes::from(frame(0x01, b"caf\xc3\x28"));
        assert_eq!(decoder.decode(&mut first), Err(INVALID_UTF8));

        // Inside one frame, before its payload is complete.
        let whole = frame(
            TEXT,
            &[b"ok".as_slice(), b"\xf4\x90".as_slice(), &[b'x'; 1000][..]].concat(),
        );
        let mut decoder = Decoder::new(1 << 20, false);
        // 8 bytes of header (a 16-bit length), then the payload.
        let mut part = Bytes::copy_from_slice(&whole[..10]);
        assert_eq!(decoder.decode(&mut part), Ok(None), "\"ok\" is fine");
        let mut part = Bytes::copy_from_slice(&whole[10..12]);
        assert_eq!(
            decoder.decode(&mut part),
            Err(INVALID_UTF8),
            "U+110000 and up"
        );
    }

    #[test]
    fn an_oversized_header_is_refused_before_its_payload() {
        let mut decoder = Decoder::new(1000, false);
        let mut header = Bytes::from(
            [
                vec![0x81, 0xff],
                (1u64 << 40).to_be_bytes().to_vec(),
                MASK.to_vec(),
            ]
            .concat(),
        );
        assert_eq!(decoder.decode(&mut header), Err(TOO_BIG));
    }

    #[test]
    fn after_a_message_the_decoder_holds_no_buffer() {
        let mut decoder = Decoder::new(1 << 20, false);
        let bytes = [frame(TEXT, &[b'a'; 5000]), frame(0x89, b"p")].concat();
        let mut input = Bytes::from(bytes);
        assert!(matches!(
            decoder.decode(&mut input),
            Ok(Some(Incoming::Text(_)))
        ));
        assert!(matches!(
            decoder.decode(&mut input),
            Ok(Some(Incoming::Ping(_)))
        ));
        assert!(decoder.message.is_none());
        assert_eq!(decoder.control.capacity(), 0);
    }

    /// Decodes `bytes` whole on a connection that negotiated compression.
    fn decode_compressed(bytes: &[u8], max: usize) -> Vec<Incoming> {
        let mut decoder = Decoder::new(max, true);
        let mut input = Bytes::copy_from_slice(bytes);
        let mut out = Vec::new();
        loop {
            match decoder.decode(&mut input) {
                Ok(Some(incoming)) => out.push(incoming),
                Ok(None) => return out,
                Err(violation) => {
                    out.push(Incoming::Violation(violation));
                    return out;
                }
            }
        }
    }

    const FULL: deflate::Deflate = deflate::Deflate::FULL;

    #[test]
    fn a_compressed_message_is_inflated_fragmented_or_not() {
        let text = "a chat message, a chat message, a chat message".repeat(4);
        let packed = deflate::compress(FULL, text.as_bytes()).unwrap();
        let (head, tail) = packed.split_at(packed.len() / 2);
        // RSV1 on the first frame only; a plain message may follow.
        let fragmented = [
            frame(0x41, head),
            frame(0x89, b"p"),
            frame(0x80, tail),
            frame(TEXT, b"plain"),
        ]
        .concat();
        let out = decode_compressed(&fragmented, 1 << 20);
        assert_eq!(
            out,
            vec![
                Incoming::Ping(Bytes::from_static(b"p")),
                Incoming::Text(text.clone().into()),
                Incoming::Text("plain".into()),
            ]
        );
        let binary = decode_compressed(&frame(0xC2, &packed), 1 << 20);
        assert_eq!(binary, vec![Incoming::Binary(Bytes::from(text))]);
    }

    #[test]
    fn a_compressed_message_that_inflates_too_far_or_badly_is_refused() {
        let bomb = deflate::compress(FULL, &vec![b'a'; 1 << 20]).unwrap();
        assert!(bomb.len() < 64 * 1024);
        let out = decode_compressed(&frame(0xC1, &bomb), 64 * 1024);
        assert_eq!(out, vec![Incoming::Violation(TOO_BIG)]);

        let out = decode_compressed(&frame(0xC1, &[0xff; 8]), 1 << 20);
        assert_eq!(out, vec![Incoming::Violation(INVALID_DEFLATE)]);

        let latin1 = deflate::compress(FULL, &b"caf\xe9 ".repeat(10)).unwrap();
        let out = decode_compressed(&frame(0xC1, &latin1), 1 << 20);
        assert_eq!(out, vec![Incoming::Violation(INVALID_UTF8)]);
    }

    #[test]
    fn a_declared_length_costs_nothing_until_its_bytes_come() {
        let mut decoder = Decoder::new(1 << 20, false);
        let whole = frame(TEXT, &[b'a'; 60_000]);
        let mut header_and_a_byte = Bytes::copy_from_slice(&whole[..9]);
        assert_eq!(decoder.decode(&mut header_and_a_byte), Ok(None));
        let held = decoder.message.as_ref().map(|m| m.bytes.capacity());
        assert!(held.is_some_and(|capacity| capacity < 1024), "{held:?}");
    }

    #[test]
    fn an_empty_close_has_no_code() {
        assert_eq!(decode_all(&frame(0x88, b"")), vec![Incoming::Close(None)]);
    }
}
