//! chatd as a child process, for tests that send real signals, check exit
//! codes, or stop it and start it again on the same port.
//!
//! Shared by the `api` and `browser` test binaries, each of which includes it
//! with `#[path = "../common/server_process.rs"] mod server_process;`. Its
//! waits are bounded by the including binary's `helpers::WAIT`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::helpers::WAIT;

/// A chatd process this test started; killed when dropped.
pub struct ServerProcess {
    child: Child,
    pub address: SocketAddr,
    lines: mpsc::Receiver<String>,
    /// Every stderr line read so far.
    pub log: Vec<String>,
}

impl ServerProcess {
    /// Starts the chatd binary with `env` (on a free port unless `env` names
    /// one) and waits until it listens.
    pub fn start(env: &[(&str, &str)]) -> Self {
        let mut child = chatd_command(env)
            .stderr(Stdio::piped())
            .spawn()
            .expect("the chatd binary starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("TEST_LOG").is_some() {
                    eprintln!("{line}");
                }
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut process = Self {
            child,
            address: "0.0.0.0:0".parse().unwrap(),
            lines,
            log: Vec::new(),
        };
        let line = process.wait_for_line("listening on http://");
        process.address = line
            .split("listening on http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|address| address.parse().ok())
            .expect("the line names the address");
        process
    }

    /// Starts another chatd, with default settings, on the port this one used
    /// (after it stopped).
    // Only the browser tests restart a server.
    #[allow(dead_code)]
    pub fn restart_on_same_port(&self) -> Self {
        Self::start(&[("API_PORT", &self.address.port().to_string())])
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) with a pid this test started; no memory is involved.
        let result = unsafe { libc::kill(self.pid() as libc::pid_t, signal) };
        assert_eq!(result, 0, "the signal is delivered");
    }

    /// Stops the process at once, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for a log line containing `needle`; fails after [`WAIT`].
    pub fn wait_for_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        if let Some(line) = self.log.iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no log line with {needle:?}; log so far:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    /// Every stderr line, once the process has exited (its stderr is closed
    /// then, so this does not wait).
    // Only the api tests read a whole log.
    #[allow(dead_code)]
    pub fn full_log(&mut self) -> &[String] {
        while let Ok(line) = self.lines.recv_timeout(WAIT) {
            self.log.push(line);
        }
        &self.log
    }

    /// Waits for the process to exit by itself; fails after `within`.
    pub fn wait_for_exit(&mut self, within: Duration) -> i32 {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("the child can be waited on") {
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "chatd did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The chatd binary with a clean environment plus `env`, on a free port,
/// with the ticker off unless `env` turns it on.
pub fn chatd_command(env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chatd"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("API_PORT", "0")
        .env("WORKERS", "1")
        .env("PERIODIC_NOTIFICATION", "0")
        .env("LOG_LEVEL", "info")
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    command
}
