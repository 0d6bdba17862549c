//! Checks each client frame's declared length as soon as its header arrives.
//!
//! actix's WebSocket codec enforces its size limit only once a whole frame is
//! buffered, so a client that declares a 1 GiB frame makes the server buffer
//! up to 1 GiB before it answers 1009. [`FrameGuard`] sits between the request
//! payload and the codec, follows the frame headers in the byte stream
//! (payload bytes pass through untouched, never copied), and fails the stream
//! with [`FRAME_TOO_BIG`] the moment a header declares more than the limit.
//! The session turns that into close code 1009.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::error::PayloadError;
use actix_web::web::Bytes;
use futures_util::Stream;

/// The error text the stream fails with; it reaches the session inside a
/// `ProtocolError::Io`.
pub const FRAME_TOO_BIG: &str = "websocket frame declares more than MAX_FRAME_BYTES";

/// The longest frame header: 2 bytes, an 8-byte length and a 4-byte mask.
const MAX_HEADER: usize = 14;

/// Where the guard is in the client's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    /// Inside a header, with `have` of its bytes seen so far.
    Header {
        bytes: [u8; MAX_HEADER],
        have: usize,
    },
    /// Inside a payload, with `left` bytes to go.
    Payload { left: u64 },
}

/// The payload stream, cut off at the first oversized frame; see the module docs.
pub struct FrameGuard<S> {
    inner: S,
    max_frame_bytes: u64,
    position: Position,
    /// Set once a frame was too big: the error is due, then the end.
    tripped: Option<bool>,
}

impl<S> FrameGuard<S> {
    pub fn new(inner: S, max_frame_bytes: usize) -> Self {
        Self {
            inner,
            max_frame_bytes: max_frame_bytes as u64,
            position: Position::Header {
                bytes: [0; MAX_HEADER],
                have: 0,
            },
            tripped: None,
        }
    }

    /// Follows `chunk`; on an oversized header, the length of the chunk before
    /// that header.
    fn scan(&mut self, chunk: &[u8]) -> Result<(), usize> {
        let mut at = 0;
        while at < chunk.len() {
            match &mut self.position {
                Position::Payload { left } => {
                    let skip = (*left).min((chunk.len() - at) as u64);
                    *left -= skip;
                    at += skip as usize;
                    if *left == 0 {
                        self.position = Position::Header {
                            bytes: [0; MAX_HEADER],
                            have: 0,
                        };
                    }
                }
                Position::Header { bytes, have } => {
                    let header_start = at.saturating_sub(*have);
                    bytes[*have] = chunk[at];
                    *have += 1;
                    at += 1;
                    let Some(length) = declared_length(&bytes[..*have]) else {
                        continue;
                    };
                    if length > self.max_frame_bytes {
                        return Err(header_start);
                    }
                    self.position = Position::Payload { left: length };
                }
            }
        }
        Ok(())
    }
}

/// The payload length a complete header declares; `None` while `header` is
/// still incomplete.
fn declared_length(header: &[u8]) -> Option<u64> {
    let second = *header.get(1)?;
    let extended = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    if header.len() < 2 + extended + mask {
        return None;
    }
    Some(match extended {
        2 => u64::from(u16::from_be_bytes([header[2], header[3]])),
        8 => u64::from_be_bytes(header[2..10].try_into().expect("8 bytes")),
        _ => u64::from(second & 0x7f),
    })
}

impl<S> Stream for FrameGuard<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.tripped {
            Some(true) => return Poll::Ready(None),
            Some(false) => {
                self.tripped = Some(true);
                let error = io::Error::new(io::ErrorKind::InvalidData, FRAME_TOO_BIG);
                return Poll::Ready(Some(Err(PayloadError::Io(error))));
            }
            None => {}
        }
        let chunk = match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => chunk,
            other => return other,
        };
        match self.scan(&chunk) {
            Ok(()) => Poll::Ready(Some(Ok(chunk))),
            Err(before) => {
                // The frames before the oversized one still count.
                self.tripped = Some(false);
                cx.waker().wake_by_ref();
                Poll::Ready(Some(Ok(chunk.slice(..before))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn header(length: u64) -> Vec<u8> {
        let mut header = vec![0x81];
        match length {
            0..=125 => header.push(0x80 | length as u8),
            126..=0xffff => {
                header.push(0x80 | 126);
                header.extend_from_slice(&(length as u16).to_be_bytes());
            }
            _ => {
                header.push(0x80 | 127);
                header.extend_from_slice(&length.to_be_bytes());
            }
        }
        header.extend_from_slice(&[1, 2, 3, 4]);
        header
    }

    fn frame(length: usize) -> Vec<u8> {
        [header(length as u64), vec![b'a'; length]].concat()
    }

    /// Everything the guard lets through, and whether it failed.
    async fn run(chunks: Vec<Vec<u8>>, max: usize) -> (Vec<u8>, bool) {
        let inner = futures_util::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, PayloadError>(Bytes::from(c))),
        );
        let mut guard = FrameGuard::new(inner, max);
        let (mut passed, mut failed) = (Vec::new(), false);
        while let Some(item) = guard.next().await {
            match item {
                Ok(bytes) => passed.extend_from_slice(&bytes),
                Err(err) => {
                    assert!(err.to_string().contains(FRAME_TOO_BIG));
                    failed = true;
                }
            }
        }
        (passed, failed)
    }

    #[actix_rt::test]
    async fn frames_within_the_limit_pass_whatever_the_chunking() {
        let bytes = [frame(10), frame(200), frame(70_000), frame(0)].concat();
        for size in [1, 3, 7, 1000, bytes.len()] {
            let chunks = bytes.chunks(size).map(<[u8]>::to_vec).collect();
            assert_eq!(run(chunks, 70_000).await, (bytes.clone(), false), "{size}");
        }
    }

    #[actix_rt::test]
    async fn an_oversized_header_fails_at_once_after_the_frames_before_it() {
        let good = frame(20);
        let bytes = [good.clone(), header(1 << 40)].concat();
        for size in [1, 5, bytes.len()] {
            let chunks = bytes.chunks(size).map(<[u8]>::to_vec).collect();
            let (passed, failed) = run(chunks, 1000).await;
            assert!(failed, "{size}");
            assert!(passed.starts_with(&good), "{size}");
            assert!(passed.len() < bytes.len(), "{size}");
        }
    }

    #[test]
    fn lengths_are_read_in_all_three_encodings() {
        assert_eq!(declared_length(&header(5)), Some(5));
        assert_eq!(declared_length(&header(300)), Some(300));
        assert_eq!(declared_length(&header(1 << 33)), Some(1 << 33));
        assert_eq!(declared_length(&header(300)[..3]), None);
        assert_eq!(declared_length(&[0x81, 0x05]), Some(5), "unmasked");
    }
}
