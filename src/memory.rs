//! Giving the heap that a burst of connections freed back to the system.
//!
//! A handshake allocates far more than the connection it leaves behind:
//! the HTTP dispatcher's buffers, the request, the upgrade's state. glibc
//! keeps what a burst of handshakes frees in its heap, between the long-lived
//! allocations of the connections that stayed, so the resident size stays at
//! the burst's peak. `malloc_trim(0)` hands every free page inside the heap
//! back (glibc 2.8 and later). A small thread of its own, never an actor's,
//! calls it once the number of open connections has stopped changing: once
//! per burst of opens or closes, not on a clock, and never while a burst goes
//! on.

use std::time::Duration;

use crate::state::OpenConnections;

/// How often the thread looks at the count; a burst is over when the count
/// is the same at two looks in a row.
const LOOK_EVERY: Duration = Duration::from_millis(500);

/// A change in open connections smaller than this is not worth a trim.
const BURST: usize = 64;

/// Starts the thread that trims the heap after each burst of connections;
/// it lives as long as the process.
pub fn trim_after_bursts(open: OpenConnections) {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return;
    }
    let started = std::thread::Builder::new()
        .name("chatd-trim".into())
        .spawn(move || {
            let (mut seen, mut trimmed) = (open.get(), open.get());
            loop {
                std::thread::sleep(LOOK_EVERY);
                let now = open.get();
                if now == seen && now.abs_diff(trimmed) >= BURST {
                    trim();
                    trimmed = now;
                }
                seen = now;
            }
        });
    if let Err(err) = started {
        log::warn!("not trimming the heap after connection bursts: {err}");
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim takes no pointers; it only walks glibc's own heap
    // under its locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
