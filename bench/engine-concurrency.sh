#!/usr/bin/env bash
# 20 ImageUpdateAutomations on one Git repository (git daemon on 127.0.0.1),
# reconciled at once through one engine, as the controller does: each its own
# folder (50 marked manifests) and push branch. Reports the total time and
# the peak RSS of the process, from a cold cache and from a warm one.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${BENCH_DIR:-target/bench}/engine
rm -rf "$out"; mkdir -p "$out/repos"
n=${AUTOMATIONS:-20}
cargo build --quiet --release -p automation --example concurrent_automations
cargo build --quiet -p imageauto-tests --bin testkit-servers
ex=target/release/examples/concurrent_automations
work="$out/work"; mkdir -p "$work"
git -C "$work" init -q -b main
for i in $(seq 0 $((n-1))); do
  mkdir -p "$work/apps/app-$i"
  for f in $(seq 0 49); do
    printf 'apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app-%s-%s\nspec:\n  template:\n    spec:\n      containers:\n        - name: app\n          image: registry.example.com/app-%s:1.0.0 # {"$imagepolicy": "apps:app-%s"}\n' \
      "$i" "$f" "$i" "$i" > "$work/apps/app-$i/deploy-$f.yaml"
  done
done
git -C "$work" add . && git -C "$work" -c user.name=b -c user.email=b@x commit -qm seed
git clone -q --bare "$work" "$out/repos/fleet.git"
# The test suite's git daemon (testkit-servers), stopped when this script ends.
coproc DAEMON { exec target/debug/testkit-servers git-daemon "$out/repos"; }
read -r port <&"${DAEMON[0]}"
url="git://127.0.0.1:$port/fleet.git"
run() {
  /usr/bin/time -f '%M' -o "$out/rss" "$ex" "$url" "$out/cache" "$n"
  echo "  peak RSS $(( $(cat "$out/rss") / 1024 )) MiB"
}
echo "cold cache (first fetch of the repository):"
run
# Undo the pushes, so that the warm run has the same work to do.
for i in $(seq 0 $((n-1))); do git -C "$out/repos/fleet.git" branch -qD "auto-$i"; done
echo "warm cache:"
run
