# Stand-in (busybox sh) for the original's kat_nmap normalizer: `{file}` is the id of an nmap XML file; it
# fetches the file's metadata and contents through the API, stores every open port as an ipport (service
# included), and prints what it parsed.
id="$1"
meta=$(kat-api GET "/file/$id/") || { echo "kat_nmap: cannot read file $id" >&2; exit 1; }
url=$(printf '%s' "$meta" | sed -n 's/.*"file": *"\([^"]*\)".*/\1/p')
xml=$(kat-api GET "$url") || { echo "kat_nmap: cannot download file $id" >&2; exit 1; }
ip=$(printf '%s\n' "$xml" | sed -n 's/.*<address addr="\([^"]*\)".*/\1/p' | head -n 1)
ports=""
for p in $(printf '%s\n' "$xml" | sed -n 's/.*portid="\([0-9]*\)".*<service name="\([^"]*\)".*/\1:\2/p'); do
    item=$(printf '{"address": "internet|%s", "protocol": "TCP", "port": %s, "service": "%s"}' "$ip" "${p%%:*}" "${p#*:}")
    ports="${ports:+$ports, }$item"
done
kat-api POST /objects/ "{\"ipport\": [$ports]}" >/dev/null || echo "kat_nmap: the API refused the write" >&2
printf '{"address": "%s", "ports": [%s]}\n' "$ip" "$ports"
