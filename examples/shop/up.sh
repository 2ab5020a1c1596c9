#!/usr/bin/env bash
# Bring up the shop example: installs the wasm target if needed, builds
# berth, then `berth up examples/shop` builds the three guests into images,
# applies shop.yaml and serves until Ctrl-C (which removes it all again).
# Open http://front.localhost:8080/ or http://shop.localhost:8080/ (INGRESS=ADDR,
# INGRESS_TLS=ADDR to listen elsewhere).
set -euo pipefail
cd "$(dirname "$0")/../.."

rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
cargo build --release -p berth -p berth-linux
# A data dir of its own, so the example never meets the user's other pods.
export BERTH_HOME="${BERTH_HOME:-${TMPDIR:-/tmp}/berth-shop-example}"
exec target/release/berth up examples/shop --ingress "${INGRESS:-127.0.0.1:8080}" \
    --ingress-tls "${INGRESS_TLS:-127.0.0.1:8443}" "$@"
