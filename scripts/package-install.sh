#!/usr/bin/env bash
# install.sh of a dg package (made by `make package` from
# scripts/package-install.sh): puts dg into one PostgreSQL installation.
#
#   ./install.sh [--pg-config PATH] [--uninstall]
#
# PATH defaults to $PG_CONFIG, else /usr/lib/postgresql/<major>/bin/pg_config
# for the package's major, else `pg_config` on $PATH. The script refuses a
# server of another major (dg.so is built against one major's ABI) and a
# package whose files do not match SHA256SUMS. Each file is written beside
# its target and renamed into place, so a running server never maps a
# half-written dg.so: running backends keep the old library, new ones load
# the new. After an upgrade, restart the server (dg is in
# shared_preload_libraries) and run ALTER EXTENSION dg UPDATE in each
# database that has it.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
die() {
    printf 'install.sh: %s\n' "$*" >&2
    exit 1
}

pg_config=${PG_CONFIG:-}
uninstall=0
while [ $# -gt 0 ]; do
    case $1 in
    --pg-config)
        [ $# -ge 2 ] || die "--pg-config needs a path"
        pg_config=$2
        shift 2
        ;;
    --uninstall)
        uninstall=1
        shift
        ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown argument: $1 (see --help)" ;;
    esac
done

major=$(cat "$here/MAJOR")
if [ -z "$pg_config" ]; then
    if [ -x "/usr/lib/postgresql/$major/bin/pg_config" ]; then
        pg_config=/usr/lib/postgresql/$major/bin/pg_config
    else
        pg_config=$(command -v pg_config) || die "no pg_config found: give --pg-config PATH"
    fi
fi
[ -x "$pg_config" ] || die "$pg_config is not an executable pg_config"
server=$("$pg_config" --version) || die "$pg_config --version failed"
server_major=$(sed -nE 's/^PostgreSQL ([0-9]+).*/\1/p' <<<"$server")
[ "$server_major" = "$major" ] ||
    die "this package is for PostgreSQL $major, but $pg_config is $server; use the pg$server_major package"

libdir=$("$pg_config" --pkglibdir)
extdir=$("$pg_config" --sharedir)/extension

if [ "$uninstall" = 1 ]; then
    rm -f "$libdir/dg.so"
    (cd "$here/extension" && for f in *; do rm -f "$extdir/$f"; done)
    echo "dg removed from $libdir and $extdir"
    exit 0
fi

(cd "$here" && sha256sum --quiet --strict -c SHA256SUMS) ||
    die "the package's files do not match SHA256SUMS: not installing (download it again)"

# put SRC DEST: DEST replaced by SRC in one rename.
put() {
    install -D -m 0644 "$1" "$2.dg-new"
    mv -f "$2.dg-new" "$2"
}
put "$here/lib/dg.so" "$libdir/dg.so"
for f in "$here"/extension/*; do
    put "$f" "$extdir/${f##*/}"
done
echo "dg $(sed -nE "s/^default_version = '(.*)'/\1/p" "$here/extension/dg.control") installed for $server into $libdir"
