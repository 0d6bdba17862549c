//! The deploy clients together: what their tasks share, and the controller
//! that connects them, starts and stops the chatting, and waits for the last
//! copies. It runs on its own thread (a current-thread runtime), while the
//! thread that started the chatd processes restarts them: that one blocks in
//! `waitpid` and sleeps, which must not stall a thousand clients.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::client::Roamer;
use super::ledger::{Copy, Ledger, Loss};
use super::{Period, Plan};
use crate::stats::Histogram;

/// Where the run is, as the clients see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Connecting; nothing is sent yet.
    Joining,
    /// Every client writes its share of the rate.
    Chatting,
    /// Sending has stopped; the last copies may still arrive.
    Quiet,
    /// Every connection closes.
    Done,
}

/// Everything counted that is not the ledger's.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub notices: u64,
    pub reconnects_after_notice: u64,
    pub reconnects_after_drop: u64,
    /// Connection attempts that failed, by why.
    pub failures: BTreeMap<String, u64>,
    /// Connections that dropped (not moved after a notice), by how.
    pub ends: BTreeMap<String, u64>,
    /// `joined` without `since`, with `recovered: true`, with `false`, and
    /// with an empty epoch (Redis away).
    pub fresh: u64,
    pub recovered: u64,
    pub not_recovered: u64,
    pub without_epoch: u64,
    /// Copies whose `id` the client had, in a history or live.
    pub raw_duplicates: u64,
    pub raw_duplicates_live: u64,
    /// Live repeats by why (`Roamer::repeat`).
    pub repeats: BTreeMap<&'static str, u64>,
    /// The first few live repeats, described.
    pub repeat_examples: Vec<String>,
    pub duplicates: u64,
    /// Events that are neither ours nor understood.
    pub foreign: u64,
    /// Live events that came ahead of an earlier offset.
    pub early: u64,
    /// History events that came ahead of an earlier offset, and
    /// `recovered: true` histories that did not reach their `joined`
    /// offset: both break the recovery contract.
    pub history_gaps: u64,
    pub short_recoveries: u64,
    /// Connections that ended with events below the highest offset seen
    /// still missing, and those events: what clients resuming from their
    /// highest offset would have lost.
    pub leaves_with_gap: u64,
    pub gap_events: u64,
    pub errors: u64,
    /// Send slots that fell due while their client was away.
    pub skipped: u64,
    /// First copies of live events, by [`Period`] at arrival.
    pub live: [Histogram; 3],
    /// First copies that came in a recovery's history.
    pub history: Histogram,
}

impl Tally {
    pub fn failed(&mut self, kind: &str) {
        *self.failures.entry(kind.to_string()).or_default() += 1;
    }

    pub fn ended(&mut self, kind: &str) {
        *self.ends.entry(kind.to_string()).or_default() += 1;
    }

    pub fn joined(&mut self, recovered: Option<bool>, without_epoch: bool) {
        match recovered {
            None => self.fresh += 1,
            Some(true) => self.recovered += 1,
            Some(false) => self.not_recovered += 1,
        }
        self.without_epoch += u64::from(without_epoch);
    }
}

/// What the client tasks share; borrowed only between awaits.
pub struct Shared {
    pub servers: Vec<SocketAddr>,
    pub ledger: Ledger,
    pub tally: Tally,
    /// Clients with an open connection.
    pub connected: usize,
    /// When the last first copy arrived.
    last_first: Instant,
    epoch: Instant,
    clients: usize,
    per_client_rate: f64,
    chat_start: Option<Instant>,
    period: Arc<AtomicU8>,
}

impl Shared {
    pub fn micros(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_micros() as u64
    }

    /// When client `index`'s send slot `slot` falls due: its share of the
    /// interval after the start, so the fleet together sends evenly.
    pub fn slot_time(&self, index: usize, slot: u64) -> Option<Instant> {
        let start = self.chat_start?;
        let offset = (index + 1) as f64 / self.clients as f64;
        let after = Duration::try_from_secs_f64((slot as f64 + offset) / self.per_client_rate);
        after.ok().map(|after| start + after)
    }

    /// Counts what [`Ledger::arrive`] made of a copy arriving `now`.
    pub fn count(&mut self, copy: Copy, now: Instant, history: bool) {
        match copy {
            Copy::First { sent_us } => {
                let latency = self.micros(now).saturating_sub(sent_us);
                if history {
                    self.tally.history.record(latency);
                } else {
                    let period = usize::from(self.period.load(Ordering::Relaxed)).min(2);
                    self.tally.live[period].record(latency);
                }
                self.last_first = now;
            }
            Copy::SameId { .. } => {
                self.tally.raw_duplicates += 1;
                self.tally.raw_duplicates_live += u64::from(!history);
            }
            Copy::OtherId => self.tally.duplicates += 1,
            Copy::Foreign => self.tally.foreign += 1,
        }
    }
}

