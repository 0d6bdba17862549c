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
fn a_cluster_and_a_single_redis_together_stop_start_up_with_one_line_naming_both() {
    let cases: [&[(&str, &str)]; 3] = [
        &[
            ("REDIS_CLUSTER_NODES", "127.0.0.1:7000"),
            ("REDIS_URL", "redis://127.0.0.1:6379"),
        ],
        &[
            ("REDIS_CLUSTER_NODES", "127.0.0.1:7000"),
            ("REDIS_HOST", "127.0.0.1"),
        ],
        &[("REDIS_CLUSTER_NODES", "127.0.0.1")],
    ];
    for env in cases {
        let output = chatd_command(env)
            .stderr(std::process::Stdio::piped())
            .output()
            .expect("chatd runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{env:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{env:?}: one line, got {stderr}");
        for (var, _) in env {
            assert!(lines[0].contains(var), "{env:?}: {}", lines[0]);
        }
    }
}

#[test]
fn api_port_zero_binds_a_free_port_and_logs_it() {
    let mut server = ServerProcess::start(&[]);
    assert_ne!(server.address.port(), 0);
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_for_exit(Duration::from_secs(10)), 0);
}

#[test]
fn chatd_config_shows_each_value_and_whether_it_came_from_env_file_or_environment() {
    let dir = std::env::temp_dir().join(format!("chatd-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(".env"),
        "API_PORT=9100\nHISTORY_SIZE=200\nNOTIFY_TOKEN=s3cret\n",
    )
    .unwrap();

    let output = chatd_command(&[("API_PORT", "9200")])
        .arg("config")
        .current_dir(&dir)
        .stdout(std::process::Stdio::piped())
        .output()
        .expect("chatd runs");
    let _ = std::fs::remove_dir_all(&dir);

    assert_eq!(output.status.code(), Some(0));
    let report = String::from_utf8_lossy(&output.stdout);
    let line = |name: &str| {
        report
            .lines()
            .find(|l| l.starts_with(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} line in:\n{report}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(line("API_PORT"), "API_PORT=9200 # environment");
    assert_eq!(line("HISTORY_SIZE"), "HISTORY_SIZE=200 # .env");
    assert_eq!(line("NOTIFY_TOKEN"), "NOTIFY_TOKEN=*** # .env");
    assert_eq!(line("HISTORY_TTL"), "HISTORY_TTL=86400 # default");
    assert!(!report.contains("s3cret"), "{report}");
}

#[actix_web::test]
async fn log_format_json_writes_one_object_per_line_with_the_facts_as_fields() {
    let mut server = ServerProcess::start(&[("LOG_FORMAT", "json")]);
    let (client, _) = server.connect_ws("ana").await;
    client.leave().await;
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_for_exit(Duration::from_secs(10)), 0);
    server.wait_for_line("drain finished");

    let pid = server.pid();
    for line in &server.log {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: not JSON: {line}"));
        for field in ["time", "level", "target", "message"] {
            assert!(event[field].is_string(), "no {field}: {line}");
        }
        assert_eq!(event["pid"], pid, "{line}");
    }
    let listening = server.wait_for_line("listening on");
    let listening: serde_json::Value = serde_json::from_str(&listening).unwrap();
    assert_eq!(listening["level"], "INFO");
    assert_eq!(listening["workers"], 1, "{listening}");
    assert_eq!(listening["redis"], "off", "{listening}");
}
