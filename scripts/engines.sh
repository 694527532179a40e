#!/usr/bin/env bash
# Make container engines ready for kat-rs: install what is missing, start the daemons, wait until they answer.
#
#   scripts/engines.sh [docker|podman|all]      (default: all)
#
# Idempotent and quiet on success. No systemd is assumed: dockerd and the Podman service are started in the
# background when they do not answer. For Podman it prints one line for the caller's shell:
#
#   eval "$(scripts/engines.sh podman)"         # exports CONTAINERS_CONF
#
# Never starts a second dockerd, and never one with `--bridge none` (that deletes the host's docker0).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

want="${1:-all}"
case "$want" in
docker | podman | all) ;;
*) die "usage: $0 [docker|podman|all]" ;;
esac

docker_ok() { docker info >/dev/null 2>&1; }

dockerd_running() {
    local pid
    [ -r /var/run/docker.pid ] || return 1
    pid="$(cat /var/run/docker.pid 2>/dev/null || true)"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

ensure_docker() {
    ensure_packages docker.io runc busybox-static
    if [ -n "${DOCKER_HOST:-}" ] && [ "$DOCKER_HOST" != "unix:///var/run/docker.sock" ]; then
        docker_ok || die "DOCKER_HOST=$DOCKER_HOST does not answer; start that engine, or unset DOCKER_HOST to use a local dockerd"
        return 0
    fi
    docker_ok && return 0
    local started=""
    if ! dockerd_running; then
        # A fresh log per start, so that the tail shown on failure is about this start.
        : >"$KAT_DOCKERD_LOG"
        # From /: a daemon keeps the directory it was started in, and its children (the shims, conmon)
        # fail once that directory is deleted (a clone the script ran from, say).
        (cd / && as_root setsid nohup dockerd) >>"$KAT_DOCKERD_LOG" 2>&1 </dev/null &
        started=1
    fi
    if ! wait_until "$KAT_ENGINE_TIMEOUT" docker info; then
        docker info 2>&1 | tail -n 5 >&2 || true
        if [ -n "$started" ]; then
            log "last lines of $KAT_DOCKERD_LOG:"
            tail -n 40 "$KAT_DOCKERD_LOG" >&2 || true
            die "dockerd did not answer 'docker info' within $KAT_ENGINE_TIMEOUT s (log: $KAT_DOCKERD_LOG)"
        fi
        die "a dockerd is running (pid $(cat /var/run/docker.pid 2>/dev/null || echo '?')) but 'docker info' fails after $KAT_ENGINE_TIMEOUT s; check or restart it"
    fi
}

write_containers_conf() {
    local want_conf
    want_conf='# Written by kat-rs scripts/engines.sh: crun fails on this kind of kernel and the sandbox
# forbids raising rlimits, so the whole Podman service uses runc and modest default ulimits.
[engine]
runtime = "runc"

[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]'
    as_root mkdir -p "$KAT_PODMAN_DIR"
    if [ "$(cat "$KAT_CONTAINERS_CONF" 2>/dev/null || true)" != "$want_conf" ]; then
        printf '%s\n' "$want_conf" | as_root tee "$KAT_CONTAINERS_CONF" >/dev/null
    fi
}

ensure_podman() {
    ensure_packages podman runc busybox-static curl procps
    write_containers_conf
    export CONTAINERS_CONF="$KAT_CONTAINERS_CONF"
    # A service started from a directory that has since been deleted answers its socket, but every
    # container it starts fails ("Failed to get working directory" from conmon): start it again.
    local pid
    for pid in $(pgrep -f "podman system service .*$KAT_PODMAN_SOCK" || true); do
        # As root: another user cannot read a root service's working directory or signal it.
        if [[ "$(as_root readlink "/proc/$pid/cwd" 2>/dev/null || true)" == *" (deleted)" ]]; then
            log "the Podman service (pid $pid) runs in a deleted directory; starting it again"
            as_root kill "$pid" 2>/dev/null || true
            wait_until "$KAT_ENGINE_TIMEOUT" as_root sh -c "! kill -0 $pid 2>/dev/null" || true
        fi
    done
    if ! podman_socket_ok; then
        : >"$KAT_PODMAN_LOG"
        (cd / && as_root env CONTAINERS_CONF="$KAT_CONTAINERS_CONF" setsid nohup \
            podman system service --time=0 "unix://$KAT_PODMAN_SOCK") >>"$KAT_PODMAN_LOG" 2>&1 </dev/null &
        if ! wait_until "$KAT_ENGINE_TIMEOUT" podman_socket_ok; then
            log "last lines of $KAT_PODMAN_LOG:"
            tail -n 40 "$KAT_PODMAN_LOG" >&2 || true
            die "the Podman service did not answer on $KAT_PODMAN_SOCK within $KAT_ENGINE_TIMEOUT s (log: $KAT_PODMAN_LOG)"
        fi
    fi
    printf 'export CONTAINERS_CONF=%q\n' "$KAT_CONTAINERS_CONF"
}

case "$want" in
docker) ensure_docker ;;
podman) ensure_podman ;;
all)
    ensure_docker
    ensure_podman
    ;;
esac
