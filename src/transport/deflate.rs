//! permessage-deflate (RFC 7692): the offer a client makes in its upgrade,
//! the answer chatd gives, and the compression of one message.
//!
//! chatd always answers with `server_no_context_takeover` and
//! `client_no_context_takeover`: every message is compressed on its own, in
//! both directions. That costs a little ratio across messages and buys two
//! things:
//!
//! - a broadcast is compressed once, and the same bytes go to every receiver
//!   that agreed to the same window, since no receiver's history of earlier
//!   messages is part of the encoding;
//! - a connection keeps no compression state between messages, so an idle
//!   one costs what it did without compression. The deflate and inflate
//!   states are per thread, reset for each message.
//!
//! A message is compressed only when that makes it smaller; RFC 7692 lets
//! every message choose (RSV1 set or not), so a short event goes as it is.

use std::cell::RefCell;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// What a compressed message ends with before its last four bytes are cut
/// (RFC 7692, section 7.2.1), and what inflating puts back.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The largest LZ77 window, and so the one chatd uses unless the client
/// asks for less.
pub const MAX_WINDOW_BITS: u8 = 15;

/// What a connection agreed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deflate {
    /// The window chatd compresses with: 15 unless the client's
    /// `server_max_window_bits` asked for less (8 to 15).
    pub server_window_bits: u8,
}

impl Deflate {
    /// The agreement with the full window: what browsers get, and the one
    /// whose compressed broadcasts are shared.
    pub const FULL: Deflate = Deflate {
        server_window_bits: MAX_WINDOW_BITS,
    };

    /// The agreement's `Sec-WebSocket-Extensions` answer.
    pub fn response(&self) -> String {
        let mut answer = String::from(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        );
        if self.server_window_bits < MAX_WINDOW_BITS {
            answer.push_str(&format!(
                "; server_max_window_bits={}",
                self.server_window_bits
            ));
        }
        answer
    }
}

/// Picks the first acceptable permessage-deflate offer among the values of
/// the request's `Sec-WebSocket-Extensions` headers; `None` when there is
/// none, and the connection goes uncompressed (RFC 7692, section 5: an offer
/// chatd cannot accept is declined, not refused).
pub fn negotiate<'a>(header_values: impl IntoIterator<Item = &'a str>) -> Option<Deflate> {
    header_values
        .into_iter()
        .flat_map(split_outside_quotes(','))
        .find_map(|offer| accept(offer.trim()))
}

/// One offer: `permessage-deflate` and its parameters, each at most once,
/// each with a value only where RFC 7692 allows one.
fn accept(offer: &str) -> Option<Deflate> {
    let mut parts = split_outside_quotes(';')(offer);
    if !parts
        .next()?
        .trim()
        .eq_ignore_ascii_case("permessage-deflate")
    {
        return None;
    }
    let mut seen = Vec::new();
    let mut server_window_bits = MAX_WINDOW_BITS;
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((name, value)) => (name.trim(), Some(unquote(value.trim())?)),
            None => (param.trim(), None),
        };
        let name = name.to_ascii_lowercase();
        if seen.contains(&name) {
            return None;
        }
        match (name.as_str(), value) {
            ("server_no_context_takeover" | "client_no_context_takeover", None) => {}
            ("server_max_window_bits", Some(value)) => server_window_bits = window_bits(value)?,
            // Without a value it only says the client can take a limit; with
            // one, the client's own window: chatd inflates with the largest,
            // which takes any smaller, and sets no limit.
            ("client_max_window_bits", None) => {}
            ("client_max_window_bits", Some(value)) => {
                window_bits(value)?;
            }
            _ => return None,
        }
        seen.push(name);
    }
    Some(Deflate { server_window_bits })
}

/// A window size: 8 to 15, digits only, no leading zero.
fn window_bits(value: &str) -> Option<u8> {
    let valid =
        !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) && !value.starts_with('0');
    let bits: u8 = value.parse().ok().filter(|_| valid)?;
    (8..=MAX_WINDOW_BITS).contains(&bits).then_some(bits)
}

