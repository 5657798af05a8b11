#!/usr/bin/env bash
# The admission webhook under load: 1,000 requests/s for 30 s (`hey -z 30s
# -c 20 -q 50`, keep-alive, HTTPS) of a Deployment CREATE in a deny
# namespace against the workload rule, with 500 ImagePolicies and 2,000
# indexed markers in its view; the same load against a bare axum + rustls
# server that answers at once, same run. Aim: p99 < 5 ms, no errors, and at
# most 1.5x the bare server's p99. Also the webhook process's RSS under load.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v hey >/dev/null || { echo "hey is missing: make deps" >&2; exit 1; }
cargo build --quiet --release -p webhook --example admission_load
ex=target/release/examples/admission_load
out=${BENCH_DIR:-target/bench}/admission
rm -rf "$out"; mkdir -p "$out/wcerts" "$out/ecerts"
"$ex" body "$out/body.json"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wp=$(port); ep=$(port)
"$ex" webhook "127.0.0.1:$wp" "$out/wcerts" & wpid=$!
"$ex" echo "127.0.0.1:$ep" "$out/ecerts" & epid=$!
trap 'kill $wpid $epid 2>/dev/null || true' EXIT
for p in $wp $ep; do for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.1; done; done
duration=${DURATION:-30s}
peak=0
echo 0 > "$out/peak"
( while kill -0 $wpid 2>/dev/null; do r=$(awk '/VmRSS/{print $2}' /proc/$wpid/status 2>/dev/null); [ -n "$r" ] && [ "$r" -gt "$peak" ] && peak=$r && echo $peak > "$out/peak"; sleep 0.2; done ) &
hey -z "$duration" -c 20 -q 50 -host localhost -m POST -T application/json -D "$out/body.json" "https://127.0.0.1:$wp/validate/workloads" > "$out/webhook.txt"
hey -z "$duration" -c 20 -q 50 -host localhost -m POST -T application/json -D "$out/body.json" "https://127.0.0.1:$ep/validate/workloads" > "$out/echo.txt"
python3 - "$out" <<'PY'
import re, sys
d = sys.argv[1]
def read(name):
    t = open(f"{d}/{name}.txt").read()
    failed = sum(int(n) for n in re.findall(r"^\s+\[(\d+)\]\s+\S", t.split("Error distribution:")[1], re.M)) if "Error distribution:" in t else 0
    m99 = re.search(r"99% in ([0-9.]+) secs", t)
    if m99 is None:
        sys.exit(f"{name}: no request succeeded ({failed} errors); see {d}/{name}.txt")
    p99 = float(m99.group(1)) * 1000
    p50 = float(re.search(r"50% in ([0-9.]+) secs", t).group(1)) * 1000
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", t).group(1))
    codes = dict(re.findall(r"\[(\d+)\]\s+(\d+) responses", t))
    errors = sum(int(v) for k, v in codes.items() if k != "200") + failed
    return p50, p99, rps, codes, errors
w = read("webhook"); e = read("echo")
peak = int(open(f"{d}/peak").read().strip()) / 1024
print(f"admission webhook, workload rule, 500 policies + 2,000 markers: {w[2]:.0f} req/s, p50 {w[0]:.2f} ms, p99 {w[1]:.2f} ms, status {w[3]}, errors {w[4]}; RSS under load {peak:.1f} MiB")
print(f"bare axum + rustls echo, same load: {e[2]:.0f} req/s, p50 {e[0]:.2f} ms, p99 {e[1]:.2f} ms")
print(f"p99 ratio webhook / echo: {w[1]/e[1]:.2f}x (aim <= 1.5x; p99 aim < 5 ms)")
PY
