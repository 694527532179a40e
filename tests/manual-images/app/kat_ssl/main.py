# Stand-in (busybox sh) for the manual's ssl-checker: pretends the certificate of its hostname expires in 12
# days (no TLS connection is made) and posts the finding exactly as the manual's script does.
h="$1"
days=12
body=$(printf '{"finding": [{"finding_type": "SSL_EXPIRY_WARNING", "object": "internet|%s", "description": "SSL certificate expires in %s days"}]}' "$h" "$days")
kat-api POST /objects/ "$body" >/dev/null || echo "kat_ssl: the API refused the write" >&2
printf '{"hostname": "%s", "days_remaining": %s}\n' "$h" "$days"
