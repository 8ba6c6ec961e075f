"""A Hugging Face hub on loopback, serving one directory as a model repo over the hub's HTTP API:
enough of it (repo info, tree, resolve) for ``huggingface_hub.snapshot_download`` to pull for real."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlsplit

from support import QuietHandler, loopback

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@contextmanager
def fake_hub(repo_id: str, directory: Path) -> Iterator[str]:
    files = {
        str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()
    }

    class Hub(QuietHandler):
        def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for name, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, value: object) -> None:
            self._send(200, json.dumps(value).encode(), {"Content-Type": "application/json"})

        def do_GET(self) -> None:
            path = unquote(urlsplit(self.path).path)
            api = f"/api/models/{repo_id}/"
            if path.startswith(api + "revision/"):
                self._json({"id": repo_id, "sha": COMMIT, "siblings": [{"rfilename": f} for f in files]})
            elif path.startswith(api + "tree/"):
                self._json(
                    [
                        {"type": "file", "path": f, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                        for f, data in files.items()
                    ]
                )
            elif path.startswith(f"/{repo_id}/resolve/"):
                name = path.removeprefix(f"/{repo_id}/resolve/").split("/", 1)[1]
                if name not in files:
                    self._send(404, b"", {"X-Error-Code": "EntryNotFound"})
                    return
                data = files[name]
                etag = f'"{hashlib.sha256(data).hexdigest()}"'
                self._send(200, data, {"X-Repo-Commit": COMMIT, "ETag": etag})
            else:
                self._send(404, b"", {"X-Error-Code": "RepoNotFound"})

        do_HEAD = do_GET

    with loopback(Hub) as url:
        yield url
