"""Write a stored file's content to stdout, the way OpenKAT's normalizers read their input.

    uv run cat.py <file_id>

GET {OPENKAT_API}/file/<id>/ gives the file's metadata; its "file" field is the URL of the content.
"""

import os
import sys

import httpx


def main() -> int:
    api = os.environ["OPENKAT_API"].rstrip("/")
    headers = {"Authorization": f"Token {os.environ['OPENKAT_TOKEN']}"}
    meta = httpx.get(f"{api}/file/{sys.argv[1]}/", headers=headers, timeout=30)
    meta.raise_for_status()
    content = httpx.get(meta.json()["file"], headers=headers, timeout=300, follow_redirects=True)
    content.raise_for_status()
    sys.stdout.buffer.write(content.content)
    return 0


if __name__ == "__main__":
    sys.exit(main())
