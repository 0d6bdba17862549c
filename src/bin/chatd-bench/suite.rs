//! `suite`: the standard set behind `just bench`. Each benchmark gets a fresh
//! chatd (so idle memory is not measured on top of a ramp's leftovers),
//! started with the limits a benchmark needs lifted, optionally pinned to a
//! CPU, and stopped afterwards. The table at the end puts every figure next
//! to its target from the performance issue.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::args::Options;
use crate::cluster::Cluster;
use crate::fleet::{Pacing, PhaseReport};
use crate::modes::{self, Dialing, Load, Ramp, Target};
use crate::rooms::Rooms;
use crate::{block_on, deploy, procfs, report};

/// chatd's settings for benchmarking: one worker (one core), no ticker, and
/// the per-connection rate limit and connection cap lifted (`rooms` and
/// `idle` open 10,000 clients, `steps` 19,000; chatd's default cap is
/// 10,000). 4 MiB of pending
/// output per client lets a burst queue without a slow-consumer close, while
/// a client that really stops reading is still cut off.
pub(crate) const SERVER_ENV: &[(&str, &str)] = &[
    ("API_HOST", "127.0.0.1"),
    ("WORKERS", "1"),
    ("RATE_LIMIT_PER_SEC", "1000000"),
    ("RATE_LIMIT_BURST", "1000000"),
    ("MAX_CONNECTIONS", "30000"),
    ("MAX_PENDING_BYTES", "4194304"),
    ("PERIODIC_NOTIFICATION", "0"),
    ("LOG_LEVEL", "warn"),
    ("SHUTDOWN_TIMEOUT", "1"),
];

/// No single benchmark may take longer than this.
const BENCHMARK_LIMIT: Duration = Duration::from_secs(150);

pub(crate) const DIALING: Dialing = Dialing {
    in_flight: 500,
    timeout: Duration::from_secs(10),
};

/// Starts `command` so that it is killed if this tool dies first: an
/// interrupted `just bench` must not leave servers behind.
pub(crate) fn spawn_tied(command: &mut Command) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    command.spawn()
}

/// A child process stopped (SIGKILL) when dropped.
pub(crate) struct Process(Child);

impl From<Child> for Process {
    fn from(child: Child) -> Self {
        Self(child)
    }
}

impl Process {
    pub(crate) fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A chatd started for one benchmark.
pub(crate) struct Server {
    process: Process,
    pub(crate) addr: SocketAddr,
}

impl Server {
    /// Starts chatd on a free port and waits until it answers `/healthz`.
    ///
    /// # Errors
    /// As [`Server::start_at`].
    pub(crate) fn start(
        chatd: &Path,
        cpu: Option<&str>,
        extra_env: &[(&str, &str)],
    ) -> Result<Self, String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        Self::start_at(chatd, cpu, extra_env, addr)
    }

    /// Starts chatd on `addr` (again, in `deploy`) and waits until it answers
    /// `/healthz`.
    ///
    /// # Errors
    /// chatd cannot be started, exits, or is not healthy within 10 s.
    pub(crate) fn start_at(
        chatd: &Path,
        cpu: Option<&str>,
        extra_env: &[(&str, &str)],
        addr: SocketAddr,
    ) -> Result<Self, String> {
        let mut command = match cpu {
            Some(cpu) => {
                let mut taskset = Command::new("taskset");
                taskset.arg("-c").arg(cpu).arg(chatd);
                taskset
            }
            None => Command::new(chatd),
        };
        command
            .envs(SERVER_ENV.iter().copied())
            .envs(extra_env.iter().copied())
            .env("API_PORT", addr.port().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let child = spawn_tied(&mut command)
            .map_err(|err| format!("cannot start {}: {err}", chatd.display()))?;
        let mut server = Self {
            process: Process(child),
            addr,
        };
        wait_until(
            || procfs::http_get(addr, "/healthz").is_ok(),
            || server.exited(),
        )?;
        Ok(server)
    }

    fn exited(&mut self) -> Option<String> {
        match self.process.0.try_wait() {
            Ok(Some(status)) => Some(format!("chatd exited at start-up: {status}")),
            _ => None,
        }
    }

    /// Sends `signal` (SIGTERM, SIGKILL) to chatd.
    ///
    /// # Errors
    /// The signal could not be sent.
    pub(crate) fn signal(&self, signal: libc::c_int) -> Result<(), String> {
        let pid = self.process.0.id() as libc::pid_t;
        // SAFETY: kill only sends a signal to our own child, still unreaped.
        if unsafe { libc::kill(pid, signal) } == 0 {
            Ok(())
        } else {
            Err(format!(
                "cannot signal chatd pid={pid}: {}",
                std::io::Error::last_os_error()
            ))
        }
    }

    /// Waits up to `limit` for chatd to exit; `None` if it has not.
    pub(crate) fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            match self.process.0.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => return None,
            }
        }
    }

    /// taskset execs chatd, so the child's pid is chatd's.
    pub(crate) fn target(&self) -> Target {
        Target {
            addr: self.addr,
            pid: Some(self.process.0.id()),
        }
    }
}

