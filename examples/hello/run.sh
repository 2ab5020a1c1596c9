#!/usr/bin/env bash
# Serve the hello guest with berth on http://127.0.0.1:8080/.
# Installs the wasm target if needed, builds the guest and berth, then runs
# `berth run` in the foreground (Ctrl-C to stop).
set -euo pipefail
cd "$(dirname "$0")/../.."

rustup target add wasm32-wasip2 >/dev/null
# From inside guests/, so its .cargo/config.toml (target wasm32-wasip2) applies.
(cd guests && cargo build --release -p hello)
cargo build --release -p berth -p berth-linux
exec target/release/berth run guests/target/wasm32-wasip2/release/hello.wasm \
    --listen "${LISTEN:-127.0.0.1:8080}" "$@"
