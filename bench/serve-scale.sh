#!/usr/bin/env bash
# `kubectl imageauto serve` against a real kube-apiserver with many image
# objects: 200 ImageRepositories x 5,000 tags with 200 ImagePolicies (aims:
# steady RSS < 40 MiB, all resolved within 60 s, idle CPU < 1% of a core with
# 1h intervals), and 1,000 x 2,000 (2 M tags) to show that memory grows with
# repositories, not tags. IDLE_SECONDS sets the idle window (default 300).
set -euo pipefail
cd "$(dirname "$0")/.."
idle=${IDLE_SECONDS:-300}
cargo build --quiet --release -p kubectl-imageauto --bin kubectl-imageauto --example serve-scale
bin=$PWD/target/release/kubectl-imageauto
target/release/examples/serve-scale "$bin" 200 5000 "$idle"
target/release/examples/serve-scale "$bin" 1000 2000 "$idle"
