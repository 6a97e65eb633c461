# Shared helpers for dg's scripts; sourced, not run.
# Servers run as the postgres OS user (initdb and postgres refuse root), on
# 127.0.0.1 only, with trust authentication on loopback.

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
PG_BIN=$("$PG_CONFIG" --bindir)
export PATH="$HOME/.cargo/bin:$PATH"
# pgrx appends a Rust backtrace to re-raised errors when this is set; keep
# it out of every server and of the expected outputs.
unset RUST_BACKTRACE RUST_LIB_BACKTRACE

say() { printf '\033[1m== %s\033[0m\n' "$*"; }

# Where node data lives: .dg/ in the repo, unless the postgres user cannot
# reach it (a clone under a private home directory), then /tmp.
data_root() {
    local root="$REPO/.dg"
    if ! runuser -u postgres -- test -x "$REPO"; then
        root="/tmp/dg-data-$(printf '%s' "$REPO" | md5sum | cut -c1-8)"
    fi
    mkdir -p "$root"
    chown postgres:postgres "$root"
    echo "$root"
}

# node_start DIR PORT [postgresql.conf lines...]: initdb if needed, start if
# not running. Extra lines override the defaults below (later lines win).
node_start() {
    local dir=$1 port=$2; shift 2
    if [ ! -s "$dir/PG_VERSION" ]; then
        mkdir -p "$dir"; chown postgres:postgres "$dir"; chmod 700 "$dir"
        runuser -u postgres -- "$PG_BIN/initdb" -D "$dir" -U postgres --auth=trust \
            --encoding=UTF8 --locale=C.UTF-8 >"$dir.initdb.log"
    fi
    {
        echo "listen_addresses = '127.0.0.1'"
        echo "port = $port"
        echo "unix_socket_directories = '$dir'"
        echo "max_prepared_transactions = 50"
        echo "max_connections = 100"
        echo "fsync = off"
        printf '%s\n' "$@"
    } >"$dir/postgresql.auto.conf"
    chown postgres:postgres "$dir/postgresql.auto.conf"
    if ! runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
        runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 start >/dev/null \
            || { tail -20 "$dir/server.log" >&2; return 1; }
    fi
}

node_stop() {
    local dir=$1
    if [ -s "$dir/postmaster.pid" ]; then
        runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$dir" -m fast -w stop >/dev/null || true
    fi
}

# psql_at PORT DB ARGS...: psql as postgres, stopping at the first error.
psql_at() {
    local port=$1 db=$2; shift 2
    "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d "$db" "$@"
}

ensure_db() {
    local port=$1 db=$2
    if [ -z "$(psql_at "$port" postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'")" ]; then
        psql_at "$port" postgres -c "CREATE DATABASE $db"
    fi
}
