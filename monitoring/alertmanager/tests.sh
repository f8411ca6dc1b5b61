#!/usr/bin/env bash
# Checks the Alertmanager configuration with the real amtool:
#   1. `amtool check-config` (syntax, strict fields, templates);
#   2. every secret comes from a file under /etc/alertmanager/secrets/;
#   3. `amtool config routes test --verify.receivers` for each severity and
#      for the Watchdog, i.e. each alert reaches the receiver it must.
# Prints one line per check; exits non-zero if any check fails.
#
# Usage: monitoring/alertmanager/tests.sh [config.yml]   (AMTOOL=... to override)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
config="${1:-$here/config.yml}"
amtool="${AMTOOL:-amtool}"

if ! command -v "$amtool" >/dev/null 2>&1; then
    echo "FAIL amtool not found (install the Debian package prometheus-alertmanager)" >&2
    exit 1
fi

failures=0
pass() { printf 'ok   %s\n' "$1"; }
fail() {
    printf 'FAIL %s\n' "$1"
    if [[ -n "${2:-}" ]]; then printf '%s\n' "$2" | sed 's/^/     /'; fi
    failures=$((failures + 1))
}

# 1. The configuration loads.
if out="$("$amtool" check-config "$config" 2>&1)"; then
    pass "amtool check-config $config"
else
    fail "amtool check-config $config" "$out"
fi

# 2. No inline secret: the secret-bearing fields must not appear without
#    `_file`, and every *_file / credentials_file points at the secrets dir.
inline="$(grep -nE '^[[:space:]]*-?[[:space:]]*(routing_key|service_key|api_url|auth_password|smtp_auth_password|slack_api_url|credentials|password|bearer_token)[[:space:]]*:' "$config" || true)"
if [[ -z "$inline" ]]; then
    pass "no inline secrets"
else
    fail "no inline secrets" "$inline"
fi
outside="$(grep -nE '(_file|credentials_file)[[:space:]]*:' "$config" | grep -vE ':[[:space:]]*/etc/alertmanager/secrets/[^[:space:]]+[[:space:]]*$' || true)"
if [[ -z "$outside" ]]; then
    pass "every secret file is under /etc/alertmanager/secrets/"
else
    fail "every secret file is under /etc/alertmanager/secrets/" "$outside"
fi

# 3. Routing. route_test EXPECTED_RECEIVER LABEL=VALUE...
route_test() {
    local expected="$1"
    shift
    local desc="$* -> $expected"
    local out
    if out="$("$amtool" config routes test --config.file="$config" \
        --verify.receivers="$expected" "$@" 2>&1)"; then
        pass "route $desc"
    else
        fail "route $desc" "got: $out"
    fi
}

route_test pagerduty severity=critical alertname=ComponentDown component=audit-agent
route_test slack     severity=warning  alertname=InstanceDown  component=audit-agent component_instance=audit-agent-0
route_test email     severity=info     alertname=CoverageDropped component=audit-agent
route_test email     severity=none     alertname=SomethingInformational component=collector
route_test email                       alertname=NoSeverityLabel component=api-gateway
route_test deadman   severity=none     alertname=Watchdog
# The Watchdog goes to the dead-man's switch whatever its severity says.
route_test deadman   severity=critical alertname=Watchdog
# Other alerts of the same severity as the Watchdog do not.
route_test pagerduty severity=critical alertname=CollectorDown component=collector
route_test slack     severity=warning  alertname=HighErrorRate component=api-gateway
# The critical tiers of HighErrorRate and MemoryLeakDetected page.
route_test pagerduty severity=critical alertname=HighErrorRate component=api-gateway
route_test pagerduty severity=critical alertname=MemoryLeakDetected component=collector component_instance=collector-0
route_test slack     severity=warning  alertname=MemoryLeakDetected component=collector component_instance=collector-0

if ((failures > 0)); then
    echo "alertmanager: $failures check(s) failed"
    exit 1
fi
echo "alertmanager: all checks passed"
