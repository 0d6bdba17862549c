use std::time::Duration;

use crate::server_process::{chatd_command, ServerProcess};

#[test]
fn an_invalid_setting_stops_start_up_with_exit_code_2_and_one_line_naming_it() {
    let cases = [
        ("API_PORT", "abc"),
        ("PERIODIC_NOTIFICATION", "-1"),
        ("SHUTDOWN_TIMEOUT", "later"),
        ("LOG_LEVEL", "shouty"),
        ("MAX_CONNECTIONS", "0"),
    ];
    for (var, value) in cases {
        let output = chatd_command(&[(var, value)])
            .stderr(std::process::Stdio::piped())
            .output()
            .expect("chatd runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{var}={value}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{var}={value}: one line, got {stderr}");
        assert!(
            lines[0].contains(var) && lines[0].contains(value),
            "{}",
            lines[0]
        );
    }
}

#[test]
fn api_port_zero_binds_a_free_port_and_logs_it() {
    let mut server = ServerProcess::start(&[]);
    assert_ne!(server.address.port(), 0);
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_for_exit(Duration::from_secs(10)), 0);
}
