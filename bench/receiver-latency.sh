#!/usr/bin/env bash
# From tag pushed to commit pushed through registry events (Debian's
# docker-registry notifying a Flux Receiver served by `serve`), over 20
# pushes: p50 and p95 (aim: p95 < 2 s), beside the polling baseline; then a
# flood of events at the receiver: what it answers per second (coalescing
# and rate-limiting) and serve's RSS meanwhile.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --release -p kubectl-imageauto --bin kubectl-imageauto --example receiver-latency
target/release/examples/receiver-latency "$PWD/target/release/kubectl-imageauto" "${PUSHES:-20}" "${FLOOD_SECONDS:-10}"
