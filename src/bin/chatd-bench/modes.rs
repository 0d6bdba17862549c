//! The benchmarks: each mode connects a fleet, runs its phases and returns
//! what it measured; `report` prints it.

use std::net::SocketAddr;
use std::time::Duration;

use crate::fleet::{ConnectReport, Fleet, Pacing, PhaseReport};
use crate::procfs;
use crate::rooms::Rooms;

/// Where the clients connect, and the server process to measure there.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub addr: SocketAddr,
    pub pid: Option<u32>,
}

/// How clients are opened in every mode.
#[derive(Debug, Clone, Copy)]
pub struct Dialing {
    /// Handshakes under way at once.
    pub in_flight: usize,
    /// A handshake not done by then counts as failed.
    pub timeout: Duration,
}

/// N clients in some rooms, S of them senders, R messages a second in all.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub clients: usize,
    pub rooms: Rooms,
    pub senders: usize,
    pub rate: f64,
    pub duration: Duration,
    /// Extra bytes of chat text per message.
    pub pad: usize,
    /// How long to wait for the last copies after sending stops.
    pub drain: Duration,
}

/// Connects `count` clients and fails unless every one got in.
async fn connect_all(
    fleet: &Fleet,
    addr: SocketAddr,
    count: usize,
    group: usize,
    dialing: Dialing,
) -> Result<ConnectReport, String> {
    let report = fleet
        .connect(addr, count, group, dialing.in_flight, dialing.timeout)
        .await;
    if report.opened < count {
        return Err(format!(
            "only {} of {count} clients connected to {addr}: {:?}",
            report.opened, report.failures
        ));
    }
    Ok(report)
}

/// `fanout`: one phase at a fixed rate.
pub async fn fanout(target: Target, load: Load, dialing: Dialing) -> Result<PhaseReport, String> {
    let fleet = Fleet::new(load.senders, load.rooms, 1, target.pid);
    connect_all(&fleet, target.addr, load.clients, 0, dialing).await?;
    Ok(fleet
        .run_phase(Pacing::Rate(load.rate), load.duration, load.pad, load.drain)
        .await)
}

/// How `ramp` steps the rate up, and what a step must hold.
#[derive(Debug, Clone, Copy)]
pub struct Ramp {
    pub start: f64,
    pub factor: f64,
    pub max_rate: f64,
    pub p99_limit: Duration,
}

/// Whether a step held: nothing lost, duplicated, refused or from another
/// room, p99 in bound.
pub fn step_held(report: &PhaseReport, p99_limit: Duration) -> bool {
    report.lost == 0
        && report.duplicates == 0
        && report.errors == 0
        && report.other_room == 0
        && report.deliveries > 0
        && report.all_latency().percentile(99.0) <= p99_limit.as_micros() as u64
}

/// `ramp`: raises the rate by `factor` per step until two steps in a row fail
/// to hold (one stray latency spike on a shared machine should not end the
/// ramp); every step is returned, the caller picks the best that held.
/// `rooms` is the same ramp with `load.rooms` named rooms.
pub async fn ramp(
    target: Target,
    load: Load,
    ramp: Ramp,
    dialing: Dialing,
    mut on_step: impl FnMut(&PhaseReport, bool),
) -> Result<Vec<(PhaseReport, bool)>, String> {
    let fleet = Fleet::new(load.senders, load.rooms, 1, target.pid);
    connect_all(&fleet, target.addr, load.clients, 0, dialing).await?;
    let mut steps = Vec::new();
    let mut rate = ramp.start;
    let mut failed_in_a_row = 0;
    while rate <= ramp.max_rate && failed_in_a_row < 2 {
        let report = fleet
            .run_phase(Pacing::Rate(rate), load.duration, load.pad, load.drain)
            .await;
        let held = step_held(&report, ramp.p99_limit);
        failed_in_a_row = if held { 0 } else { failed_in_a_row + 1 };
        on_step(&report, held);
        steps.push((report, held));
        rate *= ramp.factor;
    }
    Ok(steps)
}

