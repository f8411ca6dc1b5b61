#!/usr/bin/env python3
"""Offline checks of the Kubernetes manifests (run by `make test`).

1. `kubectl kustomize` of k8s/overlays/{dev,prod}, each piped into
   `kubernetes-validate --strict -` (which skips custom resources).
2. Every custom resource (ServiceMonitor, PrometheusRule, ExternalSecret, and
   any kind kubernetes-validate skips) against its CRD schema in
   k8s/schemas/<group>/<kind>_<version>.json with check-jsonschema; a custom
   resource without a schema there fails.
3. A policy test on both rendered overlays: gRPC probes, resources, security
   fields, shutdown timing, no replicas where an HPA scales, the gateway's
   rollout within the account's limits, the test-watcher's Recreate strategy,
   ephemeral storage where git-sync fills an emptyDir, the audit-agent's
   single writer, per-service auth
   Secrets and their ExternalSecrets (remote keys of the overlay's own
   environment), NetworkPolicies (egress, operator and gateway clients), no
   plain Secret, and (prod) auth required and pinned image tags.
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
SCHEMAS = ROOT / "k8s" / "schemas"
OVERLAYS = ["dev", "prod"]
YAMLLINT_CONFIG = "{extends: default, rules: {line-length: {max: 160}, document-start: disable, truthy: {check-keys: false}}}"

# DESIGN §3: each service's gRPC port (probed) and HTTP admin port.
SERVICES = {
    # Besides DESIGN §3's two, the collector takes OTLP (<KIND>_LISTEN).
    "collector": {"grpc": 50051, "http": 9400, "otlp_grpc": 4317, "otlp_http": 4318},
    "test-watcher": {"grpc": 50052, "http": 9401},
    "audit-agent": {"grpc": 50053, "http": 9402},
    "api-gateway": {"grpc": 50054, "http": 9403},
}
REPORTERS = ["test-watcher", "audit-agent", "api-gateway"]
# Kinds that must be present (and are checked against k8s/schemas).
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule", "ExternalSecret"}
# Shutdown (DESIGN §7): after SHUTDOWN_DELAY + SHUTDOWN_GRACE (+ KILL_GRACE
# where a test run may still be going) a reporter's goodbye flush may take
# REPORTER_FLUSH; terminationGracePeriodSeconds keeps SHUTDOWN_MARGIN more.
REPORTER_FLUSH = 5
SHUTDOWN_MARGIN = 10
# Remote keys each overlay may read from the secret store.
SECRET_KEY_PREFIX = {"dev": "automation/dev/", "prod": "automation/prod/"}
AUTH_MOUNT = "/var/run/secrets/automation/auth"
OPERATOR_LABEL = "automation.example.com/operator-client"
GATEWAY_CLIENT_LABEL = "automation.example.com/gateway-client"
# Egress each service may have (DNS, the services it calls, the outside).
# OTLP (4317, 4318) is the traces' way out to Jaeger (k8s/components/tracing).
OTLP_OUT = {4317, 4318}
EGRESS_PORTS = {
    "collector": {53} | OTLP_OUT,
    "test-watcher": {53, 50051, 50054, 443, 22} | OTLP_OUT,
    "audit-agent": {53, 50051, 443, 22} | OTLP_OUT,
    "api-gateway": {53, 50051, 443} | OTLP_OUT,
}
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


def report(name, problems):
    if problems:
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
    return set(skipped)


def shown(path):
    """A path relative to the repository where it lies inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def is_custom(doc, skipped_kinds):
    """A custom resource: one kubernetes-validate skipped, or of an API group
    that is neither core nor *.k8s.io (the built-in groups)."""
    group = doc.get("apiVersion", "").rpartition("/")[0]
    return doc.get("kind") in skipped_kinds or ("." in group and not group.endswith(".k8s.io"))


def check_crds(overlay, docs, skipped_kinds):
    name = f"CRD schemas from k8s/schemas ({overlay})"
    problems = []
    checked = 0
    if not SCHEMAS.is_dir():
        problems.append(f"{shown(SCHEMAS)} not found: custom resources cannot be checked")
    with tempfile.TemporaryDirectory() as tmp:
        for i, doc in enumerate(docs):
            kind = doc.get("kind")
            if not is_custom(doc, skipped_kinds):
                continue
            group, _, version = doc.get("apiVersion", "").rpartition("/")
            schema = SCHEMAS / group / f"{kind.lower()}_{version}.json"
            ident = f"{kind}/{doc.get('metadata', {}).get('name')}"
            if not schema.exists():
                problems.append(f"{ident}: no schema {shown(schema)}")
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


