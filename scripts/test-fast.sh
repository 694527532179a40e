#!/usr/bin/env bash
# The fast tier: the tests that need neither root nor a container engine nor a built image, for someone
# changing the domain, the wire contract, the stores or the API. It runs the unit and integration tests of
# kat-protocol, kat-core (the in-memory conformance suites included), kat-http (real HTTP over loopback on the
# in-memory stores) and kat-entrypoint's unit tests; doc tests and everything engine-backed are left to
# scripts/test.sh.
#
#   scripts/test-fast.sh            # all of the fast tier
#   scripts/test-fast.sh -p kat-core  # one crate of it (any cargo test arguments)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ "$#" -gt 0 ]; then
    exec cargo test --lib --tests "$@"
fi
cargo test --lib --tests -p kat-protocol -p kat-core -p kat-http --all-features
cargo test --bins -p kat-entrypoint
