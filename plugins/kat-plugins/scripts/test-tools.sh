#!/usr/bin/env bash
# Install the Debian tools the kat-plugins tests use against real programs: nmap (real scan output for
# parse-nmap) and openssl (a TLS 1.0/1.1 server for the tls plugin's version probes). Idempotent and
# quiet on success; the tests call it when a tool is missing.
#
#   plugins/kat-plugins/scripts/test-tools.sh
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../../../scripts/lib.sh"
ensure_packages nmap openssl
