#!/bin/sh
# Release archives and the krew manifest that points at them.
#
#   scripts/dist.sh BINARY OUTDIR [BASE_URL]
#
# Writes OUTDIR/kubectl-imageauto_vVERSION_linux_amd64.tar.gz (the binary,
# kubectl_complete-imageauto for kubectl's completion of the plugin, and
# LICENSE), its .sha256, and OUTDIR/imageauto.yaml: plugins/imageauto.yaml
# rendered for this version, with the archive's URL under BASE_URL (the
# release's download folder) and its sha256.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:?usage: scripts/dist.sh BINARY OUTDIR [BASE_URL]}
out=${2:?usage: scripts/dist.sh BINARY OUTDIR [BASE_URL]}
[ -x "$bin" ] || { echo "dist: $bin is not an executable (make build first)" >&2; exit 1; }
version=v$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -n 1)
[ "$version" != v ] || { echo "dist: no version in $root/Cargo.toml" >&2; exit 1; }
base=${3:-https://github.com/imageauto/imageauto/releases/download/$version}
# The manifest lists linux/amd64, the platform releases are built on.
case "$(uname -s)/$(uname -m)" in
  Linux/x86_64) platform=linux_amd64 ;;
  *) echo "dist: archives are built on linux/amd64, not $(uname -s)/$(uname -m)" >&2; exit 1 ;;
esac
name=kubectl-imageauto_${version}_$platform.tar.gz
mkdir -p "$out"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp "$bin" "$stage/kubectl-imageauto"
cp "$root/plugin/kubectl_complete-imageauto" "$stage/kubectl_complete-imageauto"
chmod 755 "$stage/kubectl-imageauto" "$stage/kubectl_complete-imageauto"
cp "$root/LICENSE" "$stage/LICENSE"
# Reproducible: fixed owner, order and times.
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 \
  -C "$stage" -czf "$stage/$name" kubectl-imageauto kubectl_complete-imageauto LICENSE
mv "$stage/$name" "$out/$name"
sum=$(sha256sum "$out/$name" | cut -d' ' -f1)
echo "$sum  $name" > "$out/$name.sha256"
# Render the template as krew-release-bot would: addURIAndSha becomes the
# uri and sha256 lines, {{ .TagName }} the version.
sed -e "s|{{addURIAndSha \"[^\"]*\" .TagName }}|uri: $base/$name\n      sha256: $sum|" \
    -e "s|{{ .TagName }}|$version|g" \
    -e '/^#/d' \
    "$root/plugins/imageauto.yaml" > "$out/imageauto.yaml"
echo "$out/$name"
echo "$out/imageauto.yaml"
