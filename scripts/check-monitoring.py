#!/usr/bin/env python3
"""Consistency checks of monitoring/ against the code and the real tools.

* promtool check config / check rules / test rules pass;
* every metric named in a rule or a dashboard panel exists in the metric
  catalog the collector prints (`collector catalog`: the code, not a copy),
  or is a recording rule defined here, or one of Prometheus' own series;
* every panel expression parses (promtool, as a recording rule);
* every alert has severity, summary, description, a `for:` (Watchdog
  excepted) and a runbook_url of the form
  '{{ $externalLabels.runbook_base }}<page>.md' whose page exists under
  docs/runbooks/;
* the external label `runbook_base` is set, to a .../docs/runbooks/ URL, in
  prometheus.yml and, with the same value, in the compose file's inline
  Prometheus configuration; every test group expecting a runbook_url sets it
  too (promtool takes external labels per test group);
* every dashboard has a stable uid, a datasource variable, a unit on every
  panel, and `$__rate_interval` in every rate;
* the Alertmanager checks (monitoring/alertmanager/tests.sh) pass.
"""

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
MON = ROOT / "monitoring"
RUNBOOKS = ROOT / "docs" / "runbooks"
# Every rule's runbook_url: the base comes from the evaluating Prometheus'
# external label `runbook_base` (set once in prometheus.yml).
RUNBOOK_URL = re.compile(r"^\{\{ \$externalLabels\.runbook_base \}\}(?P<page>[a-z0-9][a-z0-9-]*\.md)$")
PROMETHEUS_OWN = {"up", "ALERTS", "ALERTS_FOR_STATE", "scrape_duration_seconds",
                  "scrape_samples_scraped", "scrape_series_added", "scrape_samples_post_metric_relabeling"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
            "bool", "offset", "inf", "nan", "Inf", "NaN", "atan2"}
problems = []


def concrete(expr, window):
    """A panel expression as Prometheus takes it: Grafana's interval macros
    become `window`, template variables match everything (as
    crates/stack/tests/monitoring.rs sends the panel queries)."""
    expr = expr.replace("$__rate_interval", window).replace("$__interval", window).replace("$__range", "1h")
    return re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*(?::[a-z]+)?\}?", ".*", expr)


def problem(message):
    problems.append(message)
    print(f"check-monitoring: {message}", file=sys.stderr)


def run(args, what):
    result = subprocess.run(args, capture_output=True, text=True)
    if result.returncode != 0:
        problem(f"{what} failed:\n{result.stdout}{result.stderr}")
    else:
        print(f"check-monitoring: ok: {what}")
    return result


def metric_names(expr):
    """The series names a PromQL expression selects."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\b\d+(?:ms|s|m|h|d|w|y)\b", " ", e)
    e = re.sub(r"(?<![A-Za-z0-9_:])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?", " ", e)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        rest = e[m.end():].lstrip()
        if rest.startswith("("):
            continue
        if m.group(0) in KEYWORDS:
            continue
        names.add(m.group(0))
    return names


def runbook_bases():
    """runbook_base of prometheus.yml and of the compose file's inline config."""
    prom = yaml.safe_load((MON / "prometheus" / "prometheus.yml").read_text()) or {}
    base = (prom.get("global") or {}).get("external_labels", {}).get("runbook_base")
    if not base or not str(base).endswith("/docs/runbooks/"):
        problem(f"prometheus.yml: external label runbook_base is {base!r}, "
                "not the URL of the repository's docs/runbooks/ (with the trailing slash)")
    compose = yaml.safe_load((MON / "docker-compose.monitoring.yml").read_text()) or {}
    content = compose.get("configs", {}).get("prometheus_config", {}).get("content", "")
    inline = ((yaml.safe_load(content) or {}).get("global") or {}).get("external_labels", {}).get("runbook_base")
    if inline != base:
        problem(f"docker-compose.monitoring.yml: the inline Prometheus configuration's runbook_base is "
                f"{inline!r}, not prometheus.yml's {base!r}")


