#!/usr/bin/env bash
# Installs what dg needs (idempotent, quiet when already done), then builds
# dg and installs it into the system PostgreSQL.
#   DG_RELEASE=1   build with the release profile (make demo)
#   DG_FEATURES    extra cargo features (make test passes its own)
source "$(dirname "$0")/lib.sh"

missing=()
for pkg in postgresql-server-dev-15 libclang-dev libpq-dev pkg-config sudo; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ "$(cargo pgrx --version 2>/dev/null)" != "cargo-pgrx 0.18.0" ]; then
    say "installing cargo-pgrx 0.18.0 (about 3 minutes)"
    cargo install cargo-pgrx --version 0.18.0 --locked --quiet
fi
if ! grep -qs '^pg15' "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
    cargo pgrx init --pg15 "$PG_CONFIG" >/dev/null
fi

say "building dg"
profile=(--debug)
[ "${DG_RELEASE:-0}" = 1 ] && profile=()
features=()
[ -n "${DG_FEATURES:-}" ] && features=(--features "$DG_FEATURES")
out="${CARGO_TARGET_DIR:-$REPO/target}/dg-package"
rm -rf "$out"
(cd "$REPO" && cargo pgrx package --pg-config "$PG_CONFIG" "${profile[@]}" "${features[@]}" --out-dir "$out" >/dev/null)

# Each file is copied beside its target and renamed over it: running
# servers keep the old library mapped instead of crashing on a library
# overwritten in place.
(cd "$out" && find . -type f) | while read -r f; do
    dest="/${f#./}"
    install -D -m 0644 "$out/$f" "$dest.dg-new"
    mv -f "$dest.dg-new" "$dest"
done
say "dg installed into $("$PG_CONFIG" --pkglibdir)"
