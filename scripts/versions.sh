#!/usr/bin/env bash
# make test-versions: dg on the other supported majors (scripts/pg.sh's
# wheel trees), then peers of other majors than the coordinator.
#
#   16, 17  scripts/test.sh with DG_TEST_SCOPE=core: dg built against that
#           major, its unit and in-server tests (cargo pgrx test pgNN), dg
#           (with fault injection) installed into the tree, the pg_regress
#           suite, the core multi-node tests (tests/tests/core.rs) and the
#           wait-event and cancel tests (see DG_TEST_SCOPE in test.sh)
#   18      the whole suite, as `make test PG=18`
#   mixed   tests/tests/mixed.rs: a coordinator on 18 with peers on 14 and
#           15, one on 15 with peers on 18 and 17 (the pg_config of each
#           major in DG_PG_CONFIG_<NN>); the only runner of that file
#
# Prints one "pgNN: N passed, N failed (Ts)" line per major and a
# "mixed: ..." line (also when a part fails), then
# "versions: N passed, N failed"; fails if anything failed. The whole
# suite on 15 is `make test`. Each major's part runs under that major's
# lock, /tmp/dg-pgNN.lock (taken here, one at a time; the mixed test's
# coordinator on 15 under /tmp/dg-pg15.lock), so do not wrap this script
# in one of them. A part's output goes to .dg/test-logs/versions/.
#
#   DG_VERSIONS  the majors to run (default: 16 17 18; empty: none)
#   DG_MIXED=0   leave out the mixed-version test
set -euo pipefail
source "$(dirname "$0")/lib.sh"

logs="$DG_DATA_ROOT/test-logs/versions"
rm -rf "$logs"
mkdir -p "$logs"
majors=${DG_VERSIONS-16 17 18}
# The whole suite on these; the unit, pg_regress and core tests on the rest.
whole=18
lines=()
total_passed=0 total_failed=0

# in_major MAJOR CMD...: CMD in a child whose lib.sh picks MAJOR's tree,
# data root, ports, pgrx config and library path, under MAJOR's lock.
in_major() {
    local major=$1
    shift
    env -u DG_DATA_ROOT -u PG_CONFIG -u PGRX_HOME -u DG_PG_BIN -u LD_LIBRARY_PATH PG="$major" \
        flock "/tmp/dg-pg$major.lock" "$@"
}

# report NAME LOG RC START: the part's line, from the counts in its log
# (test.sh's "dg: N passed, N failed", or cargo's "test result" lines).
report() {
    local name=$1 log=$2 rc=$3 start=$4 passed failed line
    line=$(grep -aE '^dg: [0-9]+ passed, [0-9]+ failed$' "$log" | tail -1 || true)
    if [ -n "$line" ]; then
        passed=$(echo "$line" | awk '{ print $2 }')
        failed=$(echo "$line" | awk '{ print $4 }')
    else
        passed=$(sed -nE 's/^test result: [A-Za-z]+\. ([0-9]+) passed.*/\1/p' "$log" | awk '{ n += $1 } END { print n + 0 }')
        failed=$(sed -nE 's/^test result: [A-Za-z]+\. [0-9]+ passed; ([0-9]+) failed.*/\1/p' "$log" | awk '{ n += $1 } END { print n + 0 }')
    fi
    if [ "$rc" != 0 ] && [ "$failed" = 0 ]; then
        failed=1 # the build or the nodes failed before any test did
    fi
    if [ "$failed" != 0 ]; then
        # Indented, so that no line of it reads as a summary line.
        grep -aE '^(not ok|test .* FAILED|FAILED)|panicked at' "$log" | sed 's/^/  | /' | head -40 || true
        tail -30 "$log" | sed 's/^/  | /'
    fi
    line="$name: $passed passed, $failed failed ($((SECONDS - start))s)"
    say "$line"
    lines+=("$line")
    total_passed=$((total_passed + passed))
    total_failed=$((total_failed + failed))
}

for major in $majors; do
    log="$logs/pg$major.log"
    start=$SECONDS
    scope=core
    [ "$major" != "$whole" ] || scope=
    say "PostgreSQL $major: ${scope:-whole} suite (log: $log)"
    rc=0
    in_major "$major" env DG_FEATURES=fault_injection DG_TEST_SCOPE="$scope" \
        "$DG_REPO/scripts/test.sh" >"$log" 2>&1 || rc=$?
    report "pg$major" "$log" "$rc" "$start"
done

if [ "${DG_MIXED:-1}" = 1 ]; then
    log="$logs/mixed.log"
    start=$SECONDS
    say "mixed majors: coordinator 18 with peers 14, 15; coordinator 15 with peers 18, 17 (log: $log)"
    for m in 14 15 17 18; do
        export "DG_PG_CONFIG_$m=$(pg_config_of "$m" "$DG_PG_CACHE")"
    done
    # Each coordinator's tree gets dg with fault injection (the crash
    # tests), then its half of the test runs under that tree's lock.
    mixed_half() {
        "$DG_REPO/scripts/setup.sh" --install-only &&
            cd "$DG_REPO" && cargo test --manifest-path tests/Cargo.toml --features mixed \
            --test mixed "coordinator_$PG::" -- --test-threads=2
    }
    export -f mixed_half
    rc=0
    for coordinator in 18 15; do
        in_major "$coordinator" env DG_FEATURES=fault_injection bash -c \
            "source '$DG_REPO/scripts/lib.sh' && mixed_half" >>"$log" 2>&1 || rc=$?
    done
    report mixed "$log" "$rc" "$start"
fi

say "versions"
printf '%s\n' "${lines[@]}"
echo "versions: $total_passed passed, $total_failed failed"
[ "$total_failed" = 0 ]
