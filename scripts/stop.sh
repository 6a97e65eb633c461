#!/usr/bin/env bash
# make stop: stops every node the scripts started.
source "$(dirname "$0")/lib.sh"
root=$(data_root)
for pid in "$root"/*/*/postmaster.pid; do
    [ -e "$pid" ] || continue
    dir=$(dirname "$pid")
    say "stopping ${dir#"$root"/}"
    node_stop "$dir"
done