def parse_quantity(value):
    """A Kubernetes quantity (`20Gi`, `512Mi`, `1G`, `100`) in bytes, or None."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?", str(value).strip())
    if not m:
        return None
    scale = {None: 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
             "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}[m.group(2)]
    return float(m.group(1)) * scale


def selects(selector, labels):
    """Whether a label selector (matchLabels, matchExpressions) selects labels."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


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


# What each service's auth Secret may read from the store (suffixes of
# remoteRef.key after the overlay's prefix): a server gets only the tokens
# it accepts, a client only its own token. The test-watcher runs the
# repository's code, so it never holds another client's or the shared
# operators' tokens.
AUTH_REMOTE_KEYS = {
    "collector-auth": {"auth/test-watcher", "auth/audit-agent", "auth/api-gateway", "auth/otlp-clients"},
    "test-watcher-auth": {"auth/test-watcher", "auth/test-watcher-operators"},
    "audit-agent-auth": {"auth/audit-agent", "auth/operators"},
    "api-gateway-auth": {"auth/api-gateway", "auth/test-watcher", "auth/operators", "auth/gateway-clients"},
}


def secret_files(by_kind, secret_name):
    """The keys (mounted file names) of the Secret an ExternalSecret makes,
    or None when no ExternalSecret makes it."""
    for es in by_kind.get("ExternalSecret", {}).values():
        target = es.get("spec", {}).get("target") or {}
        if target.get("name", es["metadata"]["name"]) != secret_name:
            continue
        template = (target.get("template") or {}).get("data")
        return set(template) if template else {d.get("secretKey") for d in es["spec"].get("data") or []}
    return None


def auth_problems(overlay, name, main, env, volumes, by_kind):
    """Each service mounts its own auth Secret; its token files name keys
    that Secret has; prod sets every token file the service needs."""
    where = f"Deployment {name}"
    problems = []
    mounts = {m.get("mountPath"): m for m in main.get("volumeMounts") or []}
    auth = volumes.get((mounts.get(AUTH_MOUNT) or {}).get("name"), {}).get("secret")
    if auth is None:
        problems.append(f"{where}: no Secret volume at {AUTH_MOUNT}")
    elif auth.get("secretName") != f"{name}-auth":
        problems.append(f"{where}: mounts Secret {auth.get('secretName')!r} at {AUTH_MOUNT}, want its own {name}-auth")
    wanted = ["AUTH_TOKEN_FILE"]
    wanted += ["COLLECTOR_TOKEN_FILE"] if name in REPORTERS else []
    wanted += ["GATEWAY_TOKEN_FILE"] if name == "test-watcher" else []
    for var in wanted:
        if overlay == "prod" and not env.get(var):
            problems.append(f"{where}: {var} unset in prod (auth required)")
    files = {var: str(value) for var, value in env.items() if var.endswith("_TOKEN_FILE") and value}
    for var, path in files.items():
        folder, _, file = path.rpartition("/")
        volume = volumes.get((mounts.get(folder) or {}).get("name"), {}).get("secret")
        keys = secret_files(by_kind, volume.get("secretName")) if volume else None
        if volume is None:
            problems.append(f"{where}: {var} {path} is not in a mounted Secret")
        elif keys is None:
            problems.append(f"{where}: no ExternalSecret makes Secret {volume.get('secretName')} ({var})")
        elif file not in keys:
            problems.append(f"{where}: {var} {path}: Secret {volume.get('secretName')} has no key {file!r} (has {sorted(keys)})")
    accepted = files.get("AUTH_TOKEN_FILE")
    for var, path in files.items():
        if var != "AUTH_TOKEN_FILE" and path == accepted:
            problems.append(f"{where}: {var} is the accepted-tokens file: a client sends its own token")
    return problems


def template_refs(text):
    """The data keys a Go template reads: `.name` anywhere in an action (not a
    field of a variable or of a call's result) and `index . "name"`."""
    actions = re.findall(r"{{(.*?)}}", text, re.S)
    fields = {name for action in actions for name in re.findall(r'(?<![\w$)"])\.(\w+)', action)}
    return fields | set(re.findall(r'index\s+\.\s+"([^"]+)"', text))


