#!/usr/bin/env bash
# Regenerates the two committed schema files this directory holds, from
# Kubernetes' own sources (Kubernetes 1.32: k8s.io/api and
# k8s.io/apimachinery at tag v0.32.13):
#
#   k8s.binpb       a protobuf FileDescriptorSet compiled by protox (a
#                   pure-Rust protobuf compiler from crates.io) from the
#                   generated.proto files listed in PACKAGES below
#   go_fields.tsv   the Go struct-tag facts (JSON name, pointer, omitempty,
#                   inline) the .proto files do not carry, by gofields.py
#
# Usage: regen.sh API_DIR APIMACHINERY_DIR
#   API_DIR           a checkout of https://github.com/kubernetes/api at v0.32.13
#                     (commit 67a30ffc59c51566a502318fe0275fed1af3fdb7)
#   APIMACHINERY_DIR  a checkout of https://github.com/kubernetes/apimachinery at v0.32.13
#                     (commit 59e9003f02d6f0c8fff53719a7a0604ec82ee9a9)
# Needs python3 and the protox CLI: cargo install protox --version 0.10.0 --features bin
#
# To serve another API group, add its package to PACKAGES and rerun.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
api="$(cd "$1" && pwd)"
machinery="$(cd "$2" && pwd)"

# proto package = directory under k8s.io/
PACKAGES=(
  "k8s.io.api.core.v1=api/core/v1"
  "k8s.io.api.apps.v1=api/apps/v1"
  "k8s.io.api.autoscaling.v1=api/autoscaling/v1"
  "k8s.io.api.autoscaling.v2=api/autoscaling/v2"
  "k8s.io.api.authorization.v1=api/authorization/v1"
  "k8s.io.api.events.v1=api/events/v1"
  "k8s.io.api.batch.v1=api/batch/v1"
  "k8s.io.api.networking.v1=api/networking/v1"
  "k8s.io.apimachinery.pkg.apis.meta.v1=apimachinery/pkg/apis/meta/v1"
  "k8s.io.apimachinery.pkg.runtime=apimachinery/pkg/runtime"
  "k8s.io.apimachinery.pkg.runtime.schema=apimachinery/pkg/runtime/schema"
  "k8s.io.apimachinery.pkg.util.intstr=apimachinery/pkg/util/intstr"
  "k8s.io.apimachinery.pkg.api.resource=apimachinery/pkg/api/resource"
)

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/k8s.io"
ln -s "$api" "$tmp/k8s.io/api"
ln -s "$machinery" "$tmp/k8s.io/apimachinery"

protos=()
gofields=()
for p in "${PACKAGES[@]}"; do
  dir="${p#*=}"
  protos+=("k8s.io/$dir/generated.proto")
  gofields+=("${p%%=*}=$tmp/k8s.io/$dir")
done

(cd "$tmp" && protox --include-imports -I . -o "$here/k8s.binpb" "${protos[@]}")
python3 "$here/gofields.py" "$here/go_fields.tsv" "${gofields[@]}"
echo "wrote $here/k8s.binpb and $here/go_fields.tsv"
