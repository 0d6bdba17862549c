//! Process-wide facts that HTTP handlers read on every request without asking
//! an actor: whether the process is draining, and how many WebSocket
//! connections are open. Both are single atomics, written in one place.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// When the process started and, once it is draining, its force-close deadline.
#[derive(Debug)]
pub struct Lifecycle {
    started: Instant,
    drain_deadline: OnceLock<Instant>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self::new()
    }
}

impl Lifecycle {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            drain_deadline: OnceLock::new(),
        }
    }

    /// Marks the process draining; `false` if it already was.
    pub fn begin_drain(&self, deadline: Instant) -> bool {
        self.drain_deadline.set(deadline).is_ok()
    }

    /// The force-close deadline, once draining.
    pub fn drain_deadline(&self) -> Option<Instant> {
        self.drain_deadline.get().copied()
    }

    pub fn is_draining(&self) -> bool {
        self.drain_deadline.get().is_some()
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

/// Counts open WebSocket connections against `MAX_CONNECTIONS`.
#[derive(Debug)]
pub struct ConnectionLimiter {
    open: Arc<AtomicUsize>,
    max: usize,
}

/// One open connection; dropping it frees the slot.
#[derive(Debug)]
pub struct ConnectionPermit(Arc<AtomicUsize>);

impl ConnectionLimiter {
    pub fn new(max: usize) -> Self {
        Self {
            open: Arc::new(AtomicUsize::new(0)),
            max,
        }
    }

    /// A slot for one more connection, or `None` at the limit.
    pub fn try_acquire(&self) -> Option<ConnectionPermit> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < self.max).then_some(open + 1)
            })
            .ok()
            .map(|_| ConnectionPermit(self.open.clone()))
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// A handle that reads the number of open connections from anywhere.
    pub fn watch(&self) -> OpenConnections {
        OpenConnections(self.open.clone())
    }
}

/// The number of open connections, read from another thread.
#[derive(Debug, Clone)]
pub struct OpenConnections(Arc<AtomicUsize>);

impl OpenConnections {
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limiter_refuses_past_the_maximum_and_frees_on_drop() {
        let limiter = ConnectionLimiter::new(2);
        let a = limiter.try_acquire().expect("first");
        let _b = limiter.try_acquire().expect("second");
        assert!(limiter.try_acquire().is_none());
        drop(a);
        assert_eq!(limiter.open(), 1);
        assert!(limiter.try_acquire().is_some());
    }

    #[test]
    fn a_drain_begins_once() {
        let lifecycle = Lifecycle::new();
        let deadline = Instant::now();
        assert!(lifecycle.begin_drain(deadline));
        assert!(!lifecycle.begin_drain(deadline + Duration::from_secs(1)));
        assert_eq!(lifecycle.drain_deadline(), Some(deadline));
    }
}
