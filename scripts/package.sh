#!/usr/bin/env bash
# make package: for each supported PostgreSQL major, a tarball that a DBA
# installs without Rust or pgrx:
#   dist/dg-<version>-pg<major>-<arch>.tar.gz
#     dg-<version>-pg<major>/lib/dg.so
#     dg-<version>-pg<major>/extension/dg.control, dg--*.sql
#     dg-<version>-pg<major>/install.sh     (scripts/package-install.sh)
#     dg-<version>-pg<major>/MAJOR, SHA256SUMS
# The files are kept relative (lib/, extension/), not under the build
# machine's paths: install.sh asks the target's pg_config where they go,
# so one package serves Debian's layout and a relocated tree alike.
#
#   DG_PACKAGE_MAJORS  the majors to build (default: every supported one,
#                      15 from Debian, the others from scripts/pg.sh's trees)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

version=$(sed -nE 's/^version = "(.*)"/\1/p' "$DG_REPO/Cargo.toml" | head -1)
arch=$(uname -m)
dist="$DG_REPO/dist"
mkdir -p "$dist"
# A package is a release build without test features.
unset DG_FEATURES
export DG_RELEASE=1

# package MAJOR: one package, built against that major's pg_config (lib.sh
# in a child with PG=MAJOR sets up the tree, pgrx config and library path).
if [ "${1:-}" = --one ]; then
    major=$PG
    name="dg-$version-pg$major"
    build="$DG_DATA_ROOT/package-pg$major"
    dg_build_package "$DG_REPO" "$build"
    stage_dir="$DG_DATA_ROOT/dist/$name"
    rm -rf "$stage_dir"
    mkdir -p "$stage_dir/lib" "$stage_dir/extension"
    cp "$build$("$PG_CONFIG" --pkglibdir)/dg.so" "$stage_dir/lib/"
    cp "$build$("$PG_CONFIG" --sharedir)"/extension/dg* "$stage_dir/extension/"
    install -m 0755 "$DG_REPO/scripts/package-install.sh" "$stage_dir/install.sh"
    echo "$major" >"$stage_dir/MAJOR"
    (cd "$stage_dir" && find lib extension install.sh MAJOR -type f | sort | xargs sha256sum >SHA256SUMS)
    tar -C "$DG_DATA_ROOT/dist" -czf "$dist/$name-$arch.tar.gz" "$name"
    say "dist/$name-$arch.tar.gz"
    exit 0
fi

for major in ${DG_PACKAGE_MAJORS:-$(printf "%s\n" "$DG_PG_SYSTEM_MAJOR" "${!DG_PG_WHEELS[@]}" | sort -n)}; do
    [ "$major" -ge 15 ] || { say "skipping PostgreSQL $major: dg coordinators run on 15 and later"; continue; }
    env -u DG_DATA_ROOT -u PG_CONFIG -u PGRX_HOME PG="$major" "$0" --one
done
