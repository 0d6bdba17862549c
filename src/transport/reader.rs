//! [`SocketReader`]: the client's bytes, read from the socket only when they
//! arrive, decoded into [`Incoming`] messages one at a time.

use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll};

use actix_web::web::Bytes;
use futures_util::Stream;
use tokio::net::TcpStream;

use super::decode::{Decoder, Incoming};

/// The most bytes read from the socket at once. The buffer lives on the
/// stack for the read only; an idle connection holds no read buffer.
const READ_CHUNK: usize = 8 * 1024;

/// The most reads in one poll before the reader lets the other
/// connections of its thread run (a large message takes many).
const MAX_READS_PER_POLL: usize = 16;

/// The stream of what one client sends, as the session receives it: whole
/// messages, control frames' content, and at the end the client's close or
/// the rule it broke. The stream ends after those, or when the client hangs
/// up.
pub struct SocketReader {
    socket: Rc<TcpStream>,
    decoder: Decoder,
    /// Read from the socket and not yet decoded.
    unread: Bytes,
    /// The client closed, broke the protocol or hung up: nothing more comes.
    done: bool,
}

impl SocketReader {
    /// Reads from `socket`, starting with `early`: bytes the client sent
    /// right behind its upgrade request.
    pub fn new(socket: Rc<TcpStream>, early: Bytes, decoder: Decoder) -> Self {
        Self {
            socket,
            decoder,
            unread: early,
            done: false,
        }
    }

    /// Reads what the socket has; `false` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        loop {
            ready!(self.socket.poll_read_ready(cx))?;
            let mut buf = [0u8; READ_CHUNK];
            match self.socket.try_read(&mut buf) {
                Ok(0) => return Poll::Ready(Ok(false)),
                Ok(n) => {
                    self.unread = Bytes::copy_from_slice(&buf[..n]);
                    return Poll::Ready(Ok(true));
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                Err(err) => return Poll::Ready(Err(err)),
            }
        }
    }

    /// Nothing is read after `last`.
    fn end_with(&mut self, last: Option<Incoming>) -> Poll<Option<Incoming>> {
        self.done = true;
        self.unread = Bytes::new();
        Poll::Ready(last)
    }
}

impl Stream for SocketReader {
    type Item = Incoming;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Incoming>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        for _ in 0..MAX_READS_PER_POLL {
            match this.decoder.decode(&mut this.unread) {
                Ok(Some(incoming @ Incoming::Close(_))) => return this.end_with(Some(incoming)),
                Ok(Some(incoming)) => return Poll::Ready(Some(incoming)),
                Ok(None) => {}
                Err(violation) => return this.end_with(Some(Incoming::Violation(violation))),
            }
            match ready!(this.poll_fill(cx)) {
                Ok(true) => {}
                Ok(false) => return this.end_with(None),
                Err(err) => {
                    log::debug!("websocket read failed: {err}");
                    return this.end_with(None);
                }
            }
        }
        // Come back for the rest right after the others had a turn.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
