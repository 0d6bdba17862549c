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

# Benchmarks (see BENCHMARKS.md): release build, chatd pinned to CPU 0 and the
# load tool to CPU 1, the standard set, a table. `just bench --cross` adds the
# Redis relay figure.
bench *args:
    cargo build --release --bins
    taskset -c 1 cargo run --release --quiet --bin chatd-bench -- suite --server-cpu 0 {{args}}
