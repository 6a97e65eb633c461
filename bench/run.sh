#!/usr/bin/env bash
# make bench / make bench-long: dg against its users' alternatives, on one
# machine in one run, so the results are ratios, not absolute figures.
#
# Nodes (data under $DG_DATA_ROOT/bench, fsync = on, synchronous_commit = on):
#   coord        DG_BENCH_PORT (5901): dg, dblink, postgres_fdw
#   peer1..peer8 DG_BENCH_PORT + 1..8: an accounts table of DG_BENCH_ACCOUNTS rows
#
# Variants of the "transfer" workload (debit a random account on peer1,
# credit a random account on peer2):
#   dg_block      BEGIN; dg.dist_exec x2; COMMIT
#   dg_session    dg.dist_begin(); dg.dist_exec x2; dg.dist_commit(), autocommit
#   dg_send       BEGIN; dg.dist_send x2; COMMIT (the PREPAREs ride the sends)
#   dg_send_async the same with SET LOCAL dg.synchronous_finish = off
#   dblink_2pc    PL/pgSQL + dblink, persistent connections: BEGIN and UPDATE on
#                 each peer, PREPARE TRANSACTION on each, COMMIT PREPARED on each
#   fdw_1pc       postgres_fdw foreign tables, parallel_commit (not atomic)
#   one_node      the same two updates in one transaction on one node
# A block is sent as one query (pgbench's \;), like the dblink function
# call, so every variant but dg_session costs the client one round trip.
#
# Every point is run DG_BENCH_ROUNDS times, interleaved (every point of a
# set once, then again), and reported as the median with min and max: a
# slow minute of a shared machine then spoils one round of every variant
# rather than all rounds of one.
#
#   DG_BENCH_SECONDS   seconds per run (10)
#   DG_BENCH_ROUNDS    rounds per point (3)
#   DG_BENCH_CLIENTS   client counts ("1 8")
#   DG_BENCH_RTT_US    round-trip times (µs) to run the transfers, the peer
#                      scaling and the snapshot cost at ("0 1000"): 0 is
#                      direct loopback (~30 µs), any other puts dg-netproxy on
#                      every coordinator -> peer link (dg, dblink and
#                      postgres_fdw alike), so round trips cost what they do
#                      between servers
#   DG_BENCH_COST_CLIENTS  writers of the snapshot-cost runs (8)
#   DG_BENCH_SNAPSHOT_RATE consistent snapshots per second beside them (100)
#   DG_BENCH_ROWS      rows for the dist_query memory test (10000000)
#   DG_BENCH_LONG=1    instead: dg_block at 8 clients for DG_BENCH_LONG_SECONDS
#                      (600), then the decision table's size
#   DG_BENCH_INSTALL=0 use the installed dg instead of a release build
#   DG_KEEP=1          leave the nodes running
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"

seconds=${DG_BENCH_SECONDS:-10}
rounds=${DG_BENCH_ROUNDS:-3}
clients=${DG_BENCH_CLIENTS:-1 8}
accounts=${DG_BENCH_ACCOUNTS:-100000}
rows=${DG_BENCH_ROWS:-10000000}
long=${DG_BENCH_LONG:-0}
long_seconds=${DG_BENCH_LONG_SECONDS:-600}
rtts=${DG_BENCH_RTT_US:-0 1000}
cost_clients=${DG_BENCH_COST_CLIENTS:-8}
snapshot_rate=${DG_BENCH_SNAPSHOT_RATE:-100}
base=${DG_BENCH_PORT:-$((5901 + DG_PORT_OFFSET))}
npeers=8
coord=$base
peer_port() { echo $((base + $1)); }
# The port of peer i's delayed link (dg-netproxy in front of peer_port i).
link_port() { echo $((base + 20 + $1)); }
db=bench
results="$DG_REPO/bench/results"
work="$DG_DATA_ROOT/bench"
scripts="$work/scripts"

if [ "${DG_BENCH_INSTALL:-1}" = 1 ]; then
    DG_RELEASE=1 "$DG_REPO/scripts/setup.sh"
fi

# What each variant waits for in sequence, by its protocol: round trips to
# the peers, and WAL flushes (the peers' flushes of one phase run in
# parallel and count once). README's Performance section says why.
declare -A PROTO_RT=([dg_block]=4 [dg_session]=4 [dg_send]=2 [dg_send_async]=1
    [dblink_2pc]=8 [fdw_1pc]=5 [one_node]=0)
declare -A PROTO_FLUSH=([dg_block]=3 [dg_session]=3 [dg_send]=3 [dg_send_async]=2
    [dblink_2pc]=4 [fdw_1pc]=1 [one_node]=1)

# dblink_transfer_sql PORT1 PORT2: the hand-rolled alternative, what people
# write today with dblink, reaching the two peers on these ports.
dblink_transfer_sql() {
    cat <<SQL
CREATE OR REPLACE FUNCTION dblink_transfer(a1 int, a2 int, amount int) RETURNS void
LANGUAGE plpgsql AS \$\$
DECLARE
    gid text := 'bench_' || gen_random_uuid();
BEGIN
    IF dblink_get_connections() IS NULL THEN
        PERFORM dblink_connect('p1', 'host=127.0.0.1 port=$1 dbname=$db user=postgres');
        PERFORM dblink_connect('p2', 'host=127.0.0.1 port=$2 dbname=$db user=postgres');
    END IF;
    PERFORM dblink_exec('p1', 'BEGIN');
    PERFORM dblink_exec('p1', format('UPDATE accounts SET balance = balance - %s WHERE aid = %s', amount, a1));
    PERFORM dblink_exec('p2', 'BEGIN');
    PERFORM dblink_exec('p2', format('UPDATE accounts SET balance = balance + %s WHERE aid = %s', amount, a2));
    PERFORM dblink_exec('p1', format('PREPARE TRANSACTION %L', gid || '_1'));
    PERFORM dblink_exec('p2', format('PREPARE TRANSACTION %L', gid || '_2'));
    PERFORM dblink_exec('p1', format('COMMIT PREPARED %L', gid || '_1'));
    PERFORM dblink_exec('p2', format('COMMIT PREPARED %L', gid || '_2'));
END
\$\$;
SQL
}

