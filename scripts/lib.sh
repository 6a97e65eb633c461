# shellcheck shell=bash
# Shared helpers for dg's scripts; sourced, not run.
#
# Everything runs as root (dev and CI machines). initdb and postgres refuse
# root, so servers run as the `postgres` OS user through runuser, listen on
# 127.0.0.1 only and trust every loopback connection.
#
# Environment (all optional):
#   PG            the PostgreSQL major to run (14-18; default 15, Debian's);
#                 others come from scripts/pg.sh, each with its own data
#                 root (<repo>/.dg/run-pgNN) and ports (+100 per major)
#   PG_CONFIG     pg_config of the target PostgreSQL (default: that of PG)
#   DG_DATA_ROOT  where node data lives (default <repo>/.dg, see below)
#   DG_RELEASE=1  build dg with the release profile
#   DG_FEATURES   extra cargo features for the dg build (space separated)
# Exported to child processes: DG_REPO, DG_DATA_ROOT, DG_PG_CACHE (where
# scripts/pg.sh's trees are: <data root>/pg of the default major), PG,
# PG_CONFIG, DG_PG_BIN, DG_PORT_OFFSET (and PGRX_HOME, LD_LIBRARY_PATH off
# PG 15).

set -euo pipefail

DG_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/pg.sh
source "$DG_REPO/scripts/pg.sh"
PG=${PG:-$DG_PG_SYSTEM_MAJOR}
export DG_REPO PG

# `make` may run from a shell whose PATH lacks rustup's bin dir.
export PATH="$HOME/.cargo/bin:$PATH"
# pgrx appends a Rust backtrace to errors it re-raises when these are set;
# servers inherit our environment, so keep backtraces out of their errors
# (and out of the pg_regress expected outputs).
unset RUST_BACKTRACE RUST_LIB_BACKTRACE