/// What the clients measured.
#[derive(Debug, Clone)]
pub struct Measured {
    pub written: u64,
    pub said: u64,
    pub unconfirmed: u64,
    /// Unconfirmed messages that some client saw.
    pub unconfirmed_reached: u64,
    pub loss: Loss,
    pub tally: Tally,
    /// How long the clients chatted.
    pub chatted: Duration,
    /// From the end of sending to the last copy counted.
    pub drained: Duration,
    /// Clients connected when the run ended.
    pub connected_at_end: usize,
    pub tool_cpu_s: f64,
    /// From the first connect to the end, what `tool_cpu_s` was spent in.
    pub run: Duration,
}

/// Runs the clients: connects them to `servers` in turn, starts chatting
/// and says so on `ready`, then chats until `period` says the restart is
/// over and `plan.settle` more, stops, and waits up to `plan.drain` for the
/// last copies. Must run inside a `LocalSet`.
///
/// # Errors
/// Not every client connected within 20 s.
pub async fn run(
    plan: &Plan,
    servers: Vec<SocketAddr>,
    period: Arc<AtomicU8>,
    ready: mpsc::Sender<()>,
) -> Result<Measured, String> {
    let tool_before = crate::procfs::cpu_seconds(std::process::id()).unwrap_or(0.0);
    let now = Instant::now();
    let shared = Rc::new(RefCell::new(Shared {
        servers: servers.clone(),
        ledger: Ledger::new(plan.clients),
        tally: Tally::default(),
        connected: 0,
        last_first: now,
        epoch: now,
        clients: plan.clients,
        per_client_rate: plan.rate / plan.clients as f64,
        chat_start: None,
        period: period.clone(),
    }));
    let (stage, stage_rx) = watch::channel(Stage::Joining);
    let tasks: Vec<_> = (0..plan.clients)
        .map(|index| {
            let roamer = Roamer::new(
                index,
                index % servers.len(),
                shared.clone(),
                stage_rx.clone(),
            );
            tokio::task::spawn_local(roamer.run())
        })
        .collect();
    let all_in = wait_for(Duration::from_secs(20), || {
        shared.borrow().connected == plan.clients
    })
    .await;
    if !all_in {
        let shared = shared.borrow();
        return Err(format!(
            "only {} of {} clients connected: {:?}",
            shared.connected, plan.clients, shared.tally.failures
        ));
    }

    let chat_start = Instant::now() + Duration::from_millis(50);
    shared.borrow_mut().chat_start = Some(chat_start);
    stage.send_replace(Stage::Chatting);
    let _ = ready.send(());
    // The restart is bounded by the thread doing it; this only guards
    // against that thread dying.
    let restarts = (super::RESTART_LIMIT + plan.pause) * plan.processes as u32;
    wait_for(plan.warmup + restarts, || {
        period.load(Ordering::Relaxed) == Period::After as u8
    })
    .await;
    tokio::time::sleep(plan.settle).await;

    stage.send_replace(Stage::Quiet);
    let quiet = Instant::now();
    wait_for(plan.drain, || {
        let shared = shared.borrow();
        let everyone = shared.connected == plan.clients;
        let owed = shared.ledger.loss().copies + shared.ledger.unconfirmed().0;
        // Unconfirmed messages may never come; then quiet for a while is
        // as good as it gets.
        everyone && (owed == 0 || shared.last_first.elapsed() > Duration::from_secs(3))
    })
    .await;
    let drained = shared.borrow().last_first.saturating_duration_since(quiet);
    let connected_at_end = shared.borrow().connected;

    stage.send_replace(Stage::Done);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        for task in tasks {
            let _ = task.await;
        }
    })
    .await;
    let shared = shared.borrow();
    let (unconfirmed, unconfirmed_reached) = shared.ledger.unconfirmed();
    Ok(Measured {
        written: shared.ledger.written(),
        said: shared.ledger.said(),
        unconfirmed,
        unconfirmed_reached,
        loss: shared.ledger.loss(),
        tally: shared.tally.clone(),
        chatted: quiet - chat_start,
        drained,
        connected_at_end,
        tool_cpu_s: crate::procfs::cpu_seconds(std::process::id()).unwrap_or(0.0) - tool_before,
        run: now.elapsed(),
    })
}

/// Polls `ready` every 50 ms for up to `limit`; whether it became true.
async fn wait_for(limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let give_up = Instant::now() + limit;
    loop {
        if ready() {
            return true;
        }
        if Instant::now() >= give_up {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
