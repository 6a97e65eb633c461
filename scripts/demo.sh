#!/usr/bin/env bash
# make demo: a coordinator and two peers on this machine, one atomic
# transfer between the peers, and the nodes left running. Safe to rerun:
# every step is idempotent (each run moves another 100).
#
#   DG_COORD_PORT (5801), DG_PEER1_PORT (5802), DG_PEER2_PORT (5803),
#   each + DG_PORT_OFFSET (100 per major past 15, scripts/lib.sh)
#   DG_NO_BUILD=1  use the dg already installed (make test's build)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

[ "${DG_NO_BUILD:-0}" = 1 ] || DG_RELEASE=1 "$DG_REPO/scripts/setup.sh"

coord=${DG_COORD_PORT:-$((5801 + DG_PORT_OFFSET))}
p1=${DG_PEER1_PORT:-$((5802 + DG_PORT_OFFSET))}
p2=${DG_PEER2_PORT:-$((5803 + DG_PORT_OFFSET))}

say "starting coordinator :$coord and peers :$p1 :$p2 (data in $DG_DATA_ROOT/demo)"
node_start demo/coord "$coord" "shared_preload_libraries = 'dg'"
node_start demo/peer1 "$p1"
node_start demo/peer2 "$p2"
for port in "$coord" "$p1" "$p2"; do
    ensure_db "$port" demo
done

# Quiet: on reruns these only say "already exists, skipping".
for port in "$p1" "$p2"; do
    psql_raw -p "$port" -d demo -q <<'SQL'
SET client_min_messages = warning;
CREATE TABLE IF NOT EXISTS accounts (id int PRIMARY KEY, balance bigint NOT NULL);
INSERT INTO accounts SELECT g, 1000 FROM generate_series(1, 10) g ON CONFLICT DO NOTHING;
SQL
done
psql_raw -p "$coord" -d demo -q <<SQL
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS dg;
CREATE SERVER IF NOT EXISTS peer1 FOREIGN DATA WRAPPER dg OPTIONS (host '127.0.0.1', port '$p1', dbname 'demo');
CREATE SERVER IF NOT EXISTS peer2 FOREIGN DATA WRAPPER dg OPTIONS (host '127.0.0.1', port '$p2', dbname 'demo');
CREATE USER MAPPING IF NOT EXISTS FOR PUBLIC SERVER peer1 OPTIONS (user 'postgres');
CREATE USER MAPPING IF NOT EXISTS FOR PUBLIC SERVER peer2 OPTIONS (user 'postgres');
SQL

say "moving 100 from account 1 on peer1 to account 1 on peer2, atomically"
# One psql session (the distributed transaction belongs to the session),
# each statement in autocommit; -e shows the statements.
psql_raw -p "$coord" -d demo -e <<'SQL'
SELECT dg.dist_begin() IS NOT NULL AS started;
SELECT dg.dist_exec('peer1', 'UPDATE accounts SET balance = balance - $1 WHERE id = $2', '100', '1');
SELECT dg.dist_exec('peer2', 'UPDATE accounts SET balance = balance + $1 WHERE id = $2', '100', '1');
SELECT dg.dist_commit();
SQL

say "account 1 on each peer"
psql_at "$coord" demo <<'SQL'
SELECT 'peer1' AS node, * FROM dg.dist_query('peer1', 'SELECT id, balance FROM accounts WHERE id = 1') AS t(id int, balance bigint)
UNION ALL
SELECT 'peer2', * FROM dg.dist_query('peer2', 'SELECT id, balance FROM accounts WHERE id = 1') AS t(id int, balance bigint);
SQL

say "the nodes keep running"
echo "  connect:  psql -h 127.0.0.1 -p $coord -U postgres demo"
echo "  stop:     make stop$([ "$PG" = "$DG_PG_SYSTEM_MAJOR" ] || echo " PG=$PG")"
