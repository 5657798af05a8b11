#!/usr/bin/env bash
# `kubectl imageauto reconcile --local --commit` on the generated tree of
# 11,000 files (6,000 with markers) whose 100 ImageRepositories live in the
# local registry, against, in the same run, listing the same 100 repositories
# one after another with `skopeo list-tags` plus one `git commit -a` of the
# same changes. Aim: no slower than the peers together.
#
# BASELINE=REV also builds the commit REV (in a worktree, its own target
# folder) and times its binary in the same runs: before and after a change.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${BENCH_DIR:-target/bench}
mkdir -p "$out"
for t in hyperfine skopeo git; do
  command -v "$t" >/dev/null || { echo "$t is missing: make deps" >&2; exit 1; }
done
cargo build --quiet --release -p kubectl-imageauto
cargo build --quiet -p imageauto-tests --bin testkit-servers
bin=$PWD/target/release/kubectl-imageauto
base_bin=""
if [ -n "${BASELINE:-}" ]; then
  wt="$PWD/$out/baseline-src"
  rm -rf "$wt"; git worktree prune
  git worktree add -q --detach "$wt" "$BASELINE"
  (cd "$wt" && CARGO_TARGET_DIR="$PWD/../baseline-target" cargo build --quiet --release -p kubectl-imageauto)
  base_bin="$PWD/$out/baseline-target/release/kubectl-imageauto"
  git worktree remove --force "$wt"
fi
data="$PWD/$out/registry-100"
# The test suite's registry (testkit-servers), stopped when this script ends.
coproc REGISTRY { exec target/debug/testkit-servers registry "$data"; }
read -r reg <&"${REGISTRY[0]}"
if [ "$("$bin" tags "$reg/bench/svc-099" --insecure 2>/dev/null | wc -l)" -lt 10 ]; then
  echo "pushing 10 tags to each of 100 repositories (once; kept in $data)..." >&2
  for i in $(seq -f '%03g' 0 99); do
    python3 bench/push-tags.py "$reg" "bench/svc-$i" --tags 1.0.0 1.0.1 1.1.0 1.2.0 1.3.0 1.4.0 1.5.0 1.10.0 2.0.0 2.0.0-rc.1
  done
fi
repos=()
for i in $(seq -f '%03g' 0 99); do repos+=("docker://$reg/bench/svc-$i"); done
list_all="for r in ${repos[*]}; do skopeo list-tags --tls-verify=false \$r >/dev/null; done"
assign=()
for i in $(seq -f '%03g' 0 99); do assign+=("apps:svc-$i=$reg/bench/svc-$i:1.10.0"); done
# Times `reconcile --local --commit` in $tree from $seed, into $out/$1.json
# (results: imageauto, then the baseline binary if there is one). With a
# baseline, the two take turns in rounds (AB, BA, AB, BA) so that the disk's
# writeback, which drifts over a run, weighs on both alike.
measure() {
  local prepare="git -C $tree reset -q --hard $seed && git -C $tree branch -qD flux-image-updates 2>/dev/null; sync"
  local ours=(-n imageauto "cd $tree && $bin reconcile --local --commit >/dev/null 2>&1")
  if [ -z "$base_bin" ]; then
    hyperfine --warmup 1 --runs 12 --export-json "$out/$1.json" --prepare "$prepare" "${ours[@]}" >/dev/null
    return
  fi
  local theirs=(-n baseline "cd $tree && $base_bin reconcile --local --commit >/dev/null 2>&1")
  local r cmds
  for r in 1 2 3 4; do
    if [ $((r % 2)) = 1 ]; then cmds=("${ours[@]}" "${theirs[@]}"); else cmds=("${theirs[@]}" "${ours[@]}"); fi
    hyperfine --warmup 1 --runs 3 --export-json "$out/$1.round$r.json" --prepare "$prepare" "${cmds[@]}" >/dev/null
  done
  python3 - "$out/$1" <<'PY'
import json, statistics, sys
base = sys.argv[1]
merged = {}
for r in range(1, 5):
    for res in json.load(open(f"{base}.round{r}.json"))["results"]:
        m = merged.setdefault(res["command"], {"times": [], "user": 0.0, "system": 0.0})
        # hyperfine gives CPU as a mean per round: weigh it by the round's runs.
        m["times"] += res["times"]
        m["user"] += res["user"] * len(res["times"])
        m["system"] += res["system"] * len(res["times"])
results = []
for name in ("imageauto", "baseline"):
    m = merged[name]
    t = m["times"]
    results.append({"command": name, "times": t, "mean": statistics.mean(t), "stddev": statistics.stdev(t),
                    "min": min(t), "max": max(t), "user": m["user"] / len(t), "system": m["system"] / len(t)})
json.dump({"results": results}, open(f"{base}.json", "w"), indent=1)
PY
  rm -f "$out/$1".round?.json
}
# Two setups: the automation pushes to the branch checked out (the working
# tree follows the commit: 6,000 files rewritten), or to its own branch.
for branch in main flux-image-updates; do
  tree="$PWD/$out/reconcile-tree-$branch"
  rm -rf "$tree"
  python3 bench/gen-tree.py "$tree" --registry "$reg" --push-branch "$branch"
  git -C "$tree" init -q -b main
  git -C "$tree" add .
  git -C "$tree" -c user.name=bench -c user.email=bench@example.com commit -qm seed
  seed=$(git -C "$tree" rev-parse HEAD)
  measure "reconcile-$branch"
  # The run did what it claims: a commit with every marked file changed.
  git -C "$tree" reset -q --hard "$seed"
  git -C "$tree" branch -qD flux-image-updates 2>/dev/null || true
  (cd "$tree" && "$bin" reconcile --local --commit >/dev/null 2>&1)
  changed=$(git -C "$tree" diff --name-only "$seed" "$branch" | wc -l)
  [ "$changed" -eq 6000 ] || { echo "expected 6000 files in the commit, got $changed" >&2; exit 1; }
