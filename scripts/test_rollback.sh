#!/usr/bin/env bash
# Tests scripts/rollback.sh against the stand-in `kubectl` of
# scripts/lib/kubectl-stub, which fails `rollout undo` of the deployment
# named by $KUBECTL_FAIL_UNDO and `rollout status` of the one named by
# $KUBECTL_FAIL_STATUS.
# Each case checks the exit code and the exact kubectl calls (and, where
# named, a piece of the output). Prints one line per case; exits 1 if any
# case fails.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/test_kubectl.sh
source scripts/lib/test_kubectl.sh

readonly ALL="collector test-watcher audit-agent api-gateway"

status=0
out=""

# Runs rollback.sh with the given arguments on a fresh log; sets $status and $out.
rollback() {
  : >"$KUBECTL_LOG"
  status=0
  out=$(./scripts/rollback.sh "$@" 2>&1) || status=$?
}

# check NAME EXIT CALLS [OUTPUT]: the last rollback exited EXIT, made exactly
# CALLS (one per line) and, if OUTPUT is given, printed it somewhere.
check() {
  local name=$1 expected_status=$2 expected_calls=$3 expected_out=${4:-}
  local calls
  calls=$(cat "$KUBECTL_LOG")
  if [[ $status == "$expected_status" && $calls == "$expected_calls" && $out == *"$expected_out"* ]]; then
    pass "$name"
  else
    fail "$name" "exit $status (want $expected_status)"
    echo "     kubectl calls:"; indent "$calls"
    echo "     want:"; indent "$expected_calls"
    [[ -z $expected_out ]] || { echo "     want in the output:"; indent "$expected_out"; }
    echo "     output:"; indent "$out"
  fi
}

# The calls of undoing DEPLOYMENTS (words) in NS, then waiting TIMEOUT for
# those in WAITED (default: the same).
calls() {
  local ns=$1 timeout=$2 deployments=$3 waited=${4-$3} d
  for d in $deployments; do echo "rollout undo deployment/$d -n $ns"; done
  for d in $waited; do echo "rollout status deployment/$d -n $ns --timeout=$timeout"; done
}

# usage_error ARG...: rollback.sh ARG... exits 2 with the usage line and runs nothing.
usage_error() {
  local name="usage error exits 2: rollback.sh"
  [[ $# -eq 0 ]] || name+=$(printf ' %q' "$@")
  rollback "$@"
  check "$name" 2 "" "usage: rollback.sh"
}

rollback --namespace automation-dev api-gateway
check "undo one deployment" 0 "$(calls automation-dev 5m api-gateway)"

rollback all
check "undo all (4 undos, 4 status waits; default namespace automation)" 0 "$(calls automation 5m "$ALL")"

rollback -n automation --to-revision 7 audit-agent
check "to a named revision" 0 "rollout undo deployment/audit-agent -n automation --to-revision=7
rollout status deployment/audit-agent -n automation --timeout=5m" "to revision 7"

rollback --namespace=automation-dev --to-revision=12 collector
check "--namespace=NS and --to-revision=N" 0 "rollout undo deployment/collector -n automation-dev --to-revision=12
rollout status deployment/collector -n automation-dev --timeout=5m"

rollback --timeout 90s api-gateway
check "--timeout D reaches rollout status" 0 "$(calls automation 90s api-gateway)"

rollback --timeout=1m30s all
check "--timeout=D reaches every rollout status" 0 "$(calls automation 1m30s "$ALL")"

NAMESPACE=automation-dev rollback collector
check "the namespace defaults to \$NAMESPACE" 0 "$(calls automation-dev 5m collector)"

NAMESPACE=automation-dev rollback -n automation collector
check "--namespace overrides \$NAMESPACE" 0 "$(calls automation 5m collector)"

NAMESPACE="" rollback collector
check "an empty \$NAMESPACE means automation" 0 "$(calls automation 5m collector)"

rollback --dry-run all
check "dry run prints the commands and runs nothing" 0 "" "+ kubectl rollout undo deployment/collector -n automation"

rollback --help
check "--help prints the usage and runs nothing" 0 "" "--timeout D"

usage_error
usage_error --to-revision 3 all
usage_error --to-revision 3 collector api-gateway
usage_error --to-revision x collector
usage_error --to-revision 0 collector
usage_error --to-revision= collector
usage_error --to-revision "" collector
usage_error collector --to-revision
usage_error --namespace
usage_error --namespace= all
usage_error -n "" all
usage_error --namespace --dry-run all
usage_error --namespace Automation_Prod all
usage_error --timeout
usage_error --timeout= all
usage_error --timeout 5 all
usage_error --timeout=abc all
usage_error --timeout 0s all
usage_error --timeout 5m-1s all
usage_error --bogus all
usage_error nonexistent
usage_error all collector
usage_error collector collector

KUBECTL_FAIL_UNDO=audit-agent rollback all
check "a failing rollout undo fails the rollback (all tried, not waited for)" 1 "$(
  calls automation 5m "$ALL" "collector test-watcher api-gateway"
)" "rollout undo of audit-agent failed"

KUBECTL_FAIL_STATUS=test-watcher rollback all
check "a failing rollout status fails the rollback (all still tried)" 1 "$(calls automation 5m "$ALL")" \
  "FAILED: test-watcher in namespace automation"

KUBECTL_FAIL_UNDO=collector rollback --to-revision 3 collector
check "a failing undo to a named revision exits 1 without waiting" 1 \
  "rollout undo deployment/collector -n automation --to-revision=3" "FAILED: collector"

summary rollback
