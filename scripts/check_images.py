#!/usr/bin/env python3
"""Offline checks of Dockerfile.prod against everything that relies on it
(run by `make deploy-check`; no Docker engine needed).

1. Each service of DESIGN §3 has a final stage named after it whose
   ENTRYPOINT is its binary, copied from the builder; the builder's
   `cargo build` names exactly those binaries, which are bin targets of the
   workspace (`cargo metadata`).
2. Each final stage runs as a numeric user, exposes the service's gRPC and
   HTTP ports, and its GRPC_LISTEN / HTTP_LISTEN listen on them.
3. The Rust image is pinned to the workspace's `rust-version`, to the
   toolchain the CI workflow installs and to rust-toolchain.toml's.
4. The build context that .dockerignore leaves (matched as Docker does:
   patterns anchored at the root, `**`, `!` re-includes, last match wins)
   holds every tracked file of Cargo.toml, Cargo.lock, crates/ and proto/.
5. The images built and deployed name real final stages: the ci.yml image
   matrix builds every final stage, deploy.yml pushes and `kustomize edit set
   image`s exactly the images the k8s base runs, and every `build.target`
   of monitoring/docker-compose.monitoring.yml exists.

Prints one line per check and exits 1 listing the failures.
"""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_k8s import SERVICES  # noqa: E402  (DESIGN §3 ports, one table)

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile.prod"
IMAGE_PREFIX = "ghcr.io/automation-platform/"

failures = []


def report(name, problems):
    if problems:
        print(f"FAIL {name}")
        for p in problems:
            print(f"     - {p}")
        failures.append(name)
    else:
        print(f"ok   {name}")


def instructions(text):
    """(instruction, arguments) of a Dockerfile, continuations joined and
    comments (including `# hadolint` directives) left out."""
    out, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        word, _, rest = current.partition(" ")
        out.append((word.upper(), rest.strip()))
        current = ""
    return out


def stages(text):
    """Stage name -> {"from": image, "steps": [(instruction, args)]}."""
    result, current = {}, None
    for word, args in instructions(text):
        if word == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?$", args, re.IGNORECASE)
            if not m:
                raise ValueError(f"cannot read FROM {args!r}")
            current = {"from": m.group(1), "steps": []}
            result[m.group(2) or f"#{len(result)}"] = current
        elif current is not None:
            current["steps"].append((word, args))
    return result


def env_of(steps):
    env = {}
    for word, args in steps:
        if word == "ENV":
            for token in shlex.split(args):
                key, sep, value = token.partition("=")
                if sep:
                    env[key] = value
    return env


def final_stage_problems(name, stage, ports):
    problems = []
    steps = stage["steps"]
    entry = [json.loads(a) for w, a in steps if w == "ENTRYPOINT"]
    binary = f"/usr/local/bin/{name}"
    if not entry or entry[-1] != [binary]:
        problems.append(f"stage {name}: ENTRYPOINT is {entry[-1] if entry else None}, not [{binary!r}]")
    copies = [a for w, a in steps if w == "COPY"]
    if f"--from=builder /out/{name} {binary}" not in copies:
        problems.append(f"stage {name}: no `COPY --from=builder /out/{name} {binary}`")
    users = [a for w, a in steps if w == "USER"]
    if not users or not re.fullmatch(r"[1-9]\d*(:\d+)?", users[-1]):
        problems.append(f"stage {name}: USER {users[-1] if users else None!r} is not a numeric non-root user")
    exposed = sorted(int(p.split("/")[0]) for w, a in steps if w == "EXPOSE" for p in a.split())
    if exposed != sorted(ports.values()):
        problems.append(f"stage {name}: EXPOSE {exposed}, DESIGN §3 says {sorted(ports.values())}")
    env = env_of(steps)
    for kind in ports:
        var = f"{kind.upper()}_LISTEN"
        want = f"0.0.0.0:{ports[kind]}"
        if env.get(var) != want:
            problems.append(f"stage {name}: {var}={env.get(var)!r}, want {want!r}")
    return problems


def check_stages(all_stages, bins):
    problems = []
    builder = all_stages.get("builder")
    if builder is None:
        return ["no `builder` stage"]
    builds = [a for w, a in builder["steps"] if w == "RUN" and "cargo build" in a]
    built = set(re.findall(r"--bin\s+(\S+)", " ".join(builds)))
    if built != set(SERVICES):
        problems.append(f"builder builds {sorted(built)}, the services are {sorted(SERVICES)}")
    if builds and "--locked" not in builds[0]:
        problems.append("builder: `cargo build` without --locked")
    for name in SERVICES:
        if name not in bins:
            problems.append(f"{name} is not a bin target of the workspace")
        stage = all_stages.get(name)
        if stage is None:
            problems.append(f"no final stage `{name}` (docker build --target {name})")
            continue
        if not stage["from"].startswith("gcr.io/distroless/cc"):
            problems.append(f"stage {name}: FROM {stage['from']}, not a distroless cc image")
        problems += final_stage_problems(name, stage, SERVICES[name])
    rust_ports = all_stages.get("test-watcher-rust")
    if rust_ports is None:
        problems.append("no `test-watcher-rust` stage (the test-watcher with a toolchain)")
    else:
        problems += final_stage_problems("test-watcher", rust_ports, SERVICES["test-watcher"])
    return problems


