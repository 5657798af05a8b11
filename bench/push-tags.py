#!/usr/bin/env python3
"""Pushes one small image under many tags to a registry (plain HTTP), over
the registry API, reusing one connection.

    push-tags.py HOST:PORT REPOSITORY COUNT [--tag-format 'FMT'] [--semver]
    push-tags.py HOST:PORT REPOSITORY --tags TAG...

Tags are `1.<i // 1000>.<i % 1000>` with --semver, else FMT % i
(default `build-%06d`), or exactly those given with --tags. Already present
tags are pushed again (idempotent)."""
import argparse
import hashlib
import http.client
import json

ap = argparse.ArgumentParser()
ap.add_argument("host")
ap.add_argument("repository")
ap.add_argument("count", type=int, nargs="?", default=0)
ap.add_argument("--tags", nargs="+", default=[])
ap.add_argument("--tag-format", default="build-%06d")
ap.add_argument("--semver", action="store_true")
ap.add_argument("--first", type=int, default=0)
args = ap.parse_args()
conn = http.client.HTTPConnection(args.host)


def call(method, path, body=None, headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    if r.status >= 300 and r.status != 202:
        raise SystemExit(f"{method} {path}: {r.status} {data[:200]!r}")
    return r, data


def blob(data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    r, _ = call("POST", f"/v2/{args.repository}/blobs/uploads/")
    loc = r.getheader("Location")
    if loc.startswith("http"):
        loc = "/" + loc.split("/", 3)[3]
    sep = "&" if "?" in loc else "?"
    call("PUT", f"{loc}{sep}digest={digest}", body=data,
         headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(data))})
    return digest, len(data)


layer = b"not really a tarball"
config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
ld, ls = blob(layer)
cd, cs = blob(config)
manifest = json.dumps({
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ld, "size": ls}],
}).encode()
tags = args.tags or [
    f"1.{i // 1000}.{i % 1000}" if args.semver else args.tag_format % i
    for i in range(args.first, args.first + args.count)
]
for tag in tags:
    call("PUT", f"/v2/{args.repository}/manifests/{tag}", body=manifest,
         headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json", "Content-Length": str(len(manifest))})
