#!/usr/bin/env bash
# `kubectl imageauto tags` against `skopeo list-tags` on a repository of
# 20,000 tags in Debian's docker-registry on 127.0.0.1, same run. Aim: no
# slower in wall time, at most half skopeo's peak memory.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${BENCH_DIR:-target/bench}
mkdir -p "$out"
for t in hyperfine skopeo /usr/bin/time; do
  command -v "$t" >/dev/null || { echo "$t is missing: make deps" >&2; exit 1; }
done
cargo build --quiet --release -p kubectl-imageauto
cargo build --quiet -p imageauto-tests --bin testkit-servers
bin=target/release/kubectl-imageauto
data="$PWD/$out/registry-20k"
# The test suite's registry (testkit-servers), stopped when this script ends.
coproc REGISTRY { exec target/debug/testkit-servers registry "$data"; }
read -r reg <&"${REGISTRY[0]}"
image=$reg/bench/many
have=$("$bin" tags "$image" --insecure 2>/dev/null | wc -l || true)
if [ "$have" -lt 20000 ]; then
  echo "pushing 20,000 tags (once; kept in $data)..." >&2
  python3 bench/push-tags.py "$reg" bench/many 20000
fi
n=$("$bin" tags "$image" --insecure | wc -l)
[ "$n" -eq 20000 ] || { echo "expected 20000 tags, got $n" >&2; exit 1; }
hyperfine -N --warmup 3 --runs 20 --export-json "$out/tags.json" \
  -n imageauto "$bin tags $image --insecure" \
  -n skopeo "skopeo list-tags --tls-verify=false docker://$image" >/dev/null
peak() { # median peak RSS (KB) of 5 runs
  for _ in 1 2 3 4 5; do /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -1; done | sort -n | sed -n 3p
}
ours=$(peak "$bin" tags "$image" --insecure)
theirs=$(peak skopeo list-tags --tls-verify=false "docker://$image")
python3 - "$out/tags.json" "$ours" "$theirs" <<'PY'
import json, sys
r = {x["command"]: x["mean"] for x in json.load(open(sys.argv[1]))["results"]}
a, b = r["imageauto"], r["skopeo"]
m, n = int(sys.argv[2]), int(sys.argv[3])
print(f"tags of a 20,000-tag repository: imageauto {a*1000:.1f} ms, skopeo {b*1000:.1f} ms ({a/b:.2f}x, aim <= 1x); "
      f"peak memory imageauto {m/1024:.1f} MiB, skopeo {n/1024:.1f} MiB ({m/n:.2f}x, aim <= 0.5x)")
PY
