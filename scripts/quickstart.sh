#!/usr/bin/env bash
# The main job: a real scan, end to end, on this machine only (loopback).
#
#   scripts/quickstart.sh                      start (or restart) the demo on Docker and print what it found
#   KAT_RUNTIME=podman scripts/quickstart.sh   the same on Podman
#   KAT_QUICKSTART_STORE=postgres KAT_QUICKSTART_WORKERS=2 scripts/quickstart.sh
#                                              the same on PostgreSQL, with one API + scheduler replica and 2 workers
#   scripts/quickstart.sh stop                 stop katd (every replica) and the demo services
#
# Environment: KAT_RUNTIME (docker or podman), KAT_QUICKSTART_PORT (katd's port, 8000), KAT_QUICKSTART_STORE (sled,
# the default: one katd on a fresh sled data directory; or postgres) and KAT_QUICKSTART_WORKERS (postgres only:
# how many worker replicas, 1 to 8, default 2).
#
# It installs and starts the container engine (KAT_RUNTIME: docker, the default, or podman) when needed, builds
# the static entrypoint, the first-party plugin image (FROM scratch, nothing pulled) in that engine and katd,
# starts two small local services to find things in, both on 127.0.0.1 only (a TLS server on 443 with a
# self-signed, soon-expiring certificate that still accepts TLS 1.0/1.1, and a listener on a database port:
# MySQL's 3306, else the first free one of the other database ports the port rules report, never PostgreSQL's
# 5432, where a real PostgreSQL listens by default), and starts katd (sled + the engine + the API on 127.0.0.1,
# the scheduler ticking every 2 s, the shipped business rules) on a fresh data directory.
#
# Then the discovery loop: it declares ONE object, the hostname localhost at scan level 2, and schedules dns over
# hostnames with a level, portscan over IP addresses at level 2 or more (its output chains to parse-nmap), and tls
# and http-headers over hostnames at level 2 or more. Nobody declares 127.0.0.1: dns finds it, it inherits
# localhost's level through the A record, and the next tick port-scans it. The business rules turn what was
# found into findings (an open database port, no SPF record, ...). It waits for every task, prints the tasks,
# the findings (each with the plugin task or the rules that found it), the scan levels (declared or inherited,
# from where, and which plugins scanned each object) and the objects plugins wrote, and checks that the loop
# happened and the demo's expected findings are there. katd keeps serving afterwards so that the API can be
# explored.
#
# With KAT_QUICKSTART_STORE=postgres it starts PostgreSQL with scripts/postgres.sh (left running by `stop`),
# creates a fresh database kat_quickstart in it, and runs katd as replicas of that one database (docs/scale-out.md):
# `katd serve --role api,scheduler --worker-id api` on KAT_QUICKSTART_PORT and KAT_QUICKSTART_WORKERS replicas
# `katd serve --role worker --worker-id wN` on the next ports (8001, 8002, ...), each with its own data directory
# and all with the same token secret (KAT_JWT_SECRET_FILE, a fresh one in .kat/quickstart/jwt.secret). The
# workers run every task; their containers call the API of the worker that runs them, and the scheduler replica
# hears of what they wrote through the database (write marks, docs/decisions.md D36). The same checks follow, then `katd status` lists the replicas, and the script checks
# that the workers ended the tasks (their /metrics).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/lib.sh

Q="$(pwd)/.kat/quickstart"
PORT="${KAT_QUICKSTART_PORT:-8000}"
RUNTIME="${KAT_RUNTIME:-docker}"
STORE="${KAT_QUICKSTART_STORE:-sled}"
WORKERS="${KAT_QUICKSTART_WORKERS:-}"
# The PostgreSQL database the quickstart creates afresh (dropping the one a previous run left).
PG_DB=kat_quickstart
# The database ports the demo's listener tries, in order: each is in portscan's default list and in the
# open-database-port rule. PostgreSQL's 5432 is left out on purpose.
DB_PORTS="3306 1433 1521 5984 6379 9042 9200 27017"
API="http://127.0.0.1:$PORT/api/v1"
step() { printf '\n==> %s\n' "$*" >&2; }

