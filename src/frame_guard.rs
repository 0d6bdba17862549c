//! Follows the frame headers in a client's byte stream, so the bytes can be
//! handed to the WebSocket decoder one frame at a time and an oversized frame
//! is refused the moment its header arrives.
//!
//! actix's WebSocket codec enforces its size limit only once a whole frame is
//! buffered, so a client that declares a 1 GiB frame would make the server
//! buffer up to 1 GiB before it answered 1009. And its stream reader pulls
//! every byte the socket has into one buffer before it decodes a single
//! frame, so a client that floods small frames would grow that buffer without
//! bound. [`FrameGuard`] answers both: it reads the headers (payload bytes are
//! skipped, never copied), says where the current frame ends, so the reader
//! hands over at most one frame per decode, and fails with [`FRAME_TOO_BIG`]
//! as soon as a header declares more than the limit. The session turns that
//! into close code 1009.

/// The error text the reader fails with; it reaches the session inside a
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

const FRAME_START: Position = Position::Header {
    bytes: [0; MAX_HEADER],
    have: 0,
};

/// A header declared a frame over the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooBig;

/// The frame-by-frame view of one client's byte stream; see the module docs.
#[derive(Debug)]
pub struct FrameGuard {
    max_frame_bytes: u64,
    position: Position,
}

impl FrameGuard {
    pub fn new(max_frame_bytes: usize) -> Self {
        Self {
            max_frame_bytes: max_frame_bytes as u64,
            position: FRAME_START,
        }
    }

    /// How many bytes at the start of `chunk`, the next bytes of the stream,
    /// reach to the end of the current frame: all of `chunk` when the frame
    /// goes on past it. The guard moves past those bytes.
    ///
    /// # Errors
    /// [`TooBig`] when a header in those bytes declares more than the limit.
    pub fn next_cut(&mut self, chunk: &[u8]) -> Result<usize, TooBig> {
        let mut at = 0;
        while at < chunk.len() {
            match &mut self.position {
                Position::Payload { left } => {
                    let skip = (*left).min((chunk.len() - at) as u64);
                    *left -= skip;
                    at += skip as usize;
                    if *left == 0 {
                        self.position = FRAME_START;
                        return Ok(at);
                    }
                }
                Position::Header { bytes, have } => {
                    bytes[*have] = chunk[at];
                    *have += 1;
                    at += 1;
                    let Some(length) = declared_length(&bytes[..*have]) else {
                        continue;
                    };
                    if length > self.max_frame_bytes {
                        return Err(TooBig);
                    }
                    self.position = Position::Payload { left: length };
                    if length == 0 {
                        self.position = FRAME_START;
                        return Ok(at);
                    }
                }
            }
        }
        Ok(at)
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

#[cfg(test)]
mod tests {
    use super::*;

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

    /// Feeds `chunks` through the guard as the reader would: the pieces it
    /// cuts, or the error.
    fn cut(chunks: &[&[u8]], max: usize) -> Result<Vec<Vec<u8>>, TooBig> {
        let mut guard = FrameGuard::new(max);
        let mut pieces = Vec::new();
        for chunk in chunks {
            let mut rest = *chunk;
            while !rest.is_empty() {
                let n = guard.next_cut(rest)?;
                assert!(n > 0, "every cut moves on");
                pieces.push(rest[..n].to_vec());
                rest = &rest[n..];
            }
        }
        Ok(pieces)
    }

    #[test]
    fn whole_frames_in_one_chunk_come_out_one_at_a_time() {
        let frames = [frame(10), frame(200), frame(70_000), frame(0)];
        let pieces = cut(&[&frames.concat()], 70_000).unwrap();
        assert_eq!(pieces, frames);
    }

    #[test]
    fn cuts_follow_frames_whatever_the_chunking() {
        let frames = [frame(10), frame(200), frame(70_000), frame(0)];
        let bytes = frames.concat();
        let ends: Vec<usize> = frames
            .iter()
            .scan(0, |end, f| {
                *end += f.len();
                Some(*end)
            })
            .collect();
        for size in [1, 3, 7, 1000] {
            let chunks: Vec<&[u8]> = bytes.chunks(size).collect();
            let pieces = cut(&chunks, 70_000).unwrap();
            assert_eq!(pieces.concat(), bytes, "{size}");
            let mut end = 0;
            for piece in &pieces {
                let starts_at = end;
                end += piece.len();
                // No piece runs past the end of the frame it starts in.
                let frame_end = ends.iter().find(|&&e| e > starts_at).unwrap();
                assert!(end <= *frame_end, "{size}: {starts_at}..{end}");
            }
        }
    }

    #[test]
    fn an_oversized_header_fails_after_the_frames_before_it() {
        let good = frame(20);
        let bytes = [good.clone(), header(1 << 40)].concat();
        let mut guard = FrameGuard::new(1000);
        assert_eq!(guard.next_cut(&bytes), Ok(good.len()));
        assert_eq!(guard.next_cut(&bytes[good.len()..]), Err(TooBig));

        let mut guard = FrameGuard::new(1000);
        let split = good.len() + 3;
        assert_eq!(guard.next_cut(&bytes[..good.len()]), Ok(good.len()));
        assert_eq!(guard.next_cut(&bytes[good.len()..split]), Ok(3));
        assert_eq!(guard.next_cut(&bytes[split..]), Err(TooBig));
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
