//! The byte path between a `WsSession` and its socket, once the upgrade is
//! done.
//!
//! actix-http hands an upgraded connection's socket to chatd (see
//! `http::upgrade`), so no HTTP dispatcher, with its two 8 KiB buffers, stays
//! behind for the life of the connection. One task per connection, [`serve`],
//! owns the socket: it drives the session's actor context and writes what the
//! session queued in its [`Outbound`], everything queued in one turn in one
//! vectored write. The session reads through a [`SocketReader`], which reads
//! only when bytes arrive, a frame at a time.
//!
//! The queue holds frames encoded once for every receiver (see `wire`), so a
//! delivery costs a reference count and a push. The bytes in it are the
//! session's pending output; past its limit the session closes itself with
//! 1008, so a client that stops reading cannot grow memory without bound.
//!
//! When the session stops, its close frame is the last thing queued: [`serve`]
//! writes what is left, half-closes the socket and waits for the client to
//! close its end, as RFC 6455 has the server close first. A client that does
//! not take its bytes or does not close gets [`CLOSE_LINGER`], then the socket
//! is closed under it.

pub mod deflate;
mod outbound;
mod reader;

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use actix_web::web::Bytes;
use futures_util::Stream;
use tokio::net::TcpStream;

pub use outbound::Outbound;
pub use reader::SocketReader;

/// How long a stopped session's client gets to take what is left and close
/// its end before the socket is closed under it.
pub const CLOSE_LINGER: Duration = Duration::from_secs(5);

/// Runs one WebSocket connection to its end: `session` is the session's
/// context (from `WebsocketContext::with_codec`, reading through a
/// [`SocketReader`] on `socket`), `outbound` the queue it writes to.
///
/// This is the one task a connection keeps, so it is kept small: the session
/// lives behind its box, and the linger timer is allocated only once the
/// session has stopped.
pub async fn serve<S>(socket: Rc<TcpStream>, session: Pin<Box<S>>, outbound: Rc<Outbound>)
where
    S: Stream<Item = Result<Bytes, actix_web::Error>>,
{
    if let Err(err) = run(session, &socket, &outbound).await {
        // The session is dropped, and so stopped, with the failed socket.
        log::debug!("websocket connection failed: {err}");
        return;
    }
    let closing = Box::pin(tokio::time::timeout(
        CLOSE_LINGER,
        close(&socket, &outbound),
    ));
    match closing.await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => log::debug!("websocket connection failed while closing: {err}"),
        Err(_) => log::info!("hanging up on a client that stopped reading or never closed its end"),
    }
}

/// Drives the session and writes its output until the session stops, then
/// drops it: its connection slot is free before the close is done.
async fn run<S>(mut session: Pin<Box<S>>, socket: &TcpStream, outbound: &Outbound) -> io::Result<()>
where
    S: Stream<Item = Result<Bytes, actix_web::Error>>,
{
    poll_fn(|cx| {
        // Sessions write to their `Outbound` directly, so the context's own
        // encoder yields nothing; anything it does yield is queued in order.
        let stopped = loop {
            match session.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(bytes))) => outbound.push(bytes),
                Poll::Ready(Some(Err(err))) => {
                    log::warn!("websocket encode failed: {err}");
                    break true;
                }
                Poll::Ready(None) => break true,
                Poll::Pending => break false,
            }
        };
        match outbound.poll_write(socket, cx) {
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            _ if stopped => Poll::Ready(Ok(())),
            _ => Poll::Pending,
        }
    })
    .await
}

/// Writes what is left, half-closes, and waits for the client's end.
async fn close(socket: &TcpStream, outbound: &Outbound) -> io::Result<()> {
    poll_fn(|cx| outbound.poll_write(socket, cx)).await?;
    socket2::SockRef::from(socket).shutdown(std::net::Shutdown::Write)?;
    loop {
        socket.readable().await?;
        if discard_input(socket)? {
            return Ok(());
        }
    }
}

/// Reads and drops what the client sent; `true` once it closed its end.
fn discard_input(socket: &TcpStream) -> io::Result<bool> {
    let mut discard = [0u8; 1024];
    loop {
        match socket.try_read(&mut discard) {
            Ok(0) => return Ok(true),
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(err) => return Err(err),
        }
    }
}
