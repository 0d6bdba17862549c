# chatd tasks. `just` lists them.

default:
    @just --list

# Run the server (release build) with .env if present.
run:
    cargo run --release

# Run every test.
test:
    cargo test

# Format the code.
fmt:
    cargo fmt --all

# Lint: formatting check and clippy with warnings as errors.
lint:
    cargo fmt --all -- --check
    cargo clippy --all-targets -- -D warnings

# What CI runs (installs redis-server, chromium, debootstrap and Compose v2 when missing).
ci:
    bash .ci/run

# Run only the browser tests (headless chromium + chromedriver).
test-browser:
    cargo test --test browser

# Retake the README screenshots (static/img/*.png) from a scripted conversation.
screenshot:
    SCREENSHOT_DIR=static/img cargo test --test browser screenshot

# --- Docker: the original's make targets (the stack is docker/compose.yml) ---
# Without a container registry, `eval "$(docker/images.sh)"` first (or
# `just docker-images`, which prints the same lines).

compose := "docker compose -f docker/compose.yml"

# Make the local base images from Debian's packages and build chatd; prints the `export` lines to eval.
docker-images:
    @bash docker/images.sh

# Run only the container tests (real images, real containers; needs a Docker engine and Compose v2).
docker-test *args:
    SKIP_CARGO=1 bash docker/images.sh >/dev/null
    cargo test --test docker {{args}}

# Build the chatd image (chatd:local).
build:
    {{compose}} build

# Start Redis and chatd in the background on http://localhost:8000.
up:
    {{compose}} up -d

# Also start two replicas behind nginx on http://localhost:8080.
up-replicas:
    {{compose}} --profile replicas up -d

# Stop and remove the stack; waits for chatd's drain (see README, Docker). `just down -t 5` cuts it short.
down *args:
    {{compose}} --profile replicas down {{args}}

# Restart the running services (each chatd drains first).
restart:
    {{compose}} --profile replicas restart

# Follow the logs (`just logs chatd` for one service).
logs *services:
    {{compose}} --profile replicas logs -f {{services}}

# List the stack's containers.
ps:
    {{compose}} --profile replicas ps

# Remove the stack, its volumes and the chatd image; `target/` stays (`cargo clean` for that).
clean:
    {{compose}} --profile replicas down --volumes --remove-orphans
    -docker image rm chatd:local

# Two processes (ports 8001 and 8002) sharing one Redis; Ctrl-C stops both.
pair redis="redis://127.0.0.1:6379":
    cargo build --release
    API_PORT=8001 REDIS_URL={{redis}} ./target/release/chatd & API_PORT=8002 REDIS_URL={{redis}} ./target/release/chatd; wait

# Benchmarks (see BENCHMARKS.md): release build, chatd pinned to CPU 0 and the
# load tool to CPU 1, the standard set, a table. `just bench --cross` adds the
# Redis relay figure, `just bench --cluster` cross and rooms through one Redis
# and through a local Redis Cluster.
bench *args:
    cargo build --release --bins
    taskset -c 1 cargo run --release --quiet --bin chatd-bench -- suite --server-cpu 0 {{args}}
