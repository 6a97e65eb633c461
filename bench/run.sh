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
#   dg_block     BEGIN; dg.dist_exec x2; COMMIT
#   dg_session   dg.dist_begin(); dg.dist_exec x2; dg.dist_commit(), autocommit
#   dblink_2pc   PL/pgSQL + dblink, persistent connections: BEGIN and UPDATE on
#                each peer, PREPARE TRANSACTION on each, COMMIT PREPARED on each
#   fdw_1pc      postgres_fdw foreign tables, parallel_commit (not atomic)
#   one_node     the same two updates in one transaction on one node
# A block is sent as one query (pgbench's \;), like the dblink function
# call, so every variant but dg_session costs the client one round trip.
#
#   DG_BENCH_SECONDS   seconds per run (15)
#   DG_BENCH_CLIENTS   client counts ("1 8")
#   DG_BENCH_ROWS      rows for the dist_query memory test (10000000)
#   DG_BENCH_RTT_US    round-trip times (µs) to put on every coordinator ->
#                      peer link with dg-netproxy, for a second set of
#                      1-client transfer runs ("1000"; "" for none): what the
#                      protocols cost where round trips cost what they do
#                      between servers (loopback's are ~30 µs)
#   DG_BENCH_LONG=1    instead: dg_block at 8 clients for DG_BENCH_LONG_SECONDS
#                      (600), then the decision table's size
#   DG_BENCH_INSTALL=0 use the installed dg instead of a release build
#   DG_KEEP=1          leave the nodes running
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"

seconds=${DG_BENCH_SECONDS:-15}
clients=${DG_BENCH_CLIENTS:-1 8}
accounts=${DG_BENCH_ACCOUNTS:-100000}
rows=${DG_BENCH_ROWS:-10000000}
long=${DG_BENCH_LONG:-0}
long_seconds=${DG_BENCH_LONG_SECONDS:-600}
rtts=${DG_BENCH_RTT_US-1000}
base=${DG_BENCH_PORT:-$((5901 + DG_PORT_OFFSET))}
npeers=8
coord=$base
peer_port() { echo $((base + $1)); }
# The port of peer i's delayed link (dg-netproxy in front of peer_port i).
link_port() { echo $((base + 20 + $1)); }
db=bench
results="$DG_REPO/bench/results"
scripts="$DG_DATA_ROOT/bench/scripts"

if [ "${DG_BENCH_INSTALL:-1}" = 1 ]; then
    DG_RELEASE=1 "$DG_REPO/scripts/setup.sh"
fi

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
say "starting the coordinator :$coord and $npeers peers (data in $DG_DATA_ROOT/bench)"
node_start bench/coord "$coord" "${durable[@]}" "shared_preload_libraries = 'dg'" \
    "dg.resolver_interval = '1s'"
for i in $(seq 1 $npeers); do
    node_start "bench/peer$i" "$(peer_port "$i")" "${durable[@]}"
done
netproxy_pid=""
stop_netproxy() {
    [ -n "$netproxy_pid" ] || return 0
    kill "$netproxy_pid" 2>/dev/null || true
    wait "$netproxy_pid" 2>/dev/null || true
    netproxy_pid=""
}
cleanup() {
    stop_netproxy
    [ "${DG_KEEP:-0}" = 1 ] || stop_clusters_under "$DG_DATA_ROOT/bench"
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
} | psql_raw -q -p "$coord" -d $db

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
for n in 2 4 8; do
    {
        echo '\set a random(1, '$accounts')'
        printf 'BEGIN'
        for i in $(seq 1 "$n"); do
            printf " \\\\; SELECT dg.dist_exec('peer%s', 'UPDATE accounts SET balance = balance + 0 WHERE aid = \$1', ':a')" "$i"
        done
        echo ' \; COMMIT'
    } >"$scripts/peers_$n.sql"
done

# -- running ------------------------------------------------------------------
# over_peers SQL: the sum of SQL's single value over every peer.
over_peers() {
    local sum=0 i
    for i in $(seq 1 $npeers); do
        sum=$((sum + $(psql_val "$(peer_port "$i")" $db "$1")))
    done
    echo "$sum"
}
expected_total=$((accounts * 1000 * npeers))
violations=0

# Busy jiffies of the whole machine (every server, pgbench, the proxy).
busy_jiffies() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
hz=$(getconf CLK_TCK)
# Requests through dg-netproxy so far (0 when it is not running).
proxy_requests() {
    local f="$DG_DATA_ROOT/bench/netproxy.stats"
    if [ -n "$netproxy_pid" ] && [ -s "$f" ]; then
        sed -n 's/^requests //p' "$f"
    else
        echo 0
    fi
}

