#!/usr/bin/env bash
# The main job. Until the engine lands (issue 8) it runs what exists for real: it builds katd, loads and validates
# the shipped plugin catalogue and finding types, and prints for a few example targets the execution mode and the
# exact argv each plugin would run with, and the permissions its task token would carry.
#
#   scripts/quickstart.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --quiet --example katd
exec target/debug/examples/katd plan \
    --plugins plugins/plugins.json --plugins plugins/examples.json \
    --finding-types plugins/finding_types.json \
    --target example.com --target localhost --target 127.0.0.1
