#!/usr/bin/env bash
# make test: set up everything, then every test, stopping at the first
# failure: unit and in-server tests (cargo pgrx test), the pg_regress
# suite, and the multi-node tests in tests/.
source "$(dirname "$0")/lib.sh"
set -o pipefail
"$REPO/scripts/setup.sh"
root=$(data_root)
logs="$root/test-logs"
rm -rf "$logs"; mkdir -p "$logs"

# stage NAME CMD...: runs a stage, keeping its output for the totals.
stage() {
    local name=$1; shift
    "$@" 2>&1 | tee "$logs/$name.log"
}

if [ "${DG_LINT:-0}" = 1 ]; then
    say "lint"
    (cd "$REPO" && cargo fmt --all -- --check && cargo clippy --all-targets -- -D warnings)
fi

# cargo pgrx test copies its build over the installed library in place,
# which would crash a server that has it loaded (the demo coordinator).
"$REPO/scripts/stop.sh"

say "unit and in-server tests (cargo pgrx test)"
rm -rf "$root/pgrx-test"
stage pgrx-test bash -c "cd '$REPO' && cargo pgrx test pg15 --runas postgres --pgdata '$root/pgrx-test'"

# cargo pgrx test installed its own test build: put ours back.
"$REPO/scripts/setup.sh"

say "pg_regress suite"
stage regress "$REPO/scripts/regress.sh"

say "multi-node tests (tests/)"
stage multinode bash -c "cd '$REPO' && cargo test --manifest-path tests/Cargo.toml -- --test-threads=2"

# One closing line over all runners: cargo's "test result" lines and
# pg_regress's "All N tests passed".
passed=$(cat "$logs"/*.log | sed -nE 's/^test result: ok\. ([0-9]+) passed.*/\1/p; s/^ *All ([0-9]+) tests passed.*/\1/p' | awk '{ n += $1 } END { print n + 0 }')
say "all tests passed"
echo "dg: $passed passed, 0 failed"
