//! How results are printed: aligned rows for people, one JSON object per
//! result with `--json` for scripts and tests.

use serde_json::{json, Value};

use crate::fleet::{ConnectReport, Pacing, PhaseReport};
use crate::modes::IdleReport;
use crate::stats::Histogram;

/// Microseconds as milliseconds with one decimal.
pub fn ms(micros: u64) -> String {
    format!("{:.1}", micros as f64 / 1000.0)
}

/// A count with thousands separators: 1234567 → 1,234,567.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub const PHASE_HEADER: &str = "  label   msgs/s clients      sent deliveries/s   p50 ms   p95 ms   p99 ms   max ms  lost  dup  err core-s/M tool-cpu B/copy";

/// `msgs/s` is the rate asked of the senders; `echo` for a closed loop.
pub fn phase_row(label: &str, report: &PhaseReport) -> String {
    let asked = match report.pacing {
        Pacing::Rate(rate) => format!("{rate:.0}"),
        Pacing::Echo => "echo".into(),
    };
    format!(
        "{label:>7} {asked:>8} {:>7} {:>9} {:>12} {}",
        report.members,
        report.sent,
        thousands(report.deliveries_per_s() as u64),
        row_tail(report)
    )
}

/// One `steps` row: what the senders achieved, not what was asked, since in
/// the closed loop the server sets the rate.
pub const STEPS_HEADER: &str = "clients bcasts/s      sent deliveries/s   p50 ms   p95 ms   p99 ms   max ms  lost  dup  err core-s/M tool-cpu B/copy";

pub fn steps_row(report: &PhaseReport) -> String {
    format!(
        "{:>7} {:>8.0} {:>9} {:>12} {}",
        report.members,
        report.broadcasts_per_s(),
        report.sent,
        thousands(report.deliveries_per_s() as u64),
        row_tail(report)
    )
}

/// " in K rooms" when the clients were split into more than one.
pub fn in_rooms(report: &PhaseReport) -> String {
    if report.rooms > 1 {
        format!(" in {} rooms", thousands(report.rooms as u64))
    } else {
        String::new()
    }
}

/// The columns from `p50 ms` on, shared by both row kinds. What only some
/// runs have (copies from other rooms, rooms that lost copies, connections
/// that ended) follows the last column when there is any.
fn row_tail(report: &PhaseReport) -> String {
    let latency = report.all_latency();
    let mut notes = String::new();
    if report.other_room > 0 {
        notes += &format!(" from other rooms: {}", report.other_room);
    }
    if report.rooms > 1 && report.rooms_with_loss > 0 {
        notes += &format!(
            " rooms with losses: {} of {}",
            report.rooms_with_loss, report.rooms
        );
    }
    if !report.ends.is_empty() {
        notes += &format!(" ended: {:?}", report.ends);
    }
    format!(
        "{:>8} {:>8} {:>8} {:>8} {:>5} {:>4} {:>4} {:>8} {:>7.0}% {:>6.0}{notes}",
        ms(latency.percentile(50.0)),
        ms(latency.percentile(95.0)),
        ms(latency.percentile(99.0)),
        ms(latency.max()),
        report.lost,
        report.duplicates,
        report.errors,
        report
            .cpu_per_million()
            .map_or("-".into(), |cpu| format!("{cpu:.2}")),
        report.tool_busy() * 100.0,
        report.bytes_per_delivery(),
    )
}

fn latency_json(latency: &Histogram) -> Value {
    json!({
        "count": latency.count(),
        "p50_ms": latency.percentile(50.0) as f64 / 1000.0,
        "p95_ms": latency.percentile(95.0) as f64 / 1000.0,
        "p99_ms": latency.percentile(99.0) as f64 / 1000.0,
        "max_ms": latency.max() as f64 / 1000.0,
    })
}

