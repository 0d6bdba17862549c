//! `ShutdownCoordinator`: turns SIGTERM/SIGINT into an orderly drain.
//!
//! The drain, in order:
//! 1. [`BeginShutdown`] (the first signal, or a test) marks the process
//!    draining in [`Lifecycle`]: from then on `/ws` upgrades, `/readyz` and
//!    `POST /notify` answer 503, so load balancers move traffic elsewhere.
//! 2. The ticker is stopped and the hub is sent [`Drain`]: every client gets a
//!    `shutdown_notice` with the deadline and its own jittered reconnect delay.
//!    Clients still connected keep chatting until they leave.
//! 3. Every `SHUTDOWN_PROGRESS_INTERVAL` a line logs the pid, the connections
//!    left and the seconds until force-close.
//! 4. The wait ends when the hub reports [`HubEmpty`], when `SHUTDOWN_TIMEOUT`
//!    passes, or at a second signal. At the deadline the hub closes the rest
//!    with 1001 ([`ForceClose`]) in batches spread over
//!    `SHUTDOWN_CLOSE_SPREAD`, so they do not all reconnect to the next
//!    process in the same instant; the progress line goes on saying how many
//!    are left. A second signal (before or during the spread) closes everyone
//!    left at once. The coordinator waits the spread plus at most
//!    [`CLOSE_GRACE`] for them to go.
//! 5. The actors in `stop_at_exit` (the Redis bridge) are stopped and the HTTP
//!    server is stopped, which ends `Application::run_until_stopped` and the
//!    process exits 0.
//!
//! All of a process's connections are in its one hub, whatever WORKERS is,
//! so they drain together.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::dev::ServerHandle;

use crate::actors::chat_hub::{seconds_left, ChatHub, Count, Drain, ForceClose, HubEmpty};
use crate::actors::ticker::Stop;
use crate::state::Lifecycle;

/// A request to shut down: a signal, or a test. The second one skips the wait.
#[derive(Message)]
#[rtype(result = "()")]
pub struct BeginShutdown {
    /// What asked, for the log: `SIGTERM`, `SIGINT`, `test`.
    pub cause: &'static str,
}

/// The longest wait, after force-closing, for sessions to finish.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The longest wait for the actors in `stop_at_exit` to finish stopping.
pub const EXIT_GRACE: Duration = Duration::from_millis(1500);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Serving,
    Draining,
    Closing,
    Done,
}

/// Settings for a drain.
#[derive(Debug, Clone)]
pub struct DrainPolicy {
    /// How long clients get to leave.
    pub timeout: Duration,
    /// How often the drain logs its progress.
    pub progress_interval: Duration,
    /// Over how long the clients left at the deadline are closed.
    pub close_spread: Duration,
    /// Worker threads, for the log.
    pub workers: usize,
}

/// Runs the drain; see the module docs.
pub struct ShutdownCoordinator {
    hub: Addr<ChatHub>,
    ticker: Option<Recipient<Stop>>,
    stop_at_exit: Vec<Recipient<Stop>>,
    server: ServerHandle,
    lifecycle: Arc<Lifecycle>,
    policy: DrainPolicy,
    phase: Phase,
    timers: Vec<SpawnHandle>,
}

impl ShutdownCoordinator {
    pub fn new(
        hub: Addr<ChatHub>,
        ticker: Option<Recipient<Stop>>,
        stop_at_exit: Vec<Recipient<Stop>>,
        server: ServerHandle,
        lifecycle: Arc<Lifecycle>,
        policy: DrainPolicy,
    ) -> Self {
        Self {
            hub,
            ticker,
            stop_at_exit,
            server,
            lifecycle,
            policy,
            phase: Phase::Serving,
            timers: Vec::new(),
        }
    }