/// A parameter value as a token or a quoted string (RFC 7692, section 5.1:
/// the quoted string's content must be a token).
fn unquote(value: &str) -> Option<&str> {
    let inner = match value.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"')?,
        None => value,
    };
    (!inner.is_empty() && inner.bytes().all(is_token_byte)).then_some(inner)
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Splits at `separator` where it is not inside a quoted string.
fn split_outside_quotes(separator: char) -> impl Fn(&str) -> std::vec::IntoIter<&str> {
    move |text| {
        let mut parts = Vec::new();
        let (mut start, mut quoted) = (0, false);
        for (at, c) in text.char_indices() {
            match c {
                '"' => quoted = !quoted,
                c if c == separator && !quoted => {
                    parts.push(&text[start..at]);
                    start = at + 1;
                }
                _ => {}
            }
        }
        parts.push(&text[start..]);
        parts.into_iter()
    }
}

thread_local! {
    /// A deflate state per window size, made when first used on this thread.
    static DEFLATERS: RefCell<Vec<(u8, Compress)>> = const { RefCell::new(Vec::new()) };
    static INFLATER: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

/// The compressed payload of the message `payload` for a connection that
/// agreed on `deflate`, or `None` when compressing would not make it
/// smaller (then it goes uncompressed).
pub fn compress(deflate: Deflate, payload: &[u8]) -> Option<Vec<u8>> {
    if payload.len() < 16 {
        return None;
    }
    encode(deflate, payload).filter(|packed| packed.len() < payload.len())
}

/// `payload` compressed for a connection that agreed on `deflate`, however
/// long it comes out; `None` only if the deflater fails.
pub fn encode(deflate: Deflate, payload: &[u8]) -> Option<Vec<u8>> {
    DEFLATERS.with_borrow_mut(|deflaters| {
        let bits = deflate.server_window_bits;
        let at = match deflaters.iter().position(|(b, _)| *b == bits) {
            Some(at) => at,
            None => {
                deflaters.push((bits, deflater(bits)));
                deflaters.len() - 1
            }
        };
        let state = &mut deflaters[at].1;
        state.reset();
        let mut out = Vec::with_capacity(payload.len() + 16);
        loop {
            let read = state.total_in() as usize;
            out.reserve(64);
            let status = state.compress_vec(&payload[read..], &mut out, FlushCompress::Sync);
            if status.is_err() {
                return None;
            }
            // Done once all is read and the flush had room to finish.
            if state.total_in() as usize == payload.len() && out.len() < out.capacity() {
                break;
            }
        }
        if !out.ends_with(&TAIL) {
            return None;
        }
        out.truncate(out.len() - TAIL.len());
        Some(out)
    })
}

/// A window of 9 to 15 bits deflates as zlib does. zlib has no 8-bit window
/// for raw deflate (it would use 9), so a client that asked for 8 gets
/// stored blocks, which refer to nothing before them and fit any window.
fn deflater(bits: u8) -> Compress {
    match bits {
        8 => Compress::new_with_window_bits(Compression::none(), false, 9),
        bits => Compress::new_with_window_bits(Compression::fast(), false, bits),
    }
}

/// Why a compressed message could not be inflated.
#[derive(Debug, PartialEq, Eq)]
pub enum InflateError {
    /// It inflates past the limit (1009); inflating stopped there.
    TooBig,
    /// It is not valid deflate data (1007).
    Invalid,
}

/// Inflates the compressed message `payload`, to at most `limit` bytes: a
/// message that would inflate past it fails as soon as the limit is passed,
/// a piece at a time, so a small bomb never becomes a large allocation.
pub fn inflate(payload: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
    INFLATER.with_borrow_mut(|slot| {
        let state =
            slot.get_or_insert_with(|| Decompress::new_with_window_bits(false, MAX_WINDOW_BITS));
        state.reset(false);
        let mut out = Vec::new();
        let mut piece = [0u8; 8 * 1024];
        for input in [payload, &TAIL[..]] {
            let mut used = 0;
            loop {
                let (read, written) = (state.total_in(), state.total_out());
                let status = state
                    .decompress(&input[used..], &mut piece, FlushDecompress::Sync)
                    .map_err(|_| InflateError::Invalid)?;
                let read = (state.total_in() - read) as usize;
                let written = (state.total_out() - written) as usize;
                if out.len() + written > limit {
                    return Err(InflateError::TooBig);
                }
                out.extend_from_slice(&piece[..written]);
                used += read;
                match status {
                    // A final block ends the message; what follows is not
                    // deflate data and is ignored, as RFC 7692 allows.
                    Status::StreamEnd => return Ok(out),
                    _ if used == input.len() && written < piece.len() => break,
                    _ if read == 0 && written == 0 => return Err(InflateError::Invalid),
                    _ => {}
                }
            }
        }
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: Deflate = Deflate::FULL;

    #[test]
    fn what_browsers_offer_is_accepted_with_both_no_context_takeovers() {
        let agreed = negotiate(["permessage-deflate; client_max_window_bits"]);
        assert_eq!(agreed, Some(FULL));
        assert_eq!(
            FULL.response(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
    }

    #[test]
    fn a_smaller_server_window_is_honoured_and_answered() {
        let agreed = negotiate(["permessage-deflate; server_max_window_bits=\"10\""]).unwrap();
        assert_eq!(agreed.server_window_bits, 10);
        assert!(agreed.response().ends_with("; server_max_window_bits=10"));
    }

    #[test]
    fn an_offer_chatd_cannot_take_is_declined_and_the_next_one_tried() {
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=99",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; mystery",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(negotiate([bad]), None, "{bad}");
            let with_fallback = format!("{bad}, permessage-deflate");
            assert_eq!(negotiate([with_fallback.as_str()]), Some(FULL), "{bad}");
        }
        assert_eq!(negotiate(["foo", "permessage-deflate"]), Some(FULL));
        assert_eq!(negotiate([""]), None);
    }

    #[test]
    fn a_compressed_message_inflates_to_itself() {
        let message = br#"{"type":"echo","room":"general","message":"hello, hello, hello world","offset":42}"#;
        for bits in 8..=15 {
            let packed = compress(
                Deflate {
                    server_window_bits: bits,
                },
                message,
            );
            let packed = match packed {
                Some(packed) => packed,
                None if bits == 8 => continue,
                None => panic!("{bits}-bit window did not make it smaller"),
            };
            assert_eq!(inflate(&packed, 1 << 20).unwrap(), message, "{bits} bits");
        }
    }

    #[test]
    fn a_message_compressed_twice_is_the_same_bytes() {
        let message = "the same words for every receiver ".repeat(8);
        let first = compress(FULL, message.as_bytes()).unwrap();
        let _other = compress(FULL, "something else in between ".repeat(4).as_bytes()).unwrap();
        assert_eq!(compress(FULL, message.as_bytes()).unwrap(), first);
    }

    #[test]
    fn short_or_incompressible_messages_go_as_they_are() {
        assert_eq!(compress(FULL, b"{}"), None);
        let noise: Vec<u8> = (0..200u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        assert_eq!(compress(FULL, &noise), None);
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let zeros = vec![0u8; 4 << 20];
        let packed = compress(FULL, &zeros).unwrap();
        assert!(packed.len() < 64 * 1024, "{} bytes", packed.len());
        assert_eq!(inflate(&packed, 1 << 20), Err(InflateError::TooBig));
        assert_eq!(inflate(&packed, 4 << 20).unwrap().len(), 4 << 20);
    }

    #[test]
    fn garbage_is_invalid() {
        assert_eq!(
            inflate(&[0xff, 0xff, 0xff, 0xff, 0x00], 1024),
            Err(InflateError::Invalid)
        );
    }
}
