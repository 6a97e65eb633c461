#!/usr/bin/env bash
# The pg_regress suite in pg_regress/, run with the plain pg_regress binary
# against nodes of its own, on fresh clusters every run. Assumes dg is
# installed (make install / make test).
#
# Nodes (data under $DG_DATA_ROOT/regress):
#   coord        DG_REGRESS_PORT (5811), shared_preload_libraries = 'dg'
#   peer1        DG_REGRESS_PORT + 1 (5812)
#   peer2        DG_REGRESS_PORT + 2 (5813)
#   peer_noprep  DG_REGRESS_PORT + 3 (5814), max_prepared_transactions = 0
#   standby      DG_REGRESS_STANDBY_PORT = DG_REGRESS_PORT + 4 (5815), a hot
#                standby of peer1 (pg_basebackup -R)
# and DG_REGRESS_UNREACHABLE_PORT = DG_REGRESS_PORT + 5 (5816), where nothing
# listens (dg.check_node's unreachable node)
# (each + DG_PORT_OFFSET, 100 per major past 15, scripts/lib.sh). The test
# SQL reads the peer ports from DG_REGRESS_PEER{1,2,_NOPREP}_PORT (psql
# \getenv), so DG_REGRESS_PORT moves the whole suite.
#
#   DG_KEEP=1  leave the nodes running afterwards
set -euo pipefail
source "$(dirname "$0")/lib.sh"

coord=${DG_REGRESS_PORT:-$((5811 + DG_PORT_OFFSET))}
export DG_REGRESS_PEER1_PORT=$((coord + 1)) DG_REGRESS_PEER2_PORT=$((coord + 2)) \
    DG_REGRESS_PEER_NOPREP_PORT=$((coord + 3)) DG_REGRESS_STANDBY_PORT=$((coord + 4)) \
    DG_REGRESS_UNREACHABLE_PORT=$((coord + 5))

inputdir="$DG_REPO/pg_regress"
root="$DG_DATA_ROOT/regress"
out="$root/out"
pg_regress="$("$PG_CONFIG" --pkglibdir)/pgxs/src/test/regress/pg_regress"
[ -x "$pg_regress" ] || die "$pg_regress not found; run make setup (postgresql-server-dev-15)"

# Every test needs its expected output; pg_regress would only complain
# after running everything.
shopt -s nullglob
tests=()
for sql in "$inputdir"/sql/*.sql; do
    name=$(basename "$sql" .sql)
    [ -f "$inputdir/expected/$name.out" ] || die "pg_regress/sql/$name.sql has no pg_regress/expected/$name.out"
    tests+=("$name")
done
if [ ${#tests[@]} -eq 0 ]; then
    warn "no tests in pg_regress/sql; skipping pg_regress"
    exit 0
fi
if [ -f "$inputdir/schedule" ]; then
    # A test left out of the schedule would never run, in silence.
    for name in "${tests[@]}"; do
        grep -qE "^test:.*[[:space:]]$name([[:space:]]|\$)" "$inputdir/schedule" ||
            die "pg_regress/sql/$name.sql is not in pg_regress/schedule"
    done
    which_tests=(--schedule="$inputdir/schedule")
else
    mapfile -t which_tests < <(printf '%s\n' "${tests[@]}" | sort)
fi

nodes=(coord peer1 peer2 peer_noprep standby)
stop_nodes() {
    local n
    for n in "${nodes[@]}"; do
        node_stop "regress/$n"
    done
}
[ "${DG_KEEP:-0}" = 1 ] || trap stop_nodes EXIT

# Fresh clusters: a failed run can leave prepared transactions (which block
# DROP DATABASE) and roles (cluster-wide) behind.
stop_nodes
rm -rf "$root"
say "starting regress nodes on ports $coord-$((coord + 4)) (data in $root)"
# The suite shows in-doubt transactions before dg.recover() handles them:
# the automatic resolver (tested in tests/) would race it.
node_start regress/coord "$coord" "shared_preload_libraries = 'dg'" "max_prepared_transactions = 10" \
    "dg.resolver_enabled = off"
node_start regress/peer1 "$DG_REGRESS_PEER1_PORT"
node_start regress/peer2 "$DG_REGRESS_PEER2_PORT"
node_start regress/peer_noprep "$DG_REGRESS_PEER_NOPREP_PORT" "max_prepared_transactions = 0"
for port in "$DG_REGRESS_PEER1_PORT" "$DG_REGRESS_PEER2_PORT" "$DG_REGRESS_PEER_NOPREP_PORT"; do
    recreate_db "$port" regress_peer
done
port_in_use "$DG_REGRESS_UNREACHABLE_PORT" &&
    die "port $DG_REGRESS_UNREACHABLE_PORT must stay free: the suite's unreachable node"
# The standby copies peer1 after regress_peer exists there, so it has the
# database to connect to. node_start rewrites postgresql.auto.conf, where
# pg_basebackup -R put primary_conninfo: pass it again. A fast checkpoint:
# the default spread one paces its writes over checkpoint_timeout and
# held the suite for minutes.
install -d -o postgres -g postgres -m 700 "$root/standby"
as_postgres "$DG_PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$DG_REGRESS_PEER1_PORT" -U postgres \
    -D "$root/standby" -R --no-sync --checkpoint=fast
node_start regress/standby "$DG_REGRESS_STANDBY_PORT" \
    "primary_conninfo = 'host=127.0.0.1 port=$DG_REGRESS_PEER1_PORT user=postgres'"
# --use-existing makes pg_regress use dg_regress as it finds it, so create it.
recreate_db "$coord" dg_regress

mkdir -p "$out"
say "pg_regress (${#tests[@]} tests)"
# The servers' settings, not the caller's session options, apply.
unset PGOPTIONS
if ! "$pg_regress" --use-existing --bindir="$DG_PG_BIN" --host=127.0.0.1 --port="$coord" --user=postgres \
    --inputdir="$inputdir" --outputdir="$out" --dbname=dg_regress "${which_tests[@]}"; then
    if [ -f "$out/regression.diffs" ]; then
        say "first 200 lines of $out/regression.diffs"
        head -n 200 "$out/regression.diffs"
    fi
    echo "server logs: $root/*/server.log" >&2
    exit 1
fi
