//! `chatd-bench`: the load tool shipped with chatd.
//!
//! It counts only what arrives. Every chat message a sender writes carries a
//! tag (phase, sender, sequence number, send time); every client, the sender
//! included, parses the tag from each `echo` it receives, so latency is
//! measured at every receiver and lost and duplicated copies are counted
//! exactly. The clients speak a minimal WebSocket over a current-thread tokio
//! runtime, so one core of load can measure a server near a million
//! deliveries a second; each report shows the tool's own CPU use so a reader
//! can tell when the tool, not the server, was the limit.

mod args;
mod cluster;
mod conn;
mod deploy;
mod fleet;
mod modes;
mod procfs;
mod report;
mod rooms;
mod stats;
mod suite;
mod wire;

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use args::Options;
use fleet::Pacing;
use modes::{Dialing, Load, Ramp, Target};
use rooms::Rooms;

const USAGE: &str = "\
usage: chatd-bench <mode> [--option value ...]

modes (defaults in brackets):
  fanout   N clients, S of them sending R messages/s in all, for a while; with --rooms K, client i
           is in room r-(i % K) and sender s speaks in r-(s % K) (without it, all in the default room)
           --clients [1000] --senders [10] --rate [100] --duration [5] --size [0] --drain [5] --rooms [none]
  ramp     fanout steps with R raised by --factor until two steps in a row fail (p99 > --p99-ms or a loss);
           reports the highest deliveries/s held
           --clients [1000] --senders [10] --start [100] --factor [1.25] --max-rate [5000]
           --step [3] --drain [2] --p99-ms [100] --size [0]
  rooms    the ramp with N clients in K rooms (client i in r-(i % K)), one sender per room, R in all;
           a copy from another room is an error, and a step with one does not hold
           --clients [10000] --rooms [1000] --start [2000] --factor [1.25] --max-rate [300000]
           --step [3] --drain [2] --p99-ms [100] --size [0]
  steps    adds --step-clients at a time up to --max-clients; at every size, for --step s,
           each of S broadcasters sends its next message when its own echo of the last arrives
           (closed loop, one in flight each); --rate R > 0 sends R msgs/s in all instead (open loop)
           --step-clients [1000] --max-clients [19000] --senders [4] --rate [0] --step [2] --drain [2]
  idle     N idle connections; the server's RSS before and after  --clients [10000] --settle [2]
  connect  handshakes/s (TCP + upgrade + welcome), K in flight, all kept open
           --connections [10000] --in-flight [2000]
  cross    senders and half the receivers on --addr, the other half on --remote (chatd
           processes sharing a Redis): the latency the Redis hop adds
           --remote ADDR --clients [100] --senders [10] --rate [1000] --duration [5] --settle [1]
  deploy   starts redis-server and P chatd on it, N clients spread over them chatting in general at R msgs/s
           in all, then restarts each chatd in turn (SIGTERM, or SIGKILL with --kill) while the clients
           follow shutdown_notice or their dropped connection and resume with since; reports what each
           client never saw or saw twice, reconnects, recoveries and latency (its own --chatd, --server-cpu)
           --clients [1000] --processes [3] --rate [200] --kill --warmup [3] --pause [2] --settle [5]
           --drain [15] --history-size [10000]
  suite    the standard set against fresh chatd processes it starts: see BENCHMARKS.md
           --chatd [next to this binary] --server-cpu [none; e.g. 0] --cross (also cross, via redis-server)
           --cluster (also cross, cross-cluster, rooms-redis, rooms-cluster: cross and rooms through one
           redis-server and through a local Redis Cluster of 3 masters and 3 replicas, with commands per shard)
           --only [all] a comma list of ramp, rooms, idle, steps, connect, connect-token, deploy, cross,
           cross-cluster, rooms-redis, rooms-cluster
           --kill (deploy with SIGKILL)

every mode: --addr [127.0.0.1:8000] --server-pid [from GET /status] --in-flight [500]
            --timeout [10] (seconds per handshake) --json (one JSON object per result)
            --compress (every connection offers permessage-deflate, insists on it, and inflates)
