#!/usr/bin/env bash
# Tests scripts/deploy_revisions.sh (and through it scripts/rollback.sh)
# against the stand-in `kubectl` of scripts/lib/kubectl-stub (its cluster,
# failures and waits are set per case through its environment).
# Each case checks the exit code, the exact stdout and kubectl calls, and
# named lines of stderr. Rollbacks run in parallel, so the calls are compared
# grouped by Deployment, in their order within each. Prints one line per
# case; exits 1 if any case fails.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/test_kubectl.sh
source scripts/lib/test_kubectl.sh

readonly ALL=(collector test-watcher audit-agent api-gateway)
readonly JSONPATH='{.metadata.annotations.deployment\.kubernetes\.io/revision}'

status=0
out=""
err=""

# cluster NS NAME=REVISION...: the cluster holds exactly these Deployments
# (in NS); a later call adds another namespace's.
cluster() {
  local ns=$1 pair
  shift
  rm -rf "${KUBECTL_CLUSTER:?}/$ns"
  mkdir -p "$KUBECTL_CLUSTER/$ns"
  for pair in "$@"; do
    printf '%s' "${pair#*=}" >"$KUBECTL_CLUSTER/$ns/${pair%%=*}"
  done
}

# revisions ARG... <<<INPUT: runs deploy_revisions.sh ARG... on a fresh
# log with INPUT (default: none) on stdin; sets $status, $out and $err.
revisions() {
  : >"$KUBECTL_LOG"
  status=0
  out=$(./scripts/deploy_revisions.sh "$@" 2>"$work/stderr" <"$work/stdin") || status=$?
  err=$(cat "$work/stderr")
}

# stdin TEXT: what the next `revisions` reads (printf %s: no newline added).
stdin() {
  printf '%s' "$1" >"$work/stdin"
}

# The calls grouped by Deployment (stable: each group in its order).
grouped() {
  sed -E 's#^(get deployment |rollout [a-z]+ deployment/)([^ ]+)#\2\t&#' |
    sort -s -t $'\t' -k1,1 | cut -f2-
}

# check NAME EXIT STDOUT CALLS [STDERR]: the last run exited EXIT, printed
# exactly STDOUT, made exactly CALLS (one per line) and printed each line of
# STDERR somewhere on stderr; and $problem (a further finding of the case,
# reset here) is empty.
problem=""
check() {
  local name=$1 expected_status=$2 expected_out=$3 expected_calls=$4 expected_err=${5:-}
  local calls want missing="" line
  calls=$(grouped <"$KUBECTL_LOG")
  want=$(printf '%s' "$expected_calls" | grouped)
  if [[ -n $expected_err ]]; then
    while IFS= read -r line; do
      [[ $err == *"$line"* ]] || missing+="$line"$'\n'
    done <<<"$expected_err"
  fi
  if [[ $status == "$expected_status" && $out == "$expected_out" && $calls == "$want" && -z $missing && -z $problem ]]; then
    pass "$name"
  else
    fail "$name" "exit $status (want $expected_status)"
    echo "     stdout:"; indent "$out"
    echo "     want:"; indent "$expected_out"
    echo "     kubectl calls:"; indent "$calls"
    echo "     want:"; indent "$want"
    [[ -z $missing ]] || { echo "     missing from stderr:"; indent "$missing"; }
    echo "     stderr:"; indent "$err"
    [[ -z $problem ]] || echo "     $problem"
  fi
  problem=""
}

# get NS NAME...: the `kubectl get` calls reading the revisions of NAME... in NS.
get() {
  local ns=$1 d
  shift
  for d in "$@"; do echo "get deployment $d -n $ns --ignore-not-found -o jsonpath=$JSONPATH"; done
}

# undo NS TIMEOUT NAME REVISION [nowait]: the calls of rollback.sh going
# back to REVISION; without the status wait when the undo fails.
undo() {
  echo "rollout undo deployment/$3 -n $1 --to-revision=$4"
  [[ ${5:-} == nowait ]] || echo "rollout status deployment/$3 -n $1 --timeout=$2"
}