    fn begin_drain(&mut self, cause: &'static str, ctx: &mut Context<Self>) {
        self.phase = Phase::Draining;
        let deadline = Instant::now() + self.policy.timeout;
        self.lifecycle.begin_drain(deadline);
        if let Some(ticker) = self.ticker.take() {
            ticker.do_send(Stop);
        }
        let (pid, workers, timeout) =
            (std::process::id(), self.policy.workers, self.policy.timeout);
        self.hub
            .send(Drain {
                deadline,
                on_empty: ctx.address().recipient(),
            })
            .into_actor(self)
            .map(move |told, _, _| {
                let told = told.expect("the hub outlives the coordinator");
                log::info!(
                    "drain started pid={pid} cause={cause} connections={told} workers={workers} \
                     timeout_s={} (all workers' connections drain together)",
                    timeout.as_secs()
                );
            })
            .wait(ctx);

        let progress = ctx.run_interval(self.policy.progress_interval, move |act, ctx| {
            act.hub
                .send(Count)
                .into_actor(act)
                .map(move |left, _, _| {
                    log::info!(
                        "draining pid={pid} connections={} seconds_left={}",
                        left.unwrap_or(0),
                        seconds_left(deadline)
                    );
                })
                .spawn(ctx);
        });
        let force = ctx.run_later(self.policy.timeout, |act, ctx| {
            act.force_close("shutdown timeout reached", act.policy.close_spread, ctx);
        });
        self.timers.extend([progress, force]);
    }

    fn force_close(&mut self, why: &'static str, spread: Duration, ctx: &mut Context<Self>) {
        self.phase = Phase::Closing;
        self.cancel_timers(ctx);
        let pid = std::process::id();
        self.hub
            .send(ForceClose { spread })
            .into_actor(self)
            .map(move |closing, act, ctx| {
                let closing = closing.unwrap_or(0);
                log::info!(
                    "{why}: closing remaining clients with 1001 pid={pid} closed={closing} \
                     spread_s={}",
                    spread.as_secs()
                );
                if closing == 0 {
                    act.finish("no clients left", ctx);
                }
            })
            .wait(ctx);
        let closes_by = Instant::now() + spread;
        let progress = ctx.run_interval(self.policy.progress_interval, move |act, ctx| {
            act.hub
                .send(Count)
                .into_actor(act)
                .map(move |left, _, _| {
                    log::info!(
                        "closing pid={pid} connections={} seconds_left={}",
                        left.unwrap_or(0),
                        seconds_left(closes_by)
                    );
                })
                .spawn(ctx);
        });
        let grace = ctx.run_later(spread + CLOSE_GRACE, |act, ctx| {
            act.finish("close grace over", ctx)
        });
        self.timers.extend([progress, grace]);
    }

    fn finish(&mut self, why: &'static str, ctx: &mut Context<Self>) {
        if self.phase == Phase::Done {
            return;
        }
        self.phase = Phase::Done;
        self.cancel_timers(ctx);
        log::info!(
            "drain finished pid={} reason={why:?}; exiting",
            std::process::id()
        );
        let stopping: Vec<_> = self.stop_at_exit.drain(..).collect();
        for actor in &stopping {
            actor.do_send(Stop);
        }
        let server = self.server.clone();
        actix::spawn(async move {
            // The bridge publishes its last events and removes its presence
            // record as it stops; give it EXIT_GRACE to do so.
            let deadline = Instant::now() + EXIT_GRACE;
            while stopping.iter().any(Recipient::connected) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            server.stop(true).await;
        });
    }

    fn cancel_timers(&mut self, ctx: &mut Context<Self>) {
        for timer in self.timers.drain(..) {
            ctx.cancel_future(timer);
        }
    }
}

impl Actor for ShutdownCoordinator {
    type Context = Context<Self>;
}

impl Handler<BeginShutdown> for ShutdownCoordinator {
    type Result = ();

    fn handle(&mut self, msg: BeginShutdown, ctx: &mut Self::Context) {
        match self.phase {
            Phase::Serving => self.begin_drain(msg.cause, ctx),
            // Waiting for clients, or closing them over the spread: a
            // second signal closes whoever is left at once.
            Phase::Draining | Phase::Closing => {
                let what = match self.phase {
                    Phase::Draining => "skipping the wait",
                    _ => "closing the rest at once",
                };
                log::info!("second {} pid={}: {what}", msg.cause, std::process::id());
                self.force_close("second signal", Duration::ZERO, ctx);
            }
            Phase::Done => {}
        }
    }
}

impl Handler<HubEmpty> for ShutdownCoordinator {
    type Result = ();

    fn handle(&mut self, _: HubEmpty, ctx: &mut Self::Context) {
        self.finish("all clients left", ctx);
    }
}
