#!/usr/bin/env bash
# The example application (examples/bank.py, psycopg 3) against the demo
# cluster: starts the demo nodes if they are not running, runs the bank with
# concurrent clients and its invariant check, and prints its
# "bank: N passed, N failed" line. psycopg is installed from PyPI into the
# data directory, not into the system's Python.
#
#   DG_NO_BUILD=1      use the dg already installed (make test sets it)
#   DG_BANK_ARGS       extra arguments for bank.py (e.g. "--clients 8")
set -euo pipefail
source "$(dirname "$0")/lib.sh"

pylib="$DG_DATA_ROOT/pylib"
pip_target "$pylib" "$DG_REPO/examples/requirements.txt"

"$DG_REPO/scripts/demo.sh" >/dev/null
say "examples/bank.py against the demo cluster"
# shellcheck disable=SC2086
PYTHONPATH="$pylib" python3 "$DG_REPO/examples/bank.py" --port "${DG_COORD_PORT:-$((5801 + DG_PORT_OFFSET))}" \
    --dbname demo ${DG_BANK_ARGS:-}
