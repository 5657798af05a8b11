#!/usr/bin/env bash
# `kubectl imageauto set` with 100 assignments on a generated tree of 11,000
# YAML files (about 55 MB, 6,000 with markers), against
# its peers over the same tree, same run:
#   - no-op: every marked value already current (the usual CI run), against
#     `grep -rl '"$imagepolicy"'`; aim: at most 1.5x grep;
#   - rewrite: every one of the 10,500 marked values changes, 6,000 files are
#     replaced (temporary file + rename each), against
#     `grep -rlZ '"$imagepolicy"' | xargs -0 sed -i` making the same edit
#     (no read-back, no check); aim: at most 0.8x sed.
# Also the peak memory (RSS, median of 3) of each, next to its peer's.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${BENCH_DIR:-target/bench}
tree="$out/tree"
mkdir -p "$out"
for t in hyperfine /usr/bin/time; do
  command -v "$t" >/dev/null || { echo "$t is missing: make deps" >&2; exit 1; }
done
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
sed_edit="grep -rlZ '\"\$imagepolicy\"' $tree | xargs -0 sed -i -E 's/:1[.]0[.]0( # [{]\"[$]imagepolicy\")/:1.1.0\\1/; s/(tag: )1[.]0[.]0( # [{]\"[$]imagepolicy\")/\\11.1.0\\2/'"
hyperfine --warmup 1 --runs 6 --export-json "$out/set-rewrite.json" \
  --prepare "$bin set ${same[*]} $tree" \
  -n set-rewrite "$bin set ${new[*]} $tree" \
  -n sed "$sed_edit" >/dev/null
# The peer made the same edit: the trees after both are the same bytes.
digest() { find "$tree" -type f -print0 | sort -z | xargs -0 cat | sha256sum; }
"$bin" set "${same[@]}" "$tree" >/dev/null 2>&1
bash -c "$sed_edit"
by_sed=$(digest)
"$bin" set "${same[@]}" "$tree" >/dev/null 2>&1
"$bin" set "${new[@]}" "$tree" >/dev/null 2>&1
[ "$(digest)" = "$by_sed" ] || { echo "sed did not make the same edit as set" >&2; exit 1; }
"$bin" set "${same[@]}" "$tree" >/dev/null 2>&1
# Peak RSS in KiB, the median of 3 runs of "$@" (each after $prepare).
peak() {
  for _ in 1 2 3; do
    bash -c "$prepare" >/dev/null 2>&1
    /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -1
  done | sort -n | sed -n 2p
}
prepare=true
peak_noop=$(peak "$bin" set "${same[@]}" "$tree")
peak_grep=$(peak grep -rl '"$imagepolicy"' "$tree")
prepare="$bin set ${same[*]} $tree"
peak_rewrite=$(peak "$bin" set "${new[@]}" "$tree")
peak_sed=$(peak bash -c "$sed_edit")
"$bin" set "${same[@]}" "$tree" >/dev/null 2>&1
python3 - "$out/set-noop.json" "$out/set-rewrite.json" "$(du -sm --apparent-size "$tree" | cut -f1)" \
  "$peak_noop" "$peak_grep" "$peak_rewrite" "$peak_sed" <<'PY'
import json, sys
r = {x["command"]: x["mean"] for f in sys.argv[1:3] for x in json.load(open(f))["results"]}
g = r["grep"]
print(f"tree: 11,000 files, {sys.argv[3]} MB, 6,000 with markers; grep -rl: {g*1000:.0f} ms")
print(f"set, 100 assignments, nothing to change: {r['set-noop']*1000:.0f} ms = {r['set-noop']/g:.2f}x grep (aim <= 1.5x)")
sed = r["sed"]
print(f"grep -rlZ | xargs sed -i, the same 10,500 edits: {sed*1000:.0f} ms")
print(f"set, 100 assignments, 10,500 values in 6,000 files rewritten: {r['set-rewrite']*1000:.0f} ms = {r['set-rewrite']/sed:.2f}x sed (aim <= 0.8x)")
noop, grep, rewrite, sed_peak = (int(v) / 1024 for v in sys.argv[4:8])
print(f"peak memory: set no-op {noop:.1f} MiB (grep -rl {grep:.1f} MiB); set rewrite {rewrite:.1f} MiB (the largest of the sed processes {sed_peak:.1f} MiB)")
PY
