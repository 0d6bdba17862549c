//! `chatd healthcheck`: the container's HEALTHCHECK, so the image needs no
//! curl or wget (and no shell) to ask chatd whether it is alive.
//!
//! It sends `GET /healthz` to `127.0.0.1:$API_PORT` over a plain
//! `std::net::TcpStream` with short timeouts, prints one line and exits 0 on
//! a 200 answer, 1 otherwise (Docker reserves exit code 2, so a bad setting is
//! "unhealthy" too). Asking the loopback address means a server bound to a
//! single other interface is not reached; the image binds 0.0.0.0.
//! `/healthz` stays 200 while a drain runs, so a draining container is not
//! reported unhealthy: readiness is `/readyz`'s job, for load balancers.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use crate::Config;

/// How long each step (connect, write, read) may take. Docker's own
/// HEALTHCHECK timeout (30 s by default) is longer, so this one decides.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(3);

/// The longest answer read: the status line is all that is needed.
const MAX_ANSWER_BYTES: usize = 1024;

/// Why chatd was judged unhealthy.
#[derive(Debug, thiserror::Error)]
pub enum Unhealthy {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("API_PORT=0 picks a free port at start-up, so there is no port to check")]
    AnyPort,
    #[error("cannot reach {addr}: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("GET http://{addr}/healthz answered {status_line:?}")]
    Status {
        addr: SocketAddr,
        status_line: String,
    },
}

/// Reads `API_PORT` as the server does, checks, prints one line, and returns
/// the exit code.
pub fn run() -> ExitCode {
    let outcome = Config::from_env()
        .map_err(Unhealthy::from)
        .and_then(|config| match config.api_port {
            0 => Err(Unhealthy::AnyPort),
            port => Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port))),
        })
        .and_then(|addr| check(addr, STEP_TIMEOUT).map(|()| addr));
    match outcome {
        Ok(addr) => {
            println!("healthy: GET http://{addr}/healthz answered 200");
            ExitCode::SUCCESS
        }
        Err(why) => {
            println!("unhealthy: {why}");
            ExitCode::FAILURE
        }
    }
}

/// Asks `addr` for `GET /healthz`; each step is bounded by `timeout`.
///
/// # Errors
/// The connection fails or times out, or the answer is not a 200.
pub fn check(addr: SocketAddr, timeout: Duration) -> Result<(), Unhealthy> {
    let io = |source| Unhealthy::Io { addr, source };
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(io)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(io)?;

    // Read until the status line is complete, the peer closes, or the cap.
    let mut answer = Vec::new();
    let mut chunk = [0u8; 256];
    while !answer.contains(&b'\n') && answer.len() < MAX_ANSWER_BYTES {
        match stream.read(&mut chunk).map_err(io)? {
            0 => break,
            n => answer.extend_from_slice(&chunk[..n]),
        }
    }
    let status_line = String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    if status_code(&status_line) == Some(200) {
        Ok(())
    } else {
        Err(Unhealthy::Status { addr, status_line })
    }
}

/// The code of an HTTP/1.x status line such as `HTTP/1.1 200 OK`.
fn status_code(status_line: &str) -> Option<u16> {
    let mut parts = status_line.split_whitespace();
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::status_code;

    #[test]
    fn status_lines_are_read_strictly() {
        let cases = [
            ("a 200", "HTTP/1.1 200 OK", Some(200)),
            ("HTTP/1.0", "HTTP/1.0 200 OK", Some(200)),
            ("no reason phrase", "HTTP/1.1 503", Some(503)),
            ("empty", "", None),
            ("not HTTP", "SSH-2.0-OpenSSH_9.2", None),
            ("no code", "HTTP/1.1", None),
            ("a word for a code", "HTTP/1.1 OK", None),
        ];
        for (description, line, expected) in cases {
            assert_eq!(status_code(line), expected, "{description}: {line:?}");
        }
    }
}
