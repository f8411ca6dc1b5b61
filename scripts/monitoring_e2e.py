#!/usr/bin/env python3
"""The monitoring, end to end, with the real programs.

Starts the four services as separate processes (the workspace's debug
binaries, built by `cargo test --workspace`) over a temporary git repository,
a local fake DeepSeek, a real Prometheus loading monitoring/prometheus/ (an
overlay shortens the intervals and every `for:`) and a real Alertmanager with
monitoring/alertmanager/config.yml's routing tree whose receivers all post to
a webhook this script runs. Then checks that:

* every Grafana panel query returns data;
* Watchdog arrives at the dead-man receiver;
* killing a service (SIGKILL) makes ComponentDown fire in Prometheus and
  arrive, routed to the critical receiver, with its labels and runbook_url;
* restarting the service resolves it.

Exit status 0 when all hold; the failures are listed otherwise.
"""

import copy
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "target" / "debug"
MONITORING = ROOT / "monitoring"
HEARTBEAT = "500ms"
FAILURES = []


def log(message):
    print(f"monitoring_e2e: {message}", flush=True)


def fail(message):
    FAILURES.append(message)
    log(f"FAIL {message}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def which(*names):
    for name in names:
        for d in os.environ.get("PATH", "").split(":"):
            p = Path(d) / name
            if p.is_file() and os.access(p, os.X_OK):
                return str(p)
    sys.exit(f"monitoring_e2e: none of {names} is installed (make tools installs them)")


def until(what, limit, check, every=0.25):
    """Polls check() until it returns a true value, or fails after limit seconds."""
    deadline = time.monotonic() + limit
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (urllib.error.URLError, ConnectionError, OSError) as e:
            last = e
        time.sleep(every)
    fail(f"{what}: not within {limit}s (last: {last!r})")
    return None


# --- a fake DeepSeek ---------------------------------------------------------

def sse(obj):
    return f"data: {json.dumps(obj)}\n\n".encode()


class FakeDeepSeek(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply_json(self, body):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path.endswith("/models"):
            self.reply_json({"object": "list", "data": [{"id": "deepseek-chat", "object": "model", "owned_by": "deepseek"}]})
        elif self.path.endswith("/user/balance"):
            self.reply_json({"is_available": True, "balance_infos": [
                {"currency": "USD", "total_balance": "42.00", "granted_balance": "0", "topped_up_balance": "42.00"}]})
        else:
            self.send_error(404)

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        request = self.rfile.read(length)
        if b"out of money" in request:
            data = b'{"error":{"message":"Insufficient Balance"}}'
            self.send_response(402)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        base = {"id": "e2e", "object": "chat.completion.chunk", "model": "deepseek-chat"}
        body = b": keep-alive\n\n"
        body += sse({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
        body += sse({**base, "choices": [{"index": 0, "delta": {"content": "Because the parser drops empty input."}}]})
        body += sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        body += sse({**base, "choices": [], "usage": {
            "prompt_tokens": 30, "completion_tokens": 9, "total_tokens": 39,
            "prompt_cache_hit_tokens": 10, "prompt_cache_miss_tokens": 20,
            "completion_tokens_details": {"reasoning_tokens": 0}}})
        body += b"data: [DONE]\n\n"
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


# --- the webhook every receiver posts to --------------------------------------

NOTIFICATIONS = []
LOCK = threading.Lock()


class Webhook(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        with LOCK:
            NOTIFICATIONS.append((self.path.strip("/"), body))
        self.send_response(200)
        self.end_headers()


def notified(receiver=None, alertname=None, status=None, labels=None):
    """Alerts received so far matching the filters, as (receiver, alert)."""
    with LOCK:
        found = []
        for path, body in NOTIFICATIONS:
            for alert in body.get("alerts", []):
                if receiver and path != receiver:
                    continue
                if alertname and alert["labels"].get("alertname") != alertname:
                    continue
                if status and alert.get("status") != status:
                    continue
                if labels and any(alert["labels"].get(k) != v for k, v in labels.items()):
                    continue
                found.append((path, alert))
        return found


def serve(handler):
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# --- the platform -------------------------------------------------------------

TESTS = """#!/bin/sh
echo "running 2 tests"
echo "test parser::empty ... FAILED"
echo "test parser::ok ... ok"
echo "test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s"
exit 101
"""


def repository(tmp):
    repo = tmp / "repo"
    repo.mkdir()
    (repo / "run-tests.sh").write_text(TESTS)
    (repo / "PLAN.md").write_text("# Plan\n\n- [x] one\n- [ ] two ⏳\n- [ ] three\n")
    # A plan that is not UTF-8: the audit's markdown error, for the error panels.
    (repo / "BROKEN.md").write_bytes(b"- [x] done \xff\xfe\n")
    (repo / "lcov.info").write_text("SF:src/lib.rs\nDA:1,1\nDA:2,0\nDA:3,1\nDA:4,1\nend_of_record\n")
    env = {**os.environ, "GIT_AUTHOR_NAME": "e2e", "GIT_AUTHOR_EMAIL": "e2e@example.test",
           "GIT_COMMITTER_NAME": "e2e", "GIT_COMMITTER_EMAIL": "e2e@example.test"}
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "start"]):
        subprocess.run(["git", *args], cwd=repo, env=env, check=True)
    return repo


class Service:
    def __init__(self, name, env, logs):
        self.name, self.env, self.logs = name, env, logs
        self.grpc, self.http = free_port(), free_port()
        self.process = None

    def start(self):
        binary = BIN / self.name
        if not binary.is_file():
            sys.exit(f"monitoring_e2e: {binary} is missing; build the workspace first (cargo build --workspace)")
        env = {"PATH": os.environ.get("PATH", ""), "GRPC_LISTEN": f"127.0.0.1:{self.grpc}",
               "HTTP_LISTEN": f"127.0.0.1:{self.http}", "INSTANCE": f"{self.name}-e2e",
               "OTLP_GRPC_LISTEN": "127.0.0.1:0", "OTLP_HTTP_LISTEN": "127.0.0.1:0",
               "HEARTBEAT_INTERVAL": HEARTBEAT, "SHUTDOWN_DELAY": "0s", **self.env}
        out = open(self.logs / f"{self.name}.log", "ab")
        self.process = subprocess.Popen([str(binary)], env=env, stdout=out, stderr=subprocess.STDOUT)

    def stop(self, sig=signal.SIGTERM):
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def get_json(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)


# --- overlays ------------------------------------------------------------------

def prometheus_overlay(tmp, collector_http, prom_port, am_port):
    config = yaml.safe_load((MONITORING / "prometheus" / "prometheus.yml").read_text())
    config.setdefault("global", {}).update(
        {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"})
    for job in config.get("scrape_configs", []):
        job["scrape_interval"] = "1s"
        job.pop("scrape_timeout", None)
        target = f"127.0.0.1:{collector_http}" if job["job_name"] == "collector" else f"127.0.0.1:{prom_port}"
        job["static_configs"] = [{"targets": [target]}]
        job.pop("kubernetes_sd_configs", None)
    config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]}
    rules_dir = tmp / "rules"
    rules_dir.mkdir()
    for path in sorted((MONITORING / "prometheus" / "rules").glob("*.yml")):
        rules = yaml.safe_load(path.read_text())
        for group in rules.get("groups", []):
            group["interval"] = "1s"
            for rule in group.get("rules", []):
                if "alert" in rule and "for" in rule:
                    rule["for"] = "2s"
        (rules_dir / path.name).write_text(yaml.safe_dump(rules, sort_keys=False))
    config["rule_files"] = [str(rules_dir / "*.yml")]
    out = tmp / "prometheus.yml"
    out.write_text(yaml.safe_dump(config, sort_keys=False))
    return out


def alertmanager_overlay(tmp, webhook_port):
    config = yaml.safe_load((MONITORING / "alertmanager" / "config.yml").read_text())
    config["global"] = {"resolve_timeout": "5m"}  # no secret files here
    for receiver in config.get("receivers", []):
        name = receiver["name"]
        for key in list(receiver):
            if key.endswith("_configs"):
                del receiver[key]
        receiver["webhook_configs"] = [{"url": f"http://127.0.0.1:{webhook_port}/{name}", "send_resolved": True}]

    def quick(route):
        for key, value in (("group_wait", "1s"), ("group_interval", "1s"), ("repeat_interval", "1m")):
            if key in route or route is config["route"]:
                route[key] = value
        for child in route.get("routes", []):
            quick(child)

    quick(config["route"])
    config.pop("templates", None)
    out = tmp / "alertmanager.yml"
    out.write_text(yaml.safe_dump(config, sort_keys=False))
    return out


# --- dashboards ----------------------------------------------------------------

def panel_queries():
    """(dashboard, panel title, exprs) for every panel with queries. A panel
    that breaks a figure down (errors by kind) next to its total (with
    `or vector(0)`) shows data when any of its queries has some."""
    found = []
    for path in sorted((MONITORING / "grafana" / "dashboards").glob("*.json")):
        board = json.loads(path.read_text())

        def walk(panels):
            for panel in panels:
                walk(panel.get("panels", []))
                exprs = [t["expr"] for t in panel.get("targets", []) if t.get("expr")]
                if exprs:
                    found.append((path.name, panel.get("title", "?"), exprs))

        walk(board.get("panels", []))
    return found


def concrete(expr, window="15s"):
    """A panel expression as Prometheus takes it: Grafana's interval macros
    become `window`, template variables match everything."""
    expr = expr.replace("$__rate_interval", window).replace("$__interval", window).replace("$__range", "1h")
    return re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*(?::[a-z]+)?\}?", ".*", expr)


# --- the run --------------------------------------------------------------------

def main():
    prometheus = which("prometheus")
    alertmanager = which("alertmanager", "prometheus-alertmanager")
    tmp = Path(tempfile.mkdtemp(prefix="monitoring-e2e-"))
    logs = tmp / "logs"
    logs.mkdir()
    repo = repository(tmp)
    upstream = serve(FakeDeepSeek)
    webhook = serve(Webhook)
    processes = []
    try:
        collector = Service("collector", {"SWEEP_INTERVAL": "100ms"}, logs)
        endpoint = {"COLLECTOR_ENDPOINT": f"http://127.0.0.1:{collector.grpc}"}
        gateway = Service("api-gateway", {**endpoint,
                                          "DEEPSEEK_BASE_URL": f"http://127.0.0.1:{upstream.server_port}",
                                          "DEEPSEEK_API_KEY": "sk-e2e", "BALANCE_INTERVAL": "1s",
                                          "UPSTREAM_CHECK_INTERVAL": "1s"}, logs)
        watcher = Service("test-watcher", {**endpoint, "WATCH_ROOT": str(repo), "RUN_ON_START": "true",
                                           "TEST_COMMAND": "sh run-tests.sh",
                                           "GATEWAY_ENDPOINT": f"http://127.0.0.1:{gateway.grpc}"}, logs)
        audit = Service("audit-agent", {**endpoint, "REPO_PATH": str(repo), "AUDIT_INTERVAL": "2s",
                                        "DATABASE_PATH": str(tmp / "audit.db")}, logs)
        services = [collector, gateway, watcher, audit]
        for s in services:
            s.start()
            processes.append(s)

        prom_port, am_port = free_port(), free_port()
        prom_config = prometheus_overlay(tmp, collector.http, prom_port, am_port)
        am_config = alertmanager_overlay(tmp, webhook.server_port)
        am = subprocess.Popen([alertmanager, f"--config.file={am_config}", f"--storage.path={tmp / 'am'}",
                               f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address="],
                              stdout=open(logs / "alertmanager.log", "ab"), stderr=subprocess.STDOUT)
        prom = subprocess.Popen([prometheus, f"--config.file={prom_config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                                 f"--web.listen-address=127.0.0.1:{prom_port}"],
                                stdout=open(logs / "prometheus.log", "ab"), stderr=subprocess.STDOUT)
        api = f"http://127.0.0.1:{prom_port}/api/v1"
        time.sleep(1)
        for name, proc in (("prometheus", prom), ("alertmanager", am)):
            if proc.poll() is not None:
                log_text = (logs / f"{name}.log").read_text()[-2000:]
                sys.exit(f"monitoring_e2e: {name} did not start:\n{log_text}")

        def query(expr):
            return get_json(f"{api}/query?" + urllib.parse.urlencode({"query": expr}))["data"]["result"]

        until("Prometheus scraping the collector", 60,
              lambda: any(r["value"][1] == "1" for r in query('up{job="collector"}')))
        until("all four components up", 60,
              lambda: len([r for r in query("automation_component_up == 1")]) >= 4)

        # Some gateway traffic, through the real client.
        for prompt in ("Why does parser::empty fail?", "And now?", "When we are out of money?"):
            subprocess.run([str(BIN / "automationctl"), f"--gateway=http://127.0.0.1:{gateway.grpc}",
                            "chat", prompt], check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)

        # Every panel query returns data.
        queries = panel_queries()
        if not queries:
            fail("no dashboard panel queries found")
        missing = {}

        def all_have_data():
            missing.clear()
            for board, title, exprs in queries:
                try:
                    if not any(query(concrete(expr)) for expr in exprs):
                        missing[(board, title)] = " | ".join(exprs)
                except urllib.error.HTTPError as e:
                    missing[(board, title)] = f"{exprs}: HTTP {e.code} {e.read()[:200]!r}"
            return not missing

        if not until("every panel query returning data", 90, all_have_data, every=2):
            for (board, title), expr in sorted(missing.items()):
                fail(f"{board} / {title}: no data for {expr}")
        else:
            log(f"ok: all {len(queries)} panels show data")

        if until("Watchdog at the dead-man receiver", 60,
                 lambda: [n for n in notified(alertname="Watchdog") if "dead" in n[0]]):
            log("ok: Watchdog arrives at the dead-man receiver")

        # Down: SIGKILL says no goodbye.
        audit.stop(signal.SIGKILL)
        firing = until("ComponentDown firing in Prometheus", 60, lambda: [
            a for a in get_json(f"{api}/alerts")["data"]["alerts"]
            if a["labels"].get("alertname") == "ComponentDown" and a["labels"].get("component") == "audit-agent"
            and a["state"] == "firing"])
        if firing:
            log("ok: ComponentDown fires in Prometheus")
        arrived = until("ComponentDown at the webhook", 60, lambda: notified(
            alertname="ComponentDown", status="firing", labels={"component": "audit-agent"}))
        if arrived:
            receiver, alert = arrived[0]
            if alert["labels"].get("severity") != "critical":
                fail(f"ComponentDown severity is {alert['labels'].get('severity')!r}, not critical")
            if "pagerduty" not in receiver:
                fail(f"ComponentDown went to {receiver!r}, not the PagerDuty receiver")
            # runbook_url is '{{ $externalLabels.runbook_base }}<page>.md': the
            # base is the external label of the configuration Prometheus runs
            # with (prometheus.yml's, kept by the overlay).
            runbook = alert.get("annotations", {}).get("runbook_url", "")
            base = ((yaml.safe_load(prom_config.read_text()).get("global") or {})
                    .get("external_labels") or {}).get("runbook_base")
            if not base:
                fail(f"the Prometheus configuration {prom_config} has no external label runbook_base")
            elif runbook != base + "component-down.md":
                fail(f"ComponentDown runbook_url is {runbook!r}, not {base + 'component-down.md'!r}")
            if not (ROOT / "docs" / "runbooks" / "component-down.md").is_file():
                fail("the runbook docs/runbooks/component-down.md does not exist")
            log(f"ok: ComponentDown arrives at {receiver} with severity, component and runbook_url")

        # Restarted: resolved.
        audit.start()
        if until("ComponentDown resolved at the webhook", 90, lambda: notified(
                alertname="ComponentDown", status="resolved", labels={"component": "audit-agent"})):
            log("ok: restarting the service resolves ComponentDown")
    finally:
        for p in processes:
            p.stop()
        for name in ("prom", "am"):
            proc = locals().get(name)
            if proc and proc.poll() is None:
                proc.terminate()
                proc.wait(10)
        upstream.shutdown()
        webhook.shutdown()
    if FAILURES:
        log(f"{len(FAILURES)} failure(s); logs in {logs}")
        for f in FAILURES:
            print(f"  - {f}")
        sys.exit(1)
    log("all checks passed")


if __name__ == "__main__":
    main()
