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

# What CI runs (installs redis-server and chromium when missing).
ci:
    bash .ci/run

# Two processes (ports 8001 and 8002) sharing one Redis; Ctrl-C stops both.
pair redis="redis://127.0.0.1:6379":
    cargo build --release
    API_PORT=8001 REDIS_URL={{redis}} ./target/release/chatd & API_PORT=8002 REDIS_URL={{redis}} ./target/release/chatd; wait
