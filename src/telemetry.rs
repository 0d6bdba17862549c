//! Log lines: time, level, pid, module, message, one event per line.

use std::io::Write;

/// Starts logging at `level` (LOG_LEVEL); RUST_LOG, when set, wins.
pub fn init(level: &str) {
    let pid = std::process::id();
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format(move |buf, record| {
            writeln!(
                buf,
                "{} {:<5} pid={pid} {}: {}",
                buf.timestamp_millis(),
                record.level(),
                record.target(),
                record.args()
            )
        })
        .try_init();
}