# -- nodes --------------------------------------------------------------------
durable=("fsync = on" "synchronous_commit = on" "max_connections = 60"
    "shared_buffers = 128MB" "max_prepared_transactions = 100")
say "starting the coordinator :$coord and $npeers peers (data in $work)"
node_start bench/coord "$coord" "${durable[@]}" "shared_preload_libraries = 'dg'" \
    "dg.resolver_interval = '1s'"
for i in $(seq 1 $npeers); do
    node_start "bench/peer$i" "$(peer_port "$i")" "${durable[@]}"
done
coord_log="$(node_dir bench/coord)/server.log"
netproxy_pid=""
stop_netproxy() {
    [ -n "$netproxy_pid" ] || return 0
    kill "$netproxy_pid" 2>/dev/null || true
    wait "$netproxy_pid" 2>/dev/null || true
    netproxy_pid=""
}
cleanup() {
    stop_netproxy
    [ "${DG_KEEP:-0}" = 1 ] || stop_clusters_under "$work"
}
trap cleanup EXIT

for i in $(seq 1 $npeers); do
    port=$(peer_port "$i")
    recreate_db "$port" $db
    psql_raw -q -p "$port" -d $db <<SQL
CREATE TABLE accounts (aid int PRIMARY KEY, balance bigint NOT NULL);
INSERT INTO accounts SELECT g, 1000 FROM generate_series(1, $accounts) g;
VACUUM ANALYZE accounts;
SQL
done
recreate_db "$coord" $db
{
    echo "SET client_min_messages = warning;"
    echo "CREATE EXTENSION dg; CREATE EXTENSION dblink; CREATE EXTENSION postgres_fdw;"
    for i in $(seq 1 $npeers); do
        port=$(peer_port "$i")
        echo "CREATE SERVER peer$i FOREIGN DATA WRAPPER dg OPTIONS (host '127.0.0.1', port '$port', dbname '$db');"
        echo "CREATE USER MAPPING FOR PUBLIC SERVER peer$i OPTIONS (user 'postgres');"
        echo "CREATE SERVER fdw$i FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '127.0.0.1', port '$port', dbname '$db', parallel_commit 'true');"
        echo "CREATE USER MAPPING FOR PUBLIC SERVER fdw$i OPTIONS (user 'postgres');"
        echo "CREATE FOREIGN TABLE accounts_p$i (aid int, balance bigint) SERVER fdw$i OPTIONS (table_name 'accounts');"
    done
    dblink_transfer_sql "$(peer_port 1)" "$(peer_port 2)"
    # Samples, every 20 ms for SECONDS, the writers' backends (pgbench's
    # application_name): how many were active, and how many of those
    # waited for the commit fence's lock. The statistics snapshot is
    # cleared each time, or the transaction would see its first one.
    cat <<'SQL'
CREATE FUNCTION bench_fence_samples(seconds float8) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    stop timestamptz := clock_timestamp() + make_interval(secs => seconds);
    active bigint := 0;
    locked bigint := 0;
    a bigint;
    l bigint;
BEGIN
    WHILE clock_timestamp() < stop LOOP
        PERFORM pg_stat_clear_snapshot();
        SELECT count(*) FILTER (WHERE state = 'active'),
               count(*) FILTER (WHERE state = 'active' AND wait_event_type = 'LWLock' AND wait_event = 'dg_fence')
          INTO a, l FROM pg_stat_activity WHERE application_name = 'pgbench';
        active := active + a;
        locked := locked + l;
        PERFORM pg_sleep(0.02);
    END LOOP;
    RETURN active || ' ' || locked;
END
$$;
SQL
} | psql_raw -q -p "$coord" -d $db

# dg_send_async needs dg.synchronous_finish (issue 13 §3); a dg without it
# skips the variant, and the report says so.
async=1
if ! psql_val "$coord" $db "SHOW dg.synchronous_finish" >/dev/null 2>&1; then
    async=0
    warn "this dg has no dg.synchronous_finish: dg_send_async is skipped"
fi

