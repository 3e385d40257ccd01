"""``split-dataset serve``: share dataset folders over HTTP, read-only, with byte ranges.

Python's ``http.server`` ignores ``Range`` headers, so a reader would download whole
block files; this server answers them (``206 Partial Content``), which is all
:func:`split_dataset.open` needs to read ``http://host:port/path/to/dataset`` by chunks.
It serves regular files under one folder and nothing else: no listing, no symbolic link
leading out of the folder, no writes. It binds 127.0.0.1 unless told otherwise; put a
real web server (nginx, Apache) in front of it before sharing beyond one machine.
"""

from __future__ import annotations

import os
import re
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["DatasetServer", "serve"]

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_COPY = 1 << 20


class _Handler(BaseHTTPRequestHandler):
    server: DatasetServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # library code never prints
        pass

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def do_GET(self) -> None:
        self._answer(head=False)

    def _refuse(self, status: int, head: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _answer(self, head: bool) -> None:
        path = self.server.resolve(self.path)
        if path is None:
            self._refuse(404, head)
            return
        try:
            f = open(path, "rb")  # noqa: SIM115  (closed below, after streaming)
        except OSError:
            self._refuse(404, head)
            return
        with f:
            size = os.fstat(f.fileno()).st_size
            start, end, status = 0, size, 200
            header = self.headers.get("Range")
            if header:
                m = _RANGE.match(header.strip())
                if m is None or (not m[1] and not m[2]):
                    self._refuse(416, head)
                    return
                if m[1]:
                    start = int(m[1])
                    end = min(size, int(m[2]) + 1) if m[2] else size
                else:
                    start = max(0, size - int(m[2]))
                if start >= size or end <= start:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
            self.send_response(status)
            self.send_header("Content-Length", str(end - start))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Type", "application/octet-stream")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
            self.end_headers()
            if head:
                return
            f.seek(start)
            left = end - start
            while left:
                data = f.read(min(_COPY, left))
                if not data:
                    break
                self.wfile.write(data)
                left -= len(data)


class DatasetServer(ThreadingHTTPServer):
    """A read-only HTTP server of the regular files under `root` (see the module docstring).

    Examples
    --------
    >>> import tempfile, urllib.request
    >>> root = tempfile.mkdtemp(); _ = open(os.path.join(root, "a.bin"), "wb").write(b"0123456789")
    >>> with DatasetServer(root, port=0) as server:
    ...     req = urllib.request.Request(server.url + "/a.bin", headers={"Range": "bytes=2-4"})
    ...     urllib.request.urlopen(req).read()
    b'234'
    """

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up mid-answer is normal (a reader with what it needs); never printed."""

    def __init__(self, root: str | os.PathLike[str], host: str = "127.0.0.1", port: int = 8000) -> None:
        self.root = Path(root).resolve(strict=True)
        if not self.root.is_dir():
            raise NotADirectoryError(f"{str(root)!r} is not a folder")
        super().__init__((host, port), _Handler)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server."""
        host, port = self.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else str(host)
        return f"http://{name}:{port}"

    def resolve(self, url_path: str) -> Path | None:
        """The regular file under the root that `url_path` names, or None."""
        rel = urllib.parse.unquote(urllib.parse.urlsplit(url_path).path).lstrip("/")
        if not rel or "\x00" in rel or any(part in ("", ".", "..") for part in rel.split("/")):
            return None
        try:
            path = (self.root / rel).resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if self.root not in path.parents or not path.is_file():
            return None  # outside the folder (through a link), a folder, a device
        return path

    def __enter__(self) -> DatasetServer:
        self._thread = threading.Thread(target=self.serve_forever, name="split_dataset-serve", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join()


def serve(root: str | os.PathLike[str], host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve `root` until interrupted (what ``split-dataset serve`` runs).

    Examples
    --------
    >>> serve("/data/acquisitions", port=8000)  # doctest: +SKIP
    """
    with DatasetServer(root, host, port) as server:
        assert server._thread is not None
        server._thread.join()
