#!/usr/bin/env bash
# Installs what the checks of `make test` need when it is missing:
# the real promtool/amtool/prometheus/alertmanager (Debian packages; the
# Alertmanager binary is called prometheus-alertmanager there), and a Python
# virtual environment (.venv) with the PyPI tools the checks use.
# Idempotent; `--force` refreshes the package lists and reinstalls.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=0
for tool in promtool amtool prometheus; do
  command -v "$tool" >/dev/null 2>&1 || need_apt=1
done
command -v alertmanager >/dev/null 2>&1 || command -v prometheus-alertmanager >/dev/null 2>&1 || need_apt=1
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt=1
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
  $SUDO apt-get install -y --no-install-recommends prometheus prometheus-alertmanager python3-venv
fi

for tool in promtool amtool; do
  command -v "$tool" >/dev/null 2>&1 || { echo "install-test-tools: $tool still missing" >&2; exit 1; }
done

# The Rust toolchain rust-toolchain.toml pins. rustup installs it on first
# use when it can download; on a machine that cannot, an installed stable
# of that very version does, linked under the pinned name.
pinned=$(sed -n 's/^channel = "\(.*\)"$/\1/p' rust-toolchain.toml)
if command -v rustup >/dev/null 2>&1 && ! rustup toolchain list | grep -q "^$pinned-"; then
  stable_version=$(rustc +stable --version 2>/dev/null | awk '{print $2}')
  if [[ $stable_version == "$pinned" ]]; then
    toolchains="${RUSTUP_HOME:-$HOME/.rustup}/toolchains"
    host=$(rustc +stable -vV | sed -n 's/^host: //p')
    ln -s "stable-$host" "$toolchains/$pinned-$host"
    echo "install-test-tools: Rust $pinned is the installed stable: linked as the pinned toolchain"
  fi
fi

# PyPI tools, pinned, in the project's own virtual environment.
VENV=.venv
if [[ ! -x $VENV/bin/python ]]; then
  python3 -m venv "$VENV"
fi
# Pinned: already-satisfied pins cost no download.
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r scripts/requirements-test.txt
command -v kubectl >/dev/null 2>&1 || echo "install-test-tools: kubectl is missing: install the kubectl package (apt-get install kubectl, from the Kubernetes apt repository pkgs.k8s.io); the manifest checks need kubectl kustomize" >&2