# -- pgbench scripts ------------------------------------------------------------
rm -rf "$scripts"
mkdir -p "$scripts" "$results"
pick='\set a1 random(1, '$accounts')
\set a2 random(1, '$accounts')
\set amount random(1, 100)'
debit="'UPDATE accounts SET balance = balance - \$1 WHERE aid = \$2', ':amount', ':a1'"
credit="'UPDATE accounts SET balance = balance + \$1 WHERE aid = \$2', ':amount', ':a2'"
cat >"$scripts/dg_block.sql" <<SQL
$pick
BEGIN \\; SELECT dg.dist_exec('peer1', $debit) \\; SELECT dg.dist_exec('peer2', $credit) \\; COMMIT
SQL
cat >"$scripts/dg_session.sql" <<SQL
$pick
SELECT dg.dist_begin();
SELECT dg.dist_exec('peer1', $debit);
SELECT dg.dist_exec('peer2', $credit);
SELECT dg.dist_commit();
SQL
cat >"$scripts/dg_send.sql" <<SQL
$pick
BEGIN \\; SELECT dg.dist_send('peer1', $debit) \\; SELECT dg.dist_send('peer2', $credit) \\; COMMIT
SQL
cat >"$scripts/dg_send_async.sql" <<SQL
$pick
BEGIN \\; SET LOCAL dg.synchronous_finish = off \\; SELECT dg.dist_send('peer1', $debit) \\; SELECT dg.dist_send('peer2', $credit) \\; COMMIT
SQL
cat >"$scripts/dblink_2pc.sql" <<SQL
$pick
SELECT dblink_transfer(:a1, :a2, :amount);
SQL
cat >"$scripts/fdw_1pc.sql" <<SQL
$pick
BEGIN \\; UPDATE accounts_p1 SET balance = balance - :amount WHERE aid = :a1 \\; UPDATE accounts_p2 SET balance = balance + :amount WHERE aid = :a2 \\; COMMIT
SQL
cat >"$scripts/one_node.sql" <<SQL
$pick
BEGIN \\; UPDATE accounts SET balance = balance - :amount WHERE aid = :a1 \\; UPDATE accounts SET balance = balance + :amount WHERE aid = :a2 \\; COMMIT
SQL
# peers_N (dist_exec) and send_peers_N (dist_send): one row on each of N peers.
for n in 2 4 8; do
    for f in exec send; do
        {
            echo '\set a random(1, '$accounts')'
            printf 'BEGIN'
            for i in $(seq 1 "$n"); do
                printf " \\\\; SELECT dg.dist_%s('peer%s', 'UPDATE accounts SET balance = balance + 0 WHERE aid = \$1', ':a')" "$f" "$i"
            done
            echo ' \; COMMIT'
        } >"$scripts/$([ $f = send ] && echo send_)peers_$n.sql"
    done
done
# The consistent reader (issue 14): a snapshot of the transfer's two peers,
# then a sum from each. The sums cover 100 accounts, so that the run
# measures the snapshot, not two cores busy scanning; one statement per
# line, so that the coordinator's log times the snapshot on its own.
span=$((accounts > 100 ? 100 : accounts))
range="'SELECT sum(balance) FROM accounts WHERE aid BETWEEN \$1 AND \$1 + $((span - 1))', ':r'"
cat >"$scripts/reader.sql" <<SQL
\\set r random(1, $((accounts - span + 1)))
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT dg.dist_snapshot('peer1', 'peer2');
SELECT (SELECT s FROM dg.dist_query('peer1', $range) AS t(s numeric)) + (SELECT s FROM dg.dist_query('peer2', $range) AS t(s numeric));
COMMIT;
SQL
# The same reads without dist_snapshot() (each node's REPEATABLE READ
# snapshot is then taken by its dist_query, outside the fence): what the
# reader costs two shared cores by itself, apart from the fence.
grep -v dist_snapshot "$scripts/reader.sql" >"$scripts/plain_reader.sql"

# -- statistics -----------------------------------------------------------------
# Each measure of a point is kept per round, as a space-separated list.
# agg med|min|max VALUE...: the median (mean of the middle two for an
# even count), minimum or maximum; n/a with no values.
agg() {
    local what=$1
    shift
    [ $# -gt 0 ] || {
        echo n/a
        return
    }
    printf '%s\n' "$@" | sort -g | awk -v w="$what" '{ v[NR] = $1 }
        END { if (w == "min") print v[1]; else if (w == "max") print v[NR];
              else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# m ARRAY KEY [FORMAT]: the median of ARRAY[KEY]'s rounds, printf'd.
m() {
    local -n _arr=$1
    local v
    # shellcheck disable=SC2086 # the list splits into its rounds
    v=$(agg med ${_arr[$2]:-})
    fmt "$v" "${3:-%.3f}"
}
# range ARRAY KEY [FORMAT]: "min–max" of ARRAY[KEY]'s rounds.
range() {
    local -n _arr=$1
    [ -n "${_arr[$2]:-}" ] || {
        echo n/a
        return
    }
    # shellcheck disable=SC2086
    echo "$(fmt "$(agg min ${_arr[$2]})" "${3:-%.3f}")–$(fmt "$(agg max ${_arr[$2]})" "${3:-%.3f}")"
}
fmt() {
    case $1 in
    n/a | "") echo n/a ;;
    *) awk -v v="$1" -v f="$2" 'BEGIN { printf f, v }' ;;
    esac
}
# add ARRAY KEY VALUE: one more round.
add() {
    local -n _arr=$1
    _arr[$2]="${_arr[$2]:+${_arr[$2]} }$3"
}
# median_of FILE COLUMN [MINUS_COLUMN]: the median of a column of numbers
# (less another column) over FILE's lines, n/a for none.
median_of() {
    awk -v c="$2" -v d="${3:-0}" '$c ~ /^[0-9.]+$/ { print $c - (d ? $d : 0) }' "$1" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR == 0) print "n/a"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

us_to_ms() {
    case $1 in
    n/a) echo n/a ;;
    *) awk -v v="$1" 'BEGIN { printf "%.3f", v / 1000 }' ;;
    esac
}

# -- the floor ------------------------------------------------------------------
# A WAL flush as this disk does it for the coordinator's wal_sync_method
# (one 8 kB write, then the sync), measured where the nodes' data is.
say "pg_test_fsync -s 1 on $work"
sync_method=$(psql_val "$coord" $db "SHOW wal_sync_method")
fsync_out=$("$DG_PG_BIN/pg_test_fsync" -s "${DG_BENCH_FSYNC_SECONDS:-1}" -f "$work/pg_test_fsync.tmp" 2>&1) ||
    die "pg_test_fsync failed: $fsync_out"
