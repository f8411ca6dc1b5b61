#!/usr/bin/env python3
"""`make monitoring`: the real Prometheus and Alertmanager (Debian packages)
against the stack `make run` starts, for people without Docker.

Prometheus loads monitoring/prometheus/ as it is (it scrapes the collector on
localhost:9400) and serves http://localhost:9090; Alertmanager loads
monitoring/alertmanager/config.yml with its secret files pointed at
placeholders under .automation/monitoring/secrets (fill them in to really
page) and serves http://localhost:9093. Ctrl-C stops both.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "monitoring"


def which(*names):
    for name in names:
        for d in os.environ.get("PATH", "").split(":"):
            p = Path(d) / name
            if p.is_file() and os.access(p, os.X_OK):
                return str(p)
    sys.exit(f"monitoring: none of {names} is installed (make tools installs them)")


def local_alertmanager_config(state):
    config = yaml.safe_load((MONITORING / "alertmanager" / "config.yml").read_text())
    secrets = state / "secrets"
    secrets.mkdir(parents=True, exist_ok=True)

    def redirect(node):
        if isinstance(node, dict):
            for key, value in list(node.items()):
                if key.endswith("_file") and isinstance(value, str):
                    local = secrets / Path(value).name
                    if not local.exists():
                        local.write_text("http://localhost:9/placeholder\n" if "url" in key else "placeholder\n")
                    node[key] = str(local)
                else:
                    redirect(value)
        elif isinstance(node, list):
            for item in node:
                redirect(item)

    redirect(config)
    out = state / "alertmanager.yml"
    out.write_text(yaml.safe_dump(config, sort_keys=False))
    return out


def main():
    state = ROOT / ".automation" / "monitoring"
    state.mkdir(parents=True, exist_ok=True)
    am_config = local_alertmanager_config(state)
    prom = subprocess.Popen([which("prometheus"), f"--config.file={MONITORING / 'prometheus' / 'prometheus.yml'}",
                             f"--storage.tsdb.path={state / 'tsdb'}", "--web.listen-address=127.0.0.1:9090"])
    am = subprocess.Popen([which("alertmanager", "prometheus-alertmanager"), f"--config.file={am_config}",
                           f"--storage.path={state / 'alertmanager'}", "--web.listen-address=127.0.0.1:9093",
                           "--cluster.listen-address="])
    print("Prometheus http://localhost:9090, Alertmanager http://localhost:9093 (scraping the stack of `make run`)")
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    except KeyboardInterrupt:
        pass
    for p in (prom, am):
        p.terminate()
        p.wait(10)
    sys.exit(0)


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    main()
