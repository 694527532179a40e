#!/usr/bin/env bash
# Build the local test image kat-busybox:latest (no registry needed): a root filesystem holding the static
# busybox binary, its applet links, /tmp and a minimal /etc/passwd, imported into Docker and, when Podman is
# installed, into Podman's own image store too.
#
#   scripts/test-images.sh          (after scripts/engines.sh)
#
# Idempotent and quiet on success: an engine that already has the image built from the same busybox binary
# and the same recipe (the label kat.busybox.sha256) is left alone.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Bump when the image layout below changes, so that existing images are rebuilt.
RECIPE=1

busybox="$(busybox_path)"
bb_sha="$(sha256sum "$busybox" | cut -d' ' -f1)"
want_label="$bb_sha-r$RECIPE"

work=""
cleanup() { [ -z "$work" ] || rm -rf "$work"; }
trap cleanup EXIT

# Build the rootfs tarball once, on first need; sets TARBALL.
TARBALL=""
ensure_tarball() {
    if [ -z "$TARBALL" ]; then
        work="$(mktemp -d /tmp/kat-busybox.XXXXXX)"
        local root="$work/rootfs" applet
        mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/proc" "$root/sys" "$root/dev"
        chmod 1777 "$root/tmp"
        cp "$busybox" "$root/bin/busybox"
        chmod 0755 "$root/bin/busybox"
        for applet in $("$busybox" --list); do
            [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
        done
        printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
        printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
        tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$root" -cf "$work/rootfs.tar" .
        TARBALL="$work/rootfs.tar"
    fi
}

import_into() { # engine (docker|podman)
    local engine="$1" have out
    have="$("$engine" image inspect --format "{{ index .Config.Labels \"$KAT_TEST_IMAGE_LABEL\" }}" "$KAT_TEST_IMAGE" 2>/dev/null || true)"
    [ "$have" = "$want_label" ] && return 0
    ensure_tarball
    if ! out="$("$engine" import \
        --change "LABEL $KAT_TEST_IMAGE_LABEL=$want_label" \
        --change "ENV PATH=/bin" \
        --change 'CMD ["sh"]' \
        "$TARBALL" "$KAT_TEST_IMAGE" 2>&1)"; then
        printf '%s\n' "$out" >&2
        die "$engine import of $KAT_TEST_IMAGE failed (is the engine up? run scripts/engines.sh first)"
    fi
    have="$("$engine" image inspect --format "{{ index .Config.Labels \"$KAT_TEST_IMAGE_LABEL\" }}" "$KAT_TEST_IMAGE" 2>/dev/null || true)"
    [ "$have" = "$want_label" ] || die "$engine: $KAT_TEST_IMAGE was imported but does not carry $KAT_TEST_IMAGE_LABEL=$want_label (got '$have')"
}

command -v docker >/dev/null 2>&1 || die "docker not found: run scripts/engines.sh docker first"
docker info >/dev/null 2>&1 || die "dockerd does not answer: run scripts/engines.sh docker first"
import_into docker

if command -v podman >/dev/null 2>&1; then
    if [ -f "$KAT_CONTAINERS_CONF" ]; then
        export CONTAINERS_CONF="$KAT_CONTAINERS_CONF"
    fi
    import_into podman
fi
