//! The load tool against a real chatd process, with tiny numbers: it must
//! count every copy that arrives, and only those.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::WAIT;
use crate::server_process::ServerProcess;

/// Runs `chatd-bench fanout --json` and returns its JSON result.
fn fanout(server: &ServerProcess, extra: &[&str]) -> Value {
    let mut args = vec!["--clients", "20", "--senders", "2", "--rate", "20"];
    args.extend(["--duration", "1", "--drain", "3"]);
    args.extend(extra);
    let mut results = run_bench(server, "fanout", &args);
    assert_eq!(results.len(), 1, "one result: {results:?}");
    results.remove(0)
}

/// Runs `chatd-bench <mode> --json` against `server` and returns every JSON
/// object it printed, one per line.
fn run_bench(server: &ServerProcess, mode: &str, args: &[&str]) -> Vec<Value> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chatd-bench"))
        .arg(mode)
        .args(["--addr", &server.address.to_string()])
        .args(["--server-pid", &server.pid().to_string()])
        .arg("--json")
        .args(args)
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
    stdout
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).expect("a JSON result per line"))
        .collect()
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

#[test]
fn fanout_in_rooms_owes_each_client_only_its_own_rooms_messages() {
    let server = ServerProcess::start(&[("RATE_LIMIT_PER_SEC", "1000")]);

    // 20 clients in 4 rooms of 5, one sender per room, 20 msgs/s in all
    // for 1 s: 5 messages per room, each to its 5 members.
    let result = fanout(&server, &["--rooms", "4", "--senders", "4"]);

    assert_eq!(result["rooms"], 4, "{result}");
    assert_eq!(result["sent"], 20, "{result}");
    assert_eq!(result["other_room"], 0, "{result}");
    assert_eq!(result["deliveries"], 20 * 5, "{result}");
    assert_eq!(result["expected"], 20 * 5, "{result}");
    assert_eq!(result["lost"], 0, "{result}");
    assert_eq!(result["rooms_with_loss"], 0, "{result}");
}

#[test]
fn the_rooms_ramp_holds_a_step_with_nothing_from_another_room() {
    let server = ServerProcess::start(&[("RATE_LIMIT_PER_SEC", "1000")]);

    // One 1 s step at 40 msgs/s in all: 40 clients in 4 rooms of 10.
    let args = ["--clients", "40", "--rooms", "4", "--start", "40"];
    let step = ["--max-rate", "40", "--step", "1", "--drain", "3"];
    let results = run_bench(&server, "rooms", &[&args[..], &step[..]].concat());

    let [step, best] = &results[..] else {
        panic!("the step, then the best step held: {results:?}")
    };
    assert_eq!(step["mode"], "rooms-step", "{step}");
    assert_eq!(step["sent"], 40, "{step}");
    assert_eq!(step["deliveries"], 40 * 10, "{step}");
    assert_eq!(step["other_room"], 0, "{step}");
    assert_eq!(step["lost"], 0, "{step}");
    assert_eq!(best["mode"], "rooms", "{best}");
    assert_eq!(best["deliveries"], 40 * 10, "{best}");
}
