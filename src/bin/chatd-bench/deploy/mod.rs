//! `deploy`: proof that a rolling restart loses nothing (issue 17, item 6).
//!
//! The run, in order:
//! 1. One redis-server and `processes` chatd on it, with `HISTORY_SIZE`
//!    raised (a client away for seconds at 200 msgs/s misses more than the
//!    default 100) and `SHUTDOWN_TIMEOUT` short, so a drain ends by itself.
//! 2. `clients` clients, spread over the processes, all in `general`; once
//!    all are in, each writes its share of `rate` ([`client`] says how they
//!    follow a restart).
//! 3. After `warmup`, each process in turn gets SIGTERM (SIGKILL with
//!    `--kill`); once it has exited it is started again on the same port,
//!    and the next one follows `pause` later.
//! 4. `settle` after the last one is back, sending stops, and the clients
//!    wait up to `drain` for the last copies; then each reports what it
//!    never saw and what it saw twice ([`ledger`] says how that is counted).
//!
//! The processes are started, signalled and restarted from the calling
//! thread (they are tied to it: see `suite::spawn_tied`), the clients run
//! on a thread of their own.

mod client;
mod clients;
mod ledger;

use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::report::{ms, thousands};
use crate::stats::Histogram;
use crate::suite::{self, Server};
use clients::Measured;

/// What a deploy run does; the defaults are `chatd-bench deploy`'s.
#[derive(Debug, Clone)]
pub struct Plan {
    pub clients: usize,
    pub processes: usize,
    /// Messages a second from all clients together.
    pub rate: f64,
    /// SIGKILL instead of SIGTERM.
    pub kill: bool,
    pub history_size: u32,
    /// Chatting before the first signal.
    pub warmup: Duration,
    /// Between one process being back and the next signal.
    pub pause: Duration,
    /// Chatting after the last process is back.
    pub settle: Duration,
    /// The longest wait for the last copies.
    pub drain: Duration,
}

impl Default for Plan {
    fn default() -> Self {
        Self {
            clients: 1000,
            processes: 3,
            rate: 200.0,
            kill: false,
            history_size: 10_000,
            warmup: Duration::from_secs(3),
            pause: Duration::from_secs(2),
            settle: Duration::from_secs(5),
            drain: Duration::from_secs(15),
        }
    }
}

impl Plan {
    fn signal_name(&self) -> &'static str {
        if self.kill {
            "SIGKILL"
        } else {
            "SIGTERM"
        }
    }
}

/// Which part of the run a live copy arrived in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Period {
    Before = 0,
    /// From the first signal until the last process is back.
    During = 1,
    After = 2,
}

/// chatd's `SHUTDOWN_TIMEOUT` in a deploy run: longer than the longest
/// `retry_after_ms` (10 s), so clients leave on their own first.
const SHUTDOWN_TIMEOUT_S: u64 = 15;

/// The longest wait for a signalled chatd to exit: the drain's own bound,
/// then chatd's 2 s close grace and 1.5 s exit grace, and some.
const EXIT_LIMIT: Duration = Duration::from_secs(SHUTDOWN_TIMEOUT_S + 5);

/// The longest one restart can take: the exit, a SIGKILL after it, and a
/// start-up (`Server::start_at` waits up to 10 s).
pub const RESTART_LIMIT: Duration = Duration::from_secs(SHUTDOWN_TIMEOUT_S + 5 + 5 + 10);

/// One process's restart.
#[derive(Debug, Clone)]
pub struct Restart {
    pub process: usize,
    /// When it was signalled, after the clients began chatting.
    pub signalled: Duration,
    /// From the signal to its exit.
    pub exited: Duration,
    /// From its exit to answering `/healthz` again.
    pub back: Duration,
    pub status: String,
}

/// Everything a deploy run measured.
#[derive(Debug, Clone)]
pub struct DeployReport {
    pub plan: Plan,
    /// Cores the chatd processes and redis-server used together during the
    /// warm-up: near 1 with `--server-cpu` means they were the limit.
    pub warmup_cpu: f64,
    pub restarts: Vec<Restart>,
    /// What stopped the restart, if anything did.
    pub restart_error: Option<String>,
    pub measured: Measured,
}