def externalsecret_problems(overlay, by_kind):
    problems = []
    prefix = SECRET_KEY_PREFIX[overlay]
    for name, es in by_kind.get("ExternalSecret", {}).items():
        where = f"ExternalSecret {name}"
        spec = es.get("spec", {})
        data = spec.get("data") or []
        keys = [(d.get("remoteRef") or {}).get("key", "") for d in data]
        keys += [(d.get("extract") or d.get("find") or {}).get("key", "") for d in spec.get("dataFrom") or []]
        for key in keys:
            if not key.startswith(prefix):
                problems.append(f"{where}: remote key {key!r} is not under {prefix} ({overlay} reads its own keys)")
        secret_keys = {d.get("secretKey") for d in data}
        template = (spec.get("target", {}).get("template") or {}).get("data") or {}
        if template:
            used = set().union(*(template_refs(str(t)) for t in template.values()))
            if used - secret_keys:
                problems.append(f"{where}: the template reads {sorted(used - secret_keys)}, not in spec.data")
            if secret_keys - used:
                problems.append(f"{where}: fetches {sorted(secret_keys - used)} that the template does not use")
        target = spec.get("target", {}).get("name", name)
        if target in AUTH_REMOTE_KEYS:
            got = {k[len(prefix):] for k in keys if k.startswith(prefix)}
            if got != AUTH_REMOTE_KEYS[target]:
                problems.append(f"{where}: reads {sorted(got)}, want exactly {sorted(AUTH_REMOTE_KEYS[target])}")
    for target in AUTH_REMOTE_KEYS:
        if secret_files(by_kind, target) is None:
            problems.append(f"no ExternalSecret makes Secret {target}")
    return problems


