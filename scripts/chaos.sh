#!/usr/bin/env bash
# The long chaos bank run (tests/tests/chaos.rs, whose short run is part of
# `make test`): sets up and installs dg, then runs the chaos test until it
# has injected at least DG_CHAOS_FAULTS faults and run DG_CHAOS_SECONDS,
# and prints its figures (faults, transfers, consistent reads by outcome,
# invariant violations).
#
#   DG_CHAOS_FAULTS  least number of faults (default 1000)
#   DG_CHAOS_SECONDS least running time (default 60)
#   DG_CHAOS_SEED    replay a run's random choices
set -euo pipefail
source "$(dirname "$0")/lib.sh"

export DG_CHAOS_FAULTS=${DG_CHAOS_FAULTS:-1000}
export DG_CHAOS_SECONDS=${DG_CHAOS_SECONDS:-60}

"$DG_REPO/scripts/setup.sh"
say "chaos: at least $DG_CHAOS_FAULTS faults and $DG_CHAOS_SECONDS s"
cd "$DG_REPO"
cargo test --manifest-path tests/Cargo.toml --test chaos -- --nocapture
