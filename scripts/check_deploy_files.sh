#!/usr/bin/env bash
# The deployment files outside k8s/ (part of `make deploy-check`):
# Dockerfile.prod with hadolint, the monitoring compose file and the GitHub
# workflows against their JSON schemas, and scripts/rollback.sh and
# scripts/deploy_revisions.sh (the deploy workflow's record and rollback of
# the revisions) with their stand-in-kubectl tests.
# The tools come from the project's .venv (scripts/install-test-tools.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
for tool in hadolint check-jsonschema; do
  if [[ ! -x $VENV/bin/$tool ]]; then
    echo "check_deploy_files: $VENV/bin/$tool is missing: run ./scripts/install-test-tools.sh" >&2
    exit 1
  fi
done

echo "check_deploy_files: hadolint Dockerfile.prod"
"$VENV/bin/hadolint" Dockerfile.prod

echo "check_deploy_files: the monitoring compose file against the Compose specification"
"$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec monitoring/docker-compose.monitoring.yml

echo "check_deploy_files: workflows against the GitHub workflow schema"
"$VENV/bin/check-jsonschema" --builtin-schema vendor.github-workflows .github/workflows/*.yml

# Not a pinned tool of the project (not in requirements-test.txt): run where installed.
shellcheck_bin=$(command -v "$VENV/bin/shellcheck" || command -v shellcheck || true)
if [[ -n $shellcheck_bin ]]; then
  echo "check_deploy_files: shellcheck the rollback scripts"
  # -x: follow the `source` of scripts/lib.
  "$shellcheck_bin" -x scripts/rollback.sh scripts/test_rollback.sh scripts/check_deploy_files.sh \
    scripts/deploy_revisions.sh scripts/test_deploy_revisions.sh scripts/lib/kubectl-stub
else
  echo "check_deploy_files: shellcheck not installed, skipped"
fi

echo "check_deploy_files: scripts/test_rollback.sh"
./scripts/test_rollback.sh

echo "check_deploy_files: scripts/test_deploy_revisions.sh"
./scripts/test_deploy_revisions.sh
