#!/usr/bin/env bash
# Installs what the test suite needs: the wasm target for the guests, and the
# real peers the end-to-end tests drive (skopeo, umoci, docker-registry). Safe to run again.
set -euo pipefail

# Only ask rustup for what is missing: its servers may be out of reach.
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

missing=()
command -v busybox >/dev/null || [ -x /bin/busybox ] || missing+=(busybox-static)
command -v strace >/dev/null || missing+=(strace)
command -v skopeo >/dev/null || missing+=(skopeo)
command -v umoci >/dev/null || missing+=(umoci)
command -v docker-registry >/dev/null || missing+=(docker-registry)
# The ingress's HTTPS tests make certificates and check them as users would.
command -v openssl >/dev/null || missing+=(openssl)
command -v curl >/dev/null || missing+=(curl)
# berth's shim runs under a real containerd (its tests start their own) in
# network namespaces the tests make with ip.
command -v containerd >/dev/null && command -v ctr >/dev/null || missing+=(containerd)
command -v ip >/dev/null || missing+=(iproute2)
# Linux pods' way out of their network is pasta (Debian package passt).
command -v pasta >/dev/null || missing+=(passt)
# Linux pods reach Services through an nftables redirect in their network.
command -v nft >/dev/null || [ -x /usr/sbin/nft ] || missing+=(nftables)
# A real Redis behind a TCP Service, and redis-cli (redis-tools) to ask it.
command -v redis-server >/dev/null && command -v redis-cli >/dev/null || missing+=(redis-server)
# The metrics tests scrape berth with a real Prometheus and check every
# /metrics page with its promtool.
command -v prometheus >/dev/null && command -v promtool >/dev/null || missing+=(prometheus)
# The dashboard's tests drive a real browser: Debian's chromium, headless,
# through its chromedriver (Debian package chromium-driver).
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
# kubectl and its kubectl.1.NN siblings come with the machine image (the
# Debian package kubectl from the Cloud SDK's repository, which this
# machine's package sources do not carry): say so if it is not there.
if ! command -v kubectl >/dev/null; then
    echo "tests need kubectl (the Debian package kubectl, with kubectl.1.27 to kubectl.1.33 beside it)" >&2
    exit 1
fi
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "tests need: ${missing[*]} (Debian packages); run as root or install them" >&2
        exit 1
    fi
    apt-get update
    apt-get install -y "${missing[@]}"
fi

# The official Python Kubernetes client, for the API tests, in a venv of the
# tests' own (target/test-venv), so the system's Python stays untouched.
venv="$(dirname "$0")/../target/test-venv"
if ! "$venv/bin/python" -c "import kubernetes" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "kubernetes>=31,<35"
fi
# The official Kubernetes schema, to validate the examples' manifests.
if ! [ -x "$venv/bin/kubernetes-validate" ]; then
    "$venv/bin/pip" install --quiet "kubernetes-validate>=1.31,<2"
fi
# OpenTelemetry's own protobuf types, for the OTLP receiver the tracing
# test runs (tests/otlp_receiver.py).
if ! "$venv/bin/python" -c "import opentelemetry.proto.collector.trace.v1.trace_service_pb2" 2>/dev/null; then
    "$venv/bin/pip" install --quiet "opentelemetry-proto>=1.27,<2"
fi
