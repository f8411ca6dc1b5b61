#!/usr/bin/env bash
# Installs what the checks of `make test` need when it is missing:
# the real promtool/amtool/prometheus/alertmanager (Debian packages).
# Idempotent; `--force` refreshes the package lists and reinstalls.
set -euo pipefail

need_apt=0
for tool in promtool amtool prometheus alertmanager; do
  command -v "$tool" >/dev/null 2>&1 || need_apt=1
done
if [[ "${1:-}" == "--force" ]]; then
  need_apt=1
fi

if [[ $need_apt == 1 ]]; then
  if [[ $(id -u) != 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
      echo "install-test-tools: need root to apt-get install prometheus prometheus-alertmanager" >&2
      exit 1
    fi
  else
    SUDO=
  fi
  echo "install-test-tools: installing prometheus and prometheus-alertmanager (Debian packages)"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update
  $SUDO apt-get install -y --no-install-recommends prometheus prometheus-alertmanager
fi

for tool in promtool amtool; do
  command -v "$tool" >/dev/null 2>&1 || { echo "install-test-tools: $tool still missing" >&2; exit 1; }
done
