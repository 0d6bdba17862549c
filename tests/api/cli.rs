//! The command line: `chatd`, `chatd config`, `chatd healthcheck`,
//! `--help`, `--version`, and what an unknown word gets.

use std::process::{Output, Stdio};

use crate::server_process::chatd_command;

fn chatd(args: &[&str]) -> Output {
    chatd_command(&[])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("chatd runs")
}

#[test]
fn help_lists_the_commands_and_where_the_settings_are_documented() {
    for flag in ["--help", "-h"] {
        let output = chatd(&[flag]);
        let help = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(0), "{flag}: {help}");
        for word in ["serve", "config", "healthcheck", "README", "--version"] {
            assert!(
                help.contains(word),
                "{flag} does not mention {word}:\n{help}"
            );
        }
    }
}

#[test]
fn version_prints_the_package_version() {
    let output = chatd(&["--version"]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("chatd {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn an_unknown_command_or_flag_exits_2_with_the_usage() {
    let cases = [
        ("an unknown command", &["serv"][..]),
        ("an unknown flag", &["--verbose"][..]),
        (
            "a flag of another command",
            &["healthcheck", "--markdown"][..],
        ),
    ];
    for (description, args) in cases {
        let output = chatd(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{description}: {stderr}");
        assert!(stderr.contains("Usage: chatd"), "{description}: {stderr}");
    }
}

#[test]
fn healthcheck_is_unhealthy_with_exit_1_when_nothing_listens() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let output = chatd_command(&[("API_PORT", &port.to_string())])
        .arg("healthcheck")
        .stdout(Stdio::piped())
        .output()
        .expect("chatd runs");
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("unhealthy: "));
}
