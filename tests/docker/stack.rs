//! One compose stack per test: a fresh copy of the checkout, its own compose
//! project name, ports and chatd image, and a guard that removes all of it.

use std::collections::BTreeSet;
use std::future::Future;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::WAIT;

/// The tests take turns: each starts several containers on two cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The longest a single docker command may take (a build included).
const COMMAND_LIMIT: Duration = Duration::from_secs(300);

/// Runs `test` on a fresh [`Stack`] named `name`, within `limit`.
///
/// Skips, loudly, when no Docker engine with Compose v2 answers; under
/// `CI=true` that fails instead. The stack is taken down when `test` ends,
/// panics or runs out of time.
pub fn container_test<F, Fut>(name: &str, limit: Duration, test: F)
where
    F: FnOnce(Stack) -> Fut,
    Fut: Future<Output = ()>,
{
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    if let Err(why) = docker_answers() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{name}: {why}; CI must run the container tests (.ci/run installs Compose v2)"
        );
        skipped(name, &why);
        return;
    }
    sweep_leftovers();
    let stack = Stack::fresh_checkout(name);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a test runtime");
    let started = Instant::now();
    runtime.block_on(async {
        if tokio::time::timeout(limit, test(stack)).await.is_err() {
            panic!("{name} did not finish within {limit:?}");
        }
    });
    report(&format!(
        "docker test {name}: {:.1}s",
        started.elapsed().as_secs_f64()
    ));
}

/// `docker compose config` of `docker/compose.yml` with the replicas
/// profile, as JSON; `None` (after a loud line) without Compose v2, which
/// fails the test `name` under `CI=true`.
pub fn compose_config(name: &str) -> Option<Value> {
    if let Err(why) = compose_is_v2() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{name}: {why}; .ci/run installs Compose v2"
        );
        skipped(name, &why);
        return None;
    }
    let mut config = Command::new("docker");
    config
        .args([
            "compose",
            "--profile",
            "replicas",
            "config",
            "--format",
            "json",
        ])
        .current_dir(repository())
        .env("COMPOSE_FILE", "docker/compose.yml")
        .env_remove("COMPOSE_PROFILES");
    let (code, json, errors) = run_split(config, WAIT).expect("docker compose config runs");
    assert_eq!(code, 0, "docker compose config: {errors}");
    Some(serde_json::from_str(&json).expect("docker compose config prints JSON"))
}

/// Says that `name` was skipped, on the terminal itself.
fn skipped(name: &str, why: &str) {
    report(&format!("SKIPPED docker test {name}: {why}"));
}

