#!/usr/bin/env bash
# The whole test suite, from a fresh machine: formatting and the fast tier first (no engine needed), then
# install and start the container engines and a PostgreSQL server, build the local test images and the static entrypoint, check lints,
# the docs (warnings are errors: every intra-doc link resolves) and every feature of the facade on its own, and
# run every test of the workspace; the end-to-end suite (tests/e2e/) runs once on Docker and once on Podman.
#
#   scripts/test.sh
#
# Engine-backed tests FAIL (never skip) when CI is set and an engine is missing; this script sets CI=true unless
# the caller chose otherwise.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/lib.sh

export CI="${CI:-true}"
step() { printf '\n==> %s\n' "$*"; }

step "free disk"
# A build from scratch writes about 4 GiB under target/; the engines' images take about 1.5 GiB more.
df -h . /var/lib || true
avail_gib="$(df --output=avail -B1G . | tail -1 | tr -d ' ')"
if [ "${avail_gib:-0}" -lt 6 ] 2>/dev/null; then
    log "warning: ${avail_gib} GiB free here; a build from scratch needs about 4 GiB and the images about 1.5 GiB"
fi

step "cargo fmt --check"
cargo fmt --all -- --check
step "the fast tier (scripts/test-fast.sh: no root, no container engine)"
bash scripts/test-fast.sh

step "container engines (docker, podman)"
eval "$(scripts/engines.sh all)"
step "PostgreSQL (scripts/postgres.sh: a cluster of our own on 127.0.0.1, for kat-store-postgres and the replicas)"
eval "$(scripts/postgres.sh)"
step "local test images and the first-party plugin image"
scripts/test-images.sh
scripts/plugin-image.sh
scripts/manual-images.sh
step "images shaped like OpenKAT's plugin images (scripts/original-image.sh: debootstrap, docker build)"
scripts/original-image.sh
step "tools the plugin tests compare against (nmap, openssl)"
bash plugins/kat-plugins/scripts/test-tools.sh
step "static entrypoint"
KAT_ENTRYPOINT_BIN="$(pwd)/$(scripts/build-entrypoint.sh)"
export KAT_ENTRYPOINT_BIN
ls -l "$KAT_ENTRYPOINT_BIN"

step "cargo clippy (all targets, all features, warnings are errors)"
cargo clippy --workspace --all-targets --all-features -- -D warnings
step "cargo doc (warnings are errors)"
RUSTDOCFLAGS="${RUSTDOCFLAGS:-} -D warnings" cargo doc --workspace --no-deps --all-features --quiet
step "each feature of the facade crate (kat) and of katd on its own"
cargo check --quiet -p kat --no-default-features --lib
for feature in sled postgres docker podman http; do
    echo "kat --features $feature"
    cargo check --quiet -p kat --no-default-features --features "$feature" --lib
done
cargo check --quiet -p katd --no-default-features
step "cargo test (the whole workspace; the end-to-end suite on Docker)"
cargo test --workspace --all-features --no-fail-fast
step "the end-to-end suite again, on Podman (KAT_E2E_RUNTIME=podman)"
KAT_E2E_RUNTIME=podman cargo test --workspace --all-features --no-fail-fast --test e2e
