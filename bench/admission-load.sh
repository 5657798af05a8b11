#!/usr/bin/env bash
# The admission webhook of the whole `kubectl imageauto serve` under load:
# a real kube-apiserver (the cached one the cluster tests use, with etcd)
# holding 500 ImagePolicies, serve's webhook over TLS at 1,000 reviews/s
# (`hey -z 20s -c 20 -q 50`, keep-alive) of a Deployment CREATE in a deny
# namespace, first alone, then with 1,000 idle and 1,000 slow-header
# clients on the same port from the same address, connecting again 15 s
# (slowloris's pace), then 2 s after each close. Aim: p99 < 5 ms and no
# errors. The same load against a bare axum + rustls server that
# answers at once (the peer) runs before and after, in the same run.
# DURATION sets hey's -z.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v hey >/dev/null || { echo "hey is missing: make deps" >&2; exit 1; }
cargo build --quiet --release -p kubectl-imageauto --bin kubectl-imageauto --example admission-load
cargo build --quiet --release -p webhook --example admission_load
duration=${DURATION:-20s}
out=${BENCH_DIR:-target/bench}/admission
rm -rf "$out"; mkdir -p "$out/ecerts"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ep=$(port)
target/release/examples/admission_load echo "127.0.0.1:$ep" "$out/ecerts" & epid=$!
trap 'kill $epid 2>/dev/null || true' EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$ep) 2>/dev/null && break; sleep 0.1; done
target/release/examples/admission-load "$PWD/target/release/kubectl-imageauto" "$duration" "$out/body.json" "$ep"