rm -f "$work/pg_test_fsync.tmp"
flush_us=$(awk -v m="$sync_method" '/one 8kB write/ { on = 1; next } on && /^$/ { exit }
    on && $1 == m && $(NF) == "usecs/op" { print $(NF - 1); exit }' <<<"$fsync_out")
[ -n "$flush_us" ] || die "no $sync_method line in pg_test_fsync's output: $fsync_out"
flush_ms=$(awk -v u="$flush_us" 'BEGIN { printf "%.3f", u / 1000 }')
# floor RTT_US sync|async: a durable 2-peer atomic commit's latency in ms:
# the PREPAREs' round trip and the peers' flush, the decision's flush on
# the coordinator, and, when the finish is waited for, the COMMIT
# PREPAREDs' round trip and flush.
floor_ms() {
    awk -v r="$1" -v f="$flush_ms" -v w="$2" 'BEGIN { n = (w == "sync") ? 2 : 1; printf "%.3f", n * r / 1000 + (n + 1) * f }'
}

# -- running ------------------------------------------------------------------
# peer_totals: "MONEY PREPARED", the money and the prepared transactions
# on all peers, read in one query on the coordinator (dblink, straight to
# each peer's port): one process per check, not two per peer.
peer_totals() {
    local i from=""
    for i in $(seq 1 $npeers); do
        from+="${from:+ UNION ALL }SELECT * FROM dblink('host=127.0.0.1 port=$(peer_port "$i") dbname=$db user=postgres',
            'SELECT (SELECT sum(balance) FROM accounts), (SELECT count(*) FROM pg_prepared_xacts)') AS t(money numeric, prepared bigint)"
    done
    psql_val "$coord" $db "SELECT sum(money) || ' ' || sum(prepared) FROM ($from) p"
}
expected_total=$((accounts * 1000 * npeers))
violations=0

# Busy jiffies of the whole machine (every server, pgbench, the proxy).
busy_jiffies() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
hz=$(getconf CLK_TCK)
# Requests through dg-netproxy so far (0 when it is not running).
proxy_requests() {
    local f="$work/netproxy.stats"
    if [ -n "$netproxy_pid" ] && [ -s "$f" ]; then
        sed -n 's/^requests //p' "$f"
    else
        echo 0
    fi
}

# run VARIANT CLIENTS KEY [PGBENCH-ARGS...]: one round of KEY; adds to
# TPS[KEY], LAT[KEY] (mean latency, ms), CPU[KEY] (ms of CPU per DT) and,
# over the proxy, REQ[KEY] (requests per DT), then checks the invariants.
declare -A TPS LAT CPU REQ
run() {
    local variant=$1 nclients=$2 key=$3 port=$coord out busy0 req0
    shift 3
    [ "$variant" = one_node ] && port=$(peer_port 1)
    busy0=$(busy_jiffies)
    req0=$(proxy_requests)
    # postgres_fdw runs remote transactions REPEATABLE READ: two transfers
    # on one account fail with 40001, and pgbench retries them.
    out=$("$DG_PG_BIN/pgbench" -n -h 127.0.0.1 -p "$port" -U postgres -c "$nclients" -j "$nclients" --max-tries=10 \
        -T "$seconds" "$@" -f "$scripts/$variant.sql" $db 2>&1) || {
        echo "$out" >&2
        die "pgbench failed for $variant at $nclients clients"
    }
    local busy1 xacts
    busy1=$(busy_jiffies)
    xacts=$(sed -nE 's/^number of transactions actually processed: ([0-9]+).*/\1/p' <<<"$out")
    add CPU "$key" "$(awk -v b=$((busy1 - busy0)) -v hz="$hz" -v n="$xacts" 'BEGIN { printf "%.3f", b * 1000 / hz / n }')"
    local tps lat failed
    tps=$(sed -nE 's/^tps = ([0-9.]+) .*/\1/p' <<<"$out")
    lat=$(sed -nE 's/^latency average = ([0-9.]+) ms/\1/p' <<<"$out")
    failed=$(sed -nE 's/^number of failed transactions: ([0-9]+).*/\1/p' <<<"$out")
    # An unwaited finish may still be on its way to a peer: wait (up to
    # 10 s) for the prepared transactions to go before counting money.
    local sum left
    for _ in $(seq 1 100); do
        read -r sum left <<<"$(peer_totals)"
        [ "$left" != 0 ] || break
        sleep 0.1
    done
    if [ "$sum" != "$expected_total" ] || [ "$left" != 0 ] || [ "${failed:-0}" != 0 ]; then
        warn "$key: total $sum (expected $expected_total), $left prepared left, ${failed:-0} failed"
        violations=$((violations + 1))
    fi
    add TPS "$key" "$tps"
    add LAT "$key" "$lat"
    # The proxy writes its count every 100 ms; the checks above took longer.
    [ -z "$netproxy_pid" ] ||
        add REQ "$key" "$(awk -v r=$(($(proxy_requests) - req0)) -v n="$xacts" 'BEGIN { printf "%.2f", r / n }')"
}

