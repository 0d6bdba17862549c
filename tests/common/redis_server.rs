//! A real `redis-server` on a free loopback port, stopped on drop, for
//! every test binary that needs one: the API tests (one per test, killed and
//! restarted at will) and the browser tests (a history that outlives a
//! chatd process).
//!
//! Included with `#[path = "../common/redis_server.rs"]`; waits are bounded
//! by the including binary's `helpers::WAIT`. Not every binary uses every
//! part.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::WAIT;

/// A `redis-server` this test started; killed when dropped.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free port, or `None` when there is no
    /// `redis-server` binary and `CI` is unset (the test then skips, loudly).
    ///
    /// # Panics
    /// Under `CI=true` without a `redis-server` binary: CI must run these.
    pub fn start_or_skip(test: &str) -> Option<Self> {
        installed_or_skip(test).then(|| Self::start_on(free_port()))
    }

    /// Starts a server on `port` and waits until it answers PING.
    pub fn start_on(port: u16) -> Self {
        let mut server = Self { port, child: None };
        server.restart();
        server
    }

    /// A port with nothing listening, for a Redis that is not there yet.
    pub fn unused_port() -> u16 {
        free_port()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs one command on this server and returns its reply.
    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        let client = redis::Client::open(self.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        cmd.query_async(&mut conn)
            .await
            .expect("the command succeeds")
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a fresh, empty server on the same port.
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        self.wait_until_ready();
    }

    fn wait_until_ready(&self) {
        let deadline = Instant::now() + WAIT;
        while !answers_ping(self.port) {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer on port {} within {WAIT:?}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether `redis-server` is installed; says loudly that `test` is skipped
/// when it is not.
///
/// # Panics
/// Under `CI=true` without a `redis-server` binary: CI must run these.
pub fn installed_or_skip(test: &str) -> bool {
    if redis_server_exists() {
        return true;
    }
    let under_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
    assert!(
        !under_ci,
        "redis-server is not installed, and CI is set: the Redis tests must run"
    );
    // Straight to stderr, past the test harness's capture, so a skip is seen.
    let _ = writeln!(
        std::io::stderr(),
        "\n!!!!! SKIPPED {test}: no redis-server binary on PATH \
         (install redis-server; under CI=true this fails) !!!!!\n"
    );
    false
}

fn redis_server_exists() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
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
