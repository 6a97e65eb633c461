#!/usr/bin/env bash
# make mutants: prove that the tests catch the loss of each mechanism
# README promises. Each tests/mutants/*.patch removes one mechanism; for
# each, this script copies the repo to a scratch directory, applies the
# patch (and fails loudly if it does not apply exactly: a refactor must
# not turn a mutant into a no-op), builds and installs that dg, runs the
# tests its header names, and counts the mutant killed if one of them
# fails. It ends with "N mutants, K killed" and fails unless K = N.
#
# A patch is a unified diff (git diff) after a header of lines:
#   Mutant: what the change removes
#   Killed-by: FILE TEST     a test of tests/tests/FILE.rs (several lines
#                            allowed: run in order until one fails)
#   Killed-by: regress       the pg_regress suite
#
# The system PostgreSQL is shared: each install + test runs under the lock
# DG_LOCK (default /tmp/dg-pg15.lock), so do not wrap this script in it;
# builds run outside it. After each mutant the unmutated build is put back.
#
#   DG_MUTANTS   space-separated names (without .patch) to run only those
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DG_FEATURES=${DG_FEATURES:-fault_injection}
export DG_FEATURES
lock=${DG_LOCK:-/tmp/dg-pg15.lock}
root="$DG_DATA_ROOT/mutants"
# One fixed scratch path, so cargo rebuilds only the dg crate each time.
scratch="$root/src"
clean_pkg="$root/clean-package"
mutant_pkg="$root/mutant-package"
# A target dir of its own: cargo does not hash a package's path, so a
# mutant built in the shared one would pass for a fresh build of the real
# sources afterwards.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$DG_REPO/target}/mutants"

patches=()
if [ -n "${DG_MUTANTS:-}" ]; then
    for m in $DG_MUTANTS; do patches+=("$DG_REPO/tests/mutants/$m.patch"); done
else
    patches=("$DG_REPO"/tests/mutants/*.patch)
fi
[ ${#patches[@]} -gt 0 ] && [ -f "${patches[0]}" ] || die "no mutants in tests/mutants/"

# A copy of the work tree without build output, node data or git
# metadata. Fresh mtimes (-m): cargo judges freshness by them, and the copy
# of an unchanged file would look older than the last mutant's build.
copy_repo() {
    rm -rf "$scratch"
    mkdir -p "$scratch"
    tar -C "$DG_REPO" --exclude=./.git --exclude=./.dg --exclude=./target \
        --exclude=./tests/target -cf - . | tar -C "$scratch" -xmf -
}

# run_test SPEC: 0 if the test passed, 1 if it failed.
run_test() {
    local file name
    read -r file name <<<"$1"
    if [ "$file" = regress ]; then
        "$DG_REPO/scripts/regress.sh" >"$root/test.log" 2>&1
    else
        [ -n "$name" ] || die "Killed-by: $1: expected FILE TEST"
        cargo test -q --manifest-path "$DG_REPO/tests/Cargo.toml" --test "$file" -- \
            --exact "$name" >"$root/test.log" 2>&1
    fi
}

mkdir -p "$root"
# The unmutated build, put back after each mutant; from a copy too, or
# cargo would take the last mutant's build for it.
copy_repo
dg_build_package "$scratch" "$clean_pkg"
cargo build -q --tests --manifest-path "$DG_REPO/tests/Cargo.toml"

export -f run_test dg_install_package say die
export root clean_pkg

total=0
killed=0
survivors=()
for patch in "${patches[@]}"; do
    name=$(basename "$patch" .patch)
    what=$(sed -n 's/^Mutant: //p' "$patch")
    mapfile -t tests < <(sed -n 's/^Killed-by: //p' "$patch")
    [ -n "$what" ] && [ ${#tests[@]} -gt 0 ] || die "$patch: needs a Mutant: and a Killed-by: line"
    total=$((total + 1))
    say "mutant $name: $what"
    copy_repo
    # The scratch copy may lie inside the repo (.dg/): keep git from
    # finding that repo, where it would skip paths outside the scratch
    # directory without a word.
    if ! (cd "$scratch" && GIT_CEILING_DIRECTORIES="$(dirname "$scratch")" git apply "$patch"); then
        die "mutant $name does not apply to the current code: the code it mutates changed; update $patch"
    fi
    mapfile -t changed < <(sed -n 's|^+++ b/||p' "$patch")
    for f in "${changed[@]}"; do
        ! cmp -s "$DG_REPO/$f" "$scratch/$f" || die "mutant $name left $f unchanged"
    done
    dg_build_package "$scratch" "$mutant_pkg" || die "mutant $name does not build"
    started=$SECONDS
    verdict=$(
        flock "$lock" bash -c '
            set -euo pipefail
            dg_install_package "$1" >/dev/null
            shift
            verdict=survived
            for t in "$@"; do
                if ! run_test "$t"; then verdict="killed by $t"; break; fi
            done
            dg_install_package "$clean_pkg" >/dev/null
            echo "$verdict"
        ' _ "$mutant_pkg" "${tests[@]}"
    )
    if [ "$verdict" = survived ]; then
        survivors+=("$name")
        say "mutant $name SURVIVED ($((SECONDS - started))s): ${tests[*]} passed"
    else
        killed=$((killed + 1))
        say "mutant $name $verdict ($((SECONDS - started))s)"
        grep -m 1 -A 3 -E "panicked at|^not ok" "$root/test.log" | sed "s/^/    /" || true
    fi
done
rm -rf "$scratch"

echo "$total mutants, $killed killed"
if [ ${#survivors[@]} -gt 0 ]; then
    echo "survivors: ${survivors[*]}" >&2
    exit 1
fi