def networkpolicy_problems(deployments, by_kind):
    """Every service's egress is isolated and limited to its ports; operator
    clients (any namespace) reach every gRPC port, gateway clients the
    gateway."""
    problems = []
    policies = list(by_kind.get("NetworkPolicy", {}).values())

    def admits(rule, label):
        return any(peer.get("namespaceSelector") == {} and
                   (peer.get("podSelector") or {}).get("matchLabels") == {label: "true"}
                   for peer in rule.get("from") or [])

    for name, ports in SERVICES.items():
        dep = deployments.get(name)
        if dep is None:
            continue
        labels = dep.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {})
        mine = [p for p in policies if selects(p.get("spec", {}).get("podSelector"), labels)]
        egress = [p for p in mine if "Egress" in p["spec"].get("policyTypes", [])]
        if not egress:
            problems.append(f"{name}: no Egress NetworkPolicy selects it (egress open)")
        for p in egress:
            for rule in p["spec"].get("egress") or []:
                if not rule.get("ports"):
                    problems.append(f"NetworkPolicy {p['metadata']['name']}: an egress rule for {name} without ports")
                extra = {q.get("port") for q in rule.get("ports") or []} - EGRESS_PORTS[name]
                if extra:
                    problems.append(f"NetworkPolicy {p['metadata']['name']}: {name} egress to ports {sorted(extra)},"
                                    f" allowed {sorted(EGRESS_PORTS[name])}")
        ingress_rules = [r for p in mine if "Ingress" in p["spec"].get("policyTypes", [])
                         for r in p["spec"].get("ingress") or []]
        wanted = [OPERATOR_LABEL] + ([GATEWAY_CLIENT_LABEL] if name == "api-gateway" else [])
        for label in wanted:
            if not any(admits(r, label) and ports["grpc"] in {q.get("port") for q in r.get("ports") or []}
                       for r in ingress_rules):
                problems.append(f"{name}: no ingress to {ports['grpc']} from pods labelled {label}=true in any namespace")
    return problems


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

        # Ephemeral storage is accounted per pod, emptyDirs included: where
        # limits are set, together they must hold the emptyDirs' sizeLimits.
        eph_limits = [((c.get("resources") or {}).get("limits") or {}).get("ephemeral-storage") for _, c in all_containers]
        if any(eph_limits):
            sized = [v["emptyDir"].get("sizeLimit") for v in volumes.values()
                     if "emptyDir" in v and (v["emptyDir"] or {}).get("medium") != "Memory"]
            values = [parse_quantity(q) for q in sized + [q for q in eph_limits if q]]
            if None in values or None in sized:
                problems.append(f"{where}: an emptyDir without sizeLimit, or an unreadable quantity, next to ephemeral-storage limits")
            else:
                need, have = sum(values[:len(sized)]), sum(values[len(sized):])
                if have < need:
                    problems.append(f"{where}: ephemeral-storage limits total {have / 2**30:.2f}Gi,"
                                    f" less than the emptyDirs' sizeLimits {need / 2**30:.2f}Gi")

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
        if not set(ports.values()) <= declared:
            missing = sorted(set(ports.values()) - declared)
            problems.append(f"{where}: container ports {sorted(declared)} lack {missing}")

        env = container_env(main, configmaps)
        if env.get("LOG_FORMAT") != "json":
            problems.append(f"{where}: LOG_FORMAT is {env.get('LOG_FORMAT')!r}, want 'json'")
        inst = env.get("INSTANCE")
        if not (isinstance(inst, dict) and (inst.get("fieldRef") or {}).get("fieldPath") == "metadata.name"):
            problems.append(f"{where}: INSTANCE is not the pod name (fieldRef metadata.name)")
        if env.get("GRPC_LISTEN") and not str(env["GRPC_LISTEN"]).endswith(f":{ports['grpc']}"):
            problems.append(f"{where}: GRPC_LISTEN {env['GRPC_LISTEN']} is not port {ports['grpc']}")
        # The binaries' defaults where the ConfigMap leaves a value out.
        delay = parse_seconds(env.get("SHUTDOWN_DELAY", "5s"))
        grace = parse_seconds(env.get("SHUTDOWN_GRACE", "20s"))
        kill = parse_seconds(env.get("KILL_GRACE", "5s")) if name == "test-watcher" else 0
        flush = REPORTER_FLUSH if name in REPORTERS else 0
        tgps = pod.get("terminationGracePeriodSeconds", 30)
        if delay is None or grace is None or kill is None:
            problems.append(f"{where}: SHUTDOWN_DELAY/SHUTDOWN_GRACE/KILL_GRACE unparsable")
        elif tgps < delay + grace + kill + flush + SHUTDOWN_MARGIN:
            parts = f"SHUTDOWN_DELAY {delay:g} + SHUTDOWN_GRACE {grace:g}"
            parts += f" + KILL_GRACE {kill:g}" if kill else ""
            parts += f" + goodbye flush {flush:g}" if flush else ""
            problems.append(f"{where}: terminationGracePeriodSeconds {tgps} < {parts} + margin {SHUTDOWN_MARGIN}"
                            f" = {delay + grace + kill + flush + SHUTDOWN_MARGIN:g}")

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
            # The checkout (and the test-watcher's builds) live in emptyDirs:
            # the scheduler must know the pod needs that much disk.
            for c in (main, sidecar) if sidecar else (main,):
                res = c.get("resources") or {}
                for key in ("requests", "limits"):
                    if not (res.get(key) or {}).get("ephemeral-storage"):
                        problems.append(f"{where}: {c['name']} has no ephemeral-storage in {key}"
                                        " (its emptyDirs hold the checkout)")
        if name == "test-watcher":
            for var in ("CARGO_HOME", "CARGO_TARGET_DIR"):
                if env.get(var) not in mounts:
                    problems.append(f"{where}: {var} {env.get(var)!r} is not a mounted volume")
            labels = spec.get("template", {}).get("metadata", {}).get("labels", {})
            if labels.get(GATEWAY_CLIENT_LABEL) != "true":
                problems.append(f"{where}: lacks the gateway-client label")
            # One replica: a rolling update would run two builds at once.
            if (spec.get("strategy") or {}).get("type") != "Recreate":
                problems.append(f"{where}: strategy is not Recreate")
        if name == "api-gateway":
            if not env.get("DEEPSEEK_API_KEY_FILE"):
                problems.append(f"{where}: no DEEPSEEK_API_KEY_FILE")
            # Per-pod limits are the account's divided by maxReplicas: a
            # surge pod during a rollout would exceed the account's limits.
            rolling = (spec.get("strategy") or {}).get("rollingUpdate") or {}
            if (spec.get("strategy") or {}).get("type", "RollingUpdate") == "RollingUpdate" and rolling.get("maxSurge") != 0:
                problems.append(f"{where}: rollingUpdate.maxSurge is {rolling.get('maxSurge')!r}, want 0 (per-pod limits = account / maxReplicas)")
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
        problems += auth_problems(overlay, name, main, env, volumes, by_kind)
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
    # The HPA owns the scale: spec.replicas in the manifest would reset it
    # on every apply.
    for hpa_name, hpa in by_kind.get("HorizontalPodAutoscaler", {}).items():
        ref = hpa.get("spec", {}).get("scaleTargetRef", {})
        dep = deployments.get(ref.get("name")) if ref.get("kind") == "Deployment" else None
        if dep is not None and "replicas" in dep.get("spec", {}):
            problems.append(f"Deployment {ref['name']}: sets spec.replicas but HorizontalPodAutoscaler {hpa_name} scales it")
    problems += externalsecret_problems(overlay, by_kind)
    problems += networkpolicy_problems(deployments, by_kind)
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

KUBECTL_MISSING = ("check_k8s: kubectl not found: install the kubectl package (apt-get install kubectl, from the"
                   " Kubernetes apt repository pkgs.k8s.io) or put a kubectl binary on PATH; the overlays are"
                   " rendered with `kubectl kustomize`")


def main():
    os.chdir(ROOT)
    if shutil.which("kubectl") is None:
        print(KUBECTL_MISSING, file=sys.stderr)
        return 1
    for overlay in OVERLAYS:
        rendered, err = render(overlay)
        if rendered is None:
            report(f"kubectl kustomize k8s/overlays/{overlay}", [err])
            continue
        skipped_kinds = check_validate(overlay, rendered)
        docs = [d for d in yaml.safe_load_all(rendered) if d]
        check_crds(overlay, docs, skipped_kinds)
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