# usage_error ARG...: deploy_revisions.sh ARG... exits 2 with a one-line
# message on stderr, prints nothing on stdout and runs nothing.
usage_error() {
  local name="usage error exits 2: deploy_revisions.sh"
  [[ $# -eq 0 ]] || name+=$(printf ' %q' "$@")
  stdin "collector=3"$'\n'
  revisions "$@"
  if [[ $err == *$'\n'* || $err != "deploy_revisions.sh: "?* ]]; then
    problem="stderr is not one line starting 'deploy_revisions.sh: '"
  fi
  check "$name" 2 "" ""
}

stdin ""

# --- record ---

cluster automation-dev collector=3 audit-agent=12
revisions record --namespace automation-dev "${ALL[@]}"
check "record: name=revision per Deployment, name= for a missing one" 0 "collector=3
test-watcher=
audit-agent=12
api-gateway=" "$(get automation-dev "${ALL[@]}")" "collector: revision 3
test-watcher: revision none (no such Deployment yet)
audit-agent: revision 12
api-gateway: revision none (no such Deployment yet)"

cluster automation collector=5
revisions record --namespace=automation collector api-gateway
check "record: --namespace=NS reads that namespace" 0 "collector=5
api-gateway=" "$(get automation collector api-gateway)"

cluster automation-dev collector=3 audit-agent=12
KUBECTL_FAIL_GET=test-watcher revisions record -n automation-dev "${ALL[@]}"
check "record: a failing kubectl fails it (-n NS), nothing on stdout" 1 "" "$(get automation-dev collector test-watcher)" \
  "kubectl get deployment test-watcher -n automation-dev failed"

# --- restore ---

cluster automation-dev collector=4 api-gateway=7
stdin $'collector=3\napi-gateway=7\n'
revisions restore --namespace automation-dev --timeout 90s
check "restore: a changed Deployment goes back to its revision, an unchanged one is left alone" 0 \
  "collector: rolled back from revision 4 to revision 3
api-gateway: unchanged at revision 7: left alone" "$(
    get automation-dev collector
    undo automation-dev 90s collector 3
    get automation-dev api-gateway
  )" "collector: rollback.sh: rolled back collector to revision 3 in namespace automation-dev"

cluster automation collector=9 test-watcher=2 audit-agent=31 api-gateway=15
stdin $'collector=8\ntest-watcher=1\naudit-agent=30\napi-gateway=14\n'
# The first rollback's status waits for the last one's undo: they must overlap.
KUBECTL_STATUS_WAITS=collector:api-gateway revisions restore --namespace=automation --timeout=5m
check "restore: every Deployment changed, all rolled back in parallel" 0 \
  "collector: rolled back from revision 9 to revision 8
test-watcher: rolled back from revision 2 to revision 1
audit-agent: rolled back from revision 31 to revision 30
api-gateway: rolled back from revision 15 to revision 14" "$(
    for pair in collector=8 test-watcher=1 audit-agent=30 api-gateway=14; do
      get automation "${pair%=*}"
      undo automation 5m "${pair%=*}" "${pair#*=}"
    done
  )"

cluster automation collector=8 test-watcher=1 audit-agent=30 api-gateway=14
stdin $'collector=8\ntest-watcher=1\naudit-agent=30\napi-gateway=14\n'
revisions restore --namespace automation --timeout 5m
check "restore: nothing changed, nothing undone" 0 \
  "collector: unchanged at revision 8: left alone
test-watcher: unchanged at revision 1: left alone
audit-agent: unchanged at revision 30: left alone
api-gateway: unchanged at revision 14: left alone" "$(get automation "${ALL[@]}")"

cluster automation-dev test-watcher=1 collector=2
stdin $'test-watcher=\ncollector=2\napi-gateway=\n'
revisions restore --namespace automation-dev --timeout 5m
check "restore: a Deployment new in this deploy is reported, not rolled back (exit 0)" 0 \
  "test-watcher: did not exist before this deploy (revision now: 1): not rolled back
collector: unchanged at revision 2: left alone
api-gateway: did not exist before this deploy (revision now: none): not rolled back" \
  "$(get automation-dev test-watcher collector api-gateway)"

cluster automation-dev collector=6
stdin $'audit-agent=5\ncollector=5\n'
revisions restore --namespace automation-dev --timeout 5m
check "restore: a Deployment gone since is reported (exit 1), the others still rolled back" 1 \
  "audit-agent: gone (was at revision 5): not rolled back, check it by hand
collector: rolled back from revision 6 to revision 5" "$(
    get automation-dev audit-agent collector
    undo automation-dev 5m collector 5
  )"

cluster automation-dev collector=4 api-gateway=3
stdin $'collector=3\napi-gateway=2\n'
KUBECTL_FAIL_GET=collector revisions restore --namespace automation-dev --timeout 5m
check "restore: a revision kubectl cannot read is unknown (exit 1), the others still rolled back" 1 \
  "collector: revision unknown (kubectl failed): not rolled back, check it by hand
api-gateway: rolled back from revision 3 to revision 2" "$(
    get automation-dev collector api-gateway
    undo automation-dev 5m api-gateway 2
  )"

cluster automation collector=4 api-gateway=8
stdin $'collector=3\napi-gateway=7\n'
KUBECTL_FAIL_UNDO=collector revisions restore --namespace automation --timeout 5m
check "restore: a failing rollout undo is a ROLLBACK FAILED (exit 1), the others still rolled back" 1 \
  "collector: ROLLBACK FAILED (from revision 4 to revision 3): check it by hand
api-gateway: rolled back from revision 8 to revision 7" "$(
    get automation collector api-gateway
    undo automation 5m collector 3 nowait
    undo automation 5m api-gateway 7
  )" "collector: rollback.sh: rollout undo of collector failed"

cluster automation test-watcher=3
stdin $'test-watcher=2\n'
KUBECTL_FAIL_STATUS=test-watcher revisions restore --namespace automation --timeout 2m
check "restore: a rollback that does not become available is a ROLLBACK FAILED (exit 1)" 1 \
  "test-watcher: ROLLBACK FAILED (from revision 3 to revision 2): check it by hand" "$(
    get automation test-watcher
    undo automation 2m test-watcher 2
  )" "test-watcher: rollback.sh: test-watcher did not become available within 2m"

cluster automation-dev collector=4
stdin ""
revisions restore --namespace automation-dev --timeout 5m
check "restore: no recorded revisions at all fails (exit 1), touches nothing" 1 \
  "all: no revisions were recorded before the apply: roll back by hand" ""

stdin $'\n\n'
revisions restore --namespace automation-dev --timeout 5m
check "restore: blank lines only are no recorded revisions (exit 1)" 1 \
  "all: no revisions were recorded before the apply: roll back by hand" ""

cluster automation-dev collector=4 audit-agent=9
stdin $'collector=3\ncollector=2\nno equals sign\naudit-agent=x\n'
revisions restore --namespace automation-dev --timeout 5m
check "restore: malformed or repeated lines are reported (exit 1), nothing undone" 1 \
  "collector: recorded more than once: not rolled back, check it by hand
line 3: not a NAME=REVISION line ('no equals sign'): check it by hand
line 4: not a NAME=REVISION line ('audit-agent=x'): check it by hand" ""

cluster automation-dev api-gateway=5
stdin "api-gateway=4"
revisions restore --namespace automation-dev --timeout 5m
check "restore: a last line without a newline is read" 0 \
  "api-gateway: rolled back from revision 5 to revision 4" "$(
    get automation-dev api-gateway
    undo automation-dev 5m api-gateway 4
  )"

