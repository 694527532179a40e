"""Store objects read from stdin through the API, the way OpenKAT's shell-pipeline normalizers do.

    ... | uv run store.py -h                   one hostname a line -> POST /objects/hostname/
    ... | uv run store.py -f -t hostname       "CODE<TAB>hostname" lines -> POST /objects/finding/

Echoes what it posted as JSON on stdout (which becomes the plugin's output file). Like the original, it does
not stop at an HTTP error: the answer is printed to stderr and the script goes on.
"""

import argparse
import json
import os
import sys

import httpx


def main() -> int:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-h", dest="hostnames", action="store_true")
    parser.add_argument("-f", dest="findings", action="store_true")
    parser.add_argument("-t", dest="object_type", default="hostname")
    args = parser.parse_args()
    lines = [line.strip() for line in sys.stdin if line.strip()]
    if args.hostnames:
        path, body = "objects/hostname/", [{"name": n, "network": "internet"} for n in lines]
    elif args.findings:
        field = "hostname" if args.object_type == "hostname" else "address"
        body = []
        for line in lines:
            code, obj = line.split("\t", 1)
            body.append({"finding_type_code": code, field: obj})
        path = "objects/finding/"
    else:
        print("store.py: give -h or -f", file=sys.stderr)
        return 2
    api = os.environ["OPENKAT_API"].rstrip("/")
    headers = {"Authorization": f"Token {os.environ['OPENKAT_TOKEN']}"}
    r = httpx.post(f"{api}/{path}", json=body, headers=headers, timeout=60)
    if r.status_code >= 400:
        print(f"store.py: {r.status_code} {r.text}", file=sys.stderr)
    print(json.dumps(body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