# run_cost WRITER CLIENTS KEY READER: one round of the snapshot cost
# (issue 14): WRITER at CLIENTS, without a reader (READER=none), or beside
# one running READER's script (reader: consistent snapshots; plain_reader:
# the same reads without one) snapshot_rate times a second (two pgbench
# clients, so that one slow block does not lower the rate). Adds, besides run's
# measures, WMED[KEY] (the writers' median latency, ms), FENCE[KEY] (% of
# the writers' active samples waiting for the fence's lock) and, with the
# reader, RATE[KEY] (snapshots/s), SNAP[KEY] (median dist_snapshot()
# time in the coordinator's log, ms), HELD[KEY] (% of the snapshots that
# held the commit fence, from dg.stats) and RMED[KEY] (the reader block's
# median latency, ms).
declare -A WMED FENCE RATE SNAP HELD RMED
# snapshot_counts: "taken held", dg.stats's snapshot counters now.
snapshot_counts() {
    psql_val "$coord" $db "SELECT snapshots || ' ' || snapshots_held FROM dg.stats"
}
run_cost() {
    local writer=$1 nclients=$2 key=$3 reader=$4 logs="$work/logs" rpid="" spid offset
    rm -rf "$logs"
    mkdir -p "$logs"
    offset=$(stat -c %s "$coord_log")
    local held0=""
    [ "$reader" != reader ] || held0=$(snapshot_counts)
    if [ "$reader" != none ]; then
        # log_min_duration_statement = 0 for the reader's session only:
        # the log times each of its statements, the snapshot among them.
        PGAPPNAME=bench_reader PGOPTIONS="-c log_min_duration_statement=0" \
            "$DG_PG_BIN/pgbench" -n -h 127.0.0.1 -p "$coord" -U postgres -c 2 -j 2 -R "$snapshot_rate" \
            -T "$seconds" -l --log-prefix="$logs/reader" -f "$scripts/$reader.sql" $db >"$logs/reader.out" 2>&1 &
        rpid=$!
    fi
    psql_val "$coord" $db "SELECT bench_fence_samples($seconds)" >"$logs/samples" &
    spid=$!
    run "$writer" "$nclients" "$key" -l --log-prefix="$logs/writer"
    wait "$spid" || die "the fence sampler failed"
    cat "$logs"/writer.* >"$logs/writers"
    add WMED "$key" "$(us_to_ms "$(median_of "$logs/writers" 3)")"
    local active locked
    read -r active locked <"$logs/samples"
    add FENCE "$key" "$(awk -v a="$active" -v l="$locked" 'BEGIN { printf "%.3f", a ? 100 * l / a : 0 }')"
    [ -n "$rpid" ] || return 0
    wait "$rpid" || {
        cat "$logs/reader.out" >&2
        die "the reader failed"
    }
    cat "$logs"/reader.* >"$logs/readers"
    local n
    n=$(sed -nE 's/^number of transactions actually processed: ([0-9]+).*/\1/p' "$logs/reader.out")
    add RATE "$key" "$(awk -v n="$n" -v s="$seconds" 'BEGIN { printf "%.1f", n / s }')"
    # With --rate, pgbench's logged time counts from the scheduled start:
    # less the schedule lag (column 7), the block's own latency.
    add RMED "$key" "$(us_to_ms "$(median_of "$logs/readers" 3 7)")"
    [ "$reader" = reader ] || return 0
    add HELD "$key" "$(snapshot_counts |
        awk -v b="$held0" 'BEGIN { split(b, a) } { n = $1 - a[1]; printf "%.1f", n ? 100 * ($2 - a[2]) / n : 0 }')"
    tail -c +$((offset + 1)) "$coord_log" |
        sed -nE 's/.*duration: ([0-9.]+) ms +statement: SELECT dg\.dist_snapshot\(.*/\1/p' >"$logs/snapshots"
    add SNAP "$key" "$(fmt "$(median_of "$logs/snapshots" 1)" "%.3f")"
}

# in_rounds POINT...: each POINT (a command line: "run VARIANT CLIENTS
# KEY" or "run_cost …") rounds times, interleaved.
in_rounds() {
    local r p cmd
    for r in $(seq 1 "$rounds"); do
        for p in "$@"; do
            read -ra cmd <<<"$p"
            say "round $r/$rounds: ${cmd[3]} (${cmd[1]} at ${cmd[2]} client(s))${label:+, $label}"
            "${cmd[@]}"
        done
    done
}

# -- over a delayed network --------------------------------------------------
# point_links PORT_FN: the coordinator's dg and postgres_fdw servers and the
# dblink function reach peer i on port $(PORT_FN i).
point_links() {
    local i
    {
        for i in $(seq 1 $npeers); do
            echo "ALTER SERVER peer$i OPTIONS (SET port '$($1 "$i")');"
            echo "ALTER SERVER fdw$i OPTIONS (SET port '$($1 "$i")');"
        done
        dblink_transfer_sql "$($1 1)" "$($1 2)"
    } | psql_raw -q -p "$coord" -d $db
}
# start_netproxy ONE_WAY_US: dg-netproxy on every link, once all listen.
start_netproxy() {
    local bin="${CARGO_TARGET_DIR:-$DG_REPO/tests/target}/release/dg-netproxy" args=() i
    for i in $(seq 1 $npeers); do
        args+=(--listen "127.0.0.1:$(link_port "$i")" --to "127.0.0.1:$(peer_port "$i")")
    done
    local log="$work/netproxy.log"
    rm -f "$work/netproxy.stats"
    "$bin" --delay-us "$1" --stats "$work/netproxy.stats" "${args[@]}" >"$log" 2>&1 &
    netproxy_pid=$!
    for _ in $(seq 1 100); do
        [ "$(grep -c '^listening ' "$log")" != "$npeers" ] || return 0
        kill -0 "$netproxy_pid" 2>/dev/null || die "dg-netproxy failed: $(cat "$log")"
        sleep 0.1
    done
    die "dg-netproxy did not listen within 10 s: $(cat "$log")"
}

stamp=$(date -u +%Y%m%dT%H%M%SZ)
report="$results/$stamp.md"
[ "$long" != 1 ] || report="$results/$stamp-long.md"

