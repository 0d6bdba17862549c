//! Container tests: the compose stack of `docker/compose.yml`, built and run
//! for real on this machine's Docker engine, driven by real WebSocket and HTTP
//! clients through the ports it publishes on loopback.
//!
//! Each test copies the checkout as `git` sees it into a folder of its own (a
//! fresh checkout, without `target/` or `.env`), puts the chatd binary this
//! `cargo test` built where the Dockerfile's `prebuilt` stage takes it, and
//! runs `docker compose` there under a compose project name of its own, with
//! the local images of `docker/images.sh`. A guard takes the project down
//! (`down -v --remove-orphans`: containers, networks, volumes) and removes its
//! chatd image, whether the test passed, failed or ran out of time.
//!
//! The tests run one at a time (they share two cores with the engine), each
//! within a time limit. Without a Docker engine and Compose v2 they print a
//! loud `SKIPPED` line, except under `CI=true`, where they fail.

mod client;
mod compose_file;
mod drain;
mod network_fault;
mod quick_start;
mod replicas;
mod rolling_restart;
mod stack;