/// Runs the deploy described in the module docs with `chatd` (pinned to
/// `cpu` when given).
///
/// # Errors
/// redis-server or a chatd did not start, or not every client connected.
pub fn run(chatd: &Path, cpu: Option<&str>, plan: &Plan) -> Result<DeployReport, String> {
    let (redis, port) = suite::start_redis(cpu)?;
    let url = format!("redis://127.0.0.1:{port}");
    let history_size = plan.history_size.to_string();
    // chatd's default, unless the history is smaller (a test of the tool).
    let on_join = plan.history_size.min(50).to_string();
    let timeout = SHUTDOWN_TIMEOUT_S.to_string();
    let env = [
        ("REDIS_URL", url.as_str()),
        ("HISTORY_SIZE", history_size.as_str()),
        ("HISTORY_ON_JOIN", on_join.as_str()),
        ("SHUTDOWN_TIMEOUT", timeout.as_str()),
    ];
    let mut servers = (0..plan.processes)
        .map(|_| Server::start(chatd, cpu, &env))
        .collect::<Result<Vec<_>, _>>()?;
    let addrs = servers.iter().map(|server| server.addr).collect();
    let period = Arc::new(AtomicU8::new(Period::Before as u8));
    let (ready_tx, ready_rx) = mpsc::channel();
    let clients = {
        let (plan, period) = (plan.clone(), period.clone());
        std::thread::spawn(move || crate::block_on(clients::run(&plan, addrs, period, ready_tx)))
    };
    let joined = |clients: std::thread::JoinHandle<_>| {
        clients
            .join()
            .unwrap_or_else(|_| Err("the client thread panicked".to_string()))
    };
    if ready_rx.recv_timeout(Duration::from_secs(60)).is_err() {
        period.store(Period::After as u8, Ordering::Relaxed);
        return Err(joined(clients)
            .err()
            .unwrap_or_else(|| "the clients did not start".into()));
    }
    let chatting = Instant::now();
    let mut pids: Vec<u32> = servers.iter().filter_map(|s| s.target().pid).collect();
    pids.push(redis.id());
    let cpu_before = cpu_seconds(&pids);
    std::thread::sleep(plan.warmup);
    let warmup_cpu = (cpu_seconds(&pids) - cpu_before) / plan.warmup.as_secs_f64().max(1e-9);

    period.store(Period::During as u8, Ordering::Relaxed);
    let mut restarts = Vec::new();
    let mut restart_error = None;
    for (process, server) in servers.iter_mut().enumerate() {
        match restart(chatd, cpu, &env, plan.kill, server) {
            Ok((signalled, exited, back, status)) => restarts.push(Restart {
                process,
                signalled: signalled - chatting,
                exited,
                back,
                status,
            }),
            Err(err) => {
                restart_error = Some(format!("process {}: {err}", process + 1));
                break;
            }
        }
        if process + 1 < plan.processes {
            std::thread::sleep(plan.pause);
        }
    }
    period.store(Period::After as u8, Ordering::Relaxed);
    let measured = joined(clients)?;
    Ok(DeployReport {
        plan: plan.clone(),
        warmup_cpu,
        restarts,
        restart_error,
        measured,
    })
}

/// Signals `server`, waits for it to exit and starts it again on its port:
/// when it was signalled, how long it took to exit and to be back, and how
/// it exited.
fn restart(
    chatd: &Path,
    cpu: Option<&str>,
    env: &[(&str, &str)],
    kill: bool,
    server: &mut Server,
) -> Result<(Instant, Duration, Duration, String), String> {
    let signalled = Instant::now();
    server.signal(if kill { libc::SIGKILL } else { libc::SIGTERM })?;
    let limit = EXIT_LIMIT;
    let status = match server.wait_exit(limit) {
        Some(status) => status.to_string(),
        None => {
            server.signal(libc::SIGKILL)?;
            server.wait_exit(Duration::from_secs(5));
            format!("did not exit within {limit:?}; killed")
        }
    };
    let exited = signalled.elapsed();
    *server = Server::start_at(chatd, cpu, env, server.addr)?;
    Ok((signalled, exited, signalled.elapsed() - exited, status))
}

/// The CPU time of `pids` together, in seconds.
fn cpu_seconds(pids: &[u32]) -> f64 {
    pids.iter()
        .filter_map(|&pid| crate::procfs::cpu_seconds(pid).ok())
        .sum()
}

fn seconds(duration: Duration) -> String {
    format!("{:.1} s", duration.as_secs_f64())
}

pub fn p50_p99(histogram: &Histogram) -> String {
    if histogram.count() == 0 {
        return "-".into();
    }
    format!(
        "{} / {} ms",
        ms(histogram.percentile(50.0)),
        ms(histogram.percentile(99.0))
    )
}