if [ "$long" = 1 ]; then
    say "dg_block at 8 clients for ${long_seconds}s"
    seconds=$long_seconds
    run dg_block 8 long
    tps=$(m TPS long %.1f) lat=$(m LAT long)
    # The resolver forgets finished decisions every interval: measure once
    # it has (at most 10 s).
    for _ in $(seq 1 100); do
        [ "$(psql_val "$coord" $db "SELECT count(*) FROM dg.decisions")" != 0 ] || break
        sleep 0.1
    done
    size=$(psql_val "$coord" $db "SELECT pg_total_relation_size('dg.decisions')")
    rows_left=$(psql_val "$coord" $db "SELECT count(*) FROM dg.decisions")
    {
        echo "# dg bench-long, $stamp"
        echo
        echo "dg_block at 8 clients for ${long_seconds}s: $tps TPS, mean latency $lat ms."
        echo
        echo "| measure | value | target |"
        echo "|---|---|---|"
        echo "| dg.decisions size (table + index) | $((size / 1024)) kB | < 1024 kB $([ "$size" -lt 1048576 ] && echo PASS || echo FAIL) |"
        echo "| decision rows left | $rows_left | |"
        echo "| invariant violations | $violations | 0 |"
    } | tee "$report"
    exit 0
fi

variants="dg_block dg_session dg_send"
[ "$async" = 0 ] || variants+=" dg_send_async"
variants+=" dblink_2pc fdw_1pc one_node"
# variants_at RTT: one_node has no link to delay.
variants_at() {
    if [ "$1" = 0 ]; then echo "$variants"; else echo "${variants% one_node}"; fi
}
if [ -n "$(tr -d ' 0' <<<"$rtts")" ]; then
    say "building dg-netproxy"
    cargo build --release --quiet --manifest-path "$DG_REPO/tests/Cargo.toml" --bin dg-netproxy
fi
for rtt in $rtts; do
    if [ "$rtt" != 0 ]; then
        start_netproxy $((rtt / 2))
        point_links link_port
    fi
    label="$rtt µs round trip"
    points=()
    for c in $clients; do
        for v in $(variants_at "$rtt"); do
            points+=("run $v $c $v/$c/rtt$rtt")
        done
    done
    for n in 2 4 8; do
        points+=("run peers_$n 1 dg_block/peers$n/rtt$rtt" "run send_peers_$n 1 dg_send/peers$n/rtt$rtt")
    done
    points+=("run_cost dg_send $cost_clients cost/rtt$rtt none"
        "run_cost dg_send $cost_clients cost+reader/rtt$rtt reader"
        "run_cost dg_send $cost_clients cost+plain/rtt$rtt plain_reader")
    in_rounds "${points[@]}"
    if [ "$rtt" != 0 ]; then
        point_links peer_port
        stop_netproxy
    fi
done
# The peers share this machine's one disk, so their PREPARE and COMMIT
# PREPARED flushes queue behind each other, where separate machines would
# flush in parallel. The same runs with fsync off on the peers (a reload
# setting) show what the protocol itself costs per added peer.
set_peer_fsync() {
    local i
    for i in $(seq 1 $npeers); do
        psql_raw -q -p "$(peer_port "$i")" -d $db -c "ALTER SYSTEM SET fsync = $1" -c "SELECT pg_reload_conf()" >/dev/null
    done
}
set_peer_fsync off
label="peers without fsync"
points=()
for n in 2 4 8; do
    points+=("run peers_$n 1 dg_block/nofsync$n" "run send_peers_$n 1 dg_send/nofsync$n")
done
in_rounds "${points[@]}"
set_peer_fsync on

say "dg.dist_query over $rows remote rows"
rss=$(psql_raw -qtA -p "$coord" -d $db <<SQL
SET work_mem = '4MB';
CREATE TEMP TABLE rss (at text, kb bigint);
INSERT INTO rss SELECT 'before', (regexp_match(pg_read_file('/proc/self/status'), 'VmHWM:\s+(\d+)'))[1]::bigint;
SELECT count(*) AS streamed FROM dg.dist_query('peer1', 'SELECT g, repeat(''x'', 20) FROM generate_series(1, $rows) g') AS t(g int, pad text) \gset
INSERT INTO rss SELECT 'after', (regexp_match(pg_read_file('/proc/self/status'), 'VmHWM:\s+(\d+)'))[1]::bigint;
SELECT :streamed || ' ' || (SELECT kb FROM rss WHERE at = 'after') - (SELECT kb FROM rss WHERE at = 'before');
SQL
)
read -r streamed rss_kb <<<"$rss"
deadlocks=$(psql_val "$coord" $db "SELECT to_jsonb(s) ->> 'deadlocks' FROM dg.stats s")

