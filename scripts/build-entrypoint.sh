#!/usr/bin/env bash
# Build the static kat-entrypoint binary (the one mounted read-only into every plugin container) and print its
# path. Idempotent: cargo rebuilds only what changed.
#
#   scripts/build-entrypoint.sh       -> target/x86_64-unknown-linux-gnu/entrypoint/kat-entrypoint
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(dirname "${BASH_SOURCE[0]}")/.."

triple=x86_64-unknown-linux-gnu
log_file="$(mktemp /tmp/kat-build-entrypoint.XXXXXX)"
trap 'rm -f "$log_file"' EXIT
if ! RUSTFLAGS='-C target-feature=+crt-static' cargo build --profile entrypoint --target "$triple" \
    -p kat-entrypoint >"$log_file" 2>&1; then
    tail -n 40 "$log_file" >&2 || true
    die "building the static kat-entrypoint failed"
fi
bin="${CARGO_TARGET_DIR:-target}/$triple/entrypoint/kat-entrypoint"
[ -x "$bin" ] || die "the build succeeded but $bin is missing"
echo "$bin"
