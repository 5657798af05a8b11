#!/usr/bin/env python3
"""Generates a GitOps tree for benchmarks: 11,000 YAML files (about 55 MB),
6,000 of them with markers, naming 100 image policies.

    gen-tree.py DIR [--registry HOST:PORT] [--tag TAG]

The policies are `apps:svc-000` ... `apps:svc-099`, tracking
REGISTRY/bench/svc-NNN. The tree also holds their ImageRepositories and
ImagePolicies (under flux/) and an ImageUpdateAutomation, so that the same
tree serves `kubectl imageauto set` and `reconcile --local`.
Deterministic: the same arguments give the same bytes."""
import argparse
import os
import random

FILES = 11_000
WITH_MARKERS = 6_000
POLICIES = 100

ap = argparse.ArgumentParser()
ap.add_argument("dir")
ap.add_argument("--registry", default="registry.example.com")
ap.add_argument("--tag", default="1.0.0")
ap.add_argument("--push-branch", default="main",
                help="the ImageUpdateAutomation's push branch (main: the checkout's own)")
args = ap.parse_args()
rnd = random.Random(42)
reg = args.registry

def filler(n_lines):
    out = []
    for i in range(n_lines):
        out.append(f"    key-{i:04d}: \"value {rnd.randrange(10**9):09d} with some padding text\"\n")
    return "".join(out)

def deployment(i, policies):
    containers = []
    for j, p in enumerate(policies):
        containers.append(
            f"        - name: c{j}\n"
            f"          image: {reg}/bench/svc-{p:03d}:{args.tag} # {{\"$imagepolicy\": \"apps:svc-{p:03d}\"}}\n"
            f"          ports:\n            - containerPort: {8000 + j}\n"
            f"          resources:\n            limits: {{cpu: 100m, memory: 128Mi}}\n"
        )
    return (
        f"---\n# generated workload {i}\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n"
        f"  name: app-{i:05d}\n  namespace: apps\n  labels:\n    app: app-{i:05d}\n\n"
        f"spec:\n  replicas: 2\n  template:\n    metadata:\n      labels:\n        app: app-{i:05d}\n"
        f"    spec:\n      containers:\n{''.join(containers)}"
        f"---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app-{i:05d}\n  namespace: apps\ndata:\n"
        + filler(rnd.randrange(50, 95))
    )

def helmrelease(i, p):
    return (
        f"apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: rel-{i:05d}\n  namespace: apps\n"
        f"spec:\n  interval: 10m\n  values:\n    image:\n"
        f"      repository: {reg}/bench/svc-{p:03d} # {{\"$imagepolicy\": \"apps:svc-{p:03d}:name\"}}\n"
        f"      tag: {args.tag} # {{\"$imagepolicy\": \"apps:svc-{p:03d}:tag\"}}\n"
        f"    settings:\n" + filler(rnd.randrange(50, 95))
    )

def plain(i):
    return (
        f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i:05d}\n  namespace: apps\n"
        f"  annotations:\n    note: \"no markers here\"\ndata:\n" + filler(rnd.randrange(50, 95))
    )

os.makedirs(args.dir, exist_ok=True)
flux = os.path.join(args.dir, "flux")
os.makedirs(flux, exist_ok=True)
with open(os.path.join(flux, "images.yaml"), "w") as f:
    for p in range(POLICIES):
        f.write(
            f"---\napiVersion: image.toolkit.fluxcd.io/v1\nkind: ImageRepository\nmetadata:\n"
            f"  name: svc-{p:03d}\n  namespace: apps\nspec:\n  image: {reg}/bench/svc-{p:03d}\n"
            f"  interval: 5m\n  insecure: true\n---\napiVersion: image.toolkit.fluxcd.io/v1\nkind: ImagePolicy\n"
            f"metadata:\n  name: svc-{p:03d}\n  namespace: apps\nspec:\n  imageRepositoryRef:\n"
            f"    name: svc-{p:03d}\n  policy:\n    semver:\n      range: \">=1.0.0 <2.0.0\"\n"
        )
    f.write(
        "---\napiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata:\n  name: fleet\n"
        "  namespace: apps\nspec:\n  interval: 1m\n  url: file:///fleet\n  ref:\n    branch: main\n"
        "---\napiVersion: image.toolkit.fluxcd.io/v1\nkind: ImageUpdateAutomation\nmetadata:\n  name: apps\n"
        "  namespace: apps\nspec:\n  interval: 30m\n  sourceRef:\n    kind: GitRepository\n    name: fleet\n"
        "  git:\n    commit:\n      author:\n        name: imageauto\n        email: imageauto@example.com\n"
        "      messageTemplate: 'Update {{ len .Changed.Changes }} images'\n"
        f"    push:\n      branch: {args.push_branch}\n  update:\n    path: ./apps\n"
    )
for i in range(FILES - 1):
    d = os.path.join(args.dir, "apps", f"team-{i % 50:02d}", f"svc-{i % 37:02d}")
    os.makedirs(d, exist_ok=True)
    if i < WITH_MARKERS:
        if i % 4 == 3:
            text = helmrelease(i, rnd.randrange(POLICIES))
            name = f"release-{i:05d}.yaml"
        else:
            text = deployment(i, [rnd.randrange(POLICIES) for _ in range(1 + i % 3)])
            name = f"app-{i:05d}.yaml"
    else:
        text = plain(i)
        name = f"config-{i:05d}.yml"
    with open(os.path.join(d, name), "w") as f:
        f.write(text)