impl DeployReport {
    /// The report for people, a line per fact.
    pub fn lines(&self) -> String {
        let (plan, m, t) = (&self.plan, &self.measured, &self.measured.tally);
        let mut out = format!(
            "deploy: {} rolling restart of {} chatd on one Redis; {} clients in general, {} msgs/s in all; HISTORY_SIZE={}\n",
            plan.signal_name(),
            plan.processes,
            thousands(plan.clients as u64),
            plan.rate,
            plan.history_size
        );
        for r in &self.restarts {
            out += &format!(
                "  process {}: {} at {}, exited {} later ({}), serving again {} ms after that\n",
                r.process + 1,
                plan.signal_name(),
                seconds(r.signalled),
                seconds(r.exited),
                r.status,
                r.back.as_millis()
            );
        }
        if let Some(err) = &self.restart_error {
            out += &format!("  restart stopped: {err}\n");
        }
        out += &format!(
            "  chatted {}; written {}, said {} (the sender saw it), unconfirmed {} ({} of them seen by someone); {} send slots skipped while away\n",
            seconds(m.chatted),
            thousands(m.written),
            thousands(m.said),
            m.unconfirmed,
            m.unconfirmed_reached,
            t.skipped
        );
        out += &format!(
            "  lost: {} copies of said messages never seen ({} clients, at most {} by one; {} distinct messages); \
             duplicated after dropping repeats by id: {}; raw repeats (same id twice): {} ({} of them live: {:?})\n",
            m.loss.copies,
            m.loss.clients,
            m.loss.most,
            m.loss.messages,
            t.duplicates,
            t.raw_duplicates,
            t.raw_duplicates_live,
            t.repeats
        );
        for example in &t.repeat_examples {
            out += &format!("    e.g. {example}\n");
        }
        out += &format!(
            "  reconnects: {} after shutdown_notice ({} notices), {} after a dropped connection {:?}; failed attempts {:?}\n",
            t.reconnects_after_notice, t.notices, t.reconnects_after_drop, t.ends, t.failures
        );
        out += &format!(
            "  joins: {} fresh, {} recovered:true ({} with a gap in the history, {} ending short of their offset), \
             {} recovered:false, {} without an epoch; {} errors; {} unknown events\n",
            t.fresh,
            t.recovered,
            t.history_gaps,
            t.short_recoveries,
            t.not_recovered,
            t.without_epoch,
            t.errors,
            t.foreign
        );
        out += &format!(
            "  order: {} live copies came ahead of an earlier offset; {} connections ended with {} events below \
             the highest offset seen not yet arrived (lost to a client resuming from its highest offset)\n",
            thousands(t.early),
            t.leaves_with_gap,
            t.gap_events
        );
        out += &format!(
            "  delivery latency p50 / p99: before {}, during the restart {}, after {}; {} copies recovered from history {}\n",
            p50_p99(&t.live[0]),
            p50_p99(&t.live[1]),
            p50_p99(&t.live[2]),
            thousands(t.history.count()),
            p50_p99(&t.history)
        );
        out += &format!(
            "  last copy {} after sending stopped; {} of {} clients connected at the end; \
             chatd and redis-server used {:.2} cores in the warm-up; tool CPU {:.1} s ({:.0} % of the run)",
            seconds(m.drained),
            m.connected_at_end,
            plan.clients,
            self.warmup_cpu,
            m.tool_cpu_s,
            100.0 * m.tool_cpu_s / m.run.as_secs_f64().max(1e-9)
        );
        out
    }

    pub fn json(&self) -> Value {
        let (plan, m, t) = (&self.plan, &self.measured, &self.measured.tally);
        let latency = |h: &Histogram| json!({"count": h.count(), "p50_us": h.percentile(50.0), "p99_us": h.percentile(99.0), "max_us": h.max()});
        let mut run = json!({
            "mode": "deploy",
            "signal": plan.signal_name(),
            "clients": plan.clients,
            "processes": plan.processes,
            "rate": plan.rate,
            "history_size": plan.history_size,
            "restarts": self.restarts.iter().map(|r| json!({
                "process": r.process + 1,
                "signalled_s": r.signalled.as_secs_f64(),
                "exited_s": r.exited.as_secs_f64(),
                "back_s": r.back.as_secs_f64(),
                "status": r.status,
            })).collect::<Vec<_>>(),
            "restart_error": self.restart_error,
            "chatted_s": m.chatted.as_secs_f64(),
            "written": m.written,
            "said": m.said,
            "unconfirmed": m.unconfirmed,
            "unconfirmed_reached": m.unconfirmed_reached,
            "skipped": t.skipped,
        });
        // Two objects: one json! of every field is past its recursion limit.
        let counts = json!({
            "lost": m.loss.copies,
            "clients_with_loss": m.loss.clients,
            "most_lost_by_one": m.loss.most,
            "messages_lost": m.loss.messages,
            "duplicates": t.duplicates,
            "raw_duplicates": t.raw_duplicates,
            "raw_duplicates_live": t.raw_duplicates_live,
            "live_repeats": t.repeats,
            "live_repeat_examples": t.repeat_examples,
            "notices": t.notices,
            "reconnects_after_notice": t.reconnects_after_notice,
            "reconnects_after_drop": t.reconnects_after_drop,
            "ends": t.ends,
            "failures": t.failures,
            "joins": {"fresh": t.fresh, "recovered": t.recovered, "not_recovered": t.not_recovered, "without_epoch": t.without_epoch},
            "early": t.early,
            "history_gaps": t.history_gaps,
            "short_recoveries": t.short_recoveries,
            "leaves_with_gap": t.leaves_with_gap,
            "gap_events": t.gap_events,
            "errors": t.errors,
            "foreign": t.foreign,
            "latency": {"before": latency(&t.live[0]), "during": latency(&t.live[1]), "after": latency(&t.live[2]), "history": latency(&t.history)},
            "drained_s": m.drained.as_secs_f64(),
            "connected_at_end": m.connected_at_end,
            "tool_cpu_s": m.tool_cpu_s,
            "run_s": m.run.as_secs_f64(),
            "warmup_server_cores": self.warmup_cpu,
        });
        if let (Value::Object(run), Value::Object(counts)) = (&mut run, counts) {
            run.extend(counts);
        }
        run
    }
}
