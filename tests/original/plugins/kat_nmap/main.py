"""Normalize nmap XML into IP addresses and open ports, in the shape of OpenKAT's kat_nmap.

    uv run kat_nmap/main.py <file_id>

Reads the file through the API (like cat.py), parses it with python-libnmap, and POSTs the hosts'
addresses and their open ports to /objects/. Like the original it does not check the answer's status:
a refused write (403) is printed to stderr and the script still exits 0, so only the task's refused-call
count tells that nothing was stored. Prints what it posted as JSON.
"""

import json
import os
import sys

import httpx
from libnmap.parser import NmapParser


def main() -> int:
    api = os.environ["OPENKAT_API"].rstrip("/")
    headers = {"Authorization": f"Token {os.environ['OPENKAT_TOKEN']}"}
    meta = httpx.get(f"{api}/file/{sys.argv[1]}/", headers=headers, timeout=30)
    meta.raise_for_status()
    raw = httpx.get(meta.json()["file"], headers=headers, timeout=300, follow_redirects=True)
    raw.raise_for_status()
    report = NmapParser.parse_fromstring(raw.text)
    addresses, ports = [], []
    for host in report.hosts:
        if not host.is_up():
            continue
        addresses.append({"address": host.address, "network": "internet"})
        for port, protocol in host.get_open_ports():
            ports.append({"address": host.address, "protocol": protocol.upper(), "port": port})
    body = {"ipaddress": addresses, "ipport": ports}
    r = httpx.post(f"{api}/objects/", json=body, headers=headers, timeout=60)
    if r.status_code >= 400:
        print(f"kat_nmap: {r.status_code} {r.text}", file=sys.stderr)
    print(json.dumps(body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
