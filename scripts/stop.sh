#!/usr/bin/env bash
# make stop: stop every node the scripts started (demo, regress, pgrx test
# clusters under the data root) and any cluster the tests/ crate left in
# its directory.
#   scripts/stop.sh          stop them
#   scripts/stop.sh --clean  stop them, then delete the data root
#   DG_TESTS_DIR  where the tests/ crate keeps its clusters
#                 (default: $TMPDIR/dg-tests, as Rust's temp_dir())
set -euo pipefail
source "$(dirname "$0")/lib.sh"

stop_clusters_under "$DG_DATA_ROOT"
stop_clusters_under "${DG_TESTS_DIR:-${TMPDIR:-/tmp}/dg-tests}"

case "${1:-}" in
"") ;;
--clean)
    say "deleting $DG_DATA_ROOT"
    rm -rf "$DG_DATA_ROOT"
    ;;
*) die "usage: $0 [--clean]" ;;
esac
