#!/usr/bin/env bash
# `kubectl imageauto set` with 100 assignments on a generated tree of 11,000
# YAML files (about 55 MB, 6,000 with markers), against
# `grep -rl '"$imagepolicy"'` over the same tree, same run. Aim: at most 2x
# grep's wall time.
#   - no-op: every marked value already current (the usual CI run);
#   - rewrite: every one of the 10,500 marked values changes, 6,000 files are
#     replaced (temporary file + rename each).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${BENCH_DIR:-target/bench}
tree="$out/tree"
mkdir -p "$out"
command -v hyperfine >/dev/null || { echo "hyperfine is missing: make deps" >&2; exit 1; }
cargo build --quiet --release -p kubectl-imageauto
bin=target/release/kubectl-imageauto
[ -d "$tree" ] || python3 bench/gen-tree.py "$tree"
same=() new=()
for i in $(seq -f '%03g' 0 99); do
  same+=("apps:svc-$i=registry.example.com/bench/svc-$i:1.0.0")
  new+=("apps:svc-$i=registry.example.com/bench/svc-$i:1.1.0")
done
"$bin" set "${same[@]}" "$tree" >/dev/null 2>&1
hyperfine -N --warmup 3 --runs 20 --export-json "$out/set-noop.json" \
  -n grep "grep -rl \"\\\"\$imagepolicy\\\"\" $tree" \
  -n set-noop "$bin set ${same[*]} $tree" >/dev/null
hyperfine -N --warmup 1 --runs 6 --export-json "$out/set-rewrite.json" \
  --prepare "$bin set ${same[*]} $tree" \
  -n set-rewrite "$bin set ${new[*]} $tree" >/dev/null
"$bin" set "${same[@]}" "$tree" >/dev/null 2>&1
python3 - "$out/set-noop.json" "$out/set-rewrite.json" "$(du -sm --apparent-size "$tree" | cut -f1)" <<'PY'
import json, sys
r = {x["command"]: x["mean"] for f in sys.argv[1:3] for x in json.load(open(f))["results"]}
g = r["grep"]
print(f"tree: 11,000 files, {sys.argv[3]} MB, 6,000 with markers; grep -rl: {g*1000:.0f} ms")
print(f"set, 100 assignments, nothing to change: {r['set-noop']*1000:.0f} ms = {r['set-noop']/g:.2f}x grep (aim <= 2x)")
print(f"set, 100 assignments, 10,500 values in 6,000 files rewritten: {r['set-rewrite']*1000:.0f} ms = {r['set-rewrite']/g:.2f}x grep")
PY
