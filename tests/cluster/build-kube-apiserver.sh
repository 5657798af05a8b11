#!/bin/sh
# Builds kube-apiserver 1.20.2 offline from Debian's `kubernetes` source
# package (it carries its Go dependencies) and caches the binary outside the
# clone, at ${IMAGEAUTO_CACHE:-$HOME/.cache/imageauto}/kube-apiserver-1.20.2/.
# The cluster tests run it against Debian's etcd. Does nothing when the binary
# is cached already.
#
# Needs the Debian mirror only (deb-src is enabled in a separate file).
# About 4 minutes on 2 idle cores.
set -eu

VERSION=1.20.2
CACHE=${IMAGEAUTO_CACHE:-$HOME/.cache/imageauto}
DEST_DIR=$CACHE/kube-apiserver-$VERSION
DEST=$DEST_DIR/kube-apiserver

say() { printf 'build-kube-apiserver: %s\n' "$*"; }

if [ -x "$DEST" ]; then
  say "cached: $DEST"
  exit 0
fi

SUDO=
[ "$(id -u)" = 0 ] || SUDO=sudo
START=$(date +%s)

# deb-src, beside the machine's own sources (never editing them).
SRC_LIST=/etc/apt/sources.list.d/imageauto-deb-src.sources
if [ ! -f "$SRC_LIST" ]; then
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    say "enabling deb-src in $SRC_LIST"
    sed 's/^Types:.*$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources |
      $SUDO tee "$SRC_LIST" >/dev/null
  elif grep -q '^deb ' /etc/apt/sources.list 2>/dev/null; then
    # Older layout: one-line sources in /etc/apt/sources.list.
    SRC_LIST=/etc/apt/sources.list.d/imageauto-deb-src.list
    say "enabling deb-src in $SRC_LIST"
    sed -n 's/^deb /deb-src /p' /etc/apt/sources.list | $SUDO tee "$SRC_LIST" >/dev/null
  else
    say "no Debian apt sources found to derive deb-src from" >&2
    exit 1
  fi
fi

say "apt-get update"
$SUDO apt-get update -qq

missing=
for p in golang-go rsync jq make gcc libc6-dev dpkg-dev golang-github-modern-go-reflect2-dev etcd-server; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
  say "installing:$missing"
  # shellcheck disable=SC2086 # a list of package names
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
fi

REFLECT2=/usr/share/gocode/src/github.com/modern-go/reflect2
[ -f "$REFLECT2/reflect2.go" ] || { say "missing $REFLECT2" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/kube-apiserver-build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

say "apt-get source kubernetes (in $WORK)"
(cd "$WORK" && apt-get source -qq kubernetes >/dev/null)
SRC=
for d in "$WORK"/kubernetes-*; do
  [ -d "$d" ] && SRC=$d
done
[ -n "$SRC" ] || { say "no kubernetes source tree in $WORK" >&2; exit 1; }
say "source: $SRC"

# Trap: built with Debian's Go 1.19, the reflect2 1.0.1 vendored in 1.20 makes
# the apiserver crash (SIGSEGV) on the first custom resource it encodes.
# Debian's reflect2 1.0.2 works. Only the files change: go.mod and
# vendor/modules.txt still agree with each other, which is all -mod=vendor checks.
say "replacing vendor/github.com/modern-go/reflect2 with Debian's ($REFLECT2)"
rm -rf "$SRC/vendor/github.com/modern-go/reflect2"
mkdir -p "$SRC/vendor/github.com/modern-go/reflect2"
cp -R "$REFLECT2/." "$SRC/vendor/github.com/modern-go/reflect2/"

say "make WHAT=cmd/kube-apiserver (a few minutes)"
(
  cd "$SRC"
  # Offline, from vendor/; the version the binary reports (no .git here).
  GOFLAGS=-mod=vendor GOPROXY=off GO111MODULE=on \
    GOCACHE="$WORK/go-cache" \
    KUBE_GIT_VERSION=v$VERSION KUBE_GIT_MAJOR=1 KUBE_GIT_MINOR=20 KUBE_GIT_TREE_STATE=clean \
    make WHAT=cmd/kube-apiserver
)

BIN=$(find "$SRC/_output" -type f -name kube-apiserver -perm -u+x | head -n 1)
[ -n "$BIN" ] || { say "the build left no kube-apiserver under $SRC/_output" >&2; exit 1; }

mkdir -p "$DEST_DIR"
cp "$BIN" "$DEST.tmp.$$"
chmod 755 "$DEST.tmp.$$"
mv -f "$DEST.tmp.$$" "$DEST"
"$DEST" --version
say "cached $DEST in $(($(date +%s) - START)) s"
