//! The byte path from a `WsSession` to its socket, built so that a client
//! that stops reading cannot stall its session or grow memory without bound.
//!
//! actix-web-actors runs a session inside the HTTP response body: the actor is
//! polled only when the connection asks for more body. A client that stops
//! reading fills the connection's write buffer, the body is no longer polled,
//! and the session freezes, while the hub keeps filling its mailbox. So here a
//! small local task (the pump) drives the session's context stream all the
//! time and moves each encoded chunk into a channel that the response body
//! drains. The bytes in that channel are the session's pending output; the
//! session reads them from [`Backlog`] and closes itself with 1008 past its
//! limit.
//!
//! When the session stops, the pump ends the channel: the body ends after the
//! close frame and actix closes the connection, as the server should under
//! RFC 6455. A session closed for not reading still has its close frame queued
//! behind data the client never reads; so the pump gives the client
//! [`CLOSE_LINGER`] to take it, then shuts the socket down.

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::web::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};

/// How long a stopped session's client gets to read what is left before the
/// socket is shut down under it.
pub const CLOSE_LINGER: Duration = Duration::from_secs(5);

/// Bytes encoded for one client and not yet taken by its connection.
#[derive(Debug, Default)]
pub struct Backlog(Cell<usize>);

impl Backlog {
    pub fn bytes(&self) -> usize {
        self.0.get()
    }

    fn add(&self, n: usize) {
        self.0.set(self.0.get() + n);
    }

    fn take(&self, n: usize) {
        self.0.set(self.0.get().saturating_sub(n));
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
/// and returns the response body that carries its bytes.
///
/// Must be called on the worker thread that serves the connection, which is
/// where request handlers run.
pub fn spawn<S>(
    session_stream: S,
    backlog: Rc<Backlog>,
    socket: Option<PeerSocket>,
) -> impl Stream<Item = Result<Bytes, actix_web::Error>>
where
    S: Stream<Item = Result<Bytes, actix_web::Error>> + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let (alive, gone) = oneshot::channel();
    actix_web::rt::spawn(pump(session_stream, tx, gone, backlog.clone(), socket));
    Body {
        rx,
        backlog,
        _alive: alive,
    }
}

async fn pump<S>(
    session_stream: S,
    tx: mpsc::UnboundedSender<Bytes>,
    gone: oneshot::Receiver<()>,
    backlog: Rc<Backlog>,
    socket: Option<PeerSocket>,
) where
    S: Stream<Item = Result<Bytes, actix_web::Error>>,
{
    if !forward(session_stream, &tx, &backlog).await {
        return;
    }
    // The session has stopped. Ending the channel ends the response body once
    // the client has taken what is queued (the close frame last), and then
    // actix closes the connection. A client that does not read never gets
    // that far.
    drop(tx);
    if tokio::time::timeout(CLOSE_LINGER, gone).await.is_err() {
        if let Some(socket) = socket {
            log::info!("hanging up on a client that stopped reading");
            hang_up(socket);
        }
    }
}

/// Moves the session's output into the channel until the session stops
/// (`true`) or the connection is gone (`false`).
///
/// Takes the stream by value so that the session, and the connection slot it
/// holds, is dropped as soon as it stops, not after the linger.
async fn forward<S>(session_stream: S, tx: &mpsc::UnboundedSender<Bytes>, backlog: &Backlog) -> bool
where
    S: Stream<Item = Result<Bytes, actix_web::Error>>,
{
    let mut session_stream = std::pin::pin!(session_stream);
    loop {
        tokio::select! {
            chunk = session_stream.next() => match chunk {
                Some(Ok(bytes)) => {
                    backlog.add(bytes.len());
                    if tx.send(bytes).is_err() {
                        return false;
                    }
                }
                Some(Err(err)) => {
                    log::warn!("websocket encode failed: {err}");
                    return true;
                }
                None => return true,
            },
            // The connection is gone; dropping the session stream stops the
            // session.
            () = tx.closed() => return false,
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

/// The response body: whatever the pump has queued, in order.
struct Body {
    rx: mpsc::UnboundedReceiver<Bytes>,
    backlog: Rc<Backlog>,
    /// Dropped with the body, which tells the pump the connection is gone.
    _alive: oneshot::Sender<()>,
}

impl Stream for Body {
    type Item = Result<Bytes, actix_web::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|chunk| {
            chunk.map(|bytes| {
                self.backlog.take(bytes.len());
                Ok(bytes)
            })
        })
    }
}
