# Shared by scripts/rollback.sh and scripts/deploy_revisions.sh (sourced).
# The sourcing script defines die_usage MESSAGE (prints, exits 2).

# The header comment of the running script, from line 2 to the first line
# that is not one.
usage() {
  awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"
}

# The value of an option given as `--opt VALUE` ($2 present) or `--opt=VALUE`.
# An empty value is a usage error in both forms.
option_value() {
  local option=$1 what=$2
  shift 2
  [[ $# -ge 1 && -n $1 ]] || die_usage "$option needs $what"
  printf '%s' "$1"
}

# A Kubernetes namespace name (RFC 1123 label); also catches an option taken
# as the value, as in `--namespace --timeout`.
require_namespace() {
  if [[ ! $1 =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ || ${#1} -gt 63 ]]; then
    die_usage "not a namespace name: '$1'"
  fi
}

# A Go duration in h, m and s as `kubectl rollout status --timeout` takes it;
# not 0, which would wait forever.
require_duration() {
  if [[ ! $1 =~ ^([0-9]+h)?([0-9]+m)?([0-9]+s)?$ || ! $1 =~ [1-9] ]]; then
    die_usage "--timeout needs a duration such as 300s, 5m or 1m30s, not '$1'"
  fi
}
