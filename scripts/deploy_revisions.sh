#!/usr/bin/env bash
# The Deploy workflow's record of each Deployment's revision before the
# apply, and its rollback of what the apply changed.
#
#   scripts/deploy_revisions.sh record --namespace NS DEPLOYMENT...
#       prints NAME=REVISION per Deployment (NAME= if there is none yet)
#   scripts/deploy_revisions.sh restore --namespace NS --timeout D < RECORDED
#       reads those lines on stdin; rolls each Deployment whose revision
#       changed back to the recorded one (scripts/rollback.sh, in parallel;
#       D is its --timeout); prints what it did, a line per Deployment
#
# Progress goes to stderr. Every option also takes the --option=value form.
# Exit codes: 0 done; 1 kubectl failed, or (restore) not every Deployment
# the apply changed is known to be back at its recorded revision (also: no,
# repeated or malformed input lines); 2 usage error.
set -euo pipefail

readonly REVISION_JSONPATH='{.metadata.annotations.deployment\.kubernetes\.io/revision}'
ROLLBACK="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/rollback.sh"
readonly ROLLBACK

# shellcheck source=scripts/lib/cli.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/cli.sh"

die_usage() {
  echo "deploy_revisions.sh: $1 (see deploy_revisions.sh --help)" >&2
  exit 2
}

# A Deployment name (RFC 1123 subdomain): nothing that breaks NAME=REVISION.
is_name() {
  [[ $1 =~ ^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$ && ${#1} -le 253 ]]
}

# The revision annotation of Deployment $1; empty if it does not exist.
revision_of() {
  kubectl get deployment "$1" -n "$namespace" --ignore-not-found -o jsonpath="$REVISION_JSONPATH"
}

record() {
  local deployment revision lines=""
  for deployment in "$@"; do
    if ! revision=$(revision_of "$deployment"); then
      echo "deploy_revisions.sh: kubectl get deployment $deployment -n $namespace failed: nothing recorded" >&2
      exit 1
    fi
    echo "$deployment: revision ${revision:-none (no such Deployment yet)}" >&2
    lines+="$deployment=$revision"$'\n'
  done
  printf '%s' "$lines"
}

roll_back() {
  "$ROLLBACK" --namespace "$namespace" --timeout "$timeout" --to-revision "$2" "$1" 2>&1 | sed -u "s|^|$1: |" >&2
}

# Only what the apply changed goes back: a Deployment still at its recorded
# revision is left alone, one that did not exist before is only reported.
restore() {
  local line number=0 name before now failed=0
  local -a order=()
  local -A recorded=() result=() pids=()
  while IFS= read -r line || [[ -n $line ]]; do
    number=$((number + 1))
    [[ -n $line ]] || continue
    name=${line%%=*}
    before=${line#*=}
    if [[ $line != *=* ]] || ! is_name "$name" || [[ ! $before =~ ^([1-9][0-9]*)?$ ]]; then
      order+=("line $number")
      result["line $number"]="not a NAME=REVISION line ('$line'): check it by hand"
      failed=1
    elif [[ -n ${recorded[$name]+set} ]]; then
      result[$name]="recorded more than once: not rolled back, check it by hand"
      failed=1
    else
      order+=("$name")
      recorded[$name]=$before
    fi
  done
  for name in ${order[@]+"${order[@]}"}; do
    [[ -z ${result[$name]:-} ]] || continue
    before=${recorded[$name]}
    if ! now=$(revision_of "$name"); then
      result[$name]="revision unknown (kubectl failed): not rolled back, check it by hand"
      failed=1
    elif [[ -z $before ]]; then
      result[$name]="did not exist before this deploy (revision now: ${now:-none}): not rolled back"
    elif [[ -z $now ]]; then
      result[$name]="gone (was at revision $before): not rolled back, check it by hand"
      failed=1
    elif [[ $now == "$before" ]]; then
      result[$name]="unchanged at revision $before: left alone"
    else
      result[$name]="rolled back from revision $now to revision $before"
      roll_back "$name" "$before" &
      pids[$name]=$!
    fi
  done
  if [[ ${#order[@]} -eq 0 ]]; then
    order=(all)
    result[all]="no revisions were recorded before the apply: roll back by hand"
    failed=1
  fi
  for name in "${!pids[@]}"; do
    if ! wait "${pids[$name]}"; then
      result[$name]="ROLLBACK FAILED (${result[$name]#rolled back }): check it by hand"
      failed=1
    fi
  done
  for name in "${order[@]}"; do
    printf '%s: %s\n' "$name" "${result[$name]}"
  done
  return "$failed"
}

[[ $# -gt 0 ]] || die_usage "name a command: record or restore"
case $1 in
  -h | --help)
    usage
    exit 0
    ;;
  record | restore)
    command=$1
    shift
    ;;
  *) die_usage "unknown command: '$1' (record or restore)" ;;
esac

namespace=""
timeout=""
deployments=()
while [[ $# -gt 0 ]]; do
  case $1 in
    -n | --namespace)
      namespace=$(option_value "$1" "a namespace" "${@:2:1}") || exit
      shift 2
      ;;
    --namespace=*)
      namespace=$(option_value --namespace "a namespace" "${1#*=}") || exit
      shift
      ;;
    --timeout)
      timeout=$(option_value "$1" "a duration" "${@:2:1}") || exit
      shift 2
      ;;
    --timeout=*)
      timeout=$(option_value --timeout "a duration" "${1#*=}") || exit
      shift
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    -*) die_usage "unknown option: $1" ;;
    *)
      deployments+=("$1")
      shift
      ;;
  esac
done

[[ -n $namespace ]] || die_usage "$command needs --namespace NS"
require_namespace "$namespace"

if [[ $command == record ]]; then
  [[ -z $timeout ]] || die_usage "--timeout is for restore only"
  [[ ${#deployments[@]} -gt 0 ]] || die_usage "record needs the names of the Deployments"
  for name in "${deployments[@]}"; do
    is_name "$name" || die_usage "not a Deployment name: '$name'"
    [[ $(printf '%s\n' "${deployments[@]}" | grep -cxF -- "$name") == 1 ]] || die_usage "Deployment '$name' named twice"
  done
  record "${deployments[@]}"
else
  [[ ${#deployments[@]} -eq 0 ]] || die_usage "restore reads the recorded NAME=REVISION lines on stdin, not arguments: ${deployments[*]}"
  [[ -n $timeout ]] || die_usage "restore needs --timeout D (each rollback's rollout status)"
  require_duration "$timeout"
  restore
fi