stop_all() {
    local f pid
    for f in "$Q"/*.pid; do
        [ -e "$f" ] || continue
        pid="$(cat "$f")"
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$f"
    done
}

if [ "${1:-}" = stop ]; then
    stop_all
    if [ "$(cat "$Q/store" 2>/dev/null)" = postgres ]; then
        echo "stopped every katd replica and the demo services; PostgreSQL keeps running with the database $PG_DB" \
            "(scripts/postgres.sh stop stops it)"
    else
        echo "stopped katd and the demo services (data kept in $Q/data)"
    fi
    exit 0
fi

# The ports katd listens on: the API's, then one per worker replica.
KATD_PORTS="$PORT"
case "$STORE" in
sled)
    [ -z "$WORKERS" ] ||
        die "KAT_QUICKSTART_WORKERS=$WORKERS: worker replicas share a PostgreSQL database;" \
            "set KAT_QUICKSTART_STORE=postgres too (on sled katd is one process)"
    ;;
postgres)
    WORKERS="${WORKERS:-2}"
    case "$WORKERS" in
    [1-8]) ;;
    *) die "KAT_QUICKSTART_WORKERS=$WORKERS: give the number of worker replicas, a whole number from 1 to 8" ;;
    esac
    case "$PORT" in
    '' | *[!0-9]*) die "KAT_QUICKSTART_PORT=$PORT: give a port number" ;;
    esac
    [ "$PORT" -ge 1 ] && [ "$((PORT + WORKERS))" -le 65535 ] ||
        die "KAT_QUICKSTART_PORT=$PORT: katd needs it and the $WORKERS port(s) after it, up to 65535"
    for i in $(seq 1 "$WORKERS"); do KATD_PORTS="$KATD_PORTS $((PORT + i))"; done
    ;;
*) die "KAT_QUICKSTART_STORE=$STORE: the quickstart runs on sled (the default) or postgres" ;;
esac

mkdir -p "$Q"
stop_all
echo "$STORE" >"$Q/store"

case "$RUNTIME" in
docker | podman) ;;
*) die "KAT_RUNTIME=$RUNTIME: the quickstart runs on docker or podman" ;;
esac
step "container engine ($RUNTIME)"
eval "$(scripts/engines.sh "$RUNTIME")"
ensure_packages openssl python3 curl
step "static entrypoint and the first-party plugin image (in $RUNTIME)"
ep="$(pwd)/$(scripts/build-entrypoint.sh)"
scripts/plugin-image.sh "$RUNTIME" >/dev/null
step "katd"
cargo build --quiet -p katd
katd="$(pwd)/target/debug/katd"
if [ "$STORE" = postgres ]; then
    step "PostgreSQL (scripts/postgres.sh) and a fresh database $PG_DB"
    eval "$(scripts/postgres.sh)"
    STORE_URL="${KAT_TEST_POSTGRES%/*}/$PG_DB"
    PGOPTIONS='-c client_min_messages=warning' psql -X -q -v ON_ERROR_STOP=1 "$KAT_TEST_POSTGRES" \
        -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" -c "CREATE DATABASE $PG_DB" ||
        die "cannot create the database $PG_DB ($KAT_TEST_POSTGRES)"
    log "database $STORE_URL"
fi

step "demo services on 127.0.0.1: TLS on 443, a listener on a database port"
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in 443 $KATD_PORTS; do
    port_free "$p" || die "port $p on 127.0.0.1 is in use by another program; stop it (or set KAT_QUICKSTART_PORT for katd's port)"
done
if [ ! -s "$Q/cert.pem" ] || ! openssl x509 -in "$Q/cert.pem" -noout -checkend 86400 >/dev/null 2>&1; then
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$Q/key.pem" -out "$Q/cert.pem" -days 10 \
        -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" >/dev/null 2>&1
fi
cat >"$Q/openssl.cnf" <<'CNF'
openssl_conf = default_conf
[default_conf]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
MinProtocol = TLSv1
CipherString = DEFAULT@SECLEVEL=0
CNF
OPENSSL_CONF="$Q/openssl.cnf" setsid nohup openssl s_server -accept 127.0.0.1:443 -www -quiet \
    -cert "$Q/cert.pem" -key "$Q/key.pem" >"$Q/tls.log" 2>&1 </dev/null &
echo $! >"$Q/tls.pid"
# The first database port that binds on 127.0.0.1 (a port some program holds, on 127.0.0.1 or on every
# address, does not); the chosen one goes to db.port.
rm -f "$Q/db.port"
setsid nohup python3 -c '
import socket, sys
for port in map(int, sys.argv[2:]):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port)); s.listen(16)
        break
    except OSError as e:
        print(f"127.0.0.1:{port}: {e}", file=sys.stderr); s.close()
else:
    sys.exit("no database port is free on 127.0.0.1: " + " ".join(sys.argv[2:]))
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(port))
import os; os.rename(sys.argv[1] + ".tmp", sys.argv[1])
while True:
    c, _ = s.accept(); c.close()
' "$Q/db.port" $DB_PORTS >"$Q/db.log" 2>&1 </dev/null &
echo $! >"$Q/db.pid"
wait_until 20 bash -c 'exec 3<>/dev/tcp/127.0.0.1/443' || die "the TLS demo server did not start ($Q/tls.log)"
wait_until 20 test -s "$Q/db.port" || die "the database-port listener did not start ($Q/db.log)"
DB_PORT="$(cat "$Q/db.port")"
log "database-port listener on 127.0.0.1:$DB_PORT"

if [ "$STORE" = sled ]; then
    step "katd serve on $API (runtime $RUNTIME, a fresh data directory)"
    rm -rf "$Q/token" "$Q/data"
    setsid nohup "$katd" serve --data "$Q/data" --listen "127.0.0.1:$PORT" \
        --plugins plugins/plugins.json --finding-types plugins/finding_types.json \
        --org demo:Demo --entrypoint "$ep" --token-out "$Q/token" --concurrency 4 --runtime "$RUNTIME" --tick 2 \
        >"$Q/katd.log" 2>&1 </dev/null &
    echo $! >"$Q/katd.pid"
else
    step "katd on PostgreSQL: the API and the scheduler on $API, $WORKERS worker(s) on the next port(s)"
    rm -rf "$Q/token" "$Q/data" "$Q"/data-w* "$Q"/katd-w*.log
    # Every replica signs and checks tokens with the same secret: a fresh one, readable by its owner only.
    (umask 077 && openssl rand -hex 32 >"$Q/jwt.secret")
    KAT_JWT_SECRET_FILE="$Q/jwt.secret" setsid nohup "$katd" serve --store "$STORE_URL" \
        --role api,scheduler --worker-id api --data "$Q/data" --listen "127.0.0.1:$PORT" \
        --plugins plugins/plugins.json --finding-types plugins/finding_types.json \
        --org demo:Demo --entrypoint "$ep" --token-out "$Q/token" --concurrency 4 --runtime "$RUNTIME" --tick 2 \
        >"$Q/katd.log" 2>&1 </dev/null &
    echo $! >"$Q/katd.pid"
fi
if ! wait_until 60 test -s "$Q/token"; then
    tail -n 20 "$Q/katd.log" >&2
    die "katd did not start (log: $Q/katd.log)"
fi
export KAT_API="$API" KAT_TOKEN="$(cat "$Q/token")"
if [ "$STORE" = postgres ]; then
    # The workers start once the API replica has created the schema and the organization. Their containers call
    # the worker's own listener; what dns finds there is port-scanned at the scheduler's next tick all the same.
    for i in $(seq 1 "$WORKERS"); do
        KAT_JWT_SECRET_FILE="$Q/jwt.secret" setsid nohup "$katd" serve --store "$STORE_URL" \
            --role worker --worker-id "w$i" --data "$Q/data-w$i" --listen "127.0.0.1:$((PORT + i))" \
            --plugins plugins/plugins.json --entrypoint "$ep" --concurrency 4 --runtime "$RUNTIME" \
            >"$Q/katd-w$i.log" 2>&1 </dev/null &
        echo $! >"$Q/katd-w$i.pid"
        log "worker w$i on 127.0.0.1:$((PORT + i)) (log: $Q/katd-w$i.log)"
    done
    # Every replica heartbeats into the database; GET /replicas/ lists them.
    replicas_up() {
        curl -fsS -H "Authorization: Token $KAT_TOKEN" "$API/replicas/?limit=1000" | python3 -c '
import json, sys
want = {"api"} | {f"w{i}" for i in range(1, int(sys.argv[1]) + 1)}
sys.exit(0 if want <= {r["id"] for r in json.load(sys.stdin)["results"]} else 1)' "$WORKERS"
    }
    if ! wait_until 60 replicas_up; then
        for i in $(seq 1 "$WORKERS"); do tail -n 5 "$Q/katd-w$i.log" >&2 || true; done
        die "the $WORKERS worker replica(s) did not all start within 60 s (logs: $Q/katd-w*.log)"
    fi
fi

step "declare one hostname: localhost, scan level 2 (nothing else is declared)"
"$katd" declare --type hostname localhost --scan-level 2

step "schedules: dns over hostnames with a level, portscan over addresses at level 2+, tls and http-headers over hostnames at level 2+"
python3 - "$API" "$KAT_TOKEN" <<'PY'
import json, sys, urllib.request
api, token = sys.argv[1], sys.argv[2]
def call(method, path, body=None):
    req = urllib.request.Request(api + path, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": "Token " + token, "Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)
sets = {}
for name, ty, levels in [("hostnames with a level", "hostname", ["1", "2", "3", "4"]),
                         ("hostnames at level 2+", "hostname", ["2", "3", "4"]),
                         ("addresses at level 2+", "ipaddress", ["2", "3", "4"])]:
    sets[name] = call("POST", "/object-sets/", {"name": name, "object_type": ty, "filters": {"scan_level": levels}})["id"]
for plugin, name in [("dns", "hostnames with a level"), ("portscan", "addresses at level 2+"),
                     ("tls", "hostnames at level 2+"), ("http-headers", "hostnames at level 2+")]:
    call("POST", "/schedules/", {"plugin_id": plugin, "object_set_id": sets[name], "interval": "PT1H", "enabled": True})
    print(f"  {plugin:<13} every hour over the object set {name!r} (id {sets[name]})")
PY
pending() {
    curl -fsS -H "Authorization: Token $KAT_TOKEN" "$API/tasks/?state=queued&state=running&limit=1" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["count"])'
}
no_pending() { [ "$(pending)" = 0 ]; }
# The loop: dns on localhost finds 127.0.0.1, which inherits level 2; a later tick port-scans it.
address_scanned() {
    curl -fsS -H "Authorization: Token $KAT_TOKEN" "$API/tasks/?plugin_id=portscan&limit=1000" | python3 -c '
import json, sys
done = [t for t in json.load(sys.stdin)["results"]
        if "internet|127.0.0.1" in t["data"]["input_data"] and t["state"] not in ("queued", "running")]
sys.exit(0 if done else 1)'
}
step "waiting for the scheduler: dns on localhost, then a port scan of the address it found"
wait_until 300 address_scanned || die "127.0.0.1 was not port-scanned within 5 minutes (see: $katd tasks, $Q/katd.log)"
wait_until 300 no_pending || die "tasks still running after 5 minutes (see: $katd tasks)"

step "tasks"
"$katd" tasks --limit 20
failed="$(curl -fsS -H "Authorization: Token $KAT_TOKEN" "$API/tasks/?state=failed&state=timed_out&limit=1" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["count"])')"

step "what was found"
"$katd" report
if [ "$STORE" = postgres ]; then
    step "katd status: the replicas sharing $PG_DB"
    # A replica's running count is the one in its last heartbeat (every 5 s): let one pass after the tasks ended.
    sleep 6
    "$katd" status
fi

cat <<TXT

katd is still serving on $API (log: $Q/katd.log).
Query it with the operator token in $Q/token, for example:

  export KAT_API=$API KAT_TOKEN=\$(cat $Q/token)
  curl -H "Authorization: Token \$KAT_TOKEN" "$API/objects/finding/"
  curl -H "Authorization: Token \$KAT_TOKEN" "$API/objects/ipport/?port=443"
  $katd objects ipport          # or: tasks, files, report, run <plugin> <target>

Stop everything with:  scripts/quickstart.sh stop
TXT
if [ "$STORE" = postgres ]; then
    printf '\nThe replicas share the PostgreSQL database %s:\n' "$STORE_URL"
    printf '  %-4s %-15s %-34s log: %s\n' api api,scheduler "$API" "$Q/katd.log"
    for i in $(seq 1 "$WORKERS"); do
        printf '  %-4s %-15s %-34s log: %s\n' "w$i" worker "http://127.0.0.1:$((PORT + i))/api/v1" "$Q/katd-w$i.log"
    done
    printf '%s\n' "  $katd status   # the replicas, their last heartbeats and running tasks" \
        "'scripts/quickstart.sh stop' stops every replica; PostgreSQL keeps running (scripts/postgres.sh stop stops it)."
fi
[ "$failed" = 0 ] || die "$failed task(s) failed; see '$katd tasks' and $Q/katd.log"

# The demo's expected findings: its database port open on 127.0.0.1, and localhost's self-signed certificate
# that still accepts TLS 1.0.
curl -fsS -H "Authorization: Token $KAT_TOKEN" "$API/objects/finding/?limit=1000" | python3 -c '
import json, sys
port = sys.argv[1]
found = {
    (f["finding_type"], f.get("address") or f.get("hostname")): f.get("description") or ""
    for f in json.load(sys.stdin)["results"]
}
want = {
    ("KAT-OPEN-DATABASE-PORT", "internet|127.0.0.1"): port + "/tcp",
    ("KAT-SELF-SIGNED", "internet|localhost"): "",
    ("KAT-TLS-1.0-SUPPORT", "internet|localhost"): "",
}
missing = [" on ".join(k) + (f" (naming {v})" if v else "") for k, v in want.items()
           if k not in found or v not in found[k]]
if missing:
    sys.exit("quickstart.sh: error: expected findings missing: " + ", ".join(missing))
' "$DB_PORT"

# The loop itself: 127.0.0.1 was never declared, has localhost's level through the A record, and rules wrote findings.
curl -fsS -H "Authorization: Token $KAT_TOKEN" "$API/objects/ipaddress/internet%7C127.0.0.1/" | python3 -c '
import json, sys
ip = json.load(sys.stdin)
if ip.get("declared") or ip.get("scan_level") != 2 or (ip.get("inherited_from") or {}).get("id") != "internet|localhost":
    sys.exit("quickstart.sh: error: 127.0.0.1 did not inherit level 2 from localhost: " + json.dumps(ip))
'
curl -fsS -H "Authorization: Token $KAT_TOKEN" "$API/objects/finding/?limit=1000" | python3 -c '
import json, sys
ruled = sorted({(f["finding_type"], r) for f in json.load(sys.stdin)["results"] for r in f.get("source_rules") or []})
if ("KAT-OPEN-DATABASE-PORT", "open_database_port") not in ruled:
    sys.exit("quickstart.sh: error: the open_database_port rule did not report the database port: " + repr(ruled))
print("\nThe loop: only localhost was declared; 127.0.0.1 inherited level 2 from it and was port-scanned;")
print("findings from business rules: " + ", ".join(f"{code} ({rule})" for code, rule in ruled))
'

# On PostgreSQL the workers ran the tasks, not the API replica: what each replica ended, from its own /metrics.
if [ "$STORE" = postgres ]; then
    python3 - "$PORT" "$WORKERS" <<'PY'
import re, sys, urllib.request
port, workers = int(sys.argv[1]), int(sys.argv[2])
def ended(p):
    with urllib.request.urlopen(f"http://127.0.0.1:{p}/metrics") as r:
        text = r.read().decode()
    return int(sum(float(v) for v in re.findall(r"^kat_tasks_ended_total\{[^}]*\} (\S+)$", text, re.M)))
counts = {"api": ended(port)} | {f"w{i}": ended(port + i) for i in range(1, workers + 1)}
print("tasks ended per replica (their /metrics): " + ", ".join(f"{k} {v}" for k, v in counts.items()))
if counts["api"] or sum(counts.values()) == 0:
    sys.exit("quickstart.sh: error: the worker replicas did not run the tasks: " + repr(counts))
PY
fi
