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

# Run only the browser tests (headless chromium + chromedriver).
test-browser:
    cargo test --test browser

# Retake the README screenshots (static/img/*.png) from a scripted conversation.
screenshot:
    SCREENSHOT_DIR=static/img cargo test --test browser screenshot