times are in seconds; --size is extra bytes of chat text per message.";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_default();
    let result = Options::parse(args).and_then(|options| {
        raise_file_limit();
        if options.flag("compress") {
            wire::offer_compression();
        }
        match mode.as_str() {
            "fanout" => fanout(&options),
            "ramp" => ramp(&options),
            "rooms" => rooms(&options),
            "steps" => steps(&options),
            "idle" => idle(&options),
            "connect" => connect(&options),
            "cross" => cross(&options),
            "deploy" => deploy(&options),
            "suite" => suite::run(&options),
            "help" | "-h" | "--help" => {
                println!("{USAGE}");
                Ok(())
            }
            other => Err(format!("unknown mode {other:?}\n\n{USAGE}")),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("chatd-bench: {err}");
            ExitCode::from(2)
        }
    }
}

/// Runs `future` on a current-thread runtime with a `LocalSet`; every
/// connection it opened is closed when it returns.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime can be built");
    tokio::task::LocalSet::new().block_on(&runtime, future)
}

/// Lifts the soft descriptor limit to the hard one: one descriptor per
/// client, and the default soft limit is often 1024.
fn raise_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                eprintln!("chatd-bench: cannot raise the descriptor limit");
            }
        }
    }
}

fn seconds(options: &Options, name: &str, default: f64) -> Result<Duration, String> {
    let value: f64 = options.get(name, default)?;
    Duration::try_from_secs_f64(value).map_err(|_| format!("--{name} must be 0 or more seconds"))
}

fn target(options: &Options) -> Result<(SocketAddr, Option<u32>), String> {
    let addr = options.get("addr", SocketAddr::from(([127, 0, 0, 1], 8000)))?;
    Ok((addr, options.optional("server-pid")?))
}

/// Once every option is read: the target with its pid looked up, and whether
/// the output is JSON; the table header is printed when it is not.
fn begin(
    options: &Options,
    addr: SocketAddr,
    pid: Option<u32>,
    header: &str,
) -> Result<(Target, bool), String> {
    options.check_all_read()?;
    let target = Target {
        addr,
        pid: modes::resolve_pid(addr, pid),
    };
    let json = options.flag("json");
    if !json {
        println!("{header}");
    }
    Ok((target, json))
}

fn dialing(options: &Options, in_flight: usize) -> Result<Dialing, String> {
    Ok(Dialing {
        in_flight: options.get("in-flight", in_flight)?,
        timeout: seconds(options, "timeout", 10.0)?,
    })
}

fn load(options: &Options, clients: usize, senders: usize, rate: f64) -> Result<Load, String> {
    let clients = options.get("clients", clients)?;
    let rooms = match options.optional("rooms")? {
        None => Rooms::General,
        Some(rooms) => named_rooms(rooms, clients)?,
    };
    let load = Load {
        clients,
        rooms,
        senders: options.get("senders", senders)?,
        rate: options.get("rate", rate)?,
        duration: seconds(options, "duration", 5.0)?,
        pad: options.get("size", 0)?,
        drain: seconds(options, "drain", 5.0)?,
    };
    if load.senders == 0 || load.senders > load.clients {
        return Err("--senders must be from 1 to --clients".into());
    }
    Ok(load)
}

fn named_rooms(rooms: usize, clients: usize) -> Result<Rooms, String> {
    if rooms == 0 || rooms > clients {
        return Err("--rooms must be from 1 to --clients".into());
    }
    Ok(Rooms::Named(rooms))
}

fn print_phases(options: &Options, mode: &str, rows: &[(String, &fleet::PhaseReport)]) {
    if options.flag("json") {
        for (_, row) in rows {
            println!("{}", report::phase_json(mode, row));
        }
        return;
    }
    println!("{}", report::PHASE_HEADER);
    for (label, row) in rows {
        println!("{}", report::phase_row(label, row));
    }
}