pub fn phase_json(mode: &str, report: &PhaseReport) -> Value {
    json!({
        "mode": mode,
        "pacing": match report.pacing {
            Pacing::Rate(_) => "rate",
            Pacing::Echo => "echo",
        },
        "rate": report.pacing.rate(),
        "broadcasts_per_s": report.broadcasts_per_s(),
        "clients": report.members,
        "sent": report.sent,
        "deliveries": report.deliveries,
        "expected": report.deliveries + report.lost,
        "deliveries_per_s": report.deliveries_per_s(),
        "bytes_per_delivery": report.bytes_per_delivery(),
        "window_s": report.window.as_secs_f64(),
        "latency": latency_json(&report.all_latency()),
        "groups": report.latency.iter().map(latency_json).collect::<Vec<_>>(),
        "lost": report.lost,
        "duplicates": report.duplicates,
        "late": report.late,
        "errors": report.errors,
        "other_room": report.other_room,
        "rooms": report.rooms,
        "rooms_with_loss": report.rooms_with_loss,
        "ended": report.ends,
        "server_cpu_s": report.server_cpu_s,
        "core_s_per_million": report.cpu_per_million(),
        "tool_cpu_s": report.tool_cpu_s,
    })
}

pub fn connect_line(report: &ConnectReport) -> String {
    format!(
        "{} handshakes in {:.2} s = {} handshakes/s; failed {}; handshake p50 {} ms p99 {} ms max {} ms{}",
        report.opened,
        report.elapsed.as_secs_f64(),
        thousands(handshakes_per_s(report) as u64),
        report.failures.values().sum::<u64>(),
        ms(report.handshake.percentile(50.0)),
        ms(report.handshake.percentile(99.0)),
        ms(report.handshake.max()),
        if report.failures.is_empty() {
            String::new()
        } else {
            format!(" {:?}", report.failures)
        }
    )
}

pub fn handshakes_per_s(report: &ConnectReport) -> f64 {
    report.opened as f64 / report.elapsed.as_secs_f64().max(1e-9)
}

pub fn connect_json(report: &ConnectReport) -> Value {
    json!({
        "mode": "connect",
        "opened": report.opened,
        "failed": report.failures.values().sum::<u64>(),
        "failures": report.failures,
        "elapsed_s": report.elapsed.as_secs_f64(),
        "handshakes_per_s": handshakes_per_s(report),
        "handshake": latency_json(&report.handshake),
    })
}

pub fn idle_line(report: &IdleReport) -> String {
    format!(
        "{} idle connections (opened in {:.2} s): server RSS {:.1} MiB → {:.1} MiB = {:.0} bytes ({:.1} KB) per connection",
        report.connected,
        report.connect.as_secs_f64(),
        report.rss_before as f64 / 1048576.0,
        report.rss_after as f64 / 1048576.0,
        report.bytes_per_connection(),
        report.bytes_per_connection() / 1000.0,
    )
}

pub fn idle_json(report: &IdleReport) -> Value {
    json!({
        "mode": "idle",
        "connections": report.connected,
        "rss_before": report.rss_before,
        "rss_after": report.rss_after,
        "bytes_per_connection": report.bytes_per_connection(),
    })
}

/// Local against remote latency in a `cross` run: what the Redis hop adds.
pub fn cross_lines(report: &PhaseReport) -> String {
    let [local, remote] = &report.latency[..] else {
        return String::new();
    };
    let added = |p: f64| remote.percentile(p) as i64 - local.percentile(p) as i64;
    format!(
        "local  (sender's process): {} copies, p50 {} ms, p99 {} ms\n\
         remote (through Redis):    {} copies, p50 {} ms, p99 {} ms\n\
         added by the hop: p50 {:.1} ms, p99 {:.1} ms",
        local.count(),
        ms(local.percentile(50.0)),
        ms(local.percentile(99.0)),
        remote.count(),
        ms(remote.percentile(50.0)),
        ms(remote.percentile(99.0)),
        added(50.0) as f64 / 1000.0,
        added(99.0) as f64 / 1000.0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_easily() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(ms(1_260), "1.3");
        assert_eq!(ms(100_000), "100.0");
    }
}
