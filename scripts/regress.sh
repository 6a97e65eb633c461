#!/usr/bin/env bash
# The pg_regress suite: a coordinator and three peers on ports
# DG_REGRESS_PORT..+3 (default 5811..5814; the SQL files name the peer
# ports), fresh databases each run, the plain pg_regress binary.
source "$(dirname "$0")/lib.sh"
base=${DG_REGRESS_PORT:-5811}
root=$(data_root)/regress
mkdir -p "$root"

for sql in "$REPO"/pg_regress/sql/*.sql; do
    name=$(basename "$sql" .sql)
    if [ ! -f "$REPO/pg_regress/expected/$name.out" ]; then
        echo "pg_regress/sql/$name.sql has no pg_regress/expected/$name.out" >&2
        exit 1
    fi
done

stop_all() { for n in coord peer1 peer2 peer_noprep; do node_stop "$root/$n"; done; }
[ "${DG_KEEP:-0}" = 1 ] || trap stop_all EXIT

node_start "$root/coord" "$base" "shared_preload_libraries = 'dg'" "max_prepared_transactions = 10"
node_start "$root/peer1" $((base + 1))
node_start "$root/peer2" $((base + 2))
node_start "$root/peer_noprep" $((base + 3)) "max_prepared_transactions = 0"
for port in $((base + 1)) $((base + 2)) $((base + 3)); do
    psql_at "$port" postgres -c "DROP DATABASE IF EXISTS regress_peer WITH (FORCE)" -c "CREATE DATABASE regress_peer"
done
psql_at "$base" postgres -c "DROP DATABASE IF EXISTS dg_regress WITH (FORCE)" -c "CREATE DATABASE dg_regress" \
    -c "DROP ROLE IF EXISTS regress_dg_alice"

out="$root/out"
rm -rf "$out"; mkdir -p "$out"
pg_regress="$("$PG_CONFIG" --pkglibdir)/pgxs/src/test/regress/pg_regress"
if ! "$pg_regress" --use-existing --host=127.0.0.1 --port="$base" --user=postgres \
        --inputdir="$REPO/pg_regress" --outputdir="$out" --dbname=dg_regress \
        --schedule="$REPO/pg_regress/schedule"; then
    head -200 "$out/regression.diffs" >&2 || true
    exit 1
fi
