# Stand-in (busybox sh) for the manual's DNS plugin script: "resolves" its hostname to 192.0.2.53 without
# asking any server, stores the address through the API as the manual's example does, prints its results.
h="$1"
[ -n "$h" ] || { echo "usage: kat_dns/main.py hostname" >&2; exit 2; }
if ! kat-api POST /objects/ '{"ipaddress": [{"network": "internet", "address": "192.0.2.53"}]}' >/dev/null; then
    echo "kat_dns: the API refused the write" >&2
fi
printf '{"hostname": "%s", "A": ["192.0.2.53"]}\n' "$h"
