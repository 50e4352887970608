#!/usr/bin/env bash
# Fuzzes every documented HTTP endpoint with schemathesis against a fresh,
# ephemeral stack started by `imctl exec`: no 5xx for any generated request,
# and every response matches /openapi.json.
#
#   bash scripts/api-fuzz.sh [extra schemathesis options]
#
# Needs Python 3 (schemathesis is installed into target/api-fuzz-venv).
# Left out: /_dev/sms (its `wait` parameter holds a request up to 120 s),
# /_dev/feed (an endless event stream),
# the long poll and the event stream (they hold a request by design), and
# /ws (a WebSocket upgrade; the protocol has its own tests).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/api-fuzz-venv
if [ ! -x "$venv/bin/st" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q 'schemathesis>=4,<5'
fi
cargo build --locked --quiet
# shellcheck disable=SC2016 # expanded by the inner shell, inside the stack
# Two runs: the app-server's operations, then the broker's /route on its own
# port (schemathesis uses one base URL per run).
exec target/debug/imctl exec --config none --poll-timeout 1s -- sh -c '
    st=$0
    common="--checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance
        --max-examples ${IMCTL_FUZZ_EXAMPLES:-50} --request-timeout 10"
    "$st" run "$IMCTL_APP_SERVER/openapi.json" --url "$IMCTL_APP_SERVER" \
        -H "X-Admin-Secret: $IMCTL_ADMIN_SECRET" $common \
        --exclude-path /_dev/sms --exclude-path /_dev/feed --exclude-path /ws --exclude-path /route \
        --exclude-path "/session_login/{token}" --exclude-path "/pc_session/{token}/events" \
        "$@" &&
    "$st" run "$IMCTL_APP_SERVER/openapi.json" --url "${IMCTL_ROUTE_URL%/route}" \
        $common --include-path /route "$@"' "$venv/bin/st" "$@"
