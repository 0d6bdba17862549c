//! A real `redis-server` on a free loopback port, stopped on drop: the
//! browser tests' copy of the part of `tests/api/redis_helpers.rs` they
//! need (a history that outlives a chatd process).
//!
//! Included with `#[path = "../common/redis_server.rs"] mod redis_server;`;
//! waits are bounded by the including binary's `helpers::WAIT`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::WAIT;

/// A `redis-server` this test started; killed when dropped.
pub struct RedisServer {
    port: u16,
    child: Child,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers PING, or
    /// returns `None` (after saying so loudly) when `redis-server` is not
    /// installed.
    ///
    /// # Panics
    /// Under `CI=true` without a `redis-server` binary: CI must run these.
    pub fn start_or_skip() -> Option<Self> {
        let installed = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !installed {
            let message =
                "this browser test needs redis-server (Debian: apt-get install redis-server)";
            if std::env::var("CI").is_ok_and(|ci| ci == "true") {
                panic!("{message}");
            }
            // Straight to stderr: the test harness would swallow eprintln!.
            let _ = writeln!(std::io::stderr(), "\n*** SKIPPED: {message} ***\n");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free loopback port")
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let server = Self { port, child };
        let deadline = Instant::now() + WAIT;
        while !answers_ping(port) {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer on port {port} within {WAIT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn answers_ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}