def main():
    catalog = json.loads(subprocess.run(
        ["cargo", "run", "--quiet", "--locked", "-p", "automation-collector", "--bin", "collector", "--", "catalog"],
        cwd=ROOT, capture_output=True, text=True, check=True).stdout)
    known = set()
    for metric in catalog["metrics"]:
        known.add(metric["name"])
        if metric["type"] == "histogram":
            known.update(metric["name"] + s for s in ("_bucket", "_sum", "_count"))

    rule_files = sorted((MON / "prometheus" / "rules").glob("*.yml"))
    test_files = sorted((MON / "prometheus" / "tests").glob("*.yml"))
    if not rule_files:
        problem("no rule files in monitoring/prometheus/rules")
    run(["promtool", "check", "config", str(MON / "prometheus" / "prometheus.yml")], "promtool check config")
    run(["promtool", "check", "rules", *map(str, rule_files)], "promtool check rules")
    run(["promtool", "test", "rules", *map(str, test_files)], "promtool test rules")

    recorded, exprs, alerts = set(), [], []
    for path in rule_files:
        for group in (yaml.safe_load(path.read_text()) or {}).get("groups", []):
            for rule in group.get("rules", []):
                if "record" in rule:
                    recorded.add(rule["record"])
                else:
                    alerts.append((path.name, rule))
                exprs.append((f"{path.name}: {rule.get('record') or rule.get('alert')}", str(rule["expr"])))

    runbook_bases()
    tested = set()
    for path in test_files:
        for case in (yaml.safe_load(path.read_text()) or {}).get("tests", []):
            base = (case.get("external_labels") or {}).get("runbook_base")
            for a in case.get("alert_rule_test", []):
                tested.add((a["alertname"], bool(a.get("exp_alerts"))))
                for exp in a.get("exp_alerts") or []:
                    url = (exp.get("exp_annotations") or {}).get("runbook_url")
                    if url is None:
                        continue
                    if not base or not url.startswith(base):
                        problem(f"{path.name} / {case.get('name')}: expects runbook_url {url!r}, which does "
                                f"not start with the group's external_labels.runbook_base ({base!r})")
                    elif not (RUNBOOKS / url[len(base):]).is_file():
                        problem(f"{path.name} / {case.get('name')}: expects a runbook_url to "
                                f"docs/runbooks/{url[len(base):]}, which does not exist")
    for source, rule in alerts:
        name = rule["alert"]
        labels, notes = rule.get("labels", {}), rule.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            if not notes.get(key):
                problem(f"{source}: {name} has no {key}")
        if not labels.get("severity"):
            problem(f"{source}: {name} has no severity")
        if "for" not in rule and name != "Watchdog":
            problem(f"{source}: {name} has no for:")
        url = str(notes.get("runbook_url", ""))
        match = RUNBOOK_URL.match(url)
        if not match:
            problem(f"{source}: {name}'s runbook_url {url!r} is not "
                    "'{{ $externalLabels.runbook_base }}<page>.md'")
        elif not (RUNBOOKS / match["page"]).is_file():
            problem(f"{source}: {name}'s runbook docs/runbooks/{match['page']} does not exist")
        if (name, True) not in tested:
            problem(f"{name}: no promtool test case where it fires")
        if (name, False) not in tested and name != "Watchdog":
            problem(f"{name}: no promtool test case where it must not fire")

    panels = []
    boards = sorted((MON / "grafana" / "dashboards").glob("*.json"))
    uids = {}
    for path in boards:
        board = json.loads(path.read_text())
        uid = board.get("uid")
        if not uid or uid in uids:
            problem(f"{path.name}: missing or duplicate uid {uid!r}")
        uids[uid] = path.name
        variables = board.get("templating", {}).get("list", [])
        if not any(v.get("type") == "datasource" for v in variables):
            problem(f"{path.name}: no datasource variable")

        def walk(items):
            for panel in items:
                if panel.get("type") == "row":
                    walk(panel.get("panels", []))
                    continue
                title = panel.get("title", "?")
                if panel.get("targets") and not panel.get("fieldConfig", {}).get("defaults", {}).get("unit"):
                    problem(f"{path.name} / {title}: no unit")
                for target in panel.get("targets", []):
                    expr = target.get("expr")
                    if not expr:
                        continue
                    for window in re.findall(r"\b(?:rate|irate|increase)\s*\([^\[]*\[([^\]]*)\]", expr):
                        if window != "$__rate_interval":
                            problem(f"{path.name} / {title}: a rate over [{window}], not [$__rate_interval]")
                    panels.append((f"{path.name} / {title}", expr))

        walk(board.get("panels", []))
    if len(boards) < 5:
        problem(f"{len(boards)} dashboards, expected 5")

    for source, expr in exprs + panels:
        for name in metric_names(concrete(expr, "1m")):
            if name not in known and name not in recorded and name not in PROMETHEUS_OWN:
                problem(f"{source}: {name} is not in the collector's catalog nor a recording rule")

    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        yaml.safe_dump({"groups": [{"name": "panels", "rules": [
            {"record": f"panel:{i}", "expr": concrete(expr, "1m")} for i, (_, expr) in enumerate(panels)]}]}, f)
    result = run(["promtool", "check", "rules", f.name], f"promtool parses all {len(panels)} panel expressions")
    if result.returncode != 0:
        for i, (source, _) in enumerate(panels):
            if f"panel:{i}" in result.stderr:
                problem(f"{source}: does not parse")

    tests = MON / "alertmanager" / "tests.sh"
    run(["bash", str(tests)], "alertmanager routing tests")

    if problems:
        print(f"check-monitoring: {len(problems)} problem(s)", file=sys.stderr)
        sys.exit(1)
    print("check-monitoring: all checks passed")


if __name__ == "__main__":
    main()
