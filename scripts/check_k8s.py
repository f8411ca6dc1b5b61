#!/usr/bin/env python3
"""Offline checks of the Kubernetes manifests (run by `make test`).

1. `kubectl kustomize` of k8s/overlays/{dev,prod}, each piped into
   `kubernetes-validate --strict -` (which skips custom resources).
2. The custom resources (ServiceMonitor, PrometheusRule, ExternalSecret)
   against their CRD schemas in ../shared/schemas/<group>/<kind>_<version>.json
   with check-jsonschema (skipped, and said so, when that folder is absent).
3. A policy test on both rendered overlays: gRPC probes, resources, security
   fields, shutdown timing, the audit-agent's single writer, no plain Secret,
   and (prod) auth required and pinned image tags.
4. scripts/gen_prometheusrule.py --check (the PrometheusRule has not drifted
   from monitoring/prometheus/rules).
5. yamllint on k8s/.

Prints one line per check and exits 1 listing the failures.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
SCHEMAS = (ROOT / ".." / "shared" / "schemas").resolve()
OVERLAYS = ["dev", "prod"]
YAMLLINT_CONFIG = "{extends: default, rules: {line-length: {max: 160}, document-start: disable, truthy: {check-keys: false}}}"

# DESIGN §3: each service's gRPC port (probed) and HTTP admin port.
SERVICES = {
    "collector": {"grpc": 50051, "http": 9400},
    "test-watcher": {"grpc": 50052, "http": 9401},
    "audit-agent": {"grpc": 50053, "http": 9402},
    "api-gateway": {"grpc": 50054, "http": 9403},
}
REPORTERS = ["test-watcher", "audit-agent", "api-gateway"]
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule", "ExternalSecret"}
POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "fsGroup": 65532,
    "seccompProfile": {"type": "RuntimeDefault"},
}

failures = []


def tool(name):
    path = VENV_BIN / name
    return str(path) if path.exists() else (shutil.which(name) or str(path))


def report(name, problems, skipped=None):
    if skipped:
        print(f"SKIP {name}: {skipped}")
    elif problems:
        print(f"FAIL {name}")
        for p in problems:
            print(f"     - {p}")
        failures.append(name)
    else:
        print(f"ok   {name}")


def render(overlay):
    proc = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "k8s" / "overlays" / overlay)],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        return None, proc.stderr.strip() or f"kubectl kustomize exited {proc.returncode}"
    return proc.stdout, None


def check_validate(overlay, rendered):
    proc = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "--quiet", "-"],
        input=rendered, capture_output=True, text=True, check=False,
    )
    out = (proc.stdout + proc.stderr).strip().splitlines()
    problems = [line for line in out if "ERROR" in line or "did not validate" in line]
    if proc.returncode != 0 and not problems:
        problems = out[-10:] or [f"kubernetes-validate exited {proc.returncode}"]
    skipped = sorted({m.group(1) for line in out for m in [re.search(r"schema for kind (\w+)", line)] if m})
    name = f"kubernetes-validate --strict ({overlay})"
    if skipped and not problems:
        name += f" [custom resources skipped by it: {', '.join(skipped)}]"
    report(name, problems)


def check_crds(overlay, docs):
    name = f"CRD schemas ({overlay})"
    if not SCHEMAS.is_dir():
        report(name, [], skipped=f"{SCHEMAS} not found, custom resources not checked")
        return
    problems = []
    checked = 0
    with tempfile.TemporaryDirectory() as tmp:
        for i, doc in enumerate(docs):
            kind = doc.get("kind")
            if kind not in CUSTOM_KINDS:
                continue
            group, _, version = doc.get("apiVersion", "").rpartition("/")
            schema = SCHEMAS / group / f"{kind.lower()}_{version}.json"
            ident = f"{kind}/{doc.get('metadata', {}).get('name')}"
            if not schema.exists():
                problems.append(f"{ident}: no schema {schema}")
                continue
            path = Path(tmp) / f"{i:03d}-{kind.lower()}.yaml"
            path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
            proc = subprocess.run(
                [tool("check-jsonschema"), "--schemafile", str(schema), str(path)],
                capture_output=True, text=True, check=False,
            )
            checked += 1
            if proc.returncode != 0:
                problems.append(f"{ident}: " + " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-6:]))
    for kind in CUSTOM_KINDS:
        if not any(d.get("kind") == kind for d in docs):
            problems.append(f"no {kind} in the rendered manifests")
    report(f"{name} [{checked} custom resources]", problems)


# ---------------------------------------------------------------- policy

def parse_seconds(value):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", str(value).strip())
    if not m:
        return None
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]
    return float(m.group(1)) * scale


def container_env(container, configmaps):
    """The container's environment: envFrom ConfigMaps, then env (literal values or the ref itself)."""
    env = {}
    for src in container.get("envFrom") or []:
        ref = (src.get("configMapRef") or {}).get("name")
        if ref is not None:
            env.update((configmaps.get(ref) or {}).get("data") or {})
    for var in container.get("env") or []:
        env[var["name"]] = var.get("value", var.get("valueFrom"))
    return env