def check_rust_pin(all_stages, rust_version):
    problems = []
    tags = {s["from"] for s in all_stages.values() if s["from"].startswith("rust:")}
    for tag in sorted(tags) or ["(none)"]:
        m = re.fullmatch(r"rust:(\d+\.\d+\.\d+)-\S+", tag)
        if not m:
            problems.append(f"Rust image {tag!r} is not pinned to a patch release")
        elif not (m.group(1) + ".").startswith(rust_version + "."):
            problems.append(f"Rust image {tag!r} does not match rust-version {rust_version}")
    ci = (ROOT / ".github" / "workflows" / "ci.yml").read_text()
    for toolchain in sorted(set(re.findall(r'toolchain:\s*"?([0-9.]+)"?', ci))):
        if not any(t.startswith(f"rust:{toolchain}-") for t in tags):
            problems.append(f"ci.yml installs Rust {toolchain}, the images use {sorted(tags)}")
    pinned = re.search(r'^channel\s*=\s*"([^"]+)"', (ROOT / "rust-toolchain.toml").read_text(), re.MULTILINE)
    if not pinned or not any(t.startswith(f"rust:{pinned.group(1)}-") for t in tags):
        problems.append(f"rust-toolchain.toml pins {pinned.group(1) if pinned else 'no channel'}, the images use {sorted(tags)}")
    return problems


def dockerignore_patterns():
    patterns = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        body = (line[1:] if negate else line).strip("/")
        rx, i = "", 0
        while i < len(body):
            if body.startswith("**/", i):
                rx, i = rx + "(?:.*/)?", i + 3
            elif body.startswith("**", i):
                rx, i = rx + ".*", i + 2
            elif body[i] == "*":
                rx, i = rx + "[^/]*", i + 1
            elif body[i] == "?":
                rx, i = rx + "[^/]", i + 1
            else:
                rx, i = rx + re.escape(body[i]), i + 1
        patterns.append((re.compile(rx + "$"), negate))
    return patterns


def ignored(path, patterns):
    parts = path.split("/")
    prefixes = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
    result = False
    for rx, negate in patterns:
        if any(rx.match(p) for p in prefixes):
            result = not negate
    return result


def check_context():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.splitlines()
    needed = [f for f in tracked
              if f in ("Cargo.toml", "Cargo.lock") or f.startswith(("crates/", "proto/"))]
    if not needed:
        return ["git ls-files found no Cargo.toml, crates/ or proto/ (not a checkout?)"]
    patterns = dockerignore_patterns()
    left_out = [f for f in needed if ignored(f, patterns)]
    return [f"{f} is needed by cargo build but .dockerignore leaves it out" for f in left_out[:20]]


def check_consumers(all_stages):
    problems = []
    finals = {n for n, s in all_stages.items() if not n.startswith("#")
              and n not in ("chef", "planner", "builder")}
    workflows = ROOT / ".github" / "workflows"

    def matrix_targets(file, job):
        doc = yaml.safe_load((workflows / file).read_text())
        return set(doc["jobs"][job]["strategy"]["matrix"]["target"])

    built = matrix_targets("ci.yml", "image")
    if built != finals:
        problems.append(f"ci.yml builds {sorted(built)}, Dockerfile.prod's final stages are {sorted(finals)}")
    pushed = matrix_targets("deploy.yml", "images")
    if not pushed <= finals:
        problems.append(f"deploy.yml pushes {sorted(pushed - finals)}, which are not stages")
    deployed = set()
    for manifest in sorted((ROOT / "k8s" / "base").glob("*.yaml")):
        deployed |= set(re.findall(rf"image:\s*{re.escape(IMAGE_PREFIX)}([\w-]+):", manifest.read_text()))
    if deployed != pushed:
        problems.append(f"k8s/base runs {sorted(deployed)}, deploy.yml pushes {sorted(pushed)}")
    deploy_text = (workflows / "deploy.yml").read_text()
    m = re.search(r"for image in ([\w\s-]+?); do\s+kustomize edit set image", deploy_text)
    set_images = set(m.group(1).split()) if m else set()
    if set_images != pushed:
        problems.append(f"deploy.yml sets the images {sorted(set_images)}, pushes {sorted(pushed)}")
    compose = yaml.safe_load((ROOT / "monitoring" / "docker-compose.monitoring.yml").read_text())
    for name, service in compose.get("services", {}).items():
        build = service.get("build") or {}
        target = build.get("target") if isinstance(build, dict) else None
        if build and target not in finals:
            problems.append(f"compose service {name} builds target {target!r}, not a final stage")
    return problems


def main():
    metadata = json.loads(subprocess.run(
        ["cargo", "metadata", "--no-deps", "--format-version", "1", "--offline"],
        cwd=ROOT, capture_output=True, text=True, check=True).stdout)
    bins = {t["name"] for p in metadata["packages"] for t in p["targets"] if "bin" in t["kind"]}
    manifest = (ROOT / "Cargo.toml").read_text()
    rust_version = re.search(r'^rust-version\s*=\s*"([^"]+)"', manifest, re.MULTILINE).group(1)
    all_stages = stages(DOCKERFILE.read_text())

    report("Dockerfile.prod: a final stage per service, its binary, user and ports",
           check_stages(all_stages, bins))
    report(f"Dockerfile.prod: Rust image pinned to rust-version {rust_version}, ci.yml's and rust-toolchain.toml's toolchain",
           check_rust_pin(all_stages, rust_version))
    report(".dockerignore keeps everything cargo build needs", check_context())
    report("ci.yml, deploy.yml, k8s/base and the compose file name real stages",
           check_consumers(all_stages))
    if failures:
        print(f"\n{len(failures)} check(s) failed: " + "; ".join(failures))
        return 1
    print("\nall image checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
