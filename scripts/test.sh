#!/usr/bin/env bash
# The whole test suite, twice: on the embedded SQLite, then on PostgreSQL
# (IMCTL_TEST_STORE=postgres: every stack a test starts gets its own database
# on one throwaway server the tests start themselves, see src/pg_local.rs).
# Without PostgreSQL installed the second pass is skipped with a note, unless
# IMCTL_REQUIRE_POSTGRES=1 (CI), which makes that a failure.
# Arguments go to both `cargo test` runs (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== tests on SQLite"
cargo test "$@"

have_postgres() {
    if [ -n "${IMCTL_PG_BIN:-}" ]; then return 0; fi
    command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1 && return 0
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}

if have_postgres; then
    echo "== tests on PostgreSQL (IMCTL_TEST_STORE=postgres)"
    IMCTL_TEST_STORE=postgres cargo test "$@"
elif [ "${IMCTL_REQUIRE_POSTGRES:-}" = 1 ]; then
    echo "PostgreSQL is not installed (IMCTL_REQUIRE_POSTGRES=1): apt-get install postgresql" >&2
    exit 1
else
    echo "SKIPPED the PostgreSQL pass: PostgreSQL not installed (apt-get install postgresql)"
fi
