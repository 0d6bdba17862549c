//! What the container tests (`tests/docker/`) cannot show: how `chatd
//! healthcheck`, which the image's HEALTHCHECK runs, answers an unhealthy
//! server (a real run shows it healthy), and the paths the Dockerfile's
//! `source` stage copies (the container tests build the `prebuilt` stage, as
//! no Rust image can be had here).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::WAIT;
use crate::server_process::chatd_command;

/// Runs `chatd healthcheck` against `port`: its exit code and its output.
fn run_healthcheck(port: u16) -> (i32, String) {
    let mut command = chatd_command(&[("API_PORT", &port.to_string())]);
    command.arg("healthcheck");
    run_bounded(command, WAIT)
}

/// Runs `command` to its end, failing the test after `limit`: the exit code
/// and stdout followed by stderr.
fn run_bounded(mut command: Command, limit: Duration) -> (i32, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the command starts");
    let readers = [
        Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ]
    .map(|mut pipe| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("the child can be waited on") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{command:?} did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = readers.map(|reader| reader.join().expect("the reader ends"));
    (status.code().unwrap_or(-1), output.concat())
}

/// A loopback port that nothing listens on (it was free a moment ago).
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().unwrap().port()
}

/// A one-connection server that answers any request with `answer`.
fn fake_server(answer: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let _ = stream.set_read_timeout(Some(WAIT));
            let _ = stream.read(&mut [0u8; 1024]);
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    port
}

#[test]
fn healthcheck_exits_1_when_nothing_listens() {
    let (code, output) = run_healthcheck(closed_port());

    assert_eq!(code, 1, "{output}");
    assert_eq!(output.lines().count(), 1, "one line: {output}");
    assert!(output.starts_with("unhealthy: cannot reach"), "{output}");
}

#[test]
fn healthcheck_exits_1_when_the_answer_is_not_200() {
    let cases = [
        (
            "a server error",
            "HTTP/1.1 500 Internal Server Error\r\n\r\n",
        ),
        ("not HTTP at all", "SSH-2.0-OpenSSH_9.2\r\n"),
        ("a closed connection", ""),
    ];
    for (description, answer) in cases {
        let (code, output) = run_healthcheck(fake_server(answer));

        assert_eq!(code, 1, "{description}: {output}");
        assert!(output.starts_with("unhealthy:"), "{description}: {output}");
    }
}

#[test]
fn an_unknown_command_stops_with_exit_code_2() {
    let mut command = chatd_command(&[]);
    command.arg("serve-please");

    let (code, output) = run_bounded(command, WAIT);

    assert_eq!(code, 2, "{output}");
    assert!(output.contains("serve-please"), "{output}");
}

#[test]
fn every_path_the_dockerfile_copies_from_the_context_exists_and_is_not_dockerignored() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dockerfile = std::fs::read_to_string(root.join("docker/Dockerfile")).unwrap();
    let ignored: Vec<String> = std::fs::read_to_string(root.join(".dockerignore"))
        .unwrap()
        .lines()
        .map(|line| line.trim().trim_end_matches('/').to_string())
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();

    let mut sources = Vec::new();
    for line in dockerfile.lines().map(str::trim) {
        let Some(args) = line.strip_prefix("COPY ") else {
            continue;
        };
        let words: Vec<&str> = args.split_whitespace().collect();
        if words.iter().any(|w| w.starts_with("--from=")) {
            continue;
        }
        let paths: Vec<&str> = words.into_iter().filter(|w| !w.starts_with("--")).collect();
        // `COPY ${CHATD_BINARY} …` (the prebuilt stage) names a build argument.
        sources.extend(
            paths[..paths.len() - 1]
                .iter()
                .filter(|p| !p.starts_with('$'))
                .map(|p| p.to_string()),
        );
    }

    assert!(
        sources.len() >= 4,
        "expected Cargo.toml, Cargo.lock, src, templates, static: {sources:?}"
    );
    for source in &sources {
        assert!(root.join(source).exists(), "COPY {source}: no such path");
        let first = source.trim_end_matches('/').split('/').next().unwrap();
        assert!(
            !ignored.iter().any(|pattern| pattern == first),
            "COPY {source}: excluded by .dockerignore"
        );
    }
}
