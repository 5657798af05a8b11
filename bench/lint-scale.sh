#!/usr/bin/env bash
# `kubectl imageauto lint` on one manifest of N Deployments (each with a
# marked image), for N = 8k, 16k, 32k and a 50 MB file; and on one document
# with 20k and 40k markers. Linear work keeps time per document (and per
# marker) flat as N doubles; the 50 MB file must lint in seconds. The peer is
# `grep -c '"$imagepolicy"'` over the same file, same run.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${BENCH_DIR:-target/bench}/lint
mkdir -p "$out"
command -v hyperfine >/dev/null || { echo "hyperfine is missing: make deps" >&2; exit 1; }
cargo build --quiet --release -p kubectl-imageauto
bin=target/release/kubectl-imageauto
python3 - "$out" <<'PY'
import os, sys
out = sys.argv[1]
doc = ("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d{i}\n  namespace: apps\n"
       "spec:\n  template:\n    spec:\n      containers:\n        - name: c\n"
       "          image: ghcr.io/org/app:1.0.{i} # {{\"$imagepolicy\": \"apps:app\"}}\n")
def docs(n):
    return "---\n".join(doc.format(i=i) for i in range(n))
for n in (8000, 16000, 32000):
    open(f"{out}/docs-{n}.yaml", "w").write(docs(n))
n = 0
with open(f"{out}/docs-50mb.yaml", "w") as f:
    while f.tell() < 50 << 20:
        f.write(doc.format(i=n) + "---\n")
        n += 1
for m in (20000, 40000):
    lines = ["items:"] + [f"  - image: ghcr.io/org/app:1.0.{i} # {{\"$imagepolicy\": \"apps:app\"}}" for i in range(m)]
    open(f"{out}/markers-{m}.yaml", "w").write("\n".join(lines) + "\n")
PY
args=()
for f in docs-8000 docs-16000 docs-32000 docs-50mb markers-20000 markers-40000; do
  args+=(-n "lint $f" "$bin lint $out/$f.yaml")
done
hyperfine -N -i --warmup 1 --runs 5 --export-json "$out/lint.json" "${args[@]}" \
  -n "grep docs-50mb" "grep -c \"\\\"\$imagepolicy\\\"\" $out/docs-50mb.yaml" >/dev/null
python3 - "$out/lint.json" <<'PY'
import json, sys
r = {x["command"]: x["mean"] for x in json.load(open(sys.argv[1]))["results"]}
for n in (8000, 16000, 32000):
    t = r[f"lint docs-{n}"]
    print(f"lint, {n} documents: {t*1000:.0f} ms ({t/n*1e6:.1f} us/document)")
t = r["lint docs-50mb"]
print(f"lint, 50 MB manifest: {t:.2f} s (grep -c: {r['grep docs-50mb']*1000:.0f} ms)")
for m in (20000, 40000):
    t = r[f"lint markers-{m}"]
    print(f"lint, one document with {m} markers: {t*1000:.0f} ms ({t/m*1e6:.1f} us/marker)")
PY
