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
#   DG_PACKAGE_MAJORS  the majors to build (default: 15)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

version=$(sed -nE 's/^version = "(.*)"/\1/p' "$DG_REPO/Cargo.toml" | head -1)
arch=$(uname -m)
dist="$DG_REPO/dist"
mkdir -p "$dist"
# A package is a release build without test features.
unset DG_FEATURES
export DG_RELEASE=1

for major in ${DG_PACKAGE_MAJORS:-15}; do
    case $major in
    15) PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config ;;
    *) die "no PostgreSQL $major here to build a package for (supported: 15)" ;;
    esac
    export PG_CONFIG
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
done