def policy(overlay, docs):
    problems = []
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d.get("kind"), {})[d.get("metadata", {}).get("name")] = d
    configmaps = by_kind.get("ConfigMap", {})
    deployments = by_kind.get("Deployment", {})
    services = by_kind.get("Service", {})

    if "Secret" in by_kind:
        problems.append(f"plain Secret(s) in the manifests: {sorted(by_kind['Secret'])}")
    if not by_kind.get("Namespace"):
        problems.append("no Namespace resource")

    for svc in SERVICES:
        if svc not in deployments:
            problems.append(f"no Deployment {svc}")

    for name, dep in deployments.items():
        where = f"Deployment {name}"
        spec = dep.get("spec", {})
        pod = spec.get("template", {}).get("spec", {})
        if not isinstance(spec.get("revisionHistoryLimit"), int):
            problems.append(f"{where}: no revisionHistoryLimit")
        psc = pod.get("securityContext") or {}
        for key, want in POD_SECURITY.items():
            if psc.get(key) != want:
                problems.append(f"{where}: pod securityContext.{key} is {psc.get(key)!r}, want {want!r}")
        if pod.get("automountServiceAccountToken") is not False:
            problems.append(f"{where}: automountServiceAccountToken is not false")
        sa = by_kind.get("ServiceAccount", {}).get(pod.get("serviceAccountName"))
        if sa is None:
            problems.append(f"{where}: its ServiceAccount {pod.get('serviceAccountName')!r} is missing")
        elif sa.get("automountServiceAccountToken") is not False:
            problems.append(f"ServiceAccount {sa['metadata']['name']}: automountServiceAccountToken is not false")

        volumes = {v["name"]: v for v in pod.get("volumes") or []}
        all_containers = [("container", c) for c in pod.get("containers") or []]
        all_containers += [("initContainer", c) for c in pod.get("initContainers") or []]
        for role, c in all_containers:
            cw = f"{where} {role} {c.get('name')}"
            res = c.get("resources") or {}
            for key in ("cpu", "memory"):
                if not (res.get("requests") or {}).get(key):
                    problems.append(f"{cw}: no {key} request")
            if not (res.get("limits") or {}).get("memory"):
                problems.append(f"{cw}: no memory limit")
            csc = c.get("securityContext") or {}
            if csc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{cw}: allowPrivilegeEscalation is not false")
            if csc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{cw}: readOnlyRootFilesystem is not true")
            if csc.get("runAsNonRoot") is not True:
                problems.append(f"{cw}: runAsNonRoot is not true")
            if "ALL" not in ((csc.get("capabilities") or {}).get("drop") or []):
                problems.append(f"{cw}: capabilities.drop lacks ALL")
            if (csc.get("capabilities") or {}).get("add"):
                problems.append(f"{cw}: adds capabilities")
            if csc.get("privileged"):
                problems.append(f"{cw}: privileged")
            for m in c.get("volumeMounts") or []:
                if m["name"] not in volumes:
                    problems.append(f"{cw}: mounts unknown volume {m['name']}")
            if "/tmp" not in {m.get("mountPath") for m in c.get("volumeMounts") or []}:
                problems.append(f"{cw}: /tmp is not a volume (read-only root filesystem)")
            image = c.get("image", "")
            if ":" not in image.rsplit("/", 1)[-1]:
                problems.append(f"{cw}: image {image!r} has no tag")
            if overlay == "prod" and image.endswith(":latest"):
                problems.append(f"{cw}: image {image!r} is :latest in prod")
            if role == "initContainer" and c.get("name") == "git-sync" and not re.match(
                r"registry\.k8s\.io/git-sync/git-sync:v4\.\d+\.\d+$", image
            ):
                problems.append(f"{cw}: git-sync image {image!r} is not a pinned v4 release")

        if name not in SERVICES:
            continue
        ports = SERVICES[name]
        main = next((c for c in pod.get("containers") or [] if c.get("name") == name), None)
        if main is None:
            problems.append(f"{where}: no container named {name}")
            continue
        for probe, service in (("startupProbe", "liveness"), ("readinessProbe", "readiness"), ("livenessProbe", "liveness")):
            grpc = (main.get(probe) or {}).get("grpc")
            if not grpc:
                problems.append(f"{where}: {probe} is not a gRPC probe")
                continue
            if grpc.get("port") != ports["grpc"]:
                problems.append(f"{where}: {probe} port {grpc.get('port')}, want {ports['grpc']}")
            if grpc.get("service") != service:
                problems.append(f"{where}: {probe} service {grpc.get('service')!r}, want {service!r}")
        declared = {p.get("containerPort") for p in main.get("ports") or []}
        if not {ports["grpc"], ports["http"]} <= declared:
            problems.append(f"{where}: container ports {sorted(declared)} lack {ports['grpc']}/{ports['http']}")

        env = container_env(main, configmaps)
        if env.get("LOG_FORMAT") != "json":
            problems.append(f"{where}: LOG_FORMAT is {env.get('LOG_FORMAT')!r}, want 'json'")
        inst = env.get("INSTANCE")
        if not (isinstance(inst, dict) and (inst.get("fieldRef") or {}).get("fieldPath") == "metadata.name"):
            problems.append(f"{where}: INSTANCE is not the pod name (fieldRef metadata.name)")
        if env.get("GRPC_LISTEN") and not str(env["GRPC_LISTEN"]).endswith(f":{ports['grpc']}"):
            problems.append(f"{where}: GRPC_LISTEN {env['GRPC_LISTEN']} is not port {ports['grpc']}")
        delay, grace = parse_seconds(env.get("SHUTDOWN_DELAY", "5s")), parse_seconds(env.get("SHUTDOWN_GRACE", "20s"))
        tgps = pod.get("terminationGracePeriodSeconds", 30)
        if delay is None or grace is None:
            problems.append(f"{where}: SHUTDOWN_DELAY/SHUTDOWN_GRACE unparsable")
        elif tgps <= delay + grace:
            problems.append(f"{where}: terminationGracePeriodSeconds {tgps} <= SHUTDOWN_DELAY+SHUTDOWN_GRACE {delay + grace:g}")

        if name in REPORTERS:
            endpoint = str(env.get("COLLECTOR_ENDPOINT", ""))
            m = re.fullmatch(r"https?://([a-z0-9-]+)(?:\.[a-z0-9.-]+)?:50051", endpoint)
            target = services.get(m.group(1)) if m else None
            if not target or target.get("spec", {}).get("clusterIP") != "None":
                problems.append(f"{where}: COLLECTOR_ENDPOINT {endpoint!r} is not the collector's headless Service on 50051")

        # Writable paths other than volumes would fail on the read-only root fs.
        mounts = {m.get("mountPath"): m for m in main.get("volumeMounts") or []}
        if name in ("test-watcher", "audit-agent"):
            root_var = "WATCH_ROOT" if name == "test-watcher" else "REPO_PATH"
            if env.get(root_var) != "/git/repo":
                problems.append(f"{where}: {root_var} is {env.get(root_var)!r}, want /git/repo")
            sidecar = next((c for c in (pod.get("initContainers") or []) + (pod.get("containers") or []) if c.get("name") == "git-sync"), None)
            if sidecar is None:
                problems.append(f"{where}: no git-sync sidecar")
            else:
                shared = {m["name"] for m in sidecar.get("volumeMounts") or [] if m.get("mountPath") == "/git"}
                if not shared or mounts.get("/git", {}).get("name") not in shared:
                    problems.append(f"{where}: git-sync and {name} do not share /git")
                if "--root=/git" not in (sidecar.get("args") or []) or "--link=repo" not in (sidecar.get("args") or []):
                    problems.append(f"{where}: git-sync lacks --root=/git --link=repo")
        if name == "test-watcher":
            for var in ("CARGO_HOME", "CARGO_TARGET_DIR"):
                if env.get(var) not in mounts:
                    problems.append(f"{where}: {var} {env.get(var)!r} is not a mounted volume")
            labels = spec.get("template", {}).get("metadata", {}).get("labels", {})
            if labels.get("automation.example.com/gateway-client") != "true":
                problems.append(f"{where}: lacks the gateway-client label")
        if name == "api-gateway" and not env.get("DEEPSEEK_API_KEY_FILE"):
            problems.append(f"{where}: no DEEPSEEK_API_KEY_FILE")
        if name == "audit-agent":
            if (spec.get("strategy") or {}).get("type") != "Recreate":
                problems.append(f"{where}: strategy is not Recreate")
            if spec.get("replicas", 1) != 1:
                problems.append(f"{where}: replicas {spec.get('replicas')} (one writer only)")
            db = str(env.get("DATABASE_PATH", ""))
            mount = next((m for p, m in mounts.items() if db.startswith(p.rstrip("/") + "/")), None)
            vol = volumes.get(mount["name"]) if mount else None
            claim = ((vol or {}).get("persistentVolumeClaim") or {}).get("claimName")
            pvc = by_kind.get("PersistentVolumeClaim", {}).get(claim)
            if pvc is None:
                problems.append(f"{where}: DATABASE_PATH {db!r} is not on a PersistentVolumeClaim")
            elif (pvc.get("spec") or {}).get("accessModes") != ["ReadWriteOncePod"]:
                problems.append(f"PersistentVolumeClaim {claim}: accessModes {pvc['spec'].get('accessModes')}, want [ReadWriteOncePod]")
        if overlay == "prod" and not env.get("AUTH_TOKEN_FILE"):
            problems.append(f"{where}: AUTH_TOKEN_FILE unset in prod (auth required)")
        if overlay == "prod":
            for v in volumes.values():
                if (v.get("secret") or {}).get("optional") is not False and "secret" in v:
                    problems.append(f"{where}: secret volume {v['name']} optional in prod")

        selector = spec.get("selector", {}).get("matchLabels", {})
        pdbs = [p for p in by_kind.get("PodDisruptionBudget", {}).values()
                if p.get("spec", {}).get("selector", {}).get("matchLabels") == selector]
        if not pdbs or pdbs[0]["spec"].get("maxUnavailable") is None:
            problems.append(f"{where}: no PodDisruptionBudget with maxUnavailable")

    for name in ("collector", "api-gateway"):
        hpa = by_kind.get("HorizontalPodAutoscaler", {}).get(name)
        if not hpa or hpa.get("apiVersion") != "autoscaling/v2" or hpa["spec"].get("scaleTargetRef", {}).get("name") != name:
            problems.append(f"no autoscaling/v2 HorizontalPodAutoscaler for {name}")
    headless = [s for s in services.values() if s.get("spec", {}).get("clusterIP") == "None"
                and s["spec"].get("selector", {}).get("app.kubernetes.io/name") == "collector"
                and any(p.get("port") == 50051 for p in s["spec"].get("ports") or [])]
    if not headless:
        problems.append("no headless Service for the collector's gRPC port")
    policies = by_kind.get("NetworkPolicy", {}).values()
    if not any(p["spec"].get("podSelector") == {} and "Ingress" in p["spec"].get("policyTypes", []) and not p["spec"].get("ingress")
               for p in policies):
        problems.append("no default-deny ingress NetworkPolicy")
    report(f"deployment policy ({overlay}) [{len(deployments)} Deployments]", problems)


# ---------------------------------------------------------------- main

def main():
    os.chdir(ROOT)
    for overlay in OVERLAYS:
        rendered, err = render(overlay)
        if rendered is None:
            report(f"kubectl kustomize k8s/overlays/{overlay}", [err])
            continue
        check_validate(overlay, rendered)
        docs = [d for d in yaml.safe_load_all(rendered) if d]
        check_crds(overlay, docs)
        policy(overlay, docs)

    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_prometheusrule.py"), "--check"],
                          capture_output=True, text=True, check=False)
    report("PrometheusRule in sync with monitoring/prometheus/rules (gen_prometheusrule.py --check)",
           [] if proc.returncode == 0 else (proc.stdout + proc.stderr).strip().splitlines()[-15:])

    proc = subprocess.run([tool("yamllint"), "-f", "parsable", "-d", YAMLLINT_CONFIG, "k8s/"],
                          capture_output=True, text=True, check=False)
    report("yamllint k8s/", [] if proc.returncode == 0 else proc.stdout.strip().splitlines()[:30])

    if failures:
        print(f"\n{len(failures)} check(s) failed: " + "; ".join(failures))
        return 1
    print("\nall Kubernetes checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