fn fanout(options: &Options) -> Result<(), String> {
    let (addr, pid) = target(options)?;
    let load = load(options, 1000, 10, 100.0)?;
    let dialing = dialing(options, 500)?;
    options.check_all_read()?;
    let target = Target {
        addr,
        pid: modes::resolve_pid(addr, pid),
    };
    let result = block_on(modes::fanout(target, load, dialing))?;
    print_phases(options, "fanout", &[("fanout".into(), &result)]);
    Ok(())
}

fn ramp(options: &Options) -> Result<(), String> {
    let load = load(options, 1000, 10, 0.0)?;
    ramp_load(options, "ramp", load, 100.0, 5000.0)
}

/// The ramp in rooms: one sender per room, so a room's members are owed
/// only its sender's messages.
fn rooms(options: &Options) -> Result<(), String> {
    let clients = options.get("clients", 10_000)?;
    let rooms = options.get("rooms", 1000)?;
    let load = Load {
        clients,
        rooms: named_rooms(rooms, clients)?,
        senders: rooms,
        rate: 0.0,
        duration: Duration::ZERO,
        pad: options.get("size", 0)?,
        drain: Duration::ZERO,
    };
    ramp_load(options, "rooms", load, 2000.0, 300_000.0)
}

/// Runs `ramp` or `rooms`: `load` stepped from `--start` (`start` by
/// default) up to `--max-rate` messages/s in all.
fn ramp_load(
    options: &Options,
    mode: &str,
    mut load: Load,
    start: f64,
    max_rate: f64,
) -> Result<(), String> {
    let (addr, pid) = target(options)?;
    load.duration = seconds(options, "step", 3.0)?;
    load.drain = seconds(options, "drain", 2.0)?;
    let ramp = Ramp {
        start: options.get("start", start)?,
        factor: options.get("factor", 1.25)?,
        max_rate: options.get("max-rate", max_rate)?,
        p99_limit: Duration::from_millis(options.get("p99-ms", 100)?),
    };
    if ramp.factor <= 1.0 || ramp.start <= 0.0 {
        return Err("--start must be above 0 and --factor above 1".into());
    }
    let dialing = dialing(options, 500)?;
    let (target, json) = begin(options, addr, pid, report::PHASE_HEADER)?;
    let step_mode = format!("{mode}-step");
    let steps = block_on(modes::ramp(target, load, ramp, dialing, |step, held| {
        if json {
            println!("{}", report::phase_json(&step_mode, step));
        } else {
            println!(
                "{}",
                report::phase_row(if held { "held" } else { "FAILED" }, step)
            );
        }
    }))?;
    let other_room: u64 = steps.iter().map(|(step, _)| step.other_room).sum();
    match modes::best_held(&steps) {
        Some(best) if json => println!("{}", report::phase_json(mode, best)),
        Some(best) => println!(
            "{mode}: {} deliveries/s held at {} clients{} (p99 {} ms, {} core-s per million deliveries)",
            report::thousands(best.deliveries_per_s() as u64),
            best.members,
            report::in_rooms(best),
            report::ms(best.all_latency().percentile(99.0)),
            best.cpu_per_million()
                .map_or("-".into(), |cpu| format!("{cpu:.2}")),
        ),
        None => println!("{mode}: no step held"),
    }
    if other_room > 0 && !json {
        println!("{mode}: {other_room} copies from other rooms in all steps");
    }
    Ok(())
}

