#!/usr/bin/env bash
# The cluster half, end to end, on this machine: a kube-apiserver (the test
# suite's, built once by `make kube-apiserver`) over etcd, `kubectl imageauto
# install`, `serve` outside the cluster with the installed ServiceAccount's
# permissions, a registry, Git over HTTPS, Flux's objects, a tag pushed and
# reaching Git through a Receiver, and the admission webhook refusing an
# ungoverned Deployment. It stops everything it started, and fails unless
# each step did what it says.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${BIN:-$root/target/release/kubectl-imageauto}
case "$bin" in /*) ;; *) bin="$PWD/$bin" ;; esac
[ -x "$bin" ] || { echo "demo-cluster: $bin is not an executable (make build first)" >&2; exit 1; }
cache=${IMAGEAUTO_CACHE:-$HOME/.cache/imageauto}
apiserver=${IMAGEAUTO_KUBE_APISERVER:-$cache/kube-apiserver-1.20.2/kube-apiserver}
[ -x "$apiserver" ] || { echo "demo-cluster: no kube-apiserver at $apiserver: run make kube-apiserver" >&2; exit 1; }
for tool in etcd docker-registry lighttpd git openssl curl python3 kubectl; do
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] ||
    { echo "demo-cluster: $tool is missing: make demo-cluster installs it" >&2; exit 1; }
done
lighttpd=$(command -v lighttpd || echo /usr/sbin/lighttpd)
backend=$(git --exec-path)/git-http-backend

work=$(mktemp -d /tmp/imageauto-demo-cluster.XXXXXX)
pids=()
cleanup() {
  local rc=$?
  # Newest first: serve before the apiserver, the apiserver before etcd.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[i]}" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  if [ "$rc" != 0 ] && [ -d "$work" ]; then
    echo "demo-cluster: failed; the last lines of each log:" >&2
    for f in "$work"/*.log; do [ -f "$f" ] && { echo "--- $f" >&2; tail -n 15 "$f" >&2; }; done
  fi
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "demo-cluster: nothing on port $1" >&2; exit 1; }
# wait_for SECONDS WHAT COMMAND...: until COMMAND succeeds.
wait_for() {
  local secs=$1 what=$2; shift 2
  for _ in $(seq $((secs * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "demo-cluster: $what did not happen within ${secs}s" >&2; exit 1
}
fail() { echo "demo-cluster: $*" >&2; exit 1; }
if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then
  step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
else
  step() { printf '\n== %s\n' "$*"; }
fi
plugin() { echo "\$ kubectl imageauto $*"; "$bin" "$@"; }
export KUBECONFIG=$work/admin.kubeconfig
export PATH="$(dirname "$bin"):$PATH"

step "A cluster on 127.0.0.1: etcd and kube-apiserver 1.20 (no kubelet: objects are stored and admitted, not run)"
eport=$(free_port); epeer=$(free_port)
etcd --name demo --data-dir "$work/etcd" \
  --listen-client-urls "http://127.0.0.1:$eport" --advertise-client-urls "http://127.0.0.1:$eport" \
  --listen-peer-urls "http://127.0.0.1:$epeer" --initial-advertise-peer-urls "http://127.0.0.1:$epeer" \
  --initial-cluster "demo=http://127.0.0.1:$epeer" --log-level warn >"$work/etcd.log" 2>&1 & pids+=($!)
wait_port "$eport"
token=$(openssl rand -hex 16)
echo "$token,admin,admin,\"system:masters\"" > "$work/tokens.csv"
openssl genrsa -out "$work/sa.key" 2048 2>/dev/null
openssl rsa -in "$work/sa.key" -pubout -out "$work/sa.pub" 2>/dev/null
aport=$(free_port)
"$apiserver" --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$aport" \
  --cert-dir="$work/apiserver-certs" --etcd-servers="http://127.0.0.1:$eport" \
  --token-auth-file="$work/tokens.csv" --authorization-mode=RBAC \
  --service-account-key-file="$work/sa.pub" --service-account-signing-key-file="$work/sa.key" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-cluster-ip-range=10.0.0.0/24 --disable-admission-plugins=ServiceAccount \
  --endpoint-reconciler-type=none --profiling=false >"$work/kube-apiserver.log" 2>&1 & pids+=($!)
server=https://127.0.0.1:$aport
ready() { [ -f "$work/apiserver-certs/apiserver.crt" ] &&
  [ "$(curl -sf --cacert "$work/apiserver-certs/apiserver.crt" -H "Authorization: Bearer $token" "$server/readyz")" = ok ]; }
wait_for 120 "kube-apiserver's readiness" ready
cat > "$KUBECONFIG" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: demo, cluster: {server: "$server", certificate-authority: "$work/apiserver-certs/apiserver.crt"}}]
users: [{name: admin, user: {token: "$token"}}]
contexts: [{name: admin, context: {cluster: demo, user: admin}}]
current-context: admin
EOF
kubectl version 2>/dev/null | grep Server || fail "kubectl does not reach the apiserver"

step "Flux's GitRepository and Receiver CRDs (in a real cluster, Flux's source- and notification-controller bring them)"
kubectl apply --validate=false -f "$root/demo/cluster/flux-kinds.yaml"
kubectl wait --for=condition=Established --timeout=60s \
  crd/gitrepositories.source.toolkit.fluxcd.io crd/receivers.notification.toolkit.fluxcd.io

step "The webhook's certificate, for the serve that runs outside the cluster"
certs=$work/webhook-certs
mkdir -p "$certs"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=demo webhook CA" \
  -keyout "$certs/ca.key" -out "$certs/ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout "$certs/tls.key" -out "$certs/tls.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > "$certs/san.ext"
openssl x509 -req -in "$certs/tls.csr" -CA "$certs/ca.crt" -CAkey "$certs/ca.key" -CAcreateserial \
  -days 1 -extfile "$certs/san.ext" -out "$certs/tls.crt" 2>/dev/null
rm -f "$certs/ca.key" "$certs/tls.csr" "$certs/san.ext" "$certs/ca.srl"
wport=$(free_port)
echo "webhook: https://127.0.0.1:$wport (CA $certs/ca.crt)"

step "kubectl imageauto install"
plugin install --wait=false --webhook-url "https://127.0.0.1:$wport" --ca-file "$certs/ca.crt" \
  --policy-namespace flux-system | tee "$work/install.out"
grep -q "imageauto installed in imageauto-system" "$work/install.out" || fail "install did not finish"
plugin install --wait=false --webhook-url "https://127.0.0.1:$wport" --ca-file "$certs/ca.crt" \
  --policy-namespace flux-system > "$work/install-again.out"
if grep -E '✔ .* applied' "$work/install-again.out"; then fail "a second install changed the objects above"; fi
echo "(a second install: $(grep -c unchanged "$work/install-again.out") objects unchanged)"

step "serve outside the cluster, with the ServiceAccount's permissions (a TokenRequest token)"
satoken=$(kubectl -n imageauto-system create token imageauto --duration=2h)
cat > "$work/serve.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: demo, cluster: {server: "$server", certificate-authority: "$work/apiserver-certs/apiserver.crt"}}]
users: [{name: imageauto, user: {token: "$satoken"}}]
contexts: [{name: imageauto, context: {cluster: demo, user: imageauto, namespace: imageauto-system}}]
current-context: imageauto
EOF
can_i() { kubectl --kubeconfig "$work/serve.kubeconfig" auth can-i "$@" 2>/dev/null || true; }
echo "as system:serviceaccount:imageauto-system:imageauto: patch imagepolicies/status: $(can_i patch imagepolicies.image.toolkit.fluxcd.io --subresource=status -A); delete deployments: $(can_i delete deployments -A)"
[ "$(can_i patch imagepolicies.image.toolkit.fluxcd.io --subresource=status -A)" = yes ] || fail "the ServiceAccount's token does not carry its ClusterRole"
[ "$(can_i delete deployments -A)" = no ] || fail "the ServiceAccount may do more than its ClusterRole says"
rport=$(free_port); hport=$(free_port); mport=$(free_port)
"$bin" serve --kubeconfig "$work/serve.kubeconfig" --storage-path "$work/storage" \
  --webhook-addr "127.0.0.1:$wport" --cert-dir "$certs" --receiver-addr "127.0.0.1:$rport" \
  --metrics-addr "127.0.0.1:$mport" --health-addr "127.0.0.1:$hport" \
  --leader-election-namespace imageauto-system --log-format text >"$work/serve.log" 2>&1 & pids+=($!)
wait_for 60 "serve's readiness" curl -sf "http://127.0.0.1:$hport/readyz"
wait_for 30 "serve leading (its Lease in imageauto-system)" grep -q "leader: starting the controllers" "$work/serve.log"
echo "serve ready: webhook 127.0.0.1:$wport, receiver 127.0.0.1:$rport, health 127.0.0.1:$hport"

step "A registry on 127.0.0.1 (Debian's docker-registry), with tags 1.0.0 and 1.1.0 of demo/podinfo"
regport=$(free_port)
cat > "$work/registry.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $work/registry}}
http: {addr: 127.0.0.1:$regport}
YML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 & pids+=($!)
wait_port "$regport"
reg=127.0.0.1:$regport
python3 "$root/bench/push-tags.py" "$reg" demo/podinfo --tags 1.0.0 1.1.0
echo "demo/podinfo: $("$bin" tags "$reg/demo/podinfo" --insecure | tr '\n' ' ')"

step "Git over HTTPS (git http-backend behind lighttpd) with the fleet's manifests"
gport=$(free_port)
mkdir -p "$work/git" "$work/seed/apps"
git init -q --bare -b main "$work/git/fleet.git"
git -C "$work/git/fleet.git" config http.receivepack true
sed "s/REGISTRY/$reg/g" "$root/demo/fleet/podinfo.yaml" > "$work/seed/apps/podinfo.yaml"
git -C "$work/seed" init -q -b main
git -C "$work/seed" add .
git -C "$work/seed" -c user.name=demo -c user.email=demo@example.com commit -qm "Fleet"
git -C "$work/seed" push -q "$work/git/fleet.git" main
gitcerts=$work/git-certs
mkdir -p "$gitcerts"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=demo git CA" \
  -keyout "$gitcerts/ca.key" -out "$gitcerts/ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout "$gitcerts/tls.key" -out "$gitcerts/tls.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' > "$gitcerts/san.ext"
openssl x509 -req -in "$gitcerts/tls.csr" -CA "$gitcerts/ca.crt" -CAkey "$gitcerts/ca.key" -CAcreateserial \
  -days 1 -extfile "$gitcerts/san.ext" -out "$gitcerts/tls.crt" 2>/dev/null
cat "$gitcerts/tls.crt" "$gitcerts/tls.key" > "$gitcerts/server.pem"
gitpass=$(openssl rand -hex 8)
echo "bot:$gitpass" > "$work/git-users"
cat > "$work/lighttpd.conf" <<CONF
server.port = $gport
server.bind = "127.0.0.1"
server.document-root = "$work/git"
server.errorlog = "$work/lighttpd.log"
server.modules = ("mod_access", "mod_alias", "mod_auth", "mod_authn_file", "mod_cgi", "mod_setenv", "mod_openssl")
ssl.engine = "enable"
ssl.pemfile = "$gitcerts/server.pem"
auth.backend = "plain"
auth.backend.plain.userfile = "$work/git-users"
auth.require = ("/git" => ("method" => "basic", "realm" => "git", "require" => "valid-user"))
alias.url = ("/git" => "$backend")
\$HTTP["url"] =~ "^/git" {
  cgi.assign = ("" => "")
  setenv.add-environment = ("GIT_PROJECT_ROOT" => "$work/git", "GIT_HTTP_EXPORT_ALL" => "1")
}
CONF
"$lighttpd" -D -f "$work/lighttpd.conf" >>"$work/lighttpd.log" 2>&1 & pids+=($!)
wait_port "$gport"
giturl=https://127.0.0.1:$gport/git/fleet.git
GIT_SSL_CAINFO="$gitcerts/ca.crt" git ls-remote "https://bot:$gitpass@127.0.0.1:$gport/git/fleet.git" main >/dev/null ||
  fail "the Git server does not answer at $giturl"
echo "git: $giturl (basic auth, its own CA)"

step "Flux's objects in flux-system: GitRepository, ImageRepository, ImagePolicy, ImageUpdateAutomation, Receiver"
b64() { printf '%s' "$1" | base64 -w0; }
cat > "$work/flux-system.yaml" <<YAML
apiVersion: v1
kind: Secret
metadata: {name: fleet-git, namespace: flux-system}
data: {username: $(b64 bot), password: $(b64 "$gitpass"), ca.crt: $(base64 -w0 "$gitcerts/ca.crt")}
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: fleet, namespace: flux-system}
spec:
  interval: 1m
  url: $giturl
  ref: {branch: main}
  secretRef: {name: fleet-git}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata: {name: podinfo, namespace: flux-system}
spec:
  image: $reg/demo/podinfo
  interval: 1h
  insecure: true
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImagePolicy
metadata: {name: podinfo, namespace: flux-system}
spec:
  imageRepositoryRef: {name: podinfo}
  policy: {semver: {range: '>=1.0.0 <2.0.0'}}
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageUpdateAutomation
metadata: {name: fleet, namespace: flux-system}
spec:
  interval: 1h
  sourceRef: {kind: GitRepository, name: fleet}
  git:
    checkout: {ref: {branch: main}}
    commit:
      author: {name: imageauto, email: imageauto@example.com}
      messageTemplate: 'Automated image update by {{ .AutomationObject }}'
    push: {branch: main}
  update: {path: ./apps, strategy: Setters}
---
apiVersion: v1
kind: Secret
metadata: {name: registry-token, namespace: flux-system}
stringData: {token: $(openssl rand -hex 16)}
---
apiVersion: notification.toolkit.fluxcd.io/v1
kind: Receiver
metadata: {name: registry, namespace: flux-system}
spec:
  type: generic
  secretRef: {name: registry-token}
  resources:
    - {apiVersion: image.toolkit.fluxcd.io/v1, kind: ImageRepository, name: podinfo}
YAML
kubectl get namespace flux-system >/dev/null 2>&1 || kubectl create namespace flux-system
kubectl apply --validate=false -f "$work/flux-system.yaml"
pushed() { git --git-dir="$work/git/fleet.git" show "main:apps/podinfo.yaml"; }
wait_for 90 "the first push (podinfo 1.1.0, the newest tag in range)" \
  sh -c "git --git-dir='$work/git/fleet.git' show main:apps/podinfo.yaml | grep -qF '$reg/demo/podinfo:1.1.0 #'"
git --no-pager --git-dir="$work/git/fleet.git" log --format='%h %s' -1 main
pushed | grep -F "image:"

step "Tag 1.2.0 pushed; the registry's event reaches serve through the Receiver; the tag reaches Git"
python3 "$root/bench/push-tags.py" "$reg" demo/podinfo --tags 1.2.0
hook=$(kubectl -n flux-system get receiver registry -o jsonpath='{.status.webhookPath}')
[ -n "$hook" ] || fail "the Receiver has no status.webhookPath"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$rport$hook")
echo "POST $hook: $code"
[ "$code" = 200 ] || fail "the Receiver answered $code"
wait_for 60 "podinfo 1.2.0 in Git (the ImageRepository's interval is 1h: only the Receiver asked for a scan)" \
  sh -c "git --git-dir='$work/git/fleet.git' show main:apps/podinfo.yaml | grep -qF '$reg/demo/podinfo:1.2.0 #'"
git --no-pager --git-dir="$work/git/fleet.git" log --format='%h %s' -1 main
pushed | grep -F "image:"

step "What the cluster shows"
plugin get images all -n flux-system | tee "$work/get.out"
grep -q "imagepolicy/podinfo .*$reg/demo/podinfo:1.2.0" "$work/get.out" || fail "get images all does not show podinfo 1.2.0"
plugin tree update fleet -n flux-system | tee "$work/tree.out"
grep -q "✔ ImageUpdateAutomation/flux-system/fleet" "$work/tree.out" || fail "the automation is not Ready"
echo "(the GitRepository's status is source-controller's, which does not run here: serve reads its spec and Secret itself)"

step "The admission webhook: a namespace labelled imageauto.dev/enforce=deny"
kubectl create namespace apps
kubectl label namespace apps imageauto.dev/enforce=deny
deployment() {
  cat <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: $1, namespace: apps}
spec:
  selector: {matchLabels: {app: $1}}
  template:
    metadata: {labels: {app: $1}}
    spec: {containers: [{name: $1, image: "$2"}]}
YAML
}
echo "\$ kubectl apply (a Deployment of docker.io/library/nginx:1.25, which no ImagePolicy governs)"
if deployment web nginx:1.25 | kubectl apply -f - 2>"$work/refused.out"; then
  fail "the webhook admitted an ungoverned Deployment"
fi
cat "$work/refused.out"
grep -q "imageauto" "$work/refused.out" || fail "the refusal does not come from imageauto's webhook"
echo "\$ kubectl apply (a Deployment of $reg/demo/podinfo:1.2.0, governed by flux-system/podinfo)"
deployment podinfo "$reg/demo/podinfo:1.2.0" | kubectl apply -f - || fail "the webhook refused a governed Deployment"

step "Stopping what the demo started"
echo "demo-cluster: the Receiver's event reached Git (podinfo 1.2.0), and the webhook refused the ungoverned Deployment"
