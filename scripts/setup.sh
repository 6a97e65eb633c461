#!/usr/bin/env bash
# Install what building and testing dg needs, then build dg and install it
# into the system PostgreSQL. Idempotent; each tool step is skipped quietly
# when it is already done, so this is fast on a prepared machine.
#
#   scripts/setup.sh                 tools, then build + install dg
#   scripts/setup.sh --install-only  build + install dg only
#
#   DG_RELEASE=1   release build (make demo)
#   DG_FEATURES    extra cargo features (make test passes its own)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

install_tools() {
    # sudo: cargo pgrx test --runas runs the test server through it.
    local pkg missing=()
    for pkg in postgresql-server-dev-15 libclang-dev sudo pkg-config libpq-dev; do
        # dpkg -s also succeeds for removed packages whose config files remain.
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        say "apt-get install ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi

    if [ "$(cargo pgrx --version 2>/dev/null)" != "cargo-pgrx 0.18.0" ]; then
        say "cargo install cargo-pgrx 0.18.0 (a few minutes)"
        cargo install cargo-pgrx --version 0.18.0 --locked --quiet
    fi

    # PGRX_HOME is normally unset; pgrx then uses ~/.pgrx. Off PG 15,
    # lib.sh has written a PGRX_HOME of the major's own.
    if [ "$PG" = "$DG_PG_SYSTEM_MAJOR" ] && ! grep -qs '^pg15 *=' "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
        say "cargo pgrx init --pg15 $PG_CONFIG"
        cargo pgrx init --pg15 "$PG_CONFIG" >/dev/null
    fi
}

case "${1:-}" in
"") install_tools ;;
--install-only) ;;
*) die "usage: $0 [--install-only]" ;;
esac
dg_install_extension