done
# The usual run: the same tree with its values current but for 10 files.
tree="$PWD/$out/reconcile-tree-few"
rm -rf "$tree"
python3 bench/gen-tree.py "$tree" --registry "$reg" --push-branch flux-image-updates
git -C "$tree" init -q -b main
(cd "$tree" && "$bin" reconcile --local >/dev/null 2>&1)
git -C "$tree" add .
git -C "$tree" -c user.name=bench -c user.email=bench@example.com commit -qm current
python3 bench/gen-tree.py "$out/reconcile-tree-old" --registry "$reg" --push-branch flux-image-updates
for f in $(cd "$tree" && git ls-files | grep -F app- | head -10); do cp "$out/reconcile-tree-old/$f" "$tree/$f"; done
rm -rf "$out/reconcile-tree-old"
git -C "$tree" -c user.name=bench -c user.email=bench@example.com commit -qam "10 files behind"
seed=$(git -C "$tree" rev-parse HEAD)
measure reconcile-few
git -C "$tree" reset -q --hard "$seed"
git -C "$tree" branch -qD flux-image-updates 2>/dev/null || true
(cd "$tree" && "$bin" reconcile --local --commit >/dev/null 2>&1)
changed=$(git -C "$tree" diff --name-only "$seed" flux-image-updates | wc -l)
[ "$changed" -eq 10 ] || { echo "expected 10 files in the commit, got $changed" >&2; exit 1; }
tree="$PWD/$out/reconcile-tree-main"
seed=$(git -C "$tree" rev-list --max-parents=0 HEAD)
hyperfine --warmup 1 --runs 5 --export-json "$out/skopeo-100.json" \
  -n skopeo-100 "$list_all" >/dev/null
hyperfine --warmup 1 --runs 5 --export-json "$out/git-commit.json" \
  --prepare "git -C $tree reset -q --hard $seed && $bin set ${assign[*]} $tree/apps >/dev/null 2>&1; sync" \
  -n git-commit "git -C $tree -c user.name=b -c user.email=b@example.com commit -qam update" >/dev/null
python3 - "$out" <<'PY'
import json, sys
d = sys.argv[1]
mean = lambda f, n=0: json.load(open(f"{d}/{f}.json"))["results"][n]["mean"]
def against_baseline(name):
    runs = json.load(open(f"{d}/{name}.json"))["results"]
    if len(runs) < 2:
        return
    a, b = runs
    cpu = lambda r: r["user"] + r["system"]
    print(f"  against the baseline binary, in turns: {a['mean']:.2f} ± {a['stddev']:.2f} s against "
          f"{b['mean']:.2f} ± {b['stddev']:.2f} s ({100*(a['mean']/b['mean']-1):+.1f}%); "
          f"CPU {cpu(a):.2f} s against {cpu(b):.2f} s ({100*(cpu(a)/cpu(b)-1):+.1f}%)")
sk, gc = mean("skopeo-100"), mean("git-commit")
print(f"peers: skopeo list-tags x100 {sk:.2f} s + git commit -a {gc:.2f} s = {sk+gc:.2f} s")
for b, what in (("flux-image-updates", "to its own branch"), ("main", "to the checked-out branch (6,000 files rewritten in the working tree too)")):
    ours = mean(f"reconcile-{b}")
    print(f"reconcile --local --commit, 11,000 files, 100 repositories, 6,000 files changed, committing {what}: "
          f"{ours:.2f} s ({ours/(sk+gc):.2f}x, aim <= 1x)")
    against_baseline(f"reconcile-{b}")
ours = mean("reconcile-few")
print(f"reconcile --local --commit, same tree with its values current but for 10 files (the usual run): {ours:.2f} s")
against_baseline("reconcile-few")
PY