# What the workflow does: record, apply (collector and audit-agent change,
# api-gateway is new), restore from what record printed.
cluster automation-dev collector=3 test-watcher=7 audit-agent=12
stdin ""
revisions record --namespace automation-dev "${ALL[@]}"
recorded=$out
cluster automation-dev collector=4 test-watcher=7 audit-agent=13 api-gateway=1
stdin "$recorded"$'\n'
revisions restore --namespace automation-dev --timeout 5m
check "record, then restore from its output" 0 \
  "collector: rolled back from revision 4 to revision 3
test-watcher: unchanged at revision 7: left alone
audit-agent: rolled back from revision 13 to revision 12
api-gateway: did not exist before this deploy (revision now: 1): not rolled back" "$(
    get automation-dev "${ALL[@]}"
    undo automation-dev 5m collector 3
    undo automation-dev 5m audit-agent 12
  )"

# --- help and usage errors ---

for args in --help "record --help" "restore --help"; do
  # shellcheck disable=SC2086 # the words of $args are the arguments
  revisions $args
  [[ $out == *"record --namespace NS DEPLOYMENT..."* && $out == *"restore --namespace NS --timeout D"* ]] ||
    problem="no usage on stdout"
  check "$args prints the usage and runs nothing" 0 "$out" ""
done

usage_error
usage_error rollback --namespace automation --timeout 5m
usage_error --namespace automation record collector
usage_error record collector
usage_error record --namespace automation
usage_error record --namespace
usage_error record --namespace= collector
usage_error record -n "" collector
usage_error record --namespace Automation_Prod collector
usage_error record --namespace --timeout collector
usage_error record --namespace automation --timeout 5m collector
usage_error record --namespace automation collector collector
usage_error record --namespace automation "collector=3"
usage_error record --namespace automation --bogus collector
usage_error restore --timeout 5m
usage_error restore --namespace automation
usage_error restore --namespace automation --timeout
usage_error restore --namespace automation --timeout=
usage_error restore --namespace automation --timeout 0s
usage_error restore --namespace automation --timeout 5
usage_error restore --namespace automation --timeout 5m collector
usage_error restore --namespace automation --timeout 5m --bogus

summary deploy_revisions