/// Writes `line` to stderr past the test harness, which captures the
/// `eprintln!` of passing tests: for skips, durations and counts that CI's
/// log should show.
pub fn report(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Takes down, once per test binary, the projects of earlier runs whose
/// process is gone without its guards having run (killed, say): compose
/// projects named `chatd-test-<pid>-…` with no process `<pid>`.
fn sweep_leftovers() {
    static SWEPT: OnceLock<()> = OnceLock::new();
    SWEPT.get_or_init(|| {
        let mut projects = BTreeSet::new();
        for kind in ["container", "network", "volume"] {
            let mut list = Command::new("docker");
            list.args([
                kind,
                "ls",
                "--quiet",
                "--filter",
                "label=com.docker.compose.project",
            ]);
            if kind == "container" {
                list.arg("--all");
            }
            list.args(["--format", "{{.Label \"com.docker.compose.project\"}}"]);
            if let Ok((0, listing)) = run_bounded(list, WAIT) {
                projects.extend(listing.lines().map(str::trim).map(String::from));
            }
        }
        for project in projects {
            let Some(pid) = project
                .strip_prefix("chatd-test-")
                .and_then(|rest| rest.split('-').next())
            else {
                continue;
            };
            if Path::new("/proc").join(pid).exists() {
                continue;
            }
            report(&format!(
                "docker tests: taking down {project}, left by an earlier run"
            ));
            let mut down = Command::new("docker");
            down.args([
                "compose",
                "-p",
                &project,
                "down",
                "--volumes",
                "--remove-orphans",
            ])
            .args(["--timeout", "0"]);
            let _ = run_bounded(down, Duration::from_secs(120));
            remove_images(&project, "");
        }
    });
}

/// Removes `tag` and the images compose built for `project` that lost their
/// tag to a later build (chatd, chatd-a and chatd-b build one tag in turn).
fn remove_images(project: &str, tag: &str) {
    if !tag.is_empty() {
        let mut rmi = Command::new("docker");
        rmi.args(["image", "rm", "--force", tag]);
        let _ = run_bounded(rmi, Duration::from_secs(60));
    }
    let mut prune = Command::new("docker");
    prune
        .args(["image", "prune", "--force", "--filter"])
        .arg(format!("label=com.docker.compose.project={project}"));
    let _ = run_bounded(prune, Duration::from_secs(60));
}

/// `Ok` when `docker info` reaches an engine and `docker compose` is v2.
fn docker_answers() -> Result<(), String> {
    let mut info = Command::new("docker");
    info.args(["info", "--format", "{{.ServerVersion}}"]);
    match run_bounded(info, Duration::from_secs(20)) {
        Ok((0, _)) => {}
        Ok((_, output)) => return Err(format!("no Docker engine answers: {}", output.trim())),
        Err(why) => return Err(format!("no Docker engine answers: {why}")),
    }
    compose_is_v2()
}

/// `Ok` when `docker compose` is Compose v2.
fn compose_is_v2() -> Result<(), String> {
    let mut compose = Command::new("docker");
    compose.args(["compose", "version", "--short"]);
    match run_bounded(compose, Duration::from_secs(20)) {
        Ok((0, version)) if version.trim().trim_start_matches('v').starts_with('2') => Ok(()),
        Ok((_, output)) => Err(format!(
            "`docker compose` is not Compose v2: {}",
            output.trim()
        )),
        Err(why) => Err(format!("`docker compose` does not run: {why}")),
    }
}

/// The variables `docker/images.sh` exports, made once per test binary
/// (quick when the images exist; the chatd binary comes from this build).
fn local_images() -> &'static [(String, String)] {
    static IMAGES: OnceLock<Vec<(String, String)>> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let mut script = Command::new("bash");
        script
            .arg(repository().join("docker/images.sh"))
            .env("SKIP_CARGO", "1");
        let (code, output, progress) = run_split(script, Duration::from_secs(900))
            .unwrap_or_else(|why| panic!("docker/images.sh: {why}"));
        assert_eq!(code, 0, "docker/images.sh failed:\n{output}{progress}");
        output
            .lines()
            .map(|line| {
                let assignment = line
                    .strip_prefix("export ")
                    .unwrap_or_else(|| panic!("docker/images.sh printed {line:?}"));
                let (name, value) = assignment.split_once('=').expect("NAME=value");
                (name.to_string(), value.to_string())
            })
            .collect()
    })
}

fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A compose project of this test's own, in a fresh copy of the checkout.
pub struct Stack {
    /// The compose project name (`-p`), unique to this test and process.
    pub project: String,
    /// The copy of the checkout compose runs in.
    pub dir: PathBuf,
    /// Published as `API_PORT` (the `chatd` service).
    pub api_port: u16,
    /// Published as `PROXY_PORT` (nginx, in the replicas profile).
    pub proxy_port: u16,
    image: String,
    env: Vec<(String, String)>,
}

impl Stack {
    /// Copies the files `git ls-files` names (tracked or new, not ignored),
    /// so no `.env`, no `target/`, and puts this build's chatd, stripped,
    /// at `target/<profile>/chatd` for the Dockerfile's `prebuilt` stage.
    fn fresh_checkout(name: &str) -> Self {
        let project = format!("chatd-test-{}-{name}", std::process::id());
        let dir = std::env::temp_dir().join(&project);
        let _ = std::fs::remove_dir_all(&dir);
        let mut files = Command::new("git");
        files
            .args([
                "ls-files",
                "-z",
                "--cached",
                "--others",
                "--exclude-standard",
            ])
            .current_dir(repository());
        let (code, listing) = run_bounded(files, WAIT).expect("git ls-files runs");
        assert_eq!(code, 0, "git ls-files: {listing}");
        for file in listing.split('\0').filter(|f| !f.is_empty()) {
            let from = repository().join(file);
            if !from.is_file() {
                continue;
            }
            let to = dir.join(file);
            std::fs::create_dir_all(to.parent().unwrap()).expect("a folder in the copy");
            std::fs::copy(&from, &to).unwrap_or_else(|err| panic!("copy {file}: {err}"));
        }

        let built = Path::new(env!("CARGO_BIN_EXE_chatd"));
        let profile = built
            .parent()
            .and_then(Path::file_name)
            .expect("target/<profile>/chatd");
        let binary = Path::new("target").join(profile).join("chatd");
        std::fs::create_dir_all(dir.join(binary.parent().unwrap())).unwrap();
        let mut strip = Command::new("strip");
        strip.arg("-o").arg(dir.join(&binary)).arg(built);
        if !matches!(run_bounded(strip, WAIT), Ok((0, _))) {
            let to = dir.join(&binary);
            std::fs::copy(built, &to).unwrap_or_else(|err| {
                panic!("copy {} to {}: {err}", built.display(), to.display())
            });
        }

        let image = format!("chatd-test/{name}:{}", std::process::id());
        let (api_port, proxy_port) = (free_port(), free_port());
        let mut env: Vec<(String, String)> = local_images().to_vec();
        env.extend([
            ("COMPOSE_PROJECT_NAME".into(), project.clone()),
            ("CHATD_IMAGE".into(), image.clone()),
            ("CHATD_BUILD".into(), "prebuilt".into()),
            ("CHATD_BINARY".into(), binary.to_string_lossy().into_owned()),
            ("API_PORT".into(), api_port.to_string()),
            ("PROXY_PORT".into(), proxy_port.to_string()),
        ]);
        Self {
            project,
            dir,
            api_port,
            proxy_port,
            image,
            env,
        }
    }

