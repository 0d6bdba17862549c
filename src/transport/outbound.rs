//! [`Outbound`]: the frames queued for one client, written with one
//! vectored write per turn.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::task::{ready, Context, Poll};

use actix_web::web::Bytes;
use tokio::net::TcpStream;

/// The most queued buffers handed to one `writev`.
const MAX_SLICES: usize = 64;

/// Encoded frames for one client, not yet written to its socket.
///
/// The session pushes and the connection task writes; both run in the same
/// task, so the queue needs no waker: whatever the session pushes while it
/// runs is written right after, in the same turn.
#[derive(Default)]
pub struct Outbound {
    frames: RefCell<VecDeque<Bytes>>,
    bytes: Cell<usize>,
    /// Socket writes and the bytes they wrote, counted once per write.
    counters: Option<(prometheus::IntCounter, prometheus::IntCounter)>,
}

impl Outbound {
    /// A queue whose writes are counted in `metrics`.
    pub fn counted(metrics: &crate::metrics::Metrics) -> Self {
        Self {
            counters: Some((metrics.writes.clone(), metrics.bytes_written.clone())),
            ..Self::default()
        }
    }

    /// Queues encoded frames for the client.
    pub fn push(&self, frames: Bytes) {
        if frames.is_empty() {
            return;
        }
        self.bytes.set(self.bytes.get() + frames.len());
        self.frames.borrow_mut().push_back(frames);
    }

    /// Bytes queued and not yet written to the socket.
    pub fn pending_bytes(&self) -> usize {
        self.bytes.get()
    }

    /// Writes as much of the queue as `socket` takes: ready once the queue is
    /// empty, pending while the socket is full.
    ///
    /// # Errors
    /// The write failed: the client is gone.
    pub fn poll_write(&self, socket: &TcpStream, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.bytes.get() > 0 {
            ready!(socket.poll_write_ready(cx))?;
            let written = {
                let frames = self.frames.borrow();
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let count = frames.len().min(MAX_SLICES);
                for (slice, frame) in slices.iter_mut().zip(frames.iter()) {
                    *slice = IoSlice::new(frame);
                }
                match socket.try_write_vectored(&slices[..count]) {
                    Ok(written) => written,
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(err) => return Poll::Ready(Err(err)),
                }
            };
            if let Some((writes, bytes)) = &self.counters {
                writes.inc();
                bytes.inc_by(written as u64);
            }
            self.consume(written);
        }
        Poll::Ready(Ok(()))
    }

    /// Drops the first `written` bytes of the queue.
    fn consume(&self, mut written: usize) {
        self.bytes.set(self.bytes.get() - written);
        let mut frames = self.frames.borrow_mut();
        while written > 0 {
            let front = frames.front_mut().expect("written bytes were queued");
            if front.len() > written {
                *front = front.slice(written..);
                return;
            }
            written -= front.len();
            frames.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consuming_counts_down_and_splits_a_partly_written_frame() {
        let outbound = Outbound::default();
        outbound.push(Bytes::from_static(b"abc"));
        outbound.push(Bytes::new());
        outbound.push(Bytes::from_static(b"de"));
        assert_eq!(outbound.pending_bytes(), 5);

        outbound.consume(4);
        assert_eq!(outbound.pending_bytes(), 1);
        assert_eq!(
            outbound.frames.borrow().iter().collect::<Vec<_>>(),
            [&Bytes::from_static(b"e")]
        );
        outbound.consume(1);
        assert_eq!(outbound.pending_bytes(), 0);
        assert!(outbound.frames.borrow().is_empty());
    }
}
