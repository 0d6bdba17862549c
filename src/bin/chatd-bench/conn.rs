//! One client connection: opening it (TCP from a 127.0.0.x source address,
//! the upgrade, the `welcome`), then a loop that reads every frame the server
//! sends, answers pings, and, for senders, writes chat messages on schedule
//! (or, in a closed loop, each as soon as the echo of the last is read).
//!
//! A sender sleeps until its next message is due rather than polling a
//! clock: a thousand senders (one per room) polling every millisecond would
//! cost the tool a million wake-ups a second before sending anything.
//!
//! Every connection is a small task on one current-thread runtime. Reads go
//! into one shared scratch buffer; a connection keeps bytes only for a frame
//! cut in half by a read, so twenty thousand idle clients cost little.

use std::cell::RefCell;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Notify;

use crate::fleet::{End, State};
use crate::wire::{self, Upgrade};

/// Bytes read per `read` call; one call usually drains a socket.
const SCRATCH_BYTES: usize = 64 * 1024;
/// Reads per wake-up before giving other connections a turn.
const READS_PER_WAKE: usize = 8;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH_BYTES]);
}

/// Client `index` connects from 127.0.0.1 to 127.0.0.250 in turn: each source
/// address has its own ephemeral ports, so tens of thousands of loopback
/// connections (and the TIME_WAITs of earlier runs) do not run out of them.
pub fn source_address(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 1 + (index % 250) as u8)
}

/// An open WebSocket that has received its `welcome`.
pub struct Opened {
    pub stream: TcpStream,
    /// The `welcome` event, which carries a `joined` per starting room.
    pub welcome: Vec<u8>,
    /// Bytes that arrived after the `welcome`.
    pub leftover: Vec<u8>,
}

/// Opens a WebSocket to `server` at `path` (`/ws` and its query) from
/// `source` and waits for the `welcome`.
///
/// # Errors
/// A short description of what failed, used to count failures by kind.
pub async fn open(server: SocketAddr, path: &str, source: Ipv4Addr) -> Result<Opened, String> {
    let socket = TcpSocket::new_v4().map_err(|err| format!("socket: {err}"))?;
    socket
        .bind(SocketAddr::from((source, 0)))
        .map_err(|err| format!("bind: {err}"))?;
    let mut stream = socket
        .connect(server)
        .await
        .map_err(|err| format!("connect: {err}"))?;
    stream
        .set_nodelay(true)
        .map_err(|err| format!("nodelay: {err}"))?;
    stream
        .write_all(wire::upgrade_request(&server.to_string(), path).as_bytes())
        .await
        .map_err(|err| format!("write: {err}"))?;
    let mut buf = Vec::with_capacity(512);
    let mut header_len = None;
    loop {
        if stream
            .read_buf(&mut buf)
            .await
            .map_err(|err| format!("read: {err}"))?
            == 0
        {
            return Err("closed during the handshake".into());
        }
        let start = match header_len {
            Some(len) => len,
            None => match wire::parse_upgrade(&buf) {
                Upgrade::Incomplete => continue,
                Upgrade::Refused(status) => return Err(status),
                Upgrade::Accepted { header_len: len } => *header_len.insert(len),
            },
        };
        match wire::parse_frame(&buf[start..]).map_err(|err| err.to_string())? {
            None => continue,
            Some((frame, used)) => {
                let welcome = frame.message().map_err(|err| err.to_string())?;
                if frame.opcode != wire::OP_TEXT || !welcome.starts_with(b"{\"type\":\"welcome\"") {
                    return Err("the first frame is not a welcome".into());
                }
                let welcome = welcome.into_owned();
                let leftover = buf[start + used..].to_vec();
                return Ok(Opened {
                    stream,
                    welcome,
                    leftover,
                });
            }
        }
    }
}

/// Runs client `index` until its connection ends, and records how it ended.
pub async fn drive(opened: Opened, index: usize, sender: bool, state: Rc<RefCell<State>>) {
    let Opened {
        stream,
        leftover: mut pending,
        ..
    } = opened;
    let mut out = Vec::new();
    let phase_begun = state.borrow().phase_begun();
    let mut end = (!pending.is_empty())
        .then(|| absorb_pending(&state, index, &mut pending, &mut out))
        .and_then(Result::err);
    while end.is_none() {
        end = tokio::select! {
            ready = stream.readable() => match ready {
                Ok(()) => read_some(&stream, &state, index, &mut pending, &mut out).err(),
                Err(err) => Some(End::Fault(format!("read: {err}"))),
            },
            ready = stream.writable(), if !out.is_empty() => match ready {
                Ok(()) => flush(&stream, &mut out).err(),
                Err(err) => Some(End::Fault(format!("write: {err}"))),
            },
            () = next_send(&state, index, &phase_begun), if sender => {
                state.borrow_mut().write_due(index, Instant::now(), &mut out);
                flush(&stream, &mut out).err()
            }
        };
    }
    state
        .borrow_mut()
        .ended(index, end.expect("the loop ends with a reason"));
}

/// Waits until sender `index` may have a message due: its next slot in an
/// open loop, the start of a closed loop (whose later messages follow their
/// echoes, not the clock), or else the start of the next phase.
async fn next_send(state: &RefCell<State>, index: usize, phase_begun: &Notify) {
    let due = state.borrow().next_due(index, Instant::now());
    match due {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => phase_begun.notified().await,
    }
}

fn read_some(
    stream: &TcpStream,
    state: &RefCell<State>,
    index: usize,
    pending: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<(), End> {
    for _ in 0..READS_PER_WAKE {
        let done = SCRATCH.with_borrow_mut(|scratch| -> Result<bool, End> {
            let n = match stream.try_read(scratch) {
                Ok(0) => return Err(End::Fault("closed without a close frame".into())),
                Ok(n) => n,
                Err(err) if err.kind() == ErrorKind::WouldBlock => return Ok(true),
                Err(err) => return Err(End::Fault(format!("read: {err}"))),
            };
            let mut state = state.borrow_mut();
            let now = Instant::now();
            if pending.is_empty() {
                let used = state.absorb(index, &scratch[..n], now, out)?;
                pending.extend_from_slice(&scratch[used..n]);
            } else {
                pending.extend_from_slice(&scratch[..n]);
                let used = state.absorb(index, pending, now, out)?;
                pending.drain(..used);
            }
            Ok(n < scratch.len())
        })?;
        if done {
            break;
        }
    }
    flush(stream, out)
}

fn absorb_pending(
    state: &RefCell<State>,
    index: usize,
    pending: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<(), End> {
    let used = state
        .borrow_mut()
        .absorb(index, pending, Instant::now(), out)?;
    pending.drain(..used);
    Ok(())
}

/// Writes what the socket takes now; the rest waits for `writable`.
fn flush(stream: &TcpStream, out: &mut Vec<u8>) -> Result<(), End> {
    while !out.is_empty() {
        match stream.try_write(out) {
            Ok(n) => {
                out.drain(..n);
            }
            Err(err) if err.kind() == ErrorKind::WouldBlock => break,
            Err(err) => return Err(End::Fault(format!("write: {err}"))),
        }
    }
    Ok(())
}
