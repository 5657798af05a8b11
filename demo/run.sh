#!/usr/bin/env bash
# The main job, end to end, on this machine: a registry with tags, a Git
# server with Flux manifests, and `kubectl imageauto reconcile --local --push`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${BIN:-$root/target/release/kubectl-imageauto}
# The reconcile runs inside the checkout: a relative path is made absolute.
case "$bin" in /*) ;; *) bin="$PWD/$bin" ;; esac
work=$(mktemp -d /tmp/imageauto-demo.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "nothing on port $1" >&2; exit 1; }
if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then
  step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
else
  step() { printf '\n== %s\n' "$*"; }
fi

step "A registry on 127.0.0.1 (Debian's docker-registry)"
rport=$(free_port)
cat > "$work/registry.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $work/registry}}
http: {addr: 127.0.0.1:$rport}
YML
docker-registry serve "$work/registry.yml" >/dev/null 2>&1 & pids+=($!)
wait_port "$rport"
reg=127.0.0.1:$rport
echo "registry: $reg"

step "Publishing tags"
python3 "$root/bench/push-tags.py" "$reg" demo/podinfo --tags 1.0.0 1.2.3 1.10.0 2.0.0-rc.1 v1.3.0
now=$(date +%s)
python3 "$root/bench/push-tags.py" "$reg" demo/api --tags latest \
  "branch-dev-$((now - 7200))-3f9a2c1" "branch-dev-$((now - 3600))-8be41d0" "branch-dev-$((now - 60))-c07ad5e" \
  "branch-dev-999999999-0a1b2c3"
echo "demo/podinfo: $("$bin" tags "$reg/demo/podinfo" --insecure | tr '\n' ' ')"
echo "demo/api:     $("$bin" tags "$reg/demo/api" --insecure | tr '\n' ' ')"

step "A Git server (git daemon) with Flux manifests"
gport=$(free_port)
mkdir -p "$work/git" "$work/seed"
git init -q --bare -b main "$work/git/fleet.git"
git -C "$work/git/fleet.git" config receive.advertisePushOptions true
mkdir -p "$work/seed/clusters/demo" "$work/seed/apps"
sed "s/REGISTRY/$reg/g; s/GITPORT/$gport/g" "$root/demo/fleet/flux-system.yaml" > "$work/seed/clusters/demo/flux-system.yaml"
sed "s/REGISTRY/$reg/g" "$root/demo/fleet/podinfo.yaml" > "$work/seed/apps/podinfo.yaml"
sed "s/REGISTRY/$reg/g" "$root/demo/fleet/api.yaml" > "$work/seed/apps/api.yaml"
git -C "$work/seed" init -q -b main
git -C "$work/seed" add .
git -C "$work/seed" -c user.name=demo -c user.email=demo@example.com commit -qm "Fleet with image automation"
git -C "$work/seed" push -q "$work/git/fleet.git" main
git daemon --reuseaddr --export-all --enable=receive-pack --base-path="$work/git" \
  --listen=127.0.0.1 --port="$gport" "$work/git" >/dev/null 2>&1 & pids+=($!)
wait_port "$gport"
git clone -q "git://127.0.0.1:$gport/fleet.git" "$work/checkout"
echo "cloned git://127.0.0.1:$gport/fleet.git"
sed -n '/kind: ImagePolicy/,/---/p' "$work/checkout/clusters/demo/flux-system.yaml" | head -30

step "kubectl imageauto reconcile --local --push"
(cd "$work/checkout" && "$bin" reconcile --local --push)

step "The pushed commit: git log -p -1 flux-image-updates"
git --no-pager --git-dir="$work/git/fleet.git" log -p -1 flux-image-updates

# The demo checks its own result: the semver policy (>=1.0.0 <2.0.0) picks
# 1.10.0, the numerical policy the newest branch-dev timestamp.
pushed() { git --git-dir="$work/git/fleet.git" show "flux-image-updates:$1"; }
want_podinfo="image: $reg/demo/podinfo:1.10.0 #"
want_api="tag: branch-dev-$((now - 60))-c07ad5e #"
pushed apps/podinfo.yaml | grep -qF "$want_podinfo" || { echo "demo: expected '$want_podinfo' in the pushed apps/podinfo.yaml" >&2; exit 1; }
pushed apps/api.yaml | grep -qF "$want_api" || { echo "demo: expected '$want_api' in the pushed apps/api.yaml" >&2; exit 1; }
echo
echo "demo: flux-image-updates holds podinfo 1.10.0 and api branch-dev-$((now - 60))-c07ad5e"
