#!/usr/bin/env bash
# Bring up the batch example: installs the wasm target if needed, builds
# berth, then `berth up examples/batch` builds the tool guest into an image,
# applies batch.yaml (an Indexed Job, a CronJob and the claim it writes to)
# and runs until Ctrl-C (which removes it all again).
set -euo pipefail
cd "$(dirname "$0")/../.."

rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
cargo build --release -p berth -p berth-linux
# A data dir of its own, so the example never meets the user's other pods.
export BERTH_HOME="${BERTH_HOME:-${TMPDIR:-/tmp}/berth-batch-example}"
exec target/release/berth up examples/batch --ingress "${INGRESS:-127.0.0.1:8080}" \
    --ingress-tls "${INGRESS_TLS:-127.0.0.1:8443}" "$@"
