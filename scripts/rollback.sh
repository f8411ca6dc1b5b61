#!/usr/bin/env bash
# Rolls Deployments of the platform back with `kubectl rollout undo`, then
# waits for each rollout to finish.
#
#   scripts/rollback.sh [--namespace NS] [--dry-run] [--to-revision N] [--timeout D] (all | DEPLOYMENT...)
#
#   all               the four services: collector test-watcher audit-agent api-gateway
#   -n, --namespace NS
#                     default: $NAMESPACE, else automation (prod)
#   --to-revision N   go to revision N (see `kubectl rollout history
#                     deployment/NAME -n NS`); only with a single deployment
#   --timeout D       how long each `rollout status` waits: a duration such
#                     as 300s, 5m or 1m30s (default 5m)
#   --dry-run         print the kubectl commands, run nothing
#
# Every option also takes the --option=value form.
# Exit codes: 0 all rolled back and available; 1 a kubectl command failed
# (every deployment is still tried; one whose undo failed is not waited
# for); 2 usage error.
set -euo pipefail

readonly ALL_DEPLOYMENTS=(collector test-watcher audit-agent api-gateway)

# shellcheck source=scripts/lib/cli.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/cli.sh"

die_usage() {
  echo "rollback.sh: $1" >&2
  echo "usage: rollback.sh [--namespace NS] [--dry-run] [--to-revision N] [--timeout D] (all | DEPLOYMENT...)" >&2
  exit 2
}

namespace=${NAMESPACE:-automation}
dry_run=0
revision=""
timeout=5m
targets=()

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
    --to-revision)
      revision=$(option_value "$1" "a revision number" "${@:2:1}") || exit
      shift 2
      ;;
    --to-revision=*)
      revision=$(option_value --to-revision "a revision number" "${1#*=}") || exit
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
    --dry-run)
      dry_run=1
      shift
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    --)
      shift
      targets+=("$@")
      break
      ;;
    -*)
      die_usage "unknown option: $1"
      ;;
    *)
      targets+=("$1")
      shift
      ;;
  esac
done

require_namespace "$namespace"
if [[ -n $revision && ! $revision =~ ^[1-9][0-9]*$ ]]; then
  die_usage "--to-revision needs a positive revision number, not '$revision'"
fi
require_duration "$timeout"
[[ ${#targets[@]} -gt 0 ]] || die_usage "name the deployments to roll back, or 'all'"

deployments=()
for target in "${targets[@]}"; do
  if [[ $target == all ]]; then
    [[ ${#targets[@]} -eq 1 ]] || die_usage "'all' cannot be combined with deployment names"
    deployments=("${ALL_DEPLOYMENTS[@]}")
    continue
  fi
  known=0
  for name in "${ALL_DEPLOYMENTS[@]}"; do
    [[ $target == "$name" ]] && known=1
  done
  [[ $known == 1 ]] || die_usage "unknown deployment '$target' (one of: ${ALL_DEPLOYMENTS[*]}, or all)"
  # Two undos of one Deployment would go back and then forward again.
  for name in ${deployments[@]+"${deployments[@]}"}; do
    [[ $target != "$name" ]] || die_usage "deployment '$target' named twice"
  done
  deployments+=("$target")
done

if [[ -n $revision && ${#deployments[@]} -ne 1 ]]; then
  die_usage "--to-revision needs exactly one deployment (revisions differ per deployment)"
fi

# Prints the command; runs it unless --dry-run.
run() {
  printf '+'
  printf ' %q' "$@"
  printf '\n'
  if [[ $dry_run == 0 ]]; then
    "$@"
  fi
}

failed=()
undone=()
for deployment in "${deployments[@]}"; do
  undo=(kubectl rollout undo "deployment/$deployment" -n "$namespace")
  [[ -n $revision ]] && undo+=("--to-revision=$revision")
  if run "${undo[@]}"; then
    undone+=("$deployment")
  else
    echo "rollback.sh: rollout undo of $deployment failed; not waiting for it" >&2
    failed+=("$deployment")
  fi
done
for deployment in ${undone[@]+"${undone[@]}"}; do
  if ! run kubectl rollout status "deployment/$deployment" -n "$namespace" "--timeout=$timeout"; then
    echo "rollback.sh: $deployment did not become available within $timeout" >&2
    failed+=("$deployment")
  fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "rollback.sh: FAILED: ${failed[*]} in namespace $namespace" >&2
  exit 1
fi
if [[ $dry_run == 1 ]]; then
  echo "rollback.sh: dry run, nothing changed"
else
  echo "rollback.sh: rolled back ${deployments[*]}${revision:+ to revision $revision} in namespace $namespace"
fi
