//! [`SocketReader`]: the client's bytes, read from the socket only when they
//! arrive and handed to the WebSocket decoder a frame at a time.

use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll};

use actix_web::error::PayloadError;
use actix_web::web::Bytes;
use futures_util::Stream;
use tokio::net::TcpStream;

use crate::frame_guard::{FrameGuard, FRAME_TOO_BIG};

/// The most bytes read from the socket at once. The buffer lives on the
/// stack for the read only; an idle connection holds no read buffer.
const READ_CHUNK: usize = 8 * 1024;

/// The payload stream of one WebSocket connection.
///
/// actix's decoder pulls everything its source has before it decodes, so
/// this stream hands over at most one frame (or the part of one that has
/// arrived) and then reports pending, waking itself, so the decoder takes
/// that frame before more is read. A header that declares a frame over the
/// limit fails the stream with [`FRAME_TOO_BIG`] at once.
pub struct SocketReader {
    socket: Rc<TcpStream>,
    guard: FrameGuard,
    /// Read from the socket and not yet handed over.
    unread: Bytes,
    /// A piece was handed over since the decoder last ran.
    handed_over: bool,
    /// The stream failed or ended; nothing more comes.
    done: bool,
}

impl SocketReader {
    /// Reads from `socket`, starting with `early`: bytes the client sent
    /// right behind its upgrade request.
    pub fn new(socket: Rc<TcpStream>, early: Bytes, max_frame_bytes: usize) -> Self {
        Self {
            socket,
            guard: FrameGuard::new(max_frame_bytes),
            unread: early,
            handed_over: false,
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

    fn fail(&mut self, error: io::Error) -> Poll<Option<Result<Bytes, PayloadError>>> {
        self.done = true;
        self.unread = Bytes::new();
        Poll::Ready(Some(Err(PayloadError::Io(error))))
    }
}

impl Stream for SocketReader {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if this.handed_over {
            // Let the decoder run; come back for the next frame right after.
            this.handed_over = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if this.unread.is_empty() {
            match ready!(this.poll_fill(cx)) {
                Ok(true) => {}
                Ok(false) => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Err(err) => return this.fail(err),
            }
        }
        match this.guard.next_cut(&this.unread) {
            Ok(n) => {
                this.handed_over = true;
                Poll::Ready(Some(Ok(this.unread.split_to(n))))
            }
            Err(_) => this.fail(io::Error::new(io::ErrorKind::InvalidData, FRAME_TOO_BIG)),
        }
    }
}