# run VARIANT CLIENTS: sets TPS[KEY], LAT[KEY], CPU[KEY] (ms of CPU per
# DT) and REQ[KEY] (requests per DT through the proxy) (KEY defaults to
# VARIANT/CLIENTS), then checks the invariants.
declare -A TPS LAT CPU REQ
run() {
    local variant=$1 nclients=$2 key=${3:-$1/$2} port=$coord out busy0 req0
    [ "$variant" = one_node ] && port=$(peer_port 1)
    busy0=$(busy_jiffies)
    req0=$(proxy_requests)
    # postgres_fdw runs remote transactions REPEATABLE READ: two transfers
    # on one account fail with 40001, and pgbench retries them.
    out=$("$DG_PG_BIN/pgbench" -n -h 127.0.0.1 -p "$port" -U postgres -c "$nclients" -j "$nclients" --max-tries=10 \
        -T "$seconds" -f "$scripts/$variant.sql" $db 2>&1) || {
        echo "$out" >&2
        die "pgbench failed for $variant at $nclients clients"
    }
    local busy1 xacts
    busy1=$(busy_jiffies)
    xacts=$(sed -nE 's/^number of transactions actually processed: ([0-9]+).*/\1/p' <<<"$out")
    CPU[$key]=$(awk -v b=$((busy1 - busy0)) -v hz="$hz" -v n="$xacts" 'BEGIN { printf "%.2f", b * 1000 / hz / n }')
    local tps lat failed
    tps=$(sed -nE 's/^tps = ([0-9.]+) .*/\1/p' <<<"$out")
    lat=$(sed -nE 's/^latency average = ([0-9.]+) ms/\1/p' <<<"$out")
    failed=$(sed -nE 's/^number of failed transactions: ([0-9]+).*/\1/p' <<<"$out")
    local sum left
    sum=$(over_peers "SELECT sum(balance) FROM accounts")
    left=$(over_peers "SELECT count(*) FROM pg_prepared_xacts")
    if [ "$sum" != "$expected_total" ] || [ "$left" != 0 ] || [ "${failed:-0}" != 0 ]; then
        warn "$variant/$nclients: total $sum (expected $expected_total), $left prepared left, ${failed:-0} failed"
        violations=$((violations + 1))
    fi
    TPS[$key]=$tps
    LAT[$key]=$lat
    # The proxy writes its count every 100 ms; the checks above took longer.
    REQ[$key]=$(awk -v r=$(($(proxy_requests) - req0)) -v n="$xacts" 'BEGIN { printf "%.1f", r / n }')
}

stamp=$(date -u +%Y%m%dT%H%M%SZ)
report="$results/$stamp.md"
[ "$long" != 1 ] || report="$results/$stamp-long.md"

if [ "$long" = 1 ]; then
    say "dg_block at 8 clients for ${long_seconds}s"
    seconds=$long_seconds
    run dg_block 8 long
    tps=${TPS[long]} lat=${LAT[long]}
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
        echo "| dg.decisions size (table + index) | $((size / 1024)) kB | < 1024 kB $([ "$size" -lt 1048576 ] && echo ok || echo MISSED) |"
        echo "| decision rows left | $rows_left | |"
        echo "| invariant violations | $violations | 0 |"
    } | tee "$report"
    exit 0
fi

for c in $clients; do
    for v in dg_block dg_session dblink_2pc fdw_1pc one_node; do
        say "$v at $c client(s) for ${seconds}s"
        run "$v" "$c"
    done
done
for n in 2 4 8; do
    say "dg_block writing on $n peers, 1 client"
    run "peers_$n" 1 "peers$n"
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
for n in 2 4 8; do
    say "dg_block writing on $n peers, 1 client, peers without fsync"
    run "peers_$n" 1 "nofsync$n"
done
set_peer_fsync on

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
    local log="$DG_DATA_ROOT/bench/netproxy.log"
    rm -f "$DG_DATA_ROOT/bench/netproxy.stats"
    "$bin" --delay-us "$1" --stats "$DG_DATA_ROOT/bench/netproxy.stats" "${args[@]}" >"$log" 2>&1 &
    netproxy_pid=$!
    for _ in $(seq 1 100); do
        [ "$(grep -c '^listening ' "$log")" != "$npeers" ] || return 0
        kill -0 "$netproxy_pid" 2>/dev/null || die "dg-netproxy failed: $(cat "$log")"
        sleep 0.1
    done
    die "dg-netproxy did not listen within 10 s: $(cat "$log")"
}
delayed_variants="dg_block dg_session dblink_2pc fdw_1pc"
if [ -n "$rtts" ]; then
    say "building dg-netproxy"
    cargo build --release --quiet --manifest-path "$DG_REPO/tests/Cargo.toml" --bin dg-netproxy
fi
for rtt in $rtts; do
    start_netproxy $((rtt / 2))
    point_links link_port
    for v in $delayed_variants; do
        say "$v at 1 client, ${rtt} µs round trip to each peer"
        run "$v" 1 "$v/rtt$rtt"
    done
    for n in 2 4 8; do
        say "dg_block writing on $n peers, 1 client, ${rtt} µs round trip"
        run "peers_$n" 1 "rtt${rtt}peers$n"
    done
    point_links peer_port
    stop_netproxy
