#!/usr/bin/env bash
# make test-versions: dg on the other supported majors (scripts/pg.sh's
# wheel trees): for each, build dg against that major, install it into the
# tree and run the pg_regress suite on nodes of that major (ports 100 higher
# per major). Prints "pgNN: N passed, N failed" per major and a total line;
# fails if any major failed. The whole suite on 15 is `make test`.
#
#   DG_VERSIONS  the majors to run (default: 16 17 18)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

logs="$DG_DATA_ROOT/test-logs/versions"
rm -rf "$logs"
mkdir -p "$logs"
declare -A lines
total_passed=0 total_failed=0
for major in ${DG_VERSIONS:-16 17 18}; do
    say "PostgreSQL $major: build, install, pg_regress"
    log="$logs/pg$major.log"
    start=$SECONDS
    # A child with PG set: lib.sh gives it that major's tree, data root,
    # ports, pgrx config and library path.
    if env -u DG_DATA_ROOT -u PG_CONFIG -u PGRX_HOME -u DG_PG_BIN PG="$major" \
        bash -c '"$0"/setup.sh --install-only && "$0"/regress.sh' "$DG_REPO/scripts" >"$log" 2>&1; then
        rc=0
    else
        rc=1
    fi
    # pg_regress: "ok N - name" per test (TAP, 16+) or "test name ... ok" (15).
    passed=$(grep -cE '^ok [0-9]+ ' "$log" || true)
    failed=$(grep -cE '^not ok [0-9]+ ' "$log" || true)
    if [ "$rc" != 0 ] && [ "$failed" = 0 ]; then
        failed=1 # the build or the nodes failed before any test ran
        tail -30 "$log"
    fi
    [ "$failed" = 0 ] || grep -aE '^not ok' "$log" || true
    lines[$major]="pg$major: $passed passed, $failed failed ($((SECONDS - start))s)"
    echo "${lines[$major]}"
    total_passed=$((total_passed + passed))
    total_failed=$((total_failed + failed))
done
say "versions"
for major in ${DG_VERSIONS:-16 17 18}; do echo "${lines[$major]}"; done
echo "versions: $total_passed passed, $total_failed failed"
[ "$total_failed" = 0 ]
