#!/usr/bin/env bash
# Rolls Deployments of the platform back with `kubectl rollout undo`, then
# waits for each rollout to finish.
#
#   scripts/rollback.sh [--namespace NS] [--dry-run] [--to-revision N] (all | DEPLOYMENT...)
#
#   all               the four services: collector test-watcher audit-agent api-gateway
#   --namespace NS    default: $NAMESPACE, else automation (prod)
#   --to-revision N   go to revision N (see `kubectl rollout history
#                     deployment/NAME -n NS`); only with a single deployment
#   --timeout D       how long each `rollout status` waits (default 5m)
#   --dry-run         print the kubectl commands, run nothing
#
# Exit codes: 0 all rolled back and available; 1 a kubectl command failed
# (every deployment is still tried); 2 usage error.
set -euo pipefail

readonly ALL_DEPLOYMENTS=(collector test-watcher audit-agent api-gateway)

usage() {
  sed -n '2,15s/^# \{0,1\}//p' "$0"
}

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
      [[ $# -ge 2 && -n $2 ]] || die_usage "$1 needs a namespace"
      namespace=$2
      shift 2
      ;;
    --namespace=*)
      namespace=${1#*=}
      [[ -n $namespace ]] || die_usage "--namespace needs a namespace"
      shift
      ;;
    --to-revision)
      [[ $# -ge 2 ]] || die_usage "--to-revision needs a revision number"
      revision=$2
      shift 2
      ;;
    --to-revision=*)
      revision=${1#*=}
      shift
      ;;
    --timeout)
      [[ $# -ge 2 && -n $2 ]] || die_usage "--timeout needs a duration"
      timeout=$2
      shift 2
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

if [[ -n $revision && ! $revision =~ ^[1-9][0-9]*$ ]]; then
  die_usage "--to-revision needs a positive revision number, not '$revision'"
fi
[[ ${#targets[@]} -gt 0 ]] || die_usage "name the deployments to roll back, or 'all'"

deployments=()
for target in "${targets[@]}"; do
  if [[ $target == all ]]; then
    [[ ${#targets[@]} -eq 1 ]] || die_usage "'all' cannot be combined with deployment names"
    deployments=("${ALL_DEPLOYMENTS[@]}")
  else
    known=0
    for name in "${ALL_DEPLOYMENTS[@]}"; do
      [[ $target == "$name" ]] && known=1
    done
    [[ $known == 1 ]] || die_usage "unknown deployment '$target' (one of: ${ALL_DEPLOYMENTS[*]}, or all)"
    deployments+=("$target")
  fi
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
for deployment in "${deployments[@]}"; do
  undo=(kubectl rollout undo "deployment/$deployment" -n "$namespace")
  [[ -n $revision ]] && undo+=("--to-revision=$revision")
  if ! run "${undo[@]}"; then
    echo "rollback.sh: rollout undo of $deployment failed" >&2
    failed+=("$deployment")
  fi
done
for deployment in "${deployments[@]}"; do
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
  echo "rollback.sh: rolled back ${deployments[*]} in namespace $namespace"
fi
