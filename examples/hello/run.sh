#!/usr/bin/env bash
# Serve the hello guest with berth on http://127.0.0.1:8080/.
# Installs the wasm target if needed, builds the guest and berth, then runs
# `berth run` in the foreground (Ctrl-C to stop).
set -euo pipefail
cd "$(dirname "$0")/../.."

rustup target add wasm32-wasip2 >/dev/null
cargo build --release --manifest-path guests/Cargo.toml -p hello
cargo build --release -p berth
exec target/release/berth run guests/target/wasm32-wasip2/release/hello.wasm \
    --listen "${LISTEN:-127.0.0.1:8080}" "$@"
