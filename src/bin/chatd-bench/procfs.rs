//! What the kernel says about the server process: its resident memory and the
//! CPU time it has used. Both come from /proc, so they measure chatd itself,
//! however fast or slow the load tool is.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Resident memory of `pid` in bytes (`VmRSS` in /proc/<pid>/status).
///
/// # Errors
/// The process is gone or the file has no `VmRSS` line.
pub fn rss_bytes(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(|err| format!("{path}: {err}"))?;
    parse_rss(&status).ok_or_else(|| format!("{path}: no VmRSS line"))
}

fn parse_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// User plus system CPU time `pid` has used, in seconds.
///
/// # Errors
/// The process is gone or /proc/<pid>/stat cannot be read.
pub fn cpu_seconds(pid: u32) -> Result<f64, String> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).map_err(|err| format!("{path}: {err}"))?;
    let ticks = parse_cpu_ticks(&stat).ok_or_else(|| format!("{path}: unexpected format"))?;
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Ok(ticks as f64 / per_second.max(1) as f64)
}

/// utime + stime, fields 14 and 15 of /proc/<pid>/stat. The command name
/// (field 2) may hold spaces, so counting starts after its closing paren.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The server's pid from its `GET /status`.
///
/// # Errors
/// The server does not answer, or its answer has no `pid`.
pub fn server_pid(addr: SocketAddr) -> Result<u32, String> {
    let body = http_get(addr, "/status")?;
    let status: serde_json::Value =
        serde_json::from_str(&body).map_err(|err| format!("GET /status is not JSON: {err}"))?;
    status["pid"]
        .as_u64()
        .and_then(|pid| u32::try_from(pid).ok())
        .ok_or_else(|| format!("GET /status has no pid: {body}"))
}

/// A plain HTTP/1.1 GET, for the few control requests the tool makes.
///
/// # Errors
/// Connecting, writing or reading fails, or the answer is not 200.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<String, String> {
    let timeout = Duration::from_secs(5);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|err| format!("cannot connect to {addr}: {err}"))?;
    let _ = stream.set_read_timeout(Some(timeout));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|err| format!("GET {path}: {err}"))?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|err| format!("GET {path}: {err}"))?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("GET {path}: no HTTP answer"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("GET {path}: {}", head.lines().next().unwrap_or("")));
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_and_cpu_are_read_from_proc_formats() {
        let status = "Name:\tchatd\nVmPeak:\t 9000 kB\nVmRSS:\t    2048 kB\nThreads:\t3\n";
        assert_eq!(parse_rss(status), Some(2048 * 1024));
        assert_eq!(parse_rss("Name: x\n"), None);
        let stat = "4121 (chat d) S 1 4121 4121 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
    }

    #[test]
    fn this_process_can_be_measured() {
        let pid = std::process::id();
        assert!(rss_bytes(pid).unwrap() > 0);
        assert!(cpu_seconds(pid).unwrap() >= 0.0);
    }
}
