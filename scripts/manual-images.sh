#!/usr/bin/env bash
# Build kat-manual:latest, the local stand-in for the images named by the plugin examples of OpenKAT's
# manual (plugins/manual-examples.json: ghcr.io/minvws/openkat/plugins:0.1.0, instrumentisto/nmap,
# projectdiscovery/nuclei, your-registry/scanner:latest), used by tests/e2e/manual.rs. No registry is
# needed: it is kat-busybox:latest (scripts/test-images.sh) plus busybox-shell stand-ins from
# tests/manual-images/ for the tools (nmap, nuclei, scan, uv, python) and the example scripts
# (kat_dns/main.py, kat_nmap/main.py, kat_myplugin/main.py, kat_ssl/main.py in /app). They emit output of the
# tools' shape and call the API as the manual's Python examples do; they scan nothing.
#
# The image has its own name rather than the examples' names, so that it never replaces the original-shaped
# images other tests build under those names; the test maps the examples' image names onto it.
#
#   scripts/manual-images.sh          (after scripts/engines.sh and scripts/test-images.sh)
#
# Idempotent: an image whose label kat.manual.recipe matches the stand-ins' hash is left alone. Copied into
# Podman's store too when Podman is installed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/lib.sh

IMAGE=kat-manual:latest
LABEL=kat.manual.recipe
SRC=tests/manual-images
RECIPE=1

want="r$RECIPE-$( (cd "$SRC" && find . -type f -print0 | sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-16)-$(docker image inspect --format '{{.Id}}' "$KAT_TEST_IMAGE" 2>/dev/null | cut -c8-19)"

label_of() { # engine
    "$1" image inspect --format "{{ index .Config.Labels \"$LABEL\" }}" "$IMAGE" 2>/dev/null || true
}

command -v docker >/dev/null 2>&1 || die "docker not found: run scripts/engines.sh docker first"
docker image inspect "$KAT_TEST_IMAGE" >/dev/null 2>&1 || die "$KAT_TEST_IMAGE is missing: run scripts/test-images.sh first"

if [ "$(label_of docker)" != "$want" ]; then
    work="$(mktemp -d /tmp/kat-manual.XXXXXX)"
    trap 'rm -rf "$work"' EXIT
    cp -r "$SRC/bin" "$SRC/app" "$work/"
    cat >"$work/Dockerfile" <<DOCKERFILE
FROM $KAT_TEST_IMAGE
COPY bin/ /bin/
COPY app/ /app/
WORKDIR /app
LABEL $LABEL=$want
DOCKERFILE
    if ! out="$(DOCKER_BUILDKIT=0 docker build --network none -t "$IMAGE" "$work" 2>&1)"; then
        printf '%s\n' "$out" >&2
        die "docker build of $IMAGE failed"
    fi
    [ "$(label_of docker)" = "$want" ] || die "$IMAGE was built but does not carry $LABEL=$want"
fi

if command -v podman >/dev/null 2>&1; then
    if [ -f "$KAT_CONTAINERS_CONF" ]; then
        export CONTAINERS_CONF="$KAT_CONTAINERS_CONF"
    fi
    if [ "$(label_of podman)" != "$want" ]; then
        docker save "$IMAGE" | podman load -q >/dev/null 2>&1 || die "copying $IMAGE into Podman failed"
    fi
fi