/// The fastest step that held.
pub fn best_held(steps: &[(PhaseReport, bool)]) -> Option<&PhaseReport> {
    steps
        .iter()
        .filter(|(_, held)| *held)
        .map(|(report, _)| report)
        .max_by(|a, b| a.deliveries_per_s().total_cmp(&b.deliveries_per_s()))
}

/// What `idle` measured.
#[derive(Debug, Clone)]
pub struct IdleReport {
    pub connected: usize,
    pub rss_before: u64,
    pub rss_after: u64,
    pub connect: Duration,
}

impl IdleReport {
    pub fn bytes_per_connection(&self) -> f64 {
        self.rss_after.saturating_sub(self.rss_before) as f64 / self.connected.max(1) as f64
    }
}

/// `idle`: the server's RSS before and after `clients` idle connections.
pub async fn idle(
    addr: SocketAddr,
    pid: u32,
    clients: usize,
    settle: Duration,
    dialing: Dialing,
) -> Result<IdleReport, String> {
    let rss_before = procfs::rss_bytes(pid)?;
    let fleet = Fleet::new(0, Rooms::General, 1, Some(pid));
    let connect = connect_all(&fleet, addr, clients, 0, dialing).await?;
    tokio::time::sleep(settle).await;
    let rss_after = procfs::rss_bytes(pid)?;
    let connected = fleet.alive();
    if connected < clients {
        return Err(format!("{} idle clients were dropped", clients - connected));
    }
    Ok(IdleReport {
        connected,
        rss_before,
        rss_after,
        connect: connect.elapsed,
    })
}

/// `connect`: `connections` handshakes, `in_flight` at a time, all kept open.
pub async fn connect(addr: SocketAddr, connections: usize, dialing: Dialing) -> ConnectReport {
    let fleet = Fleet::new(0, Rooms::General, 1, None);
    fleet
        .connect(addr, connections, 0, dialing.in_flight, dialing.timeout)
        .await
}

/// `steps`: adds `step_clients` clients at a time up to `max_clients`,
/// running `load` (its `clients` and `rate` ignored) paced by `pacing` at
/// every size.
pub async fn steps(
    target: Target,
    load: Load,
    pacing: Pacing,
    step_clients: usize,
    max_clients: usize,
    dialing: Dialing,
    mut on_step: impl FnMut(usize, &PhaseReport),
) -> Result<Vec<(usize, PhaseReport)>, String> {
    let fleet = Fleet::new(load.senders, load.rooms, 1, target.pid);
    let mut results = Vec::new();
    let mut clients = 0;
    while clients + step_clients <= max_clients {
        connect_all(&fleet, target.addr, step_clients, 0, dialing).await?;
        clients += step_clients;
        let report = fleet
            .run_phase(pacing, load.duration, load.pad, load.drain)
            .await;
        on_step(clients, &report);
        results.push((clients, report));
    }
    Ok(results)
}

/// `cross`: senders and half the receivers on `local` (group 0), the other
/// half on `remote` (group 1), so the two latencies differ by the Redis hop.
pub async fn cross(
    local: Target,
    remote: SocketAddr,
    load: Load,
    settle: Duration,
    dialing: Dialing,
) -> Result<PhaseReport, String> {
    let fleet = Fleet::new(load.senders, load.rooms, 2, local.pid);
    let local_clients = load.clients / 2;
    connect_all(&fleet, local.addr, local_clients, 0, dialing).await?;
    connect_all(&fleet, remote, load.clients - local_clients, 1, dialing).await?;
    // Lets both processes see each other before the clock starts.
    tokio::time::sleep(settle).await;
    Ok(fleet
        .run_phase(Pacing::Rate(load.rate), load.duration, load.pad, load.drain)
        .await)
}

/// Looks up the server's pid from its `/status` when none was given.
pub fn resolve_pid(addr: SocketAddr, given: Option<u32>) -> Option<u32> {
    given.or_else(|| match procfs::server_pid(addr) {
        Ok(pid) => Some(pid),
        Err(err) => {
            eprintln!("chatd-bench: no server CPU figures: {err}");
            None
        }
    })
}