fn steps(options: &Options) -> Result<(), String> {
    let (addr, pid) = target(options)?;
    let step_clients = options.get("step-clients", 1000)?;
    let max_clients = options.get("max-clients", 19_000)?;
    let load = Load {
        clients: max_clients,
        rooms: Rooms::General,
        senders: options.get("senders", 4)?,
        rate: options.get("rate", 0.0)?,
        duration: seconds(options, "step", 2.0)?,
        pad: options.get("size", 0)?,
        drain: seconds(options, "drain", 2.0)?,
    };
    if load.senders == 0 || load.senders > step_clients {
        return Err("--senders must be from 1 to --step-clients".into());
    }
    let pacing = if load.rate == 0.0 {
        Pacing::Echo
    } else if load.rate > 0.0 && load.rate.is_finite() {
        Pacing::Rate(load.rate)
    } else {
        return Err("--rate must be 0 (closed loop) or a positive msgs/s".into());
    };
    let dialing = dialing(options, 500)?;
    let (target, json) = begin(options, addr, pid, report::STEPS_HEADER)?;
    block_on(modes::steps(
        target,
        load,
        pacing,
        step_clients,
        max_clients,
        dialing,
        |_, step| {
            if json {
                println!("{}", report::phase_json("steps", step));
            } else {
                println!("{}", report::steps_row(step));
            }
        },
    ))?;
    Ok(())
}

fn idle(options: &Options) -> Result<(), String> {
    let (addr, pid) = target(options)?;
    let clients = options.get("clients", 10_000)?;
    let settle = seconds(options, "settle", 2.0)?;
    let dialing = dialing(options, 500)?;
    options.check_all_read()?;
    let pid = modes::resolve_pid(addr, pid).ok_or("idle needs the server's pid")?;
    let result = block_on(modes::idle(addr, pid, clients, settle, dialing))?;
    if options.flag("json") {
        println!("{}", report::idle_json(&result));
    } else {
        println!("{}", report::idle_line(&result));
    }
    Ok(())
}

fn connect(options: &Options) -> Result<(), String> {
    let (addr, _) = target(options)?;
    let connections = options.get("connections", 10_000)?;
    let dialing = dialing(options, 2000)?;
    options.check_all_read()?;
    let result = block_on(modes::connect(addr, connections, dialing));
    if options.flag("json") {
        println!("{}", report::connect_json(&result));
    } else {
        println!("{}", report::connect_line(&result));
    }
    Ok(())
}

fn cross(options: &Options) -> Result<(), String> {
    let (addr, pid) = target(options)?;
    let remote: SocketAddr = options
        .optional("remote")?
        .ok_or("cross needs --remote, the address of a second chatd on the same Redis")?;
    let load = load(options, 100, 10, 1000.0)?;
    let settle = seconds(options, "settle", 1.0)?;
    let dialing = dialing(options, 500)?;
    options.check_all_read()?;
    let local = Target { addr, pid };
    let result = block_on(modes::cross(local, remote, load, settle, dialing))?;
    print_phases(options, "cross", &[("cross".into(), &result)]);
    if !options.flag("json") {
        println!("{}", report::cross_lines(&result));
    }
    Ok(())
}

fn deploy(options: &Options) -> Result<(), String> {
    let defaults = deploy::Plan::default();
    let plan = deploy::Plan {
        clients: options.get("clients", defaults.clients)?,
        processes: options.get("processes", defaults.processes)?,
        rate: options.get("rate", defaults.rate)?,
        kill: options.flag("kill"),
        history_size: options.get("history-size", defaults.history_size)?,
        warmup: seconds(options, "warmup", defaults.warmup.as_secs_f64())?,
        pause: seconds(options, "pause", defaults.pause.as_secs_f64())?,
        settle: seconds(options, "settle", defaults.settle.as_secs_f64())?,
        drain: seconds(options, "drain", defaults.drain.as_secs_f64())?,
    };
    if plan.clients == 0 || plan.processes == 0 {
        return Err("--clients and --processes must be at least 1".into());
    }
    if !(plan.rate > 0.0 && plan.rate.is_finite()) {
        return Err("--rate must be a positive msgs/s".into());
    }
    let chatd = suite::chatd_path(options)?;
    let cpu: Option<String> = options.optional("server-cpu")?;
    options.check_all_read()?;
    let report = deploy::run(&chatd, cpu.as_deref(), &plan)?;
    if options.flag("json") {
        println!("{}", report.json());
    } else {
        println!("{}", report.lines());
    }
    Ok(())
}
