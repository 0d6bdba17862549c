//! The WebSocket edge: everything between a session and its socket, from
//! the opening handshake to the last byte.
//!
//! - [`handshake`]: which upgrade requests are accepted, and the 101.
//! - [`switch`] writes the 101 and takes the socket out of actix-http, so no
//!   HTTP dispatcher, with its two 8 KiB buffers, stays behind for the life
//!   of the connection; [`start`] runs the session on it in the
//!   connection's one task, [`serve`].
//! - [`SocketReader`] reads only when bytes arrive and decodes them with a
//!   [`Decoder`]: frame limits, masking, reassembly of fragments, UTF-8 and
//!   the close-code rules of RFC 6455 all live there. The session receives
//!   [`Incoming`] values only: whole text and binary messages, pings and
//!   pongs, the client's checked close, or the [`Violation`] to close with.
//!   It never sees a frame or an error string.
//! - [`frame`] encodes what the server writes; broadcasts are encoded once
//!   and the same bytes go to every receiver.
//! - [`Outbound`] is the write queue: everything queued in one turn goes out
//!   in one vectored write.
//!
//! The session is an actix actor with a plain `Context`, its reader added as
//! a stream; [`serve`] polls the context itself (no task of its own) and
//! writes what the session queued right after, in the same turn.
//!
//! The queue holds frames encoded once for every receiver, so a delivery
//! costs a reference count and a push. The bytes in it are the session's
//! pending output; past its limit the session closes itself with 1008, so a
//! client that stops reading cannot grow memory without bound.
//!
//! When the session stops, its close frame is the last thing queued: [`serve`]
//! writes what is left, half-closes the socket and waits for the client to
//! close its end, as RFC 6455 has the server close first. A client that does
//! not take its bytes or does not close gets [`CLOSE_LINGER`], then the socket
//! is closed under it.

mod close;
mod decode;
pub mod deflate;
pub mod frame;
pub mod handshake;
mod outbound;
mod reader;

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use actix::{Actor, AsyncContext, Context, StreamHandler};
use actix_codec::Framed;
use actix_http::body::BodySize;
use actix_http::{h1, Response};
use actix_web::web::Bytes;
use futures_util::SinkExt;
use tokio::net::TcpStream;

pub use close::CloseCode;
pub use decode::{Decoder, Incoming, Violation};
pub use outbound::Outbound;
pub use reader::SocketReader;

/// An HTTP/1 connection as actix-http hands over an upgrade request.
pub type Upgrading = Framed<TcpStream, h1::Codec>;

/// Writes `switching` (the 101 of [`handshake::accept`]) on
/// `connection` and takes the socket from actix-http: the socket, and the
/// bytes the client sent right behind its request.
///
/// The session is made after this, with [`start`]: nothing of it is held
/// while the 101 is written.
///
/// # Errors
/// Writing the 101 failed: the client is gone.
pub async fn switch(
    mut connection: Upgrading,
    switching: Response<()>,
) -> io::Result<(Rc<TcpStream>, Bytes)> {
    connection
        .send(h1::Message::Item((switching, BodySize::None)))
        .await?;
    let (socket, early) = {
        let parts = connection.into_parts();
        // Frames the client sent right behind its request are copied out, so
        // the dispatcher's buffers are freed here with the rest of `parts`.
        (Rc::new(parts.io), Bytes::copy_from_slice(&parts.read_buf))
    };
    // Frames are written whole, a turn's worth at a time: nothing is gained
    // by holding a small one back.
    socket.set_nodelay(true)?;
    Ok((socket, early))
}

/// Runs `session` on a switched `socket` (starting with its `early` bytes)
/// in a task of its own until the connection ends, reading through
/// `decoder` (made with the limit and the extension the upgrade agreed on).
/// `outbound` is the queue the session writes to.
pub fn start<A>(
    (socket, early): (Rc<TcpStream>, Bytes),
    decoder: Decoder,
    outbound: Rc<Outbound>,
    session: A,
) where
    A: Actor<Context = Context<A>> + StreamHandler<Incoming>,
{
    let reader = SocketReader::new(socket.clone(), early, decoder);
    let mut context = Context::new();
    context.add_stream(reader);
    let session = Box::pin(context.into_future(session));
    // Its own task: the dispatcher's, with the upgrade's state, ends here.
    actix_web::rt::spawn(serve(socket, session, outbound));
}

/// How long a stopped session's client gets to take what is left and close
/// its end before the socket is closed under it.
pub const CLOSE_LINGER: Duration = Duration::from_secs(5);

/// Runs one WebSocket connection to its end: `session` is the running
/// session (its actor context, reading through a [`SocketReader`] on
/// `socket`), `outbound` the queue it writes to.
///
/// This is the one task a connection keeps, so it is kept small: the session
/// lives behind its box, and the linger timer is allocated only once the
/// session has stopped.
async fn serve<S>(socket: Rc<TcpStream>, session: Pin<Box<S>>, outbound: Rc<Outbound>)
where
    S: Future<Output = ()>,
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
    S: Future<Output = ()>,
{
    poll_fn(|cx| {
        // The session runs (reads, handles its mail and timers) and queues
        // its output; what it queued is written right after.
        let stopped = session.as_mut().poll(cx).is_ready();
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