/// A `redis-server` on loopback `port` that keeps nothing on disk, pinned
/// to `cpu` when given, its output dropped; the caller adds what else it
/// needs and spawns it.
pub(crate) fn redis_server(cpu: Option<&str>, port: u16) -> Command {
    let mut command = match cpu {
        Some(cpu) => {
            let mut taskset = Command::new("taskset");
            taskset.arg("-c").arg(cpu).arg("redis-server");
            taskset
        }
        None => Command::new("redis-server"),
    };
    command
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--port")
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// A throwaway redis-server on a free loopback port, for `cross` and
/// `deploy`.
pub(crate) fn start_redis(cpu: Option<&str>) -> Result<(Process, u16), String> {
    let port = free_port()?;
    let mut command = redis_server(cpu, port);
    let child =
        spawn_tied(&mut command).map_err(|err| format!("cannot start redis-server: {err}"))?;
    let mut redis = Process(child);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_until(
        || std::net::TcpStream::connect(addr).is_ok(),
        || match redis.0.try_wait() {
            Ok(Some(status)) => Some(format!("redis-server exited: {status}")),
            _ => None,
        },
    )?;
    Ok((redis, port))
}

pub(crate) fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|err| format!("no free port: {err}"))
}

/// Polls `ready` for up to ten seconds, giving up early if `failed` says why.
fn wait_until(
    mut ready: impl FnMut() -> bool,
    mut failed: impl FnMut() -> Option<String>,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready() {
        if let Some(why) = failed() {
            return Err(why);
        }
        if Instant::now() > deadline {
            return Err("not ready within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A benchmark of the set: given chatd's path and CPU, its table row.
type Benchmark = fn(&Path, Option<&str>) -> Row;

/// One line of the final table.
struct Row {
    benchmark: &'static str,
    result: String,
    target: &'static str,
}

/// Runs the standard set and prints the table.
///
/// # Errors
/// The options are wrong; a benchmark that fails is reported in the table.
pub fn run(options: &Options) -> Result<(), String> {
    let chatd = chatd_path(options)?;
    let cpu: Option<String> = options.optional("server-cpu")?;
    let cpu = cpu.as_deref();
    let with_cross = options.flag("cross");
    let with_cluster = options.flag("cluster");
    let deploy: Benchmark = if options.flag("kill") {
        bench_deploy_kill
    } else {
        bench_deploy
    };
    let only: Option<String> = options.optional("only")?;
    options.check_all_read()?;
    let benchmarks: [(&str, Benchmark); 11] = [
        ("ramp", bench_ramp),
        ("rooms", bench_rooms),
        ("idle", bench_idle),
        ("steps", bench_steps),
        ("connect", bench_connect),
        ("connect-token", bench_connect_token),
        ("deploy", deploy),
        ("cross", bench_cross),
        ("cross-cluster", bench_cross_cluster),
        ("rooms-redis", bench_rooms_redis),
        ("rooms-cluster", bench_rooms_cluster),
    ];
    let chosen = |name: &str| match &only {
        Some(only) => only.split(',').any(|o| o.trim() == name),
        None if name == "cross" => with_cross || with_cluster,
        None if name.ends_with("-cluster") || name == "rooms-redis" => with_cluster,
        None => true,
    };
    if let Some(unknown) = only
        .iter()
        .flat_map(|o| o.split(','))
        .find(|o| !benchmarks.iter().any(|(name, _)| name == &o.trim()))
    {
        return Err(format!(
            "--only {unknown:?}: expected ramp, rooms, idle, steps, connect, connect-token, deploy, \
             cross, cross-cluster, rooms-redis or rooms-cluster"
        ));
    }
    println!("{}\n", machine());

    let rows: Vec<Row> = benchmarks
        .iter()
        .filter(|(name, _)| chosen(name))
        .map(|(_, bench)| bench(&chatd, cpu))
        .collect();
    println!("\n| benchmark | measured | target |\n|---|---|---|");
    for row in rows {
        println!("| {} | {} | {} |", row.benchmark, row.result, row.target);
    }
    Ok(())
}

/// `--chatd`, or the chatd next to this binary.
///
/// # Errors
/// `--chatd` is not a path, or this binary cannot be found.
pub(crate) fn chatd_path(options: &Options) -> Result<PathBuf, String> {
    match options.optional::<PathBuf>("chatd")? {
        Some(path) => Ok(path),
        None => Ok(std::env::current_exe()
            .map_err(|err| format!("cannot find this binary: {err}"))?
            .with_file_name("chatd")),
    }
}

/// Runs `body` against a fresh chatd; any failure becomes the row's result.
fn with_server<T>(
    chatd: &Path,
    cpu: Option<&str>,
    env: &[(&str, &str)],
    body: impl FnOnce(&Server) -> Result<T, String>,
) -> Result<T, String> {
    let server = Server::start(chatd, cpu, env)?;
    body(&server)
}

/// Runs `future` to completion within [`BENCHMARK_LIMIT`].
fn bounded<F: std::future::Future<Output = Result<T, String>>, T>(future: F) -> Result<T, String> {
    block_on(async {
        tokio::time::timeout(BENCHMARK_LIMIT, future)
            .await
            .unwrap_or_else(|_| Err(format!("did not finish within {BENCHMARK_LIMIT:?}")))
    })
}

fn bench_ramp(chatd: &Path, cpu: Option<&str>) -> Row {
    println!(
        "== ramp: 1,000 clients, 10 senders, rate ×1.25 per 3 s step until two steps in a row miss p99 ≤ 100 ms or lose a message"
    );
    let load = Load {
        clients: 1000,
        rooms: Rooms::General,
        senders: 10,
        rate: 0.0,
        duration: Duration::from_secs(3),
        pad: 0,
        drain: Duration::from_secs(2),
    };
    let ramp = Ramp {
        start: 100.0,
        factor: 1.25,
        max_rate: 3000.0,
        p99_limit: Duration::from_millis(100),
    };
    Row {
        benchmark: "ramp, 1,000 clients, 10 senders",
        result: ramp_result(chatd, cpu, load, ramp),
        target: "≥ 1,000,000 deliveries/s, p99 ≤ 100 ms, nothing lost, ≤ 0.8 core-s per M",
    }
}

/// The ramp again, in 1,000 rooms of 10: each message reaches 10 clients,
/// not 1,000, so the same deliveries/s take a hundred times the messages.
fn bench_rooms(chatd: &Path, cpu: Option<&str>) -> Row {
    println!(
        "\n== rooms: 10,000 clients in 1,000 rooms of 10, one sender per room, from 2,000 msgs/s in all \
         ×1.25 per 3 s step until two steps in a row miss p99 ≤ 100 ms, lose a message or get one from another room"
    );
    let (load, ramp) = rooms_load();
    Row {
        benchmark: "rooms, 10,000 clients in 1,000 rooms of 10",
        result: ramp_result(chatd, cpu, load, ramp),
        target: "≥ 1,000,000 deliveries/s, p99 ≤ 100 ms, nothing lost, none from another room",
    }
}

/// `rooms`: 10,000 clients in 1,000 rooms of 10, one sender per room.
fn rooms_load() -> (Load, Ramp) {
    let load = Load {
        clients: 10_000,
        rooms: Rooms::Named(1000),
        senders: 1000,
        rate: 0.0,
        duration: Duration::from_secs(3),
        pad: 0,
        drain: Duration::from_secs(2),
    };
    let ramp = Ramp {
        start: 2000.0,
        factor: 1.25,
        max_rate: 300_000.0,
        p99_limit: Duration::from_millis(100),
    };
    (load, ramp)
}

/// `rooms` with chatd storing every message in one Redis: the figure the
/// cluster's is set beside.
fn bench_rooms_redis(chatd: &Path, cpu: Option<&str>) -> Row {
    println!("\n== rooms-redis: rooms, with every message stored in one redis-server");
    let (load, ramp) = rooms_load();
    let result = start_redis(cpu).map(|(_redis, port)| {
        let url = format!("redis://127.0.0.1:{port}");
        ramp_result_with(chatd, cpu, &[("REDIS_URL", url.as_str())], load, ramp)
    });
    Row {
        benchmark: "rooms through one Redis, 10,000 clients in 1,000 rooms of 10",
        result: result.unwrap_or_else(|err| format!("error: {err}")),
        target: "beside rooms-cluster",
    }
}

/// `rooms` with chatd on a Redis Cluster of three masters: every message is
/// stored on the shard of its room; the table also says how the commands
/// spread over the shards.
fn bench_rooms_cluster(chatd: &Path, cpu: Option<&str>) -> Row {
    println!(
        "\n== rooms-cluster: rooms, with every message stored in a Redis Cluster of 3 masters"
    );
    let (load, ramp) = rooms_load();
    let result = Cluster::start(cpu).and_then(|cluster| {
        cluster.reset_stats()?;
        let seeds = cluster.seeds();
        let ramp = ramp_result_with(
            chatd,
            cpu,
            &[("REDIS_CLUSTER_NODES", seeds.as_str())],
            load,
            ramp,
        );
        Ok(format!("{ramp}; {}", shard_spread(&cluster)?))
    });
    Row {
        benchmark: "rooms through a Redis Cluster (3 masters), 10,000 clients in 1,000 rooms of 10",
        result: result.unwrap_or_else(|err| format!("error: {err}")),
        target: "deliveries/s beside rooms-redis; load spread evenly over the shards",
    }
}

/// Each master's share of the room appends and of all commands.
fn shard_spread(cluster: &Cluster) -> Result<String, String> {
    let loads = cluster.load_per_master()?;
    let appends: u64 = loads.iter().map(|l| l.appends).sum::<u64>().max(1);
    let commands: u64 = loads.iter().map(|l| l.commands).sum::<u64>().max(1);
    let shares: Vec<String> = loads
        .iter()
        .map(|l| {
            format!(
                ":{} {} appends ({:.1}%), {} commands ({:.1}%)",
                l.port,
                report::thousands(l.appends),
                100.0 * l.appends as f64 / appends as f64,
                report::thousands(l.commands),
                100.0 * l.commands as f64 / commands as f64
            )
        })
        .collect();
    println!("per shard: {}", shares.join("; "));
    Ok(format!("per shard: {}", shares.join("; ")))
}

/// Runs `ramp` with `load` against a fresh chatd, printing every step, and
/// sums it up for the table.
fn ramp_result(chatd: &Path, cpu: Option<&str>, load: Load, ramp: Ramp) -> String {
    ramp_result_with(chatd, cpu, &[], load, ramp)
}

/// [`ramp_result`] with chatd started with `env` added.
fn ramp_result_with(
    chatd: &Path,
    cpu: Option<&str>,
    env: &[(&str, &str)],
    load: Load,
    ramp: Ramp,
) -> String {
    println!("{}", report::PHASE_HEADER);
    let result = with_server(chatd, cpu, env, |server| {
        bounded(modes::ramp(
            server.target(),
            load,
            ramp,
            DIALING,
            |step, held| {
                let label = if held { "held" } else { "FAILED" };
                println!("{}", report::phase_row(label, step));
            },
        ))
    });
    let result = result.map(|steps| {
        let failed = steps
            .iter()
            .rev()
            .find(|(_, held)| !held)
            .map(|(step, _)| format!("; the last failed step: {}", failure(step)));
        let other_room: u64 = steps.iter().map(|(step, _)| step.other_room).sum();
        let other_room =
            (other_room > 0).then(|| format!("; {other_room} copies from other rooms in all"));
        match modes::best_held(&steps) {
            Some(best) => format!(
                "**{}** deliveries/s held (p99 {} ms), **{}** core-s per M deliveries{}{}",
                report::thousands(best.deliveries_per_s() as u64),
                report::ms(best.all_latency().percentile(99.0)),
                best.cpu_per_million()
                    .map_or("-".into(), |cpu| format!("{cpu:.2}")),
                failed.unwrap_or_default(),
                other_room.unwrap_or_default(),
            ),
            None => format!(
                "no step held{}{}",
                failed.unwrap_or_default(),
                other_room.unwrap_or_default()
            ),
        }
    });
    result.unwrap_or_else(|err| format!("error: {err}"))
}

/// Why a step did not hold, in a few words.
fn failure(step: &PhaseReport) -> String {
    let offered = step
        .pacing
        .rate()
        .unwrap_or_else(|| step.broadcasts_per_s());
    // Each message is owed to the members of its room.
    let fan_out = step.members as f64 / step.rooms.max(1) as f64;
    format!(
        "{} deliveries/s offered, p99 {} ms, lost {}, dup {}, errors {}, from other rooms {}",
        report::thousands((offered * fan_out) as u64),
        report::ms(step.all_latency().percentile(99.0)),
        step.lost,
        step.duplicates,
        step.errors,
        step.other_room
    )
}

fn bench_idle(chatd: &Path, cpu: Option<&str>) -> Row {
    println!("\n== idle: 10,000 connections");
    let result = with_server(chatd, cpu, &[], |server| {
        let target = server.target();
        let pid = target.pid.expect("the suite knows its server's pid");
        bounded(modes::idle(
            target.addr,
            pid,
            10_000,
            Duration::from_secs(2),
            DIALING,
        ))
    })
    .map(|idle| {
        println!("{}", report::idle_line(&idle));
        format!(
            "**{:.1} KB** per connection ({:.1} → {:.1} MiB)",
            idle.bytes_per_connection() / 1000.0,
            idle.rss_before as f64 / 1048576.0,
            idle.rss_after as f64 / 1048576.0
        )
    });
    Row {
        benchmark: "idle, 10,000 connections",
        result: result.unwrap_or_else(|err| format!("error: {err}")),
        target: "≤ 8 KB per connection (stretch: < 4.8 KB)",
    }
}

fn bench_steps(chatd: &Path, cpu: Option<&str>) -> Row {
    println!(
        "\n== steps: +1,000 clients per step to 19,000, 2 s each; 4 broadcasters in a closed loop \
         (each sends its next message when its own echo of the last arrives)"
    );
    println!("{}", report::STEPS_HEADER);
    let load = Load {
        clients: 19_000,
        rooms: Rooms::General,
        senders: 4,
        rate: 0.0,
        duration: Duration::from_secs(2),
        pad: 0,
        drain: Duration::from_secs(2),
    };
    let result = with_server(chatd, cpu, &[], |server| {
        bounded(modes::steps(
            server.target(),
            load,
            Pacing::Echo,
            1000,
            19_000,
            DIALING,
            |_, step| println!("{}", report::steps_row(step)),
        ))
    })
    .map(|steps| {
        let p95 = |step: &PhaseReport| step.all_latency().percentile(95.0);
        let limit = 250_000;
        let held = steps
            .iter()
            .take_while(|(_, step)| p95(step) <= limit && step.lost == 0)
            .last();
        let held_at = held.map_or(0, |(clients, _)| *clients);
        let held_rate = held.map_or(0.0, |(_, step)| step.broadcasts_per_s());
        let (worst_at, worst) = steps
            .iter()
            .max_by_key(|(_, step)| p95(step))
            .map_or((0, 0), |(clients, step)| (*clients, p95(step)));
        let lost: u64 = steps.iter().map(|(_, step)| step.lost).sum();
        format!(
            "p95 ≤ 250 ms and nothing lost up to **{}** clients ({:.0} broadcasts/s there); worst p95 {} ms at {} clients; {} lost in all",
            report::thousands(held_at as u64),
            held_rate,
            report::ms(worst),
            report::thousands(worst_at as u64),
            lost
        )
    });
    Row {
        benchmark: "steps to 19,000 clients, 4 closed-loop broadcasters",
        result: result.unwrap_or_else(|err| format!("error: {err}")),
        target: "p95 ≤ 250 ms at every step",
    }
}

fn bench_connect(chatd: &Path, cpu: Option<&str>) -> Row {
    println!("\n== connect: 10,000 handshakes, 2,000 in flight");
    let dialing = Dialing {
        in_flight: 2000,
        ..DIALING
    };
    let result = with_server(chatd, cpu, &[], |server| {
        bounded(async { Ok(modes::connect(server.addr, 10_000, dialing).await) })
    })
    .map(|connect| connect_result(&connect));
    Row {
        benchmark: "connect, 2,000 in flight",
        result: result.unwrap_or_else(|err| format!("error: {err}")),
        target: "≥ 5,000 handshakes/s, none failed",
    }
}

/// Prints a connect report and gives its table cell.
fn connect_result(connect: &crate::fleet::ConnectReport) -> String {
    println!("{}", report::connect_line(connect));
    format!(
        "**{}** handshakes/s, {} failed (p99 {} ms)",
        report::thousands(report::handshakes_per_s(connect) as u64),
        connect.failures.values().sum::<u64>(),
        report::ms(connect.handshake.percentile(99.0))
    )
}

/// `connect` against a chatd that requires HS256 tokens: every handshake
/// presents one, verified before the upgrade.
fn bench_connect_token(chatd: &Path, cpu: Option<&str>) -> Row {
    println!("\n== connect-token: 10,000 handshakes with HS256 tokens, 2,000 in flight");
    const SECRET: &str = "chatd-bench-secret";
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + 3600;
    let claims = serde_json::json!({"sub": "bench", "name": "bench", "exp": exp});
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).expect("a secret"),
    )
    .expect("the token signs");
    let dialing = Dialing {
        in_flight: 2000,
        ..DIALING
    };
    let result = Server::start(chatd, cpu, &[("AUTH_JWT_SECRET", SECRET)])
        .and_then(|server| {
            crate::fleet::present_token(Some(token));
            let connect = bounded(async { Ok(modes::connect(server.addr, 10_000, dialing).await) });
            crate::fleet::present_token(None);
            connect
        })
        .map(|connect| connect_result(&connect));
    Row {
        benchmark: "connect with HS256 tokens, 2,000 in flight",
        result: result.unwrap_or_else(|err| format!("error: {err}")),
        target: "≥ 5,000 handshakes/s, none failed",
    }
}

fn bench_cross(chatd: &Path, cpu: Option<&str>) -> Row {
    println!("\n== cross: 10 senders at 1,000 msgs/s on process A; 50 receivers on A, 50 on B, through Redis");
    let result = start_redis(cpu).and_then(|(_redis, port)| {
        let url = format!("redis://127.0.0.1:{port}");
        cross_result(chatd, cpu, &[("REDIS_URL", url.as_str())])
    });
    Row {
        benchmark: "cross, 1,000 msgs/s through Redis",
        result: result.unwrap_or_else(|err| format!("error: {err}")),
        target: "≤ 1 ms added at p50, ≤ 5 ms at p99",
    }
}

fn bench_cross_cluster(chatd: &Path, cpu: Option<&str>) -> Row {
    println!("\n== cross-cluster: as cross, through a Redis Cluster of 3 masters and 3 replicas");
    let result = Cluster::start(cpu).and_then(|cluster| {
        let seeds = cluster.seeds();
        cross_result(chatd, cpu, &[("REDIS_CLUSTER_NODES", seeds.as_str())])
    });
    Row {
        benchmark: "cross, 1,000 msgs/s through a Redis Cluster",
        result: result.unwrap_or_else(|err| format!("error: {err}")),
        target: "≤ 1 ms added at p50, ≤ 5 ms at p99",
    }
}

/// `cross` between two chatd started with `env`.
fn cross_result(chatd: &Path, cpu: Option<&str>, env: &[(&str, &str)]) -> Result<String, String> {
    let load = Load {
        clients: 100,
        rooms: Rooms::General,
        senders: 10,
        rate: 1000.0,
        duration: Duration::from_secs(5),
        pad: 0,
        drain: Duration::from_secs(3),
    };
    {
        let a = Server::start(chatd, cpu, env)?;
        let b = Server::start(chatd, cpu, env)?;
        let phase = bounded(modes::cross(
            a.target(),
            b.addr,
            load,
            Duration::from_secs(1),
            DIALING,
        ))?;
        println!("{}", report::PHASE_HEADER);
        println!("{}", report::phase_row("cross", &phase));
        println!("{}", report::cross_lines(&phase));
        let [local, remote] = &phase.latency[..] else {
            unreachable!("cross has two groups")
        };
        let remote_expected = phase.sent * (load.clients - load.clients / 2) as u64;
        if remote.count() == 0 {
            return Err(format!(
                "no copy reached process B ({remote_expected} expected): is the Redis bridge in this build?"
            ));
        }
        let added = |p: f64| (remote.percentile(p) as f64 - local.percentile(p) as f64) / 1000.0;
        Ok(format!(
            "added **{:.1} ms** at p50, **{:.1} ms** at p99 (local p50 {} ms, p99 {} ms); {} of {} remote copies lost",
            added(50.0),
            added(99.0),
            report::ms(local.percentile(50.0)),
            report::ms(local.percentile(99.0)),
            remote_expected.saturating_sub(remote.count()),
            remote_expected
        ))
    }
}

fn bench_deploy(chatd: &Path, cpu: Option<&str>) -> Row {
    deploy_row(chatd, cpu, false)
}

fn bench_deploy_kill(chatd: &Path, cpu: Option<&str>) -> Row {
    deploy_row(chatd, cpu, true)
}

/// A rolling restart of 3 chatd under 1,000 chatting clients.
fn deploy_row(chatd: &Path, cpu: Option<&str>, kill: bool) -> Row {
    let plan = deploy::Plan {
        kill,
        ..deploy::Plan::default()
    };
    let signal = if kill { "SIGKILL" } else { "SIGTERM" };
    println!(
        "\n== deploy: 3 chatd on one Redis, 1,000 clients in general at 200 msgs/s in all; \
         each chatd in turn gets {signal} and is started again; clients resume with since"
    );
    let result = deploy::run(chatd, cpu, &plan).map(|report| {
        println!("{}", report.lines());
        let (m, t) = (&report.measured, &report.measured.tally);
        format!(
            "**{}** lost, **{}** duplicated of {} said ({} raw repeats by id, {} of them live; {} unconfirmed); \
             {} reconnects, {} recovered:true, {} recovered:false; p50/p99 during the restart {}{}",
            m.loss.copies,
            t.duplicates,
            report::thousands(m.said),
            t.raw_duplicates,
            t.raw_duplicates_live,
            m.unconfirmed,
            t.reconnects_after_notice + t.reconnects_after_drop,
            t.recovered,
            t.not_recovered,
            deploy::p50_p99(&t.live[1]),
            report
                .restart_error
                .as_ref()
                .map_or(String::new(), |err| format!("; restart stopped: {err}"))
        )
    });
    Row {
        benchmark: if kill {
            "deploy, rolling SIGKILL restart of 3 chatd, 1,000 clients"
        } else {
            "deploy, rolling SIGTERM restart of 3 chatd, 1,000 clients"
        },
        result: result.unwrap_or_else(|err| format!("error: {err}")),
        target: "0 lost, 0 duplicated",
    }
}

/// The machine, as BENCHMARKS.md records it.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown", str::trim);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<f64>().ok())
        .map_or("unknown".into(), |kib| {
            format!("{:.1} GiB", kib / 1048576.0)
        });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    // Not available_parallelism: under taskset that counts only our CPU.
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    format!(
        "machine: {cores} cores, {model}, {memory} memory, Linux {}",
        kernel.trim()
    )
}
