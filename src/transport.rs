//! The byte path from a `WsSession` to its socket, built so that a client
//! that stops reading cannot stall its session or grow memory without bound.
//!
//! actix-web-actors runs a session inside the HTTP response body: the actor is
//! polled only when the connection asks for more body. A client that stops
//! reading fills the connection's write buffer, the body is no longer polled,
//! and the session freezes, while the hub keeps filling its mailbox. So here a
//! small local task (the pump) drives the session's context all the time, and
//! the session writes encoded frames straight into its [`Outbound`] queue,
//! which the response body drains. The bytes in that queue are the session's
//! pending output; past its limit the session closes itself with 1008.
//!
//! The queue holds frames encoded once for every receiver (see `wire`), so a
//! delivery costs a reference count and a push, and everything queued for one
//! client leaves in one write when the connection next flushes.
//!
//! When the session stops, the queue is finished: the body ends after the
//! close frame and actix closes the connection, as the server should under
//! RFC 6455. A session closed for not reading still has its close frame queued
//! behind data the client never reads; so the pump gives the client
//! [`CLOSE_LINGER`] to take it, then shuts the socket down.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use actix_web::web::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::sync::oneshot;

/// How long a stopped session's client gets to read what is left before the
/// socket is shut down under it.
pub const CLOSE_LINGER: Duration = Duration::from_secs(5);

/// Encoded frames for one client, not yet taken by its connection. Shared by
/// the session (which pushes) and the response body (which takes), both on
/// the connection's worker thread.
#[derive(Default)]
pub struct Outbound {
    frames: RefCell<VecDeque<Bytes>>,
    bytes: Cell<usize>,
    finished: Cell<bool>,
    body: Cell<Option<Waker>>,
}

impl Outbound {
    /// Queues encoded frames for the client.
    pub fn push(&self, frames: Bytes) {
        if self.finished.get() || frames.is_empty() {
            return;
        }
        self.bytes.set(self.bytes.get() + frames.len());
        self.frames.borrow_mut().push_back(frames);
        if let Some(waker) = self.body.take() {
            waker.wake();
        }
    }

    /// Bytes queued and not yet taken by the connection.
    pub fn pending_bytes(&self) -> usize {
        self.bytes.get()
    }

    /// No more frames: the body ends once the queue is empty.
    fn finish(&self) {
        self.finished.set(true);
        if let Some(waker) = self.body.take() {
            waker.wake();
        }
    }

    fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if let Some(frames) = self.frames.borrow_mut().pop_front() {
            self.bytes.set(self.bytes.get() - frames.len());
            return Poll::Ready(Some(frames));
        }
        if self.finished.get() {
            return Poll::Ready(None);
        }
        self.body.set(Some(cx.waker().clone()));
        Poll::Pending
    }
}

/// The raw socket of a connection, recorded when it is accepted (see
/// [`remember_socket`]) so a stalled client can be hung up on.
#[derive(Debug, Clone, Copy)]
pub struct PeerSocket(#[cfg(unix)] std::os::fd::RawFd);

/// `HttpServer::on_connect` hook: stores the connection's [`PeerSocket`].
pub fn remember_socket(conn: &dyn std::any::Any, data: &mut actix_web::dev::Extensions) {
    #[cfg(unix)]
    if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
        use std::os::fd::AsRawFd;
        data.insert(PeerSocket(tcp.as_raw_fd()));
    }
}

/// Starts the pump for `session_stream` (from `WebsocketContext::with_codec`)
/// and returns the response body that carries what the session queues in
/// `outbound`.
///
/// Must be called on the worker thread that serves the connection, which is
/// where request handlers run.
pub fn spawn<S>(
    session_stream: S,
    outbound: Rc<Outbound>,
    socket: Option<PeerSocket>,
) -> impl Stream<Item = Result<Bytes, actix_web::Error>>
where
    S: Stream<Item = Result<Bytes, actix_web::Error>> + 'static,
{
    let (alive, gone) = oneshot::channel();
    actix_web::rt::spawn(pump(session_stream, outbound.clone(), gone, socket));
    Body {
        outbound,
        _alive: alive,
    }
}

