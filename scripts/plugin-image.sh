#!/usr/bin/env bash
# Build the first-party plugin image kat-plugins:latest: the static kat-plugins binary at /kat-plugins in a
# FROM scratch image (plus /etc/passwd and /etc/group with nobody, and an empty /tmp), in Docker and, when Podman
# is installed, in Podman's own image store too. No registry is needed: nothing is pulled.
#
#   scripts/plugin-image.sh [all|docker|podman]   (after scripts/engines.sh; prints the image name and size)
#
# all (the default): Docker, which must answer, and Podman when it is installed; docker or podman: that engine
# only (which must answer).
#
# Idempotent: an engine whose image already carries the label kat.plugins.sha256 with the binary's sha256 (and
# this recipe's number) is left alone. KAT_PLUGINS_IMAGE chooses another image name.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(dirname "${BASH_SOURCE[0]}")/.."

engines="${1:-all}"
case "$engines" in
all | docker | podman) ;;
*) die "usage: $0 [all|docker|podman]" ;;
esac

IMAGE="${KAT_PLUGINS_IMAGE:-kat-plugins:latest}"
LABEL="kat.plugins.sha256"
# Bump when the image layout below changes, so that existing images are rebuilt.
RECIPE=1
triple=x86_64-unknown-linux-gnu

work="$(mktemp -d /tmp/kat-plugins-image.XXXXXX)"
trap 'rm -rf "$work"' EXIT

# 1. The static binary (the entrypoint profile: opt-level z, LTO, panic=abort, stripped).
if ! RUSTFLAGS='-C target-feature=+crt-static' cargo build --profile entrypoint --target "$triple" \
    -p kat-plugins >"$work/build.log" 2>&1; then
    tail -n 40 "$work/build.log" >&2 || true
    die "building the static kat-plugins binary failed"
fi
bin="${CARGO_TARGET_DIR:-target}/$triple/entrypoint/kat-plugins"
[ -x "$bin" ] || die "the build succeeded but $bin is missing"
if ldd "$bin" 2>/dev/null | grep -q '=>'; then
    die "$bin is dynamically linked; a FROM scratch image needs a static binary"
fi
"$bin" version >/dev/null || die "$bin does not run"
sha="$(sha256sum "$bin" | cut -d' ' -f1)"
want="$sha-r$RECIPE"

# 2. The image's root file system, as a build context and as a tarball (for podman import).
ctx="$work/context"
mkdir -p "$ctx/rootfs/etc" "$ctx/rootfs/tmp"
chmod 1777 "$ctx/rootfs/tmp"
cp "$bin" "$ctx/rootfs/kat-plugins"
chmod 0755 "$ctx/rootfs/kat-plugins"
printf 'root:x:0:0:root:/:/kat-plugins\nnobody:x:65534:65534:nobody:/nonexistent:/kat-plugins\n' >"$ctx/rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$ctx/rootfs/etc/group"
cat >"$ctx/Dockerfile" <<EOF
FROM scratch
COPY rootfs/ /
LABEL $LABEL=$want
LABEL org.opencontainers.image.title="kat-plugins" org.opencontainers.image.description="kat-rs first-party plugins: /kat-plugins dns|portscan|parse-nmap|tls|http-headers"
USER 65534:65534
CMD ["/kat-plugins", "help"]
EOF

label_of() { # engine
    "$1" image inspect --format "{{ index .Config.Labels \"$LABEL\" }}" "$IMAGE" 2>/dev/null || true
}

# 3. Docker (unless only Podman is asked for).
if [ "$engines" != podman ]; then
    command -v docker >/dev/null 2>&1 || die "docker not found: run scripts/engines.sh docker first"
    docker info >/dev/null 2>&1 || die "dockerd does not answer: run scripts/engines.sh docker first"
    if [ "$(label_of docker)" != "$want" ]; then
        if ! tar -C "$ctx" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf - . |
            docker build --quiet -t "$IMAGE" - >"$work/docker.log" 2>&1; then
            cat "$work/docker.log" >&2
            die "docker build of $IMAGE failed"
        fi
        [ "$(label_of docker)" = "$want" ] || die "docker: $IMAGE was built but does not carry $LABEL=$want"
    fi
fi

# 4. Podman: when installed, or when asked for alone (its own image store; the service's configuration from
# scripts/engines.sh).
if [ "$engines" = podman ] && ! command -v podman >/dev/null 2>&1; then
    die "podman not found: run scripts/engines.sh podman first"
fi
if [ "$engines" != docker ] && command -v podman >/dev/null 2>&1; then
    if [ -f "$KAT_CONTAINERS_CONF" ]; then
        export CONTAINERS_CONF="$KAT_CONTAINERS_CONF"
    else
        eval "$(scripts/engines.sh podman)"
    fi
    if [ "$(label_of podman)" != "$want" ]; then
        tar -C "$ctx/rootfs" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$work/rootfs.tar" .
        if ! podman import \
            --change "LABEL $LABEL=$want" \
            --change "USER 65534:65534" \
            --change 'CMD ["/kat-plugins", "help"]' \
            "$work/rootfs.tar" "$IMAGE" >"$work/podman.log" 2>&1; then
            cat "$work/podman.log" >&2
            die "podman import of $IMAGE failed"
        fi
        [ "$(label_of podman)" = "$want" ] || die "podman: $IMAGE was imported but does not carry $LABEL=$want"
    fi
fi

shown=docker
[ "$engines" = podman ] && shown=podman
size="$("$shown" image inspect --format '{{ .Size }}' "$IMAGE")"
echo "$IMAGE ($((size / 1024)) KiB, binary sha256 $sha)"
