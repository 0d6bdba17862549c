//! The load tool against a real chatd process, with tiny numbers: it must
//! count every copy that arrives, and only those.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::WAIT;
use crate::redis_helpers::installed_or_skip;
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
    let address = server.address.to_string();
    let pid = server.pid().to_string();
    let mut all = vec![mode, "--addr", &address, "--server-pid", &pid];
    all.extend(args);
    run_tool(&all, WAIT * 2)
}

/// Runs `chatd-bench` with `args` and `--json`, for at most `limit`, and
/// returns every JSON object it printed, one per line.
fn run_tool(args: &[&str], limit: Duration) -> Vec<Value> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chatd-bench"))
        .args(args)
        .arg("--json")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("chatd-bench starts");
    let deadline = Instant::now() + limit;
    while child
        .try_wait()
        .expect("chatd-bench can be waited on")
        .is_none()
    {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chatd-bench did not finish within {limit:?}");
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

/// Runs a small `chatd-bench deploy` (2 chatd, 20 clients, 20 msgs/s) with
/// `extra` (which wins over those) and returns its result; `None` when
/// there is no redis-server.
fn deploy(test: &str, extra: &[&str]) -> Option<Value> {
    if !installed_or_skip(test) {
        return None;
    }
    let mut args = vec!["deploy", "--chatd", env!("CARGO_BIN_EXE_chatd")];
    args.extend(["--processes", "2", "--clients", "20", "--rate", "20"]);
    args.extend([
        "--warmup", "1", "--pause", "1", "--settle", "1", "--drain", "5",
    ]);
    args.extend(extra);
    // Each SIGTERM drain lasts up to the longest retry_after_ms (10 s).
    let mut results = run_tool(&args, Duration::from_secs(90));
    assert_eq!(results.len(), 1, "one result: {results:?}");
    Some(results.remove(0))
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

#[test]
fn a_rolling_sigterm_restart_loses_nothing_and_every_client_resumes() {
    let Some(result) = deploy(
        "a_rolling_sigterm_restart_loses_nothing_and_every_client_resumes",
        &[],
    ) else {
        return;
    };

    assert_eq!(
        result["restarts"].as_array().map(Vec::len),
        Some(2),
        "{result}"
    );
    assert!(result["said"].as_u64().unwrap() > 0, "{result}");
    assert_eq!(
        result["said"], result["written"],
        "a drain confirms everything: {result}"
    );
    assert_eq!(result["lost"], 0, "{result}");
    assert_eq!(result["duplicates"], 0, "{result}");
    // Every client was on a process that drained, at least once.
    let moved = result["reconnects_after_notice"].as_u64().unwrap();
    assert!(moved >= 20, "{result}");
    assert_eq!(result["joins"]["recovered"], moved, "{result}");
    assert_eq!(result["joins"]["not_recovered"], 0, "{result}");
    assert_eq!(result["history_gaps"], 0, "{result}");
    assert_eq!(result["short_recoveries"], 0, "{result}");
    assert_eq!(result["connected_at_end"], 20, "{result}");
}

#[test]
fn a_rolling_sigkill_restart_loses_nothing_that_was_said() {
    let Some(result) = deploy(
        "a_rolling_sigkill_restart_loses_nothing_that_was_said",
        &["--kill"],
    ) else {
        return;
    };

    assert!(result["said"].as_u64().unwrap() > 0, "{result}");
    assert_eq!(result["lost"], 0, "{result}");
    assert_eq!(result["duplicates"], 0, "{result}");
    assert!(
        result["reconnects_after_drop"].as_u64().unwrap() >= 20,
        "{result}"
    );
    assert_eq!(result["joins"]["not_recovered"], 0, "{result}");
    assert_eq!(result["history_gaps"], 0, "{result}");
    assert_eq!(result["short_recoveries"], 0, "{result}");
    assert_eq!(result["connected_at_end"], 20, "{result}");
}

#[test]
fn a_deploy_with_too_short_a_history_reports_what_the_clients_missed() {
    // Two events of history: a client away for its 0.25 s or more of backoff
    // at 40 msgs/s misses more than that, so its recovery fails.
    let args = ["--kill", "--rate", "40", "--history-size", "2"];
    let Some(result) = deploy(
        "a_deploy_with_too_short_a_history_reports_what_the_clients_missed",
        &args,
    ) else {
        return;
    };

    assert!(
        result["joins"]["not_recovered"].as_u64().unwrap() > 0,
        "{result}"
    );
    assert!(result["lost"].as_u64().unwrap() > 0, "{result}");
    assert!(
        result["clients_with_loss"].as_u64().unwrap() > 0,
        "{result}"
    );
    assert_eq!(result["duplicates"], 0, "{result}");
}
