#!/usr/bin/env bash
# Tests scripts/rollback.sh against a stand-in `kubectl`, first on PATH, that
# appends each call's arguments (one line per call) to $KUBECTL_LOG and fails
# `rollout status` when $KUBECTL_FAIL_STATUS names the deployment.
# Prints one line per case; exits 1 if any case fails.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bin"
cat >"$work/bin/kubectl" <<'STUB'
#!/usr/bin/env bash
set -euo pipefail
echo "$*" >>"$KUBECTL_LOG"
if [[ ${1:-} == rollout && ${2:-} == status && -n ${KUBECTL_FAIL_STATUS:-} && ${3:-} == "deployment/$KUBECTL_FAIL_STATUS" ]]; then
  echo "error: deployment \"$KUBECTL_FAIL_STATUS\" exceeded its progress deadline" >&2
  exit 1
fi
exit 0
STUB
chmod +x "$work/bin/kubectl"

export PATH="$work/bin:$PATH"
export KUBECTL_LOG="$work/calls"
unset NAMESPACE KUBECTL_FAIL_STATUS

passed=0
failed=0
status=0
out=""

# Runs rollback.sh with the given arguments on a fresh log; sets $status and $out.
rollback() {
  : >"$KUBECTL_LOG"
  status=0
  out=$(./scripts/rollback.sh "$@" 2>&1) || status=$?
}

indent() {
  printf '%s\n' "$1" | sed 's/^/       /'
}

check() {
  local name=$1 expected_status=$2 expected_calls=$3
  local calls
  calls=$(cat "$KUBECTL_LOG")
  if [[ $status == "$expected_status" && $calls == "$expected_calls" ]]; then
    echo "ok   $name"
    passed=$((passed + 1))
  else
    echo "FAIL $name: exit $status (want $expected_status)"
    echo "     kubectl calls:"; indent "$calls"
    echo "     want:"; indent "$expected_calls"
    echo "     output:"; indent "$out"
    failed=$((failed + 1))
  fi
}

rollback --namespace automation-dev api-gateway
check "undo one deployment" 0 "rollout undo deployment/api-gateway -n automation-dev
rollout status deployment/api-gateway -n automation-dev --timeout=5m"

rollback all
check "undo all (4 undos, 4 status waits; default namespace automation)" 0 "$(
  for d in collector test-watcher audit-agent api-gateway; do echo "rollout undo deployment/$d -n automation"; done
  for d in collector test-watcher audit-agent api-gateway; do echo "rollout status deployment/$d -n automation --timeout=5m"; done
)"

rollback -n automation --to-revision 7 audit-agent
check "to a named revision" 0 "rollout undo deployment/audit-agent -n automation --to-revision=7
rollout status deployment/audit-agent -n automation --timeout=5m"

rollback --dry-run all
if [[ $out == *"kubectl rollout undo deployment/collector -n automation"* ]]; then
  check "dry run prints the commands and runs nothing" 0 ""
else
  status="no command printed"
  check "dry run prints the commands and runs nothing" 0 ""
fi

for usage in "" "--to-revision 3 all" "--to-revision 3 collector api-gateway" "--to-revision x collector" \
  "--namespace" "--bogus all" "nonexistent" "all collector"; do
  # shellcheck disable=SC2086 # the usage strings are word lists on purpose
  rollback $usage
  if [[ $out == *"usage:"* ]]; then
    check "usage error exits 2: rollback.sh $usage" 2 ""
  else
    status="no usage line"
    check "usage error exits 2: rollback.sh $usage" 2 ""
  fi
done

export KUBECTL_FAIL_STATUS=test-watcher
rollback all
unset KUBECTL_FAIL_STATUS
check "a failing rollout status fails the rollback (all still tried)" 1 "$(
  for d in collector test-watcher audit-agent api-gateway; do echo "rollout undo deployment/$d -n automation"; done
  for d in collector test-watcher audit-agent api-gateway; do echo "rollout status deployment/$d -n automation --timeout=5m"; done
)"

echo "rollback: $passed passed, $failed failed"
[[ $failed == 0 ]] || exit 1
