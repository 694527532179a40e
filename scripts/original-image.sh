#!/usr/bin/env bash
# Build, without a registry, local images shaped like the ones OpenKAT v2's plugin file names, under the names it
# uses, so that its plugin entries run unchanged in the end-to-end tests (tests/e2e/original.rs):
#
#   kat-debian:bookworm                     a Debian bookworm root filesystem (debootstrap --variant=minbase
#                                           from the host's Debian mirror), imported with `docker import`
#   instrumentisto/nmap:latest              that, plus nmap (the original's nmap/nmap-udp image)
#   ghcr.io/minvws/openkat/plugins:0.1.0    that, plus python3, nmap, jq, the Python packages of the original's
#                                           plugin image (httpx, dnspython, python-libnmap) and uv from pip, and
#                                           normalizer scripts of the original's shape (tests/original/plugins/:
#                                           kat_nmap/main.py, cat.py, store.py) in its working directory
#
#   scripts/original-image.sh          (after scripts/engines.sh; root, for debootstrap)
#
# apt and pip reach their registries from `docker build --network host`; pip gets the host's CA bundle in a
# build stage whose files never reach the final image. Idempotent: an image whose label kat.original.recipe
# matches this recipe (and the scripts' hash) is left alone. When Podman is installed the images are copied into
# its store too. Only loopback is ever scanned by the tests that use these images.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/lib.sh

# Bump when the recipe below changes.
RECIPE=1
BASE=kat-debian:bookworm
NMAP_IMAGE=instrumentisto/nmap:latest
PLUGINS_IMAGE=ghcr.io/minvws/openkat/plugins:0.1.0
LABEL=kat.original.recipe
SCRIPTS=tests/original/plugins
CA_BUNDLE="${KAT_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"

scripts_sha="$(cd "$SCRIPTS" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)"

label_of() { # engine image
    "$1" image inspect --format "{{ index .Config.Labels \"$LABEL\" }}" "$2" 2>/dev/null || true
}

work=""
cleanup() { [ -z "$work" ] || as_root rm -rf "$work"; }
trap cleanup EXIT

command -v docker >/dev/null 2>&1 || die "docker not found: run scripts/engines.sh docker first"
docker info >/dev/null 2>&1 || die "dockerd does not answer: run scripts/engines.sh docker first"

# The Debian mirror the host uses (deb822 sources or a classic sources.list).
mirror() {
    local m
    m="$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -n1 || true)"
    [ -n "$m" ] || m="$(grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | head -n1 || true)"
    printf '%s\n' "${m:-http://deb.debian.org/debian}"
}

base_want="base-r$RECIPE"
if [ "$(label_of docker "$BASE")" != "$base_want" ]; then
    ensure_packages debootstrap
    work="$(mktemp -d /tmp/kat-debian.XXXXXX)"
    log "debootstrap bookworm from $(mirror) (a few minutes; log: $work/debootstrap.log)"
    if ! as_root debootstrap --variant=minbase bookworm "$work/rootfs" "$(mirror)" >"$work/debootstrap.log" 2>&1; then
        tail -n 30 "$work/debootstrap.log" >&2
        die "debootstrap failed"
    fi
    as_root rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
    as_root tar --numeric-owner -C "$work/rootfs" -c . |
        docker import --change "LABEL $LABEL=$base_want" --change 'CMD ["bash"]' - "$BASE" >/dev/null ||
        die "docker import of $BASE failed"
    as_root rm -rf "$work"
    work=""
fi

build() { # image want dockerfile-text [context-dir]
    local image="$1" want="$2" dockerfile="$3" ctx="${4:-}" out
    [ "$(label_of docker "$image")" = "$want" ] && return 0
    if [ -z "$ctx" ]; then
        ctx="$(mktemp -d /tmp/kat-original-ctx.XXXXXX)"
    fi
    printf '%s\n' "$dockerfile" >"$ctx/Dockerfile"
    log "building $image (log: /tmp/kat-original-build.log)"
    if ! out="$(DOCKER_BUILDKIT=0 docker build --network host --label "$LABEL=$want" -t "$image" "$ctx" 2>&1)"; then
        printf '%s\n' "$out" >/tmp/kat-original-build.log
        tail -n 40 /tmp/kat-original-build.log >&2
        rm -rf "$ctx"
        die "docker build of $image failed"
    fi
    printf '%s\n' "$out" >/tmp/kat-original-build.log
    rm -rf "$ctx"
}

build "$NMAP_IMAGE" "nmap-r$RECIPE" "FROM $BASE
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nmap \\
    && rm -rf /var/lib/apt/lists/*
ENTRYPOINT [\"nmap\"]"

ctx="$(mktemp -d /tmp/kat-original-ctx.XXXXXX)"
mkdir -p "$ctx/plugins" && cp -r "$SCRIPTS"/. "$ctx/plugins/"
[ -f "$CA_BUNDLE" ] && cp "$CA_BUNDLE" "$ctx/ca.crt" || : >"$ctx/ca.crt"
build "$PLUGINS_IMAGE" "plugins-r$RECIPE-$scripts_sha" "FROM $BASE AS py
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-pip
COPY ca.crt /build/ca.crt
# The CA bundle lives only in this stage: the final image copies the installed packages, not the bundle.
RUN if [ -s /build/ca.crt ]; then export PIP_CERT=/build/ca.crt; fi; \\
    pip install --no-cache-dir --break-system-packages --target /opt/kat-py httpx dnspython python-libnmap uv

FROM $BASE
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 jq nmap \\
    && rm -rf /var/lib/apt/lists/*
COPY --from=py /opt/kat-py /opt/kat-py
RUN ln -s /opt/kat-py/bin/uv /usr/local/bin/uv
ENV PYTHONPATH=/opt/kat-py UV_CACHE_DIR=/tmp/uv-cache UV_PYTHON_DOWNLOADS=never UV_NO_CONFIG=1 HOME=/tmp
WORKDIR /app
COPY plugins/ /app/
CMD [\"bash\"]" "$ctx"

if command -v podman >/dev/null 2>&1; then
    [ -f "$KAT_CONTAINERS_CONF" ] && export CONTAINERS_CONF="$KAT_CONTAINERS_CONF"
    for image in "$NMAP_IMAGE" "$PLUGINS_IMAGE"; do
        if [ "$(label_of podman "$image")" != "$(label_of docker "$image")" ]; then
            docker save "$image" | podman load >/dev/null 2>&1 || log "warning: could not load $image into Podman"
        fi
    done
fi