    /// From now on every compose command includes the replicas profile.
    pub fn with_replicas(mut self) -> Self {
        self.env
            .push(("COMPOSE_PROFILES".into(), "replicas".into()));
        self
    }

    /// Writes `.env` as the README says (a copy of `.env.example`) plus
    /// `settings`, one `NAME=value` a line.
    pub fn write_env(&self, settings: &str) {
        let example = std::fs::read_to_string(self.dir.join(".env.example")).unwrap();
        std::fs::write(self.dir.join(".env"), format!("{example}\n{settings}\n")).unwrap();
    }

    /// Runs `script` with `sh -c` in the copy, as a user types it (compose
    /// finds its file through `.env`, not through `COMPOSE_FILE` set here):
    /// the exit code and the output.
    pub async fn sh_status(&self, script: &str) -> (i32, String) {
        let mut command = Command::new("sh");
        command.args(["-c", script]);
        self.run(command, false).await
    }

    /// `docker compose ARGS`; fails the test unless it exits 0.
    pub async fn compose(&self, args: &[&str]) -> String {
        let (code, output) = self.compose_status(args).await;
        assert_eq!(code, 0, "docker compose {args:?} failed:\n{output}");
        output
    }

    /// `docker compose ARGS`: the exit code and the output.
    pub async fn compose_status(&self, args: &[&str]) -> (i32, String) {
        let mut command = Command::new("docker");
        command.arg("compose").args(args);
        self.run(command, true).await
    }

    /// `docker ARGS`; fails the test unless it exits 0.
    pub async fn docker(&self, args: &[&str]) -> String {
        let mut command = Command::new("docker");
        command.args(args);
        let (code, output) = self.run(command, true).await;
        assert_eq!(code, 0, "docker {args:?} failed:\n{output}");
        output
    }

    /// `docker compose up -d --wait`: every service started and healthy.
    pub async fn up(&mut self) {
        self.start(None).await;
    }

    /// Starts the stack with `script` as a user types it (see
    /// [`Stack::sh_status`]), or with [`Stack::up`] when `None`; again on other
    /// ports when a published port was taken in the meantime.
    pub async fn start(&mut self, script: Option<&str>) {
        for _ in 0..3 {
            let (code, output) = match script {
                Some(script) => self.sh_status(script).await,
                None => {
                    let args = ["up", "-d", "--wait", "--wait-timeout", "120"];
                    self.compose_status(&args).await
                }
            };
            if code == 0 {
                return;
            }
            assert!(
                output.contains("address already in use"),
                "the stack does not start:\n{output}"
            );
            eprintln!(
                "{}: a published port was taken; trying others",
                self.project
            );
            self.take_down();
            self.api_port = free_port();
            self.proxy_port = free_port();
            for (name, value) in &mut self.env {
                match name.as_str() {
                    "API_PORT" => *value = self.api_port.to_string(),
                    "PROXY_PORT" => *value = self.proxy_port.to_string(),
                    _ => {}
                }
            }
        }
        panic!("{}: no free ports to publish in 3 tries", self.project);
    }

