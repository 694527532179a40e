# Stand-in (busybox sh) for the manual's "my-plugin" script: "Your scanning logic here", then
# client.post("/objects/", json={...}) with nothing to store.
h="$1"
kat-api POST /objects/ '{}' >/dev/null || echo "kat_myplugin: the API refused the write" >&2
printf '{"hostname": "%s", "checked": true}\n' "$h"
