//! The load tool against a real chatd process, with tiny numbers: it must
//! count every copy that arrives, and only those.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::WAIT;
use crate::server_process::ServerProcess;

/// Runs `chatd-bench fanout --json` and returns its JSON result.
fn fanout(server: &ServerProcess, extra: &[&str]) -> Value {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chatd-bench"))
        .arg("fanout")
        .args(["--addr", &server.address.to_string()])
        .args(["--server-pid", &server.pid().to_string()])
        .args(["--clients", "20", "--senders", "2", "--rate", "20"])
        .args(["--duration", "1", "--drain", "3", "--json"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("chatd-bench starts");
    let deadline = Instant::now() + WAIT * 2;
    while child
        .try_wait()
        .expect("chatd-bench can be waited on")
        .is_none()
    {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chatd-bench did not finish within {:?}", WAIT * 2);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("its output is readable");
    assert!(output.status.success(), "chatd-bench failed: {output:?}");
    let stdout = String::from_utf8(output.stdout).expect("UTF-8 output");
    serde_json::from_str(stdout.trim()).expect("one JSON result")
}

#[test]
fn fanout_counts_every_copy_delivered_to_every_client() {
    let server = ServerProcess::start(&[("RATE_LIMIT_PER_SEC", "1000")]);

    let result = fanout(&server, &[]);

    // Two senders at 10 messages/s for 1 s; 20 clients, the senders
    // included, each get every message.
    assert_eq!(result["sent"], 20, "{result}");
    assert_eq!(result["deliveries"], 20 * 20, "{result}");
    assert_eq!(result["lost"], 0, "{result}");
    assert_eq!(result["duplicates"], 0, "{result}");
    assert_eq!(result["latency"]["count"], 400, "{result}");
    assert!(result["server_cpu_s"].is_number(), "{result}");
}

#[test]
fn fanout_reports_as_lost_what_the_server_refused() {
    // A tight rate limit: the senders' messages beyond the first are refused
    // and, as the flood goes on, the senders are closed.
    let server = ServerProcess::start(&[("RATE_LIMIT_PER_SEC", "1"), ("RATE_LIMIT_BURST", "1")]);

    let result = fanout(&server, &[]);

    let sent = result["sent"].as_u64().unwrap();
    let lost = result["lost"].as_u64().unwrap();
    assert!(sent >= 2, "{result}");
    assert!(lost > 0, "{result}");
    assert_eq!(
        result["deliveries"].as_u64().unwrap() + lost,
        sent * 20,
        "{result}"
    );
    assert!(result["errors"].as_u64().unwrap() > 0, "{result}");
}
