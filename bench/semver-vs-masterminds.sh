#!/usr/bin/env bash
# Semver selection over 100,000 mixed tags, whole process: imageauto's
# selection against the Masterminds/semver oracle (Debian's library, Flux's
# parsing and selection loop), same input, same run. Aim: at most 0.3x.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${BENCH_DIR:-target/bench}
mkdir -p "$out"
command -v hyperfine >/dev/null || { echo "hyperfine is missing: make deps" >&2; exit 1; }
cargo build --quiet --release -p imageauto-core --example semver_select
GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE="$PWD/$out/go-cache" \
  go build -o "$out/semver-oracle" tests/oracles/semver/main.go
target/release/examples/semver_select gen 100000 > "$out/semver-100k.in"
ours=$(target/release/examples/semver_select < "$out/semver-100k.in")
theirs=$("$out/semver-oracle" < "$out/semver-100k.in")
if [ "$ours" != "$theirs" ]; then
  echo "the two select different tags: imageauto $ours, Masterminds $theirs" >&2
  exit 1
fi
hyperfine --warmup 3 --runs 30 --export-json "$out/semver.json" \
  -n imageauto "target/release/examples/semver_select < $out/semver-100k.in" \
  -n masterminds "$out/semver-oracle < $out/semver-100k.in" >/dev/null
python3 - "$out/semver.json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
a, b = r["imageauto"]["mean"], r["masterminds"]["mean"]
print(f"semver selection, 100,000 tags, whole process: imageauto {a*1000:.1f} ms, "
      f"Masterminds/semver (Go) {b*1000:.1f} ms, ratio {a/b:.2f}x (aim <= 0.3x)")
PY
