# Shared by the tests of the rollback scripts (sourced, from the repository
# root): a scratch directory $work, removed on exit; scripts/lib/kubectl-stub
# first on PATH as `kubectl`, logging to $KUBECTL_LOG and reading Deployments
# from $KUBECTL_CLUSTER; the counters and the last line of a test script.

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bin"
ln -s "$PWD/scripts/lib/kubectl-stub" "$work/bin/kubectl"
export PATH="$work/bin:$PATH"
export KUBECTL_LOG="$work/calls"
export KUBECTL_CLUSTER="$work/cluster"
unset NAMESPACE KUBECTL_FAIL_GET KUBECTL_FAIL_UNDO KUBECTL_FAIL_STATUS KUBECTL_STATUS_WAITS

passed=0
failed=0

indent() {
  printf '%s\n' "$1" | sed 's/^/       /'
}

# pass NAME / fail NAME REASON: one line for the case, counted.
pass() {
  echo "ok   $1"
  passed=$((passed + 1))
}
fail() {
  echo "FAIL $1: $2"
  failed=$((failed + 1))
}

# summary SUITE: the counts; exits 1 if a case failed.
summary() {
  echo "$1: $passed passed, $failed failed"
  [[ $failed == 0 ]] || exit 1
}