say() { printf '\033[1m== %s\033[0m\n' "$*"; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() {
    printf 'ERROR: %s\n' "$*" >&2
    exit 1
}

[ "$(id -u)" = 0 ] || die "run as root: the scripts start PostgreSQL as the postgres user via runuser"

# Run a command as the postgres user, from / so that no tool trips over a
# working directory postgres cannot enter.
as_postgres() {
    (cd / && runuser -u postgres -- "$@")
}

# Print the data root: .dg/ in the repo, unless the postgres user cannot
# traverse the repo path (a clone under a private home directory); then a
# per-clone directory in /tmp.
dg_data_root() {
    if as_postgres test -x "$DG_REPO"; then
        echo "$DG_REPO/.dg"
    else
        local root
        root="/tmp/dg-data-$(printf '%s' "$DG_REPO" | md5sum | cut -c1-8)"
        warn "the postgres user cannot reach $DG_REPO; node data goes to $root"
        echo "$root"
    fi
}

# Decide once per top-level command: exported, so child scripts neither
# repeat the check nor the warning.
if [ -z "${DG_DATA_ROOT:-}" ]; then
    DG_DATA_ROOT=$(dg_data_root)
    mkdir -p "$DG_DATA_ROOT"
    chmod 755 "$DG_DATA_ROOT"
    # The trees of other majors are cached beside the default data; their
    # nodes get a root of their own, so no two majors share a directory.
    DG_PG_CACHE=${DG_PG_CACHE:-$DG_DATA_ROOT/pg}
    [ "$PG" = "$DG_PG_SYSTEM_MAJOR" ] || DG_DATA_ROOT="$DG_DATA_ROOT/run-pg$PG"
fi
DG_PG_CACHE=${DG_PG_CACHE:-$DG_DATA_ROOT/pg}
PG_CONFIG=${PG_CONFIG:-$(pg_config_of "$PG" "$DG_PG_CACHE")}
# PostgreSQL's own bin dir, not $PATH: /usr/bin/psql is Debian's
# version-picking wrapper and /usr/local/bin may hold stray symlinks.
DG_PG_BIN=$("$PG_CONFIG" --bindir)
# Fixed ports move by 100 per major, so nodes of two majors can run at once.
DG_PORT_OFFSET=$(((PG - DG_PG_SYSTEM_MAJOR) * 100))
export DG_DATA_ROOT DG_PG_CACHE PG_CONFIG DG_PG_BIN DG_PORT_OFFSET
mkdir -p "$DG_DATA_ROOT"
# Root-owned but traversable; postgres owns only the directories inside.
chmod 755 "$DG_DATA_ROOT"

if [ "$PG" != "$DG_PG_SYSTEM_MAJOR" ]; then
    # The wheels' libpq users (dblink, postgres_fdw, dg) carry a run path
    # to /opt/postgresql/lib, which does not exist: without this they load
    # the system's libpq 15 (undefined symbol PQcancelStart on 17+).
    # Every server and client started from here inherits it.
    export LD_LIBRARY_PATH="$("$PG_CONFIG" --libdir)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    # pgrx's own config names the tree of this major (and the system 15);
    # written here, so `cargo pgrx init` never downloads a server.
    export PGRX_HOME="$DG_DATA_ROOT/pgrx"
    mkdir -p "$PGRX_HOME"
    printf '[configs]\npg%s = "%s"\npg%s = "%s"\n' \
        "$DG_PG_SYSTEM_MAJOR" "$(pg_config_of "$DG_PG_SYSTEM_MAJOR" "")" "$PG" "$PG_CONFIG" \
        >"$PGRX_HOME/config.toml"
fi

# pip_target DIR REQUIREMENTS: the pinned Python packages of REQUIREMENTS,
# from PyPI into DIR (for PYTHONPATH), not into the system's Python;
# reinstalled only when the file changes.
pip_target() {
    local dir=$1 req=$2
    if ! cmp -s "$req" "$dir/.requirements" 2>/dev/null; then
        say "pip install -r ${req#"$DG_REPO"/} (into $dir)"
        rm -rf "$dir"
        python3 -m pip install -q --disable-pip-version-check --target "$dir" -r "$req"
        cp "$req" "$dir/.requirements"
    fi
}

# ---------------------------------------------------------------------------
# Installing dg
# ---------------------------------------------------------------------------

# Build dg and install it into the PostgreSQL that PG_CONFIG names.
# `cargo pgrx install` copies files over the installed ones in place, which
# crashes a running server that has dg.so mapped. So build a package
# instead and move each file into place by rename: running servers keep the
# old library, new backends load the new one.
dg_install_extension() {
    # Under the data root, not target/: CARGO_TARGET_DIR may put that elsewhere.
    local out="$DG_DATA_ROOT/package"
    dg_build_package "$DG_REPO" "$out"
    dg_install_package "$out"
}

# dg_build_package SRC OUT: build the dg sources in SRC into a package
# tree in OUT (the files `make install` would install, under their paths).
dg_build_package() {
    local src=$1 out=$2
    local args=(pgrx package --pg-config "$PG_CONFIG")
    [ "${DG_RELEASE:-0}" = 1 ] || args+=(--debug) # package defaults to release
    [ -z "${DG_FEATURES:-}" ] || args+=(--features "$DG_FEATURES")
    rm -rf "$out"
    say "building dg${DG_RELEASE:+ (release)}${DG_FEATURES:+ (features: $DG_FEATURES)} from $src"
    (cd "$src" && cargo "${args[@]}" --out-dir "$out" >/dev/null)
    # pgrx packages the upgrade scripts (sql/dg--A--B.sql) itself; the
    # install scripts of earlier releases (sql/dg--A.sql) let
    # CREATE EXTENSION dg VERSION 'A' and the upgrade test work.
    local extdir="$out$("$PG_CONFIG" --sharedir)/extension"
    find "$src/sql" -maxdepth 1 -name 'dg--*.sql' ! -name 'dg--*--*.sql' -exec cp {} "$extdir/" \;
}

# dg_install_package OUT: move a package tree built by dg_build_package
# into place, each file by rename.
dg_install_package() {
    local out=$1 f dest
    while IFS= read -r f; do
        dest="/${f#./}"
        install -D -m 0644 "$out/$f" "$dest.dg-new"
        mv -f "$dest.dg-new" "$dest"
    done < <(cd "$out" && find . -type f)
    say "dg installed into $("$PG_CONFIG" --pkglibdir)"
}

# ---------------------------------------------------------------------------
# Nodes: PostgreSQL clusters named by their path under DG_DATA_ROOT
# (e.g. demo/coord); an absolute path is used as is.
# ---------------------------------------------------------------------------

node_dir() {
    case $1 in
    /*) echo "$1" ;;
    *) echo "$DG_DATA_ROOT/$1" ;;
    esac
}

# True if a postmaster runs on this data directory.
cluster_running() {
    [ -f "$1/postmaster.pid" ] && as_postgres "$DG_PG_BIN/pg_ctl" status -D "$1" >/dev/null 2>&1
}

# True if any server answers on 127.0.0.1:PORT (pg_isready exits 2 only
# when nothing answered at all).
port_in_use() {
    local rc=0
    "$DG_PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$1" -U postgres -t 5 || rc=$?
    [ "$rc" != 2 ]
}

# Close every file descriptor above 2 in the current (sub)shell.
close_inherited_fds() {
    local fd
    for fd in $(ls /proc/$BASHPID/fd); do
        [ "$fd" -gt 2 ] || continue
        eval "exec $fd>&-" 2>/dev/null || true
    done
}

# node_start NAME PORT [postgresql.conf lines...]
# initdb if the data directory is missing, write the settings, start.
# Extra lines come after the defaults, so they override them (later lines
# win), e.g. "max_prepared_transactions = 0" or "fsync = on".
# A no-op if the node already runs on PORT.
node_start() {
    local name=$1 port=$2
    shift 2
    local dir
    dir=$(node_dir "$name")

    if cluster_running "$dir"; then
        port_in_use "$port" || die "node $name runs, but not on port $port; run 'make stop' first"
        return 0
    fi
    port_in_use "$port" && die "port $port is taken by another server; cannot start node $name"

    if [ ! -s "$dir/PG_VERSION" ]; then
        mkdir -p "$dir"
        chown postgres:postgres "$dir"
        chmod 700 "$dir"
        # A fixed locale keeps sort order and messages independent of the
        # host; --no-sync because the data is throwaway.
        as_postgres "$DG_PG_BIN/initdb" -D "$dir" -U postgres --auth=trust \
            --encoding=UTF8 --locale=C.UTF-8 --no-sync --no-instructions >/dev/null
    fi

    # Unix socket paths are limited to 107 bytes; a deeply nested clone
    # would exceed that, then the socket goes to /tmp (its name has the port).
    local sockdir=$dir
    if [ $((${#dir} + 17)) -gt 100 ]; then
        sockdir=/tmp
    fi

    # postgresql.auto.conf is read last, so it overrides postgresql.conf;
    # rewriting it on every start also drops any ALTER SYSTEM a test made.
    {
        echo "# written by scripts/lib.sh node_start, on every start"
        echo "listen_addresses = '127.0.0.1'"
        echo "port = $port"
        echo "unix_socket_directories = '$sockdir'"
        echo "max_connections = 100"
        echo "max_prepared_transactions = 50"
        echo "fsync = off"
        echo "logging_collector = off"
        printf '%s\n' "$@"
    } >"$dir/postgresql.auto.conf"
    chown postgres:postgres "$dir/postgresql.auto.conf"

    # The postmaster would inherit our open files, a caller's lock among
    # them (`flock LOCK make demo`), and hold that lock for as long as the
    # node runs: start it with only stdin, stdout and stderr.
    if ! (close_inherited_fds && as_postgres "$DG_PG_BIN/pg_ctl" start -D "$dir" -l "$dir/server.log" -w -t 120 -s); then
        tail -n 30 "$dir/server.log" >&2 || true
        die "node $name did not start (log: $dir/server.log)"
    fi
}

# node_stop NAME: stop the node if it runs.
node_stop() {
    local dir
    dir=$(node_dir "$1")
    if cluster_running "$dir"; then
        as_postgres "$DG_PG_BIN/pg_ctl" stop -D "$dir" -m fast -w -t 120 -s
    fi
}

# stop_clusters_under DIR: stop every running cluster below DIR.
# postmaster.pid only ever sits at the top of a data directory.
stop_clusters_under() {
    [ -d "$1" ] || return 0
    local pidfile dir
    while IFS= read -r pidfile; do
        dir=$(dirname "$pidfile")
        if cluster_running "$dir"; then
            say "stopping $dir"
            node_stop "$dir"
        fi
    done < <(find "$1" -name postmaster.pid -type f)
}

# ---------------------------------------------------------------------------
# SQL
# ---------------------------------------------------------------------------

# psql_at PORT DB [SQL...]: run the SQL strings (one -c each) in ONE
# session, in autocommit, stopping at the first error. Without SQL
# arguments, reads the script from stdin.
psql_at() {
    local port=$1 db=$2
    shift 2
    local args=() sql
    for sql in "$@"; do
        args+=(-c "$sql")
    done
    psql_raw -p "$port" -d "$db" "${args[@]}"
}

# psql_val PORT DB SQL: the result, unaligned and without headers.
psql_val() {
    psql_raw -qtA -p "$1" -d "$2" -c "$3"
}

# psql_raw PSQL-ARGS...: psql as postgres over TCP, stopping at the first error.
psql_raw() {
    "$DG_PG_BIN/psql" -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -U postgres "$@"
}

# ensure_db PORT DB: create the database unless it exists.
ensure_db() {
    if [ "$(psql_val "$1" postgres "SELECT 1 FROM pg_database WHERE datname = '$2'")" != 1 ]; then
        "$DG_PG_BIN/createdb" -h 127.0.0.1 -p "$1" -U postgres "$2"
    fi
}

# recreate_db PORT DB: drop the database (ending its sessions), create it anew.
recreate_db() {
    # (quiet: no "does not exist, skipping" notice)
    PGOPTIONS="-c client_min_messages=warning" \
        "$DG_PG_BIN/dropdb" -h 127.0.0.1 -p "$1" -U postgres --if-exists --force "$2"
    "$DG_PG_BIN/createdb" -h 127.0.0.1 -p "$1" -U postgres "$2"
}
