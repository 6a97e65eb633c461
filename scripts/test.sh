#!/usr/bin/env bash
# make test: set up everything, then run every test, stopping at the first
# failing stage:
#   lint         cargo fmt --check, cargo clippy (only with DG_LINT=1)
#   pgrx-test    unit and in-server tests (cargo pgrx test)
#   reinstall    put back the regular build that pgrx test replaced
#   regress      the pg_regress suite (scripts/regress.sh)
#   multinode    the multi-node tests in tests/
#   multinode-async  the crash, network, chaos and snapshot tests again with
#                dg.synchronous_finish = off on every coordinator
#   example      examples/bank.py, a psycopg client, against the demo cluster
#   plots        bench/plot.py's tests (the pictures `make bench` draws)
# and ends with one line over all runners: "dg: N passed, N failed".
#
#   DG_FEATURES  extra cargo features for every build here (e.g. fault injection)
#   DG_LINT=1    also run the lint stage
#   DG_TEST_SCOPE=core  what scripts/versions.sh runs on 16 and 17: the
#                stages up to regress, then only the core multi-node tests
#                (tests/tests/core.rs), the wait events (monitoring.rs) and
#                the cancel behind a black hole (network.rs), the two that
#                differ by major; no example, no plots
set -euo pipefail
source "$(dirname "$0")/lib.sh"

logs="$DG_DATA_ROOT/test-logs"
rm -rf "$logs"
mkdir -p "$logs"
features=()
[ -z "${DG_FEATURES:-}" ] || features=(--features "$DG_FEATURES")

# The summary is printed on exit, also when errexit ends the run.
current=""
done_stages=()
summary() {
    local rc=$?
    # cargo prints "test result: ok. N passed; ..." per test binary,
    # pg_regress "All N tests passed." and Python's unittest "Ran N tests";
    # on failures cargo's "test result: FAILED. N passed; M failed" and
    # pg_regress's "M of N tests failed." (with "# " in front on 16+).
    local passed failed
    passed=$(cat "$logs"/*.log 2>/dev/null |
        sed -nE 's/^test result: [A-Za-z]+\. ([0-9]+) passed.*/\1/p; s/^(# )? *All ([0-9]+) tests passed.*/\2/p;
                 s/^(# )? *([0-9]+) of ([0-9]+) tests failed.*/\3 - \2/p;
                 s/^bank: ([0-9]+) passed, [0-9]+ failed$/\1/p; s/^Ran ([0-9]+) tests? in .*/\1/p' |
        awk '{ n += ($2 == "-") ? $1 - $3 : $1 } END { print n + 0 }')
    failed=$(cat "$logs"/*.log 2>/dev/null |
        sed -nE 's/^test result: FAILED\. [0-9]+ passed; ([0-9]+) failed.*/\1/p;
                 s/^(# )? *([0-9]+) of [0-9]+ tests failed.*/\2/p; s/^bank: [0-9]+ passed, ([0-9]+) failed$/\1/p' |
        awk '{ n += $1 } END { print n + 0 }')
    if [ "$rc" != 0 ]; then
        say "FAILED in stage '${current:-setup}' (passed: ${done_stages[*]:-none})"
        # A stage that failed before any test did (a build, a node) counts.
        [ "$failed" != 0 ] || failed=1
        echo "dg: $passed passed, $failed failed"
        return
    fi
    say "all stages passed: ${done_stages[*]}"
    echo "dg: $passed passed, 0 failed"
}
trap summary EXIT

current=setup
"$DG_REPO/scripts/setup.sh"

# stage NAME CMD...: run one stage with a banner, keeping its output for the
# summary. pipefail makes a failing CMD fail the stage despite the tee.
stage() {
    current=$1
    shift
    say "stage $current: $*"
    local start=$SECONDS
    "$@" 2>&1 | tee "$logs/$current.log"
    say "stage $current passed in $((SECONDS - start))s"
    done_stages+=("$current")
}

in_repo() { (cd "$DG_REPO" && "$@"); }

lint() {
    in_repo cargo fmt --check
    in_repo cargo clippy --all-targets -- -D warnings
    in_repo cargo fmt --check --manifest-path tests/Cargo.toml
}

pgrx_test() {
    # cargo pgrx test installs its build over the installed dg.so in place,
    # which crashes any running server that has it loaded (the demo
    # coordinator): stop the nodes under the data root first.
    stop_clusters_under "$DG_DATA_ROOT"
    # A clean cluster every run. With --runas, pgrx creates its cluster
    # below --pgdata as postgres, so that directory must be postgres's.
    local pgdata="$DG_DATA_ROOT/pgrx-test"
    rm -rf "$pgdata"
    mkdir -p "$pgdata"
    chown postgres:postgres "$pgdata"
    in_repo cargo pgrx test "pg$PG" --runas postgres --pgdata "$pgdata" "${features[@]}"
}

if [ "${DG_LINT:-0}" = 1 ]; then
    stage lint lint
fi
stage pgrx-test pgrx_test
stage reinstall dg_install_extension
stage regress "$DG_REPO/scripts/regress.sh"
multinode() {
    # Without its crate the stage would pass having run nothing.
    [ -f "$DG_REPO/tests/Cargo.toml" ] || die "tests/Cargo.toml is missing: no multi-node tests to run"
    in_repo cargo test --manifest-path tests/Cargo.toml -- --test-threads=2
}
if [ "${DG_TEST_SCOPE:-}" = core ]; then
    stage multinode-core in_repo cargo test --manifest-path tests/Cargo.toml --test core -- --test-threads=2
    stage multinode-major in_repo cargo test --manifest-path tests/Cargo.toml --test monitoring --test network \
        -- --test-threads=2 waits_on_peers_show_what_they_wait_for cancel_behind_a_black_hole_ends_at_the_deadline
    current=""
    exit 0
fi
stage multinode multinode
# The crash, network and chaos suites again with a finish that does not
# wait (README, "What COMMIT does"): atomicity and durability must not
# depend on it.
multinode_async() {
    DG_TEST_COORDINATOR_CONF="dg.synchronous_finish = off" \
        in_repo cargo test --manifest-path tests/Cargo.toml \
        --test faults --test network --test chaos --test snapshots -- --test-threads=2
}
stage multinode-async multinode_async
example() {
    DG_NO_BUILD=1 "$DG_REPO/scripts/example.sh"
    stop_clusters_under "$DG_DATA_ROOT/demo"
}
stage example example
plots() {
    local pylib="$DG_DATA_ROOT/pylib-bench"
    pip_target "$pylib" "$DG_REPO/bench/requirements.txt"
    (cd "$DG_REPO/bench" && PYTHONPATH="$pylib" python3 -B -m unittest discover -s . -p 'test_*.py')
}
stage plots plots
current=""
