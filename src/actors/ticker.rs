//! `Ticker`: sends every local client a `notification` on an interval.
//!
//! Each process runs its own ticker and its ticks stay local, so several
//! processes behind one Redis do not multiply the notices. The shutdown
//! coordinator sends [`Stop`] when a drain begins.

use std::time::Duration;

use actix::prelude::*;

use crate::actors::chat_hub::{Audience, ChatHub, Notify, Scope};

/// Stop the actor.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

/// The periodic notification; see the module docs.
pub struct Ticker {
    hub: Addr<ChatHub>,
    every: Duration,
    ticks: u64,
}

impl Ticker {
    pub fn new(hub: Addr<ChatHub>, every: Duration) -> Self {
        Self {
            hub,
            every,
            ticks: 0,
        }
    }
}

impl Actor for Ticker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.every, |act, _| {
            act.ticks += 1;
            act.hub.do_send(Notify {
                audience: Audience::Everyone,
                message: format!("Periodic notification #{}", act.ticks),
                scope: Scope::Local,
            });
        });
    }
}

impl Handler<Stop> for Ticker {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
