#!/usr/bin/env bash
# make test-package: the package a DBA installs, tested as one would use it.
# Builds the pg15 package (make package), then:
#   1. install.sh refuses a server of another major;
#   2. install.sh refuses a package whose dg.so was changed, and installs nothing;
#   3. on a server with no dg installed, install.sh installs it, and a
#      coordinator and two peers started from that install run the demo
#      transfer (ports DG_PACKAGE_PORT (5891) to +2, data under .dg/package-test).
# The dg that was installed before is put back afterwards. Changes the system
# PostgreSQL 15, so it runs under /tmp/dg-pg15.lock (taken here).
# Ends with "package: N passed, N failed".
set -euo pipefail
source "$(dirname "$0")/lib.sh"

exec 9>"${DG_LOCK:-/tmp/dg-pg15.lock}"
flock 9

DG_PACKAGE_MAJORS=15 "$DG_REPO/scripts/package.sh"
version=$(sed -nE 's/^version = "(.*)"/\1/p' "$DG_REPO/Cargo.toml" | head -1)
tarball="$DG_REPO/dist/dg-$version-pg15-$(uname -m).tar.gz"
work="$DG_DATA_ROOT/package-test"
stop_clusters_under "$work" 2>/dev/null || true
rm -rf "$work"
mkdir -p "$work"
tar -C "$work" -xzf "$tarball"
pkg="$work/dg-$version-pg15"
libdir=$("$PG_CONFIG" --pkglibdir)
extdir=$("$PG_CONFIG" --sharedir)/extension

# What is installed now, to put back whatever happens.
saved="$work/saved"
mkdir -p "$saved/extension"
[ ! -f "$libdir/dg.so" ] || cp -p "$libdir/dg.so" "$saved/"
cp -p "$extdir"/dg.control "$extdir"/dg--*.sql "$saved/extension/" 2>/dev/null || true
restore() {
    stop_clusters_under "$work" >/dev/null 2>&1 || true
    rm -f "$extdir"/dg.control "$extdir"/dg--*.sql
    if [ -f "$saved/dg.so" ]; then
        install -m 0644 "$saved/dg.so" "$libdir/dg.so.dg-new" && mv -f "$libdir/dg.so.dg-new" "$libdir/dg.so"
    fi
    for f in "$saved"/extension/*; do
        [ -f "$f" ] && cp -p "$f" "$extdir/"
    done
}
trap restore EXIT

passed=0 failed=0
result() {
    if [ "$2" = ok ]; then
        passed=$((passed + 1))
        echo "ok: $1"
    else
        failed=$((failed + 1))
        echo "FAILED: $1"
    fi
}

say "1. another major is refused"
fake="$work/pg_config_16"
printf '#!/bin/sh\n[ "$1" = --version ] && echo "PostgreSQL 16.4" && exit 0\necho "/nonexistent"\n' >"$fake"
chmod +x "$fake"
if out=$("$pkg/install.sh" --pg-config "$fake" 2>&1); then
    result "install.sh on PostgreSQL 16 refused" failed
else
    grep -q "this package is for PostgreSQL 15, but .* is PostgreSQL 16.4" <<<"$out" &&
        result "install.sh on PostgreSQL 16 refused" ok || result "install.sh on PostgreSQL 16 refused: $out" failed
fi

say "2. a changed file is refused"
"$pkg/install.sh" --pg-config "$PG_CONFIG" --uninstall >/dev/null
tampered="$work/tampered"
cp -r "$pkg" "$tampered"
printf 'x' >>"$tampered/lib/dg.so"
if out=$("$tampered/install.sh" --pg-config "$PG_CONFIG" 2>&1); then
    result "a tampered package refused" failed
else
    if grep -q "do not match SHA256SUMS" <<<"$out" && [ ! -e "$libdir/dg.so" ]; then
        result "a tampered package refused, nothing installed" ok
    else
        result "a tampered package refused, nothing installed: $out" failed
    fi
fi

say "3. a clean install runs the demo transfer"
[ ! -e "$libdir/dg.so" ] && [ ! -e "$extdir/dg.control" ] || die "dg is still installed after --uninstall"
"$pkg/install.sh" --pg-config "$PG_CONFIG"
cmp -s "$pkg/lib/dg.so" "$libdir/dg.so" || die "install.sh did not install the package's dg.so"
port=${DG_PACKAGE_PORT:-$((5891 + DG_PORT_OFFSET))}
out=$(DG_NO_BUILD=1 DG_DATA_ROOT="$work" DG_COORD_PORT=$port DG_PEER1_PORT=$((port + 1)) \
    DG_PEER2_PORT=$((port + 2)) "$DG_REPO/scripts/demo.sh" 2>&1) || {
    echo "$out"
    die "the demo failed on the packaged dg"
}
installed=$(psql_val "$port" demo "SELECT extversion FROM pg_extension WHERE extname = 'dg'")
p1=$(psql_val $((port + 1)) demo "SELECT balance FROM accounts WHERE id = 1")
p2=$(psql_val $((port + 2)) demo "SELECT balance FROM accounts WHERE id = 1")
if [ "$installed" = "$version" ] && [ "$p1" = 900 ] && [ "$p2" = 1100 ]; then
    result "packaged dg $installed moved 100 from peer1 (now $p1) to peer2 (now $p2)" ok
else
    result "packaged dg: version '$installed', balances $p1 / $p2 (expected $version, 900 / 1100)" failed
fi

echo "package: $passed passed, $failed failed"
[ "$failed" = 0 ]