# -- report -------------------------------------------------------------------
ratio() {
    case "$1/$2" in
    *n/a* | /* | */ | */0 | */0.000) echo n/a ;;
    *) awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }' ;;
    esac
}
# check VALUE <=|>= LIMIT: PASS, FAIL, or SKIP when nothing was measured.
check() {
    [ "$1" != n/a ] || {
        echo SKIP
        return
    }
    awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN { ok = (op == ">=") ? v >= t : v <= t; print (ok ? "PASS" : "FAIL") }'
}
# target TEXT VALUE OP LIMIT [UNIT]: one row of the targets table.
target() {
    local unit=${5-x}
    [ "$2" != n/a ] || unit=""
    echo "| $1 | $2$unit | $(check "$2" "$3" "$4") |"
}
has_rtt() { [[ " $rtts " == *" $1 "* ]]; }
# The largest RTT run: where round trips are counted.
far=$(tr ' ' '\n' <<<"$rtts" | sort -n | tail -n 1)
# round_trips VARIANT CLIENTS: the round trips a DT waited for, measured:
# what RTT far added to its latency, over RTT far.
round_trips() {
    if [ "${far:-0}" = 0 ] || ! has_rtt 0 || [ "$2" != 1 ]; then
        echo –
        return
    fi
    local a b
    a=$(m LAT "$1/1/rtt$far") b=$(m LAT "$1/1/rtt0")
    [ "$a" != n/a ] && [ "$b" != n/a ] || {
        echo –
        return
    }
    awk -v a="$a" -v b="$b" -v r="$far" 'BEGIN { printf "%.1f", (a - b) * 1000 / r }'
}
# peers_rt VARIANT N: the round trips of a DT writing N peers, by protocol.
peers_rt() { if [ "$1" = dg_send ]; then echo 2; else echo $(($2 + 2)); fi; }
# peers_table KIND SUFFIX: dg_block and dg_send on 2, 4 and 8 peers (keys
# VARIANT/KIND<n>SUFFIX), against 2 peers.
peers_table() {
    echo "| variant | peers | TPS | mean latency (ms) | latency min–max | latency vs 2 peers | round trips (protocol) |"
    echo "|---|---|---|---|---|---|---|"
    local v n k name
    for v in dg_block dg_send; do
        name=$v
        [ "$1" != nofsync ] || name="$v, peers without fsync"
        for n in 2 4 8; do
            k=$v/$1$n$2
            echo "| $name | $n | $(m TPS "$k" %.1f) | $(m LAT "$k") | $(range LAT "$k") | $(ratio "$(m LAT "$k")" "$(m LAT "$v/${1}2$2")") | $(peers_rt "$v" "$n") |"
        done
    done
}
commit=$(git -C "$DG_REPO" rev-parse --short HEAD 2>/dev/null || echo '?')
{
    echo "# dg bench, $stamp"
    echo
    echo "$(nproc) cores; fsync = on, synchronous_commit = on; ${seconds}s per run, each point the median of $rounds interleaved rounds (min–max beside it); $accounts accounts per peer; $commit."
    echo
    echo "A WAL flush here: $flush_ms ms (\`pg_test_fsync\`, $sync_method, one 8 kB write, on the nodes' disk)."
    [ "$async" = 1 ] || {
        echo
        echo "**dg_send_async skipped**: this dg has no \`dg.synchronous_finish\`."
    }
    for rtt in $rtts; do
        echo
        echo "## Transfer between two peers, RTT $rtt µs"
        echo
        if [ "$rtt" = 0 ]; then
            echo "Direct loopback links (a round trip costs ~30 µs)."
        else
            echo "Every coordinator → peer link through \`dg-netproxy --delay-us $((rtt / 2))\` (each way)."
        fi
        echo "Floor of a durable 2-peer atomic commit: $(floor_ms "$rtt" sync) ms when the finish is waited for (2 round trips + 3 flushes), $(floor_ms "$rtt" async) ms when not (1 + 2)."
        echo "Round trips: measured ((latency at $far µs − at 0) / $far µs, 1 client), and by protocol in brackets; requests: simple queries and syncs sent to all peers per DT (counted by the proxy; a run's connection setup and the resolver's passes add a few per run); flushes: WAL flushes waited for in sequence; CPU: the whole machine's busy time per DT."
        echo
        echo "| variant | clients | TPS | mean latency (ms) | TPS min–max | latency min–max | round trips/DT | requests/DT | flushes | latency / floor | CPU ms/DT | TPS vs dblink_2pc | latency vs fdw_1pc |"
        echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        for c in $clients; do
            for v in $(variants_at "$rtt"); do
                k=$v/$c/rtt$rtt
                vs_floor=–
                if [ "$c" = 1 ]; then
                    case $v in
                    dg_send_async) vs_floor=$(ratio "$(m LAT "$k")" "$(floor_ms "$rtt" async)") ;;
                    dg_* | dblink_2pc) vs_floor=$(ratio "$(m LAT "$k")" "$(floor_ms "$rtt" sync)") ;;
                    esac
                fi
                req=–
                [ "$rtt" = 0 ] || req=$(m REQ "$k" %.1f)
                echo "| $v | $c | $(m TPS "$k" %.1f) | $(m LAT "$k") | $(range TPS "$k" %.0f) | $(range LAT "$k") | $(round_trips "$v" "$c") (${PROTO_RT[$v]}) | $req | ${PROTO_FLUSH[$v]} | $vs_floor | $(m CPU "$k" %.2f) | $(ratio "$(m TPS "$k")" "$(m TPS "dblink_2pc/$c/rtt$rtt")") | $(ratio "$(m LAT "$k")" "$(m LAT "fdw_1pc/$c/rtt$rtt")") |"
            done
        done
    done
    for rtt in $rtts; do
        echo
        echo "## Peers written per DT, RTT $rtt µs"
        echo
        echo "One row on each peer, 1 client."
        echo
        peers_table peers "/rtt$rtt"
        if [ "$rtt" = 0 ]; then
            echo
            echo "The peers share one disk here. Diagnostic, the same with fsync off on the peers:"
            echo
            peers_table nofsync ""
        fi
    done
    for rtt in $rtts; do
        echo
        echo "## Consistent snapshots beside writers, RTT $rtt µs"
        echo
        echo "dg_send at $cost_clients clients; the reader: \`BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT dg.dist_snapshot('peer1', 'peer2');\` a sum of 100 accounts from each, \`COMMIT\`, at $snapshot_rate a second (pgbench --rate, 2 clients). Latencies are medians of each DT (pgbench's log); the snapshot's is \`dist_snapshot()\` alone (the coordinator's log); snapshots holding the fence: the share of them that kept commits out (\`dg.stats\`; the others were taken while commits went on); the diagnostic row runs the same reader without \`dist_snapshot()\`, so that what the reads cost two shared cores can be told from what the fence costs; fence lock: the writers' share of active samples (every 20 ms) waiting for the commit fence's LWLock."
        echo
        echo "| reader | writer TPS | TPS min–max | writer median latency (ms) | snapshots/s | snapshot median (ms) | snapshots holding the fence (%) | reader block median (ms) | writers on the fence lock (%) |"
        echo "|---|---|---|---|---|---|---|---|---|"
        for k in cost cost+reader cost+plain; do
            r=none rate=– snap=– held=– rmed=–
            case $k in
            cost+reader) r="$snapshot_rate/s" ;;
            cost+plain) r="$snapshot_rate/s, the same reads without the snapshot (diagnostic)" ;;
            esac
            if [ "$k" != cost ]; then
                rate=$(m RATE "$k/rtt$rtt" %.1f) snap=$(m SNAP "$k/rtt$rtt") held=$(m HELD "$k/rtt$rtt" %.1f) rmed=$(m RMED "$k/rtt$rtt")
            fi
            echo "| $r | $(m TPS "$k/rtt$rtt" %.1f) | $(range TPS "$k/rtt$rtt" %.0f) | $(m WMED "$k/rtt$rtt") | $rate | $snap | $held | $rmed | $(m FENCE "$k/rtt$rtt" %.2f) |"
        done
        echo
        echo "Writer TPS beside the reads without a snapshot, over alone: $(ratio "$(m TPS "cost+plain/rtt$rtt")" "$(m TPS "cost/rtt$rtt")")x (what the reads cost by themselves); beside the consistent reader, over beside the plain one: $(ratio "$(m TPS "cost+reader/rtt$rtt")" "$(m TPS "cost+plain/rtt$rtt")")x (what the snapshot and its fence add)."
    done
    echo
    echo "## Targets"
    echo
    echo "Ratios of medians within this run (issues 13 and 14)."
    echo
    echo "| target | measured | |"
    echo "|---|---|---|"
    for rtt in $rtts; do
        target "dg_send latency with 8 peers <= 1.3x with 2 peers, $rtt µs" \
            "$(ratio "$(m LAT "dg_send/peers8/rtt$rtt")" "$(m LAT "dg_send/peers2/rtt$rtt")")" "<=" 1.3
    done
    if has_rtt 1000; then
        l=$(m LAT dg_send/1/rtt1000)
        target "dg_send latency <= 0.6x fdw_1pc, 1000 µs, 1 client" "$(ratio "$l" "$(m LAT fdw_1pc/1/rtt1000)")" "<=" 0.6
        target "dg_send latency <= 0.5x dblink_2pc, 1000 µs, 1 client" "$(ratio "$l" "$(m LAT dblink_2pc/1/rtt1000)")" "<=" 0.5
        target "dg_send_async latency <= 0.4x fdw_1pc, 1000 µs, 1 client" \
            "$(ratio "$(m LAT dg_send_async/1/rtt1000)" "$(m LAT fdw_1pc/1/rtt1000)")" "<=" 0.4
    fi
    if has_rtt 0; then
        l=$(m LAT dg_send/1/rtt0)
        target "dg_send latency <= 0.75x dg_block, 0 µs, 1 client" "$(ratio "$l" "$(m LAT dg_block/1/rtt0)")" "<=" 0.75
        target "dg_send latency <= 2x the floor ($(floor_ms 0 sync) ms), 0 µs, 1 client" "$(ratio "$l" "$(floor_ms 0 sync)")" "<=" 2
        target "dg_send CPU per DT <= dblink_2pc's, 0 µs, 1 client" \
            "$(ratio "$(m CPU dg_send/1/rtt0)" "$(m CPU dblink_2pc/1/rtt0)")" "<=" 1
    fi
    for rtt in $rtts; do
        target "dg_send TPS >= 1.0x dblink_2pc, $rtt µs, 8 clients" \
            "$(ratio "$(m TPS "dg_send/8/rtt$rtt")" "$(m TPS "dblink_2pc/8/rtt$rtt")")" ">=" 1.0
    done
    for rtt in $rtts; do
        target "writer TPS with a reader at $snapshot_rate snapshots/s >= 0.9x without, $rtt µs" \
            "$(ratio "$(m TPS "cost+reader/rtt$rtt")" "$(m TPS "cost/rtt$rtt")")" ">=" 0.9
        target "snapshot median latency <= the writers' median latency, $rtt µs" \
            "$(ratio "$(m SNAP "cost+reader/rtt$rtt")" "$(m WMED "cost+reader/rtt$rtt")")" "<=" 1
        target "without readers, writers waiting on the fence lock <= 2 % of active samples, $rtt µs" \
            "$(m FENCE "cost/rtt$rtt" %.2f)" "<=" 2 " %"
    done
    echo "| dist_query over $streamed rows: backend peak RSS growth < 100 MB | $((rss_kb / 1024)) MB | $(check "$rss_kb" "<=" 102400) |"
    echo "| deadlock cancellations under the workload | ${deadlocks:-n/a} | $(check "${deadlocks:-0}" "<=" 0) |"
    echo "| invariant violations (money, prepared left, failed) | $violations | $(check "$violations" "<=" 0) |"
} | tee "$report"
say "written to ${report#"$DG_REPO"/}"
grep -E '\| (PASS|FAIL|SKIP) \|$' "$report" | sed -E 's/^\| (.*) \| (.*) \| (PASS|FAIL|SKIP) \|$/\3  \1: \2/'

# Pictures of the same numbers, drawn from the report, beside it; the
# latest-*.svg copies are what README shows.
say "plots (bench/plot.py)"
pylib="$DG_DATA_ROOT/pylib-bench"
pip_target "$pylib" "$DG_REPO/bench/requirements.txt"
for svg in $(PYTHONPATH="$pylib" python3 "$DG_REPO/bench/plot.py" "$report"); do
    name=${svg##*/}
    cp "$svg" "$results/latest-${name#"$stamp"-}"
    echo "  ${svg#"$DG_REPO"/}"
done
