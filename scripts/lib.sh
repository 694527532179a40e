# shellcheck shell=bash
# Helpers shared by the kat-rs scripts. Source it; it defines functions and constants only.
#
#   . "$(dirname "$0")/lib.sh"

# Where the Podman side keeps its configuration, socket and log. The socket is kat-runtime-podman's
# DEFAULT_SOCKET, tried first when CONTAINER_HOST is not set.
KAT_PODMAN_DIR="${KAT_PODMAN_DIR:-/run/kat-podman}"
KAT_PODMAN_SOCK="$KAT_PODMAN_DIR/podman.sock"
KAT_CONTAINERS_CONF="$KAT_PODMAN_DIR/containers.conf"
KAT_PODMAN_LOG="${KAT_PODMAN_LOG:-/tmp/kat-podman.log}"
KAT_DOCKERD_LOG="${KAT_DOCKERD_LOG:-/tmp/kat-dockerd.log}"
KAT_APT_LOG="${KAT_APT_LOG:-/tmp/kat-apt.log}"
# How long to wait for an engine to answer after starting it, in seconds.
KAT_ENGINE_TIMEOUT="${KAT_ENGINE_TIMEOUT:-30}"

# The local test image, and the label carrying the sha256 of the busybox binary it was built from.
KAT_TEST_IMAGE="${KAT_TEST_IMAGE:-kat-busybox:latest}"
KAT_TEST_IMAGE_LABEL="kat.busybox.sha256"

# Print a message to stderr.
log() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }

# Print a message to stderr and exit 1.
die() {
    log "error: $*"
    exit 1
}

# Run a command as root (directly when we are root, else through sudo).
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root for: $* (run as root or install sudo)"
    fi
}

# Whether a Debian package is installed.
pkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'
}

# Install the given Debian packages when any of them is missing; quiet unless it fails.
ensure_packages() {
    local missing=() p
    command -v dpkg-query >/dev/null 2>&1 || die "dpkg-query not found: install $* by hand (Debian/Ubuntu expected)"
    for p in "$@"; do
        pkg_installed "$p" || missing+=("$p")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    log "installing ${missing[*]} (log: $KAT_APT_LOG)"
    if ! { as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q &&
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"; } >"$KAT_APT_LOG" 2>&1; then
        tail -n 30 "$KAT_APT_LOG" >&2 || true
        die "apt-get install ${missing[*]} failed (full log: $KAT_APT_LOG)"
    fi
}

# Path of the static busybox binary shipped by busybox-static.
busybox_path() {
    local p
    for p in /bin/busybox /usr/bin/busybox; do
        [ -x "$p" ] && { echo "$p"; return 0; }
    done
    die "no busybox binary found: install busybox-static (scripts/engines.sh does)"
}

# Poll a command (quietly) every 0.2 s until it succeeds or `timeout` seconds pass.
wait_until() {
    local timeout="$1" i
    shift
    for ((i = 0; i < timeout * 5; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    "$@" >/dev/null 2>&1
}

# Whether the Podman service socket answers its ping.
podman_socket_ok() {
    [ -S "$KAT_PODMAN_SOCK" ] &&
        [ "$(curl -fsS --max-time 2 --unix-socket "$KAT_PODMAN_SOCK" http://d/v4.0.0/libpod/_ping 2>/dev/null)" = "OK" ]
}