async fn pump<S>(
    session_stream: S,
    outbound: Rc<Outbound>,
    mut gone: oneshot::Receiver<()>,
    socket: Option<PeerSocket>,
) where
    S: Stream<Item = Result<Bytes, actix_web::Error>>,
{
    // Dropping the session stream stops the session, so it and the
    // connection slot it holds go as soon as either side is done.
    let session_stopped = tokio::select! {
        () = run(session_stream, &outbound) => true,
        _ = &mut gone => false,
    };
    if !session_stopped {
        return;
    }
    // The body ends once the client has taken what is queued (the close frame
    // last), and then actix closes the connection. A client that does not
    // read never gets that far.
    outbound.finish();
    if tokio::time::timeout(CLOSE_LINGER, gone).await.is_err() {
        if let Some(socket) = socket {
            log::info!("hanging up on a client that stopped reading");
            hang_up(socket);
        }
    }
}

/// Drives the session until it stops. Sessions write to their [`Outbound`]
/// directly, so the context's own encoder yields nothing; anything it does
/// yield is queued in order all the same.
async fn run<S>(session_stream: S, outbound: &Outbound)
where
    S: Stream<Item = Result<Bytes, actix_web::Error>>,
{
    let mut session_stream = std::pin::pin!(session_stream);
    while let Some(chunk) = session_stream.next().await {
        match chunk {
            Ok(bytes) => outbound.push(bytes),
            Err(err) => {
                log::warn!("websocket encode failed: {err}");
                return;
            }
        }
    }
}

/// Shuts the socket down so its connection task ends with an error.
///
/// Only called while the response body is alive (its `gone` signal has not
/// fired), and with it the connection that owns the descriptor, on this
/// thread: the descriptor cannot have been closed and reused.
fn hang_up(socket: PeerSocket) {
    #[cfg(unix)]
    {
        use std::os::fd::FromRawFd;
        // SAFETY: the descriptor is open (see above), and ManuallyDrop keeps
        // this borrowed view from closing it.
        let stream =
            std::mem::ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(socket.0) });
        let _ = stream.shutdown(std::net::Shutdown::Both);
    }
    #[cfg(not(unix))]
    let _ = socket;
}

/// The response body: whatever the session has queued, in order.
struct Body {
    outbound: Rc<Outbound>,
    /// Dropped with the body, which tells the pump the connection is gone.
    _alive: oneshot::Sender<()>,
}

impl Stream for Body {
    type Item = Result<Bytes, actix_web::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.outbound.poll_take(cx).map(|frames| frames.map(Ok))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_counts_pending_bytes_and_ends_after_finish() {
        let outbound = Outbound::default();
        let mut cx = Context::from_waker(Waker::noop());
        outbound.push(Bytes::from_static(b"abc"));
        outbound.push(Bytes::from_static(b"de"));
        assert_eq!(outbound.pending_bytes(), 5);

        assert_eq!(
            outbound.poll_take(&mut cx),
            Poll::Ready(Some(Bytes::from_static(b"abc")))
        );
        assert_eq!(outbound.pending_bytes(), 2);
        outbound.finish();
        outbound.push(Bytes::from_static(b"late"));
        assert_eq!(
            outbound.poll_take(&mut cx),
            Poll::Ready(Some(Bytes::from_static(b"de")))
        );
        assert_eq!(outbound.poll_take(&mut cx), Poll::Ready(None));
        assert_eq!(outbound.pending_bytes(), 0);
    }

    #[test]
    fn an_empty_queue_waits() {
        let outbound = Outbound::default();
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(outbound.poll_take(&mut cx), Poll::Pending);
    }
}
