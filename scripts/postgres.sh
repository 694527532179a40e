#!/usr/bin/env bash
# Make a PostgreSQL server ready for kat-rs: install PostgreSQL 15 from Debian's packages when missing, create a
# cluster of our own (initdb as the `postgres` user) and start it with pg_ctl on its own port and socket
# directory, listening on 127.0.0.1 only. No systemd is assumed. Idempotent: a running cluster is left alone.
#
#   eval "$(scripts/postgres.sh)"        # exports KAT_TEST_POSTGRES=postgres://kat@127.0.0.1:PORT/kat
#   scripts/postgres.sh stop             # stop the cluster (the data directory stays)
#
# Environment: KAT_PG_PORT (55432), KAT_PG_DIR (/var/tmp/kat-postgres: data in $KAT_PG_DIR/data, the socket
# and the log beside it). The cluster is for tests, benchmarks and the quickstart on this machine: the role `kat`
# owns the database `kat` and may connect from 127.0.0.1 and the socket without a password (trust), and nothing
# else listens. A deployment points katd at its own, real server instead (docs/scale-out.md).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KAT_PG_PORT="${KAT_PG_PORT:-55432}"
KAT_PG_DIR="${KAT_PG_DIR:-/var/tmp/kat-postgres}"
data="$KAT_PG_DIR/data"
pglog="$KAT_PG_DIR/postgres.log"

pg_bin() {
    local d
    for d in /usr/lib/postgresql/15/bin /usr/lib/postgresql/*/bin; do
        [ -x "$d/pg_ctl" ] && { echo "$d"; return 0; }
    done
    return 1
}

as_postgres() {
    if [ "$(id -un)" = postgres ]; then
        "$@"
    else
        as_root runuser -u postgres -- "$@"
    fi
}

url="postgres://kat@127.0.0.1:$KAT_PG_PORT/kat"

if [ "${1:-}" = stop ]; then
    bin="$(pg_bin)" || exit 0
    [ -f "$data/postmaster.pid" ] && as_postgres "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null
    exit 0
fi
[ $# -eq 0 ] || die "usage: $0 [stop]"

bin="$(pg_bin)" || { ensure_packages postgresql-15; bin="$(pg_bin)"; } || die "no pg_ctl after installing postgresql-15"
id postgres >/dev/null 2>&1 || die "no 'postgres' user: the postgresql-15 package creates it; is it installed?"

if ! as_postgres "$bin/pg_isready" -q -h "$KAT_PG_DIR" -p "$KAT_PG_PORT"; then
    as_root mkdir -p "$KAT_PG_DIR"
    as_root chown postgres: "$KAT_PG_DIR"
    if [ ! -f "$data/PG_VERSION" ]; then
        as_postgres "$bin/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 \
            >"$KAT_PG_DIR/initdb.log" 2>&1 || {
            tail -n 20 "$KAT_PG_DIR/initdb.log" >&2
            die "initdb failed (log: $KAT_PG_DIR/initdb.log)"
        }
    fi
    # A pid file left by a killed server makes pg_ctl refuse; it is stale when nothing answers.
    if [ -f "$data/postmaster.pid" ] && ! kill -0 "$(head -n1 "$data/postmaster.pid")" 2>/dev/null; then
        as_root rm -f "$data/postmaster.pid"
    fi
    if ! as_postgres "$bin/pg_ctl" -D "$data" -l "$pglog" -w -t 60 start \
        -o "-p $KAT_PG_PORT -k $KAT_PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=on" \
        >/dev/null; then
        tail -n 30 "$pglog" >&2 || true
        die "PostgreSQL did not start on 127.0.0.1:$KAT_PG_PORT (log: $pglog); is the port taken? set KAT_PG_PORT"
    fi
fi

psql_admin() { as_postgres psql -X -q -v ON_ERROR_STOP=1 -h "$KAT_PG_DIR" -p "$KAT_PG_PORT" -U postgres "$@"; }
if [ "$(psql_admin -tAc "SELECT 1 FROM pg_roles WHERE rolname = 'kat'")" != 1 ]; then
    psql_admin -c "CREATE ROLE kat LOGIN CREATEDB"
fi
if [ "$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = 'kat'")" != 1 ]; then
    psql_admin -c "CREATE DATABASE kat OWNER kat"
fi
echo "export KAT_TEST_POSTGRES=$url"
