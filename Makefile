# imageauto — build, test, demo, bench.
#
#   make demo    run the main job on a bundled example
#   make demo-cluster  the cluster half: install, serve, a Receiver, the webhook
#   make crds    regenerate manifests/crds from the API types
#   make test    install what the tests need (Debian), then lint and test all
#   make bench   benchmarks, with the peers they are measured against
#   make dist    release archive and krew manifest, in dist/

CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
BIN := target/release/kubectl-imageauto

# Debian packages the tests run against: Go and Masterminds/semver (oracle),
# hyperfine (benchmarks), etcd (under the cluster tests' kube-apiserver),
# gnupg and openssh-client (the verifiers of signed commits).
DEBS := golang-go golang-github-masterminds-semver-dev hyperfine hey pkg-config libssl-dev pre-commit git gnupg \
  docker-registry apache2-utils skopeo time python3 python3-venv openssh-server openssh-client lighttpd \
  lighttpd-mod-openssl etcd-server iproute2 util-linux zsh fish

# What `make demo` needs: a registry, Git, Python (tag publisher), and what
# the build links against.
DEMO_DEBS := docker-registry git python3 pkg-config libssl-dev

# What `make demo-cluster` needs besides: etcd under the test suite's
# kube-apiserver, lighttpd for Git over HTTPS, openssl for certificates,
# curl (kubectl comes as for `make deps`).
DEMO_CLUSTER_DEBS := $(DEMO_DEBS) etcd-server lighttpd lighttpd-mod-openssl openssl curl

.PHONY: all build crds manifests deps demo-deps demo-cluster-deps kubectl install-debs kube-apiserver moto dist test lint fmt clippy unit suite demo demo-check demo-cluster bench fuzz install clean

all: build

build:
	$(CARGO) build --release -p kubectl-imageauto

# Regenerates manifests/crds from the Rust types of imageauto_core::api (the
# core crate's `crds` test fails while the checked-in files differ).
crds:
	$(CARGO) run -q -p imageauto-core --example gen-crds -- manifests/crds

# Regenerates manifests/install (what `kubectl imageauto install` applies,
# for GitOps users; the plugin_cluster test fails while it differs).
manifests: crds
	$(CARGO) run -q -p kubectl-imageauto -- install --dry-run --crds=false -o yaml > manifests/install/imageauto.yaml

# Installs the missing Debian packages. Nothing is skipped: a package that
# cannot be installed fails the target.
demo-deps:
	@$(MAKE) -s --no-print-directory install-debs PACKAGES="$(DEMO_DEBS)"

install-debs:
	@missing=""; for p in $(PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

deps: kubectl
	@$(MAKE) -s --no-print-directory install-debs PACKAGES="$(DEBS)"

# kubectl: the machine's own package, else Debian's kubernetes-client.
kubectl:
	@command -v kubectl >/dev/null || { $(SUDO) apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq kubectl 2>/dev/null || \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq kubernetes-client; }

demo-cluster-deps: kubectl
	@$(MAKE) -s --no-print-directory install-debs PACKAGES="$(DEMO_CLUSTER_DEBS)"

# kube-apiserver 1.20.2 for the cluster tests, built offline from Debian's
# kubernetes source package and cached outside the clone (once, ~4 minutes).
kube-apiserver:
	tests/cluster/build-kube-apiserver.sh

# moto's server (AWS's STS and ECR APIs) for the cloud identity tests, from
# PyPI into a virtualenv outside the clone (once).
MOTO := $(HOME)/.cache/imageauto/moto
moto: deps
	@test -x $(MOTO)/bin/moto_server || { rm -rf $(MOTO) && python3 -m venv $(MOTO) && \
	  $(MOTO)/bin/pip install -q --disable-pip-version-check 'moto[server]>=5.1,<6'; }

test: deps kube-apiserver moto lint suite demo-check

lint: fmt clippy

fmt:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The quick tier: tests that need no server outside the test process (the
# libraries' own tests, the core's, automation's and the webhook's test
# files, the command line), with no server installed. A new file under
# core/tests, automation/tests or webhook/tests joins it by itself.
UNIT_TESTS := cli layers $(basename $(notdir $(wildcard core/tests/*.rs automation/tests/*.rs webhook/tests/*.rs)))
unit:
	$(CARGO) test --workspace --no-fail-fast --lib --bins $(addprefix --test ,$(UNIT_TESTS))

# Every test: the quick tier and everything that runs against a real
# registry, Git server, sshd, kube-apiserver, moto or a stand-in.
suite:
	$(CARGO) test --workspace --no-fail-fast

demo: demo-deps build
	BIN=$(BIN) demo/run.sh

# The cluster half on this machine: the test suite's kube-apiserver (built
# once and cached, as for `make test`), `kubectl imageauto install`, `serve`
# outside the cluster as the installed ServiceAccount, Git over HTTPS, a
# registry, a tag reaching Git through a Receiver, and the webhook refusing
# an ungoverned Deployment. It stops what it started and fails unless each
# step did what it says.
demo-cluster: demo-cluster-deps kube-apiserver build
	BIN=$(BIN) demo/cluster.sh

# The demo as part of the suite, on the debug binary the tests built (a
# relative path, as a user might pass): it fails unless the pushed branch holds
# the tags the policies pick. Silent when it passes; all it printed when not.
demo-check:
	@log=$$(mktemp); if BIN=target/debug/kubectl-imageauto demo/run.sh >"$$log" 2>&1; then rm -f "$$log"; \
	  echo "demo-check: ok"; else rc=$$?; cat "$$log"; rm -f "$$log"; echo "demo-check: failed" >&2; exit $$rc; fi

bench: deps
	$(CARGO) bench -p imageauto-core --bench policy
	bench/semver-vs-masterminds.sh
	bench/set-vs-grep.sh
	bench/tags-vs-skopeo.sh
	bench/reconcile-vs-peers.sh
	bench/lint-scale.sh
	bench/engine-concurrency.sh
	bench/serve-scale.sh
	bench/receiver-latency.sh
	bench/admission-load.sh

# Fuzz marker parsing and rewriting (cargo-fuzz, no sanitizer: works on stable).
FUZZ_SECONDS ?= 300
fuzz:
	command -v cargo-fuzz >/dev/null || $(CARGO) install --locked cargo-fuzz
	mkdir -p fuzz/corpus/setters && cp tests/golden/setters/*.in.* fuzz/corpus/setters/
	cd fuzz && $(CARGO) fuzz run -s none setters corpus/setters -- -max_total_time=$(FUZZ_SECONDS) -max_len=4096

# Release archive (the binary, kubectl_complete-imageauto and LICENSE), its
# sha256, and the krew manifest rendered for it, in dist/.
dist: build
	scripts/dist.sh $(BIN) dist

install:
	$(CARGO) install --locked --path .

clean:
	$(CARGO) clean