    /// Waits until each of `services` is running and, where it has a
    /// healthcheck, healthy.
    pub async fn wait_healthy(&self, services: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let listing = self.compose(&["ps", "--all", "--format", "json"]).await;
            let states = service_states(&listing);
            let ready = |service: &&str| {
                states.iter().any(|(name, state, health)| {
                    name == service
                        && state == "running"
                        && (health.is_empty() || health == "healthy")
                })
            };
            if services.iter().all(ready) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not all of {services:?} became healthy: {states:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The container id of `service`.
    pub async fn container(&self, service: &str) -> String {
        let id = self.compose(&["ps", "--all", "-q", service]).await;
        let id = id.trim().to_string();
        assert!(!id.is_empty(), "{service} has no container");
        id
    }

    /// `service`'s log so far, without prefixes.
    pub async fn logs(&self, service: &str) -> String {
        self.compose(&["logs", "--no-color", "--no-log-prefix", service])
            .await
    }

    /// Waits until `service`'s log has `count` lines containing `needle`;
    /// returns the last of them.
    pub async fn wait_for_log(&self, service: &str, needle: &str, count: usize) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let log = self.logs(service).await;
            let lines: Vec<&str> = log.lines().filter(|l| l.contains(needle)).collect();
            if lines.len() >= count {
                return lines[count - 1].to_string();
            }
            assert!(
                Instant::now() < deadline,
                "{service}'s log has {} of {count} lines with {needle:?}:\n{log}",
                lines.len()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The id `service` gives itself (`welcome.server`), from its log line
    /// `redis connected … server=ID` number `nth` (1 for the first start).
    pub async fn server_id(&self, service: &str, nth: usize) -> String {
        let line = self.wait_for_log(service, "redis connected", nth).await;
        line.split_whitespace()
            .find_map(|word| word.strip_prefix("server="))
            .unwrap_or_else(|| panic!("no server= in {line}"))
            .to_string()
    }

    /// `docker inspect` of `service`'s container, as JSON.
    pub async fn inspect(&self, service: &str) -> Value {
        let id = self.container(service).await;
        let json = self.docker(&["inspect", &id]).await;
        let all: Value = serde_json::from_str(&json).expect("docker inspect prints JSON");
        all[0].clone()
    }

    /// Runs `command` in the copy with this stack's variables, on a blocking
    /// thread, within [`COMMAND_LIMIT`].
    async fn run(&self, mut command: Command, with_compose_file: bool) -> (i32, String) {
        command.current_dir(&self.dir);
        for leaked in [
            "COMPOSE_FILE",
            "COMPOSE_PROFILES",
            "DOCKER_DEFAULT_PLATFORM",
        ] {
            command.env_remove(leaked);
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        if with_compose_file {
            command.env("COMPOSE_FILE", "docker/compose.yml");
        }
        let shown = format!("{command:?}");
        tokio::task::spawn_blocking(move || run_bounded(command, COMMAND_LIMIT))
            .await
            .expect("the command's thread ends")
            .unwrap_or_else(|why| panic!("{shown}: {why}"))
    }

    /// `down` as the guard runs it, bounded and best-effort.
    fn take_down(&self) {
        let mut down = Command::new("docker");
        down.args(["compose", "--profile", "replicas", "down"])
            .args(["--volumes", "--remove-orphans", "--timeout", "3"])
            .current_dir(&self.dir)
            .env("COMPOSE_FILE", "docker/compose.yml")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        match run_bounded(down, Duration::from_secs(120)) {
            Ok((0, _)) => {}
            Ok((_, output)) => eprintln!("{}: down failed: {output}", self.project),
            Err(why) => eprintln!("{}: down: {why}", self.project),
        }
        remove_images(&self.project, &self.image);
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.take_down();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// (service, state, health) of each container in `docker compose ps
/// --format json`, which prints one object a line (or, in older versions,
/// one array).
fn service_states(listing: &str) -> Vec<(String, String, String)> {
    let mut rows = Vec::new();
    for line in listing.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let Ok(value) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let objects = match value {
            Value::Array(items) => items,
            object => vec![object],
        };
        for row in objects {
            let field = |name: &str| row[name].as_str().unwrap_or_default().to_string();
            rows.push((field("Service"), field("State"), field("Health")));
        }
    }
    rows
}

/// A port that was free a moment ago on every interface (Docker publishes
/// on 0.0.0.0), below Linux's ephemeral range, where the port-0 listeners of
/// other tests on this machine come from.
fn free_port() -> u16 {
    loop {
        let port = fastrand::u16(20_000..32_000);
        if TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
}

/// Runs `command` to its end within `limit`: its exit code and its stdout
/// followed by its stderr. `Err` when it does not start or is killed at
/// `limit`.
fn run_bounded(command: Command, limit: Duration) -> Result<(i32, String), String> {
    let (code, stdout, stderr) = run_split(command, limit)?;
    Ok((code, stdout + &stderr))
}

/// [`run_bounded`], with stdout and stderr apart.
fn run_split(mut command: Command, limit: Duration) -> Result<(i32, String, String), String> {
    command.stdin(Stdio::null()).stdout(Stdio::piped());
    let mut child = command
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| format!("does not start: {err}"))?;
    let pipes: Vec<Box<dyn Read + Send>> = [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .collect();
    let readers: Vec<_> = pipes
        .into_iter()
        .map(|mut pipe| {
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = pipe.read_to_string(&mut text);
                text
            })
        })
        .collect();
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|err| err.to_string())? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("killed after {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut output = readers
        .into_iter()
        .map(|reader| reader.join().unwrap_or_default());
    let stdout = output.next().unwrap_or_default();
    let stderr = output.next().unwrap_or_default();
    Ok((status.code().unwrap_or(-1), stdout, stderr))
}