done

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
# scaling_table KEY: the runs KEY2, KEY4, KEY8 against KEY2.
scaling_table() {
    echo "| peers | TPS | mean latency (ms) | latency vs 2 peers |"
    echo "|---|---|---|---|"
    local n
    for n in 2 4 8; do
        echo "| $n | ${TPS[$1$n]} | ${LAT[$1$n]} | $(ratio "${LAT[$1$n]}" "${LAT[${1}2]}") |"
    done
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
check() { awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN { ok = (op == ">=") ? v >= t : v <= t; print (ok ? "ok" : "MISSED") }'; }
{
    echo "# dg bench, $stamp"
    echo
    echo "$(nproc) cores; fsync = on, synchronous_commit = on; ${seconds}s per run; $accounts accounts per peer; $(git -C "$DG_REPO" rev-parse --short HEAD 2>/dev/null || echo '?')."
    echo
    echo "## Transfer between two peers"
    echo
    echo "| variant | clients | TPS | mean latency (ms) | TPS vs dblink_2pc | latency vs fdw_1pc | TPS vs one_node | CPU ms/DT |"
    echo "|---|---|---|---|---|---|---|---|"
    for c in $clients; do
        for v in dg_block dg_session dblink_2pc fdw_1pc one_node; do
            echo "| $v | $c | ${TPS[$v/$c]} | ${LAT[$v/$c]} | $(ratio "${TPS[$v/$c]}" "${TPS[dblink_2pc/$c]}") | $(ratio "${LAT[$v/$c]}" "${LAT[fdw_1pc/$c]}") | $(ratio "${TPS[$v/$c]}" "${TPS[one_node/$c]}") | ${CPU[$v/$c]} |"
        done
    done
    echo
    echo "## Peers written per DT (dg_block, 1 client)"
    echo
    scaling_table peers
    echo
    echo "The peers share one disk here. Diagnostic, the same with fsync off on the peers:"
    echo
    scaling_table nofsync
    echo
    for rtt in $rtts; do
        echo "## Over a network with a $rtt µs round trip to each peer (1 client)"
        echo
        echo "Every coordinator → peer link through \`dg-netproxy --delay-us $((rtt / 2))\` (each way). Latency / RTT is about the number of round trips a DT waits for in sequence; requests are the simple queries and syncs the coordinator sent to all peers, per DT; CPU is the whole machine's."
        echo
        echo "| variant | TPS | mean latency (ms) | latency / RTT | requests/DT | CPU ms/DT | latency vs fdw_1pc | latency vs dblink_2pc |"
        echo "|---|---|---|---|---|---|---|---|"
        for v in $delayed_variants; do
            k=$v/rtt$rtt
            echo "| $v | ${TPS[$k]} | ${LAT[$k]} | $(ratio "$(awk -v l="${LAT[$k]}" 'BEGIN { print l * 1000 }')" "$rtt") | ${REQ[$k]} | ${CPU[$k]} | $(ratio "${LAT[$k]}" "${LAT[fdw_1pc/rtt$rtt]}") | $(ratio "${LAT[$k]}" "${LAT[dblink_2pc/rtt$rtt]}") |"
        done
        echo
        echo "Peers written per DT (dg_block) over the same links:"
        echo
        scaling_table "rtt${rtt}peers"
        echo
    done
    echo "## Targets"
    echo
    echo "| target | measured | |"
    echo "|---|---|---|"
    for c in $clients; do
        r=$(ratio "${TPS[dg_block/$c]}" "${TPS[dblink_2pc/$c]}")
        echo "| dg_block TPS >= 1.3x dblink_2pc, $c client(s) | ${r}x | $(check "$r" ">=" 1.3) |"
    done
    r=$(ratio "${LAT[dg_block/1]:-0}" "${LAT[fdw_1pc/1]:-1}")
    echo "| dg_block latency <= 1.25x fdw_1pc, 1 client | ${r}x | $(check "$r" "<=" 1.25) |"
    r=$(ratio "${LAT[peers8]}" "${LAT[peers2]}")
    echo "| latency with 8 peers <= 1.5x with 2 peers | ${r}x | $(check "$r" "<=" 1.5) |"
    echo "| dist_query over $streamed rows: backend peak RSS growth < 100 MB | $((rss_kb / 1024)) MB | $(check "$rss_kb" "<=" 102400) |"
    echo "| deadlock cancellations under the workload | ${deadlocks:-n/a} | $(check "${deadlocks:-0}" "<=" 0) |"
    echo "| invariant violations (money, prepared left, failed) | $violations | $(check "$violations" "<=" 0) |"
} | tee "$report"
say "written to ${report#"$DG_REPO"/}"

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
