"""Real servers on 127.0.0.1 for the tests of remote reading: HTTP with byte ranges, and S3 (moto).

Both servers run in threads of the test process, bind an ephemeral port on 127.0.0.1 only, are
started and stopped by the tests themselves (a ``with`` block or the fixtures below), log every
request they answer and can be made slow or faulty at run time.

* :class:`RangeHTTPServer` serves a local folder read-only over HTTP/1.1 with keep-alive:
  ``GET``/``HEAD``, single byte ranges (``bytes=a-b``, ``bytes=a-``, ``bytes=-n``: 206 with
  ``Content-Range``, 416 when unsatisfiable), ``Content-Length``, ``Accept-Ranges``,
  ``Last-Modified`` and ``ETag``. Folders answer 404, as on a plain static server, unless
  ``listing=True`` (then an HTML index that fsspec's ``HTTPFileSystem.ls`` can parse).
* :class:`S3Server` is moto's S3 in server mode (the same werkzeug server and moto application
  as ``moto.server.ThreadedMotoServer``), wrapped in a WSGI layer that logs each request and
  applies the same ``latency`` and failure knobs.

The fixtures ``http_server`` and ``s3_server`` are imported explicitly by the test modules that use
them, under the names ``fixture_http_server`` and ``fixture_s3_server`` (a test's argument named like
an imported function is a redefinition to ruff, F811)::

    from remote_servers import fixture_http_server, fixture_s3_server  # noqa: F401 - fixtures
    from remote_servers import s3_storage_options, upload_folder

    def test_over_http(http_server, tmp_path):
        save_fast(data, tmp_path / "ds", (2, 8, 8))    # the server's root is the test's tmp_path
        url = http_server.url_for("ds")                # "http://127.0.0.1:PORT/ds"
        http_server.latency = 0.02                     # a 20 ms round trip
        ...                                            # read the dataset at url
        assert http_server.count("0000.h5", method="GET") == 1

    def test_over_s3(s3_server, tmp_path):
        save_fast(data, tmp_path / "ds", (2, 8, 8))
        url = upload_folder(s3_server, tmp_path / "ds", f"{s3_server.bucket}/ds")  # "s3://<bucket>/ds"
        options = s3_storage_options(s3_server)
        ...                                            # read the dataset at url with storage_options=options
        assert s3_server.count("/ds/0000.h5", method="GET") == 1

Knobs, settable at any time from the test (thread-safe): ``latency`` (seconds slept before each
answer), ``fail_next(n, status)`` (the next n requests fail), ``fail_paths`` ({url path: status},
persistent); on HTTP only: ``ignore_range`` (200 and the whole body whatever the Range),
``truncate_body`` / ``truncate_next(n, keep)`` (send ``keep`` bytes of the body, fewer than
Content-Length, then close the connection), ``stall`` (read the request, never answer), ``mangle``
(a function changing GET bodies in flight), ``listing``.
The log: ``requests(path_substring, method)``, ``count(...)``, ``bytes_sent(...)``, ``connections``
(TCP connections accepted; on S3 one per request, as werkzeug closes each), ``reset_log()``,
``wait_idle()`` (until no answer is in progress: byte counts of transfers a client broke off are
final then); ``with server.untracked():`` for set-up traffic (neither logged nor slowed nor failed).

``http_server`` is per test and serves the test's ``tmp_path`` (``http_server.serve(folder)`` for
another). ``s3_server`` is one moto server per session; each test gets an empty log, no faults, a
fresh bucket ``s3_server.bucket``, AWS_* variables of its own (monkeypatched), and moto is emptied
after it.
"""

from __future__ import annotations

import contextlib
import email.utils
import functools
import html
import mimetypes
import os
import re
import select
import socket
import socketserver
import sys
import threading
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, TypeVar

import pytest

__all__ = [
    "LOOPBACK",
    "LoggedRequest",
    "RangeHTTPServer",
    "S3Server",
    "s3_storage_options",
    "upload_folder",
    "fixture_http_server",
    "fixture_s3_server",
    "http_server",
    "s3_server",
]

#: the only address the servers bind and the clients talk to
LOOPBACK = "127.0.0.1"
#: the credentials and region moto accepts (any would do; these are moto's documented ones)
S3_KEY = "testing"
S3_SECRET = "testing"
S3_REGION = "us-east-1"

_CHUNK = 64 * 1024
_STOP_TIMEOUT = 5.0  # seconds stop() waits for the connection threads once their sockets are shut
_RANGE_RE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)
_UNSATISFIABLE = "unsatisfiable"

#: a urllib opener that never goes through a proxy, whatever the environment says
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class LoggedRequest(NamedTuple):
    """One answered request. ``status`` is 0 for a request that was stalled (never answered)."""

    method: str
    path: str  # as sent: percent-encoded, with the query string
    range: str | None  # the Range header, verbatim
    status: int
    bytes_sent: int  # body bytes written (0 for HEAD)


def _check_loopback(url: str) -> str:
    host = urllib.parse.urlsplit(url).hostname
    if host != LOOPBACK:
        raise AssertionError(f"test servers live on {LOOPBACK} only, not {host!r} ({url})")
    return url


# ----------------------------------------------------------------------------- shared machinery


_S = TypeVar("_S", bound="_ServerControls")


class _ServerControls:
    """The request log and the knobs both servers share; every access holds one lock. Also the
    lifecycle both have: ``with server:`` starts and stops it, :attr:`url` is where it listens."""

    def start(self: _S) -> _S:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def _bound(self) -> Any:
        """The listening socket server while running, else None."""
        raise NotImplementedError

    def __enter__(self: _S) -> _S:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        bound = self._bound()
        if bound is None:
            raise RuntimeError("not started")
        return f"http://{LOOPBACK}:{bound.server_address[1]}"

    def __init__(self, latency: float = 0.0) -> None:
        self._lock = threading.Lock()
        self._log: list[LoggedRequest] = []
        self._connections = 0
        self._untracked = 0
        self._latency = 0.0
        self.latency = latency
        self._fail_next_n = 0
        self._fail_next_status = 503
        self._fail_paths: dict[str, int] = {}
        self._stopping = threading.Event()
        self._errors: list[BaseException] = []
        self._busy = 0  # requests being answered
        self._idle = threading.Condition(self._lock)

    # knobs
    @property
    def latency(self) -> float:
        """Seconds slept before answering each request (0: none)."""
        with self._lock:
            return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"latency must be >= 0, got {seconds}")
        with self._lock:
            self._latency = float(seconds)

    def fail_next(self, n: int = 1, status: int = 503) -> None:
        """Answer the next ``n`` requests (any path, any method) with ``status`` (transient errors)."""
        if n < 0 or not 400 <= status <= 599:
            raise ValueError(f"fail_next needs n >= 0 and an error status, got n={n}, status={status}")
        with self._lock:
            self._fail_next_n = n
            self._fail_next_status = status

    @property
    def fail_paths(self) -> dict[str, int]:
        """``{url path: status}``: these paths always fail (a copy; assign a new dict to change it).

        Paths are decoded and without the query string: ``"/ds/0000.h5"``, ``"/bucket/ds/0000.h5"``.
        """
        with self._lock:
            return dict(self._fail_paths)

    @fail_paths.setter
    def fail_paths(self, paths: dict[str, int]) -> None:
        with self._lock:
            self._fail_paths = {"/" + p.lstrip("/"): int(s) for p, s in paths.items()}

    def reset_faults(self) -> None:
        """Back to a healthy, fast server (the log is kept)."""
        self.latency = 0.0
        with self._lock:
            self._fail_next_n = 0
            self._fail_paths = {}

    # the log
    def requests(self, path_substring: str | None = None, method: str | None = None) -> list[LoggedRequest]:
        """The logged requests, oldest first, whose path contains ``path_substring`` and whose method is ``method``."""
        with self._lock:
            log = list(self._log)
        return [
            r for r in log
            if (path_substring is None or path_substring in r.path) and (method is None or r.method == method.upper())
        ]

    def count(self, path_substring: str | None = None, method: str | None = None) -> int:
        """How many requests :meth:`requests` would return."""
        return len(self.requests(path_substring, method))

    def bytes_sent(self, path_substring: str | None = None, method: str | None = None) -> int:
        """Body bytes sent for the requests :meth:`requests` would return."""
        return sum(r.bytes_sent for r in self.requests(path_substring, method))

    @property
    def connections(self) -> int:
        """TCP connections accepted since the start or the last :meth:`reset_log` (keep-alive reuses them)."""
        with self._lock:
            return self._connections

    def reset_log(self) -> None:
        """Forget the logged requests and the connection count."""
        with self._lock:
            self._log.clear()
            self._connections = 0

    @contextlib.contextmanager
    def untracked(self) -> Iterator[None]:
        """Requests answered inside this block (set-up traffic, e.g. uploads) are not logged and no
        knob applies to them: no latency, no failure, no truncation, no stall."""
        with self._lock:
            self._untracked += 1
        try:
            yield
        finally:
            with self._lock:
                self._untracked -= 1

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until no request is being answered; False if some still is after ``timeout`` seconds.

        A request is logged as its answer starts, with the body length it is to send; when a client
        breaks a transfer off, the entry's ``bytes_sent`` is corrected once the server notices (its
        write fails), which this waits for. Only bodies larger than the sockets' buffers (a few
        hundred KiB on loopback) can be cut short that way: the kernel takes smaller ones whole.
        A stalled request is being answered until its client gives up.
        """
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout)

    def _begin(self) -> None:
        with self._lock:
            self._busy += 1

    def _end(self) -> None:
        with self._lock:
            self._busy -= 1
            if not self._busy:
                self._idle.notify_all()

    def _tracking(self) -> bool:
        with self._lock:
            return not self._untracked

    # for the request handlers
    def _record(self, entry: LoggedRequest) -> None:
        with self._lock:
            if not self._untracked:
                self._log.append(entry)

    def _amend(self, entry: LoggedRequest, sent: int) -> None:
        """Correct the bytes sent of a logged request (the client went away mid-body)."""
        with self._lock:
            for i in range(len(self._log) - 1, -1, -1):
                if self._log[i] is entry:
                    self._log[i] = entry._replace(bytes_sent=sent)
                    break

    def _count_connection(self) -> None:
        with self._lock:
            if not self._untracked:
                self._connections += 1

    def _take_failure(self, path: str) -> int | None:
        with self._lock:
            if self._untracked:
                return None
            if self._fail_next_n > 0:
                self._fail_next_n -= 1
                return self._fail_next_status
            return self._fail_paths.get(path)

    def _wait_latency(self) -> bool:
        """Sleep for the latency; False when the server is stopping meanwhile (answer nothing then)."""
        delay = self.latency if self._tracking() else 0.0
        if delay:
            return not self._stopping.wait(delay)
        return not self._stopping.is_set()

    def _raise_handler_errors(self) -> None:
        with self._lock:
            errors, self._errors = self._errors, []
        if errors:
            raise RuntimeError(f"{type(self).__name__}: {len(errors)} request handler(s) failed") from errors[0]


class _TrackingMixIn:
    """For a ``ThreadingMixIn`` server: one daemon thread per connection, each remembered with its
    socket, so that stopping can shut the sockets (ending idle keep-alive reads and stalls) and
    join the threads, instead of leaving them behind or blocking on them forever."""

    controls: _ServerControls

    def _init_tracking(self, controls: _ServerControls) -> None:
        self.controls = controls
        self._open: set[socket.socket] = set()  # the connections' sockets
        self._conn_threads: list[threading.Thread] = []  # until joined: a thread outlives its socket a little
        self._open_lock = threading.Lock()

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host name up (socket.getfqdn): not needed, not wanted
        socketserver.TCPServer.server_bind(self)  # type: ignore[arg-type]
        host, port = self.server_address[:2]  # type: ignore[attr-defined]
        self.server_name = str(host)
        self.server_port = port

    def process_request(self, request: Any, client_address: Any) -> None:
        self.controls._count_connection()
        thread = threading.Thread(
            target=self.process_request_thread,  # type: ignore[attr-defined]
            args=(request, client_address),
            name=f"{self.thread_name}-connection",
            daemon=True,
        )
        with self._open_lock:
            self._open.add(request)
            self._conn_threads = [t for t in self._conn_threads if t.is_alive()]
            self._conn_threads.append(thread)
        thread.start()

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)  # type: ignore[misc]

    @property
    def thread_name(self) -> str:
        """``"<server class>:<port>"``, the name of the serving thread and the prefix of the others."""
        return f"{type(self.controls).__name__}:{self.server_address[1]}"  # type: ignore[attr-defined]

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that went away is normal here (timeouts, truncation, stop); anything else is a bug
        error = sys.exc_info()[1]
        if error is not None and not isinstance(error, OSError):
            with self.controls._lock:
                self.controls._errors.append(error)

    def close_connections(self, timeout: float = _STOP_TIMEOUT) -> list[threading.Thread]:
        """Shut every open connection down and join its thread; returns the threads still alive."""
        with self._open_lock:
            sockets, threads = list(self._open), list(self._conn_threads)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:  # closed meanwhile by its own thread
                pass
        for thread in threads:
            thread.join(timeout)
        return [t for t in threads if t.is_alive()]


def _stop_server(server: socketserver.BaseServer, tracking: _TrackingMixIn, serve_thread: threading.Thread) -> None:
    server.shutdown()  # serve_forever returns: no new connections
    alive = tracking.close_connections()
    server.server_close()
    serve_thread.join(_STOP_TIMEOUT)
    if alive or serve_thread.is_alive():
        raise RuntimeError(f"server threads did not end: {[t.name for t in alive]}")


# ----------------------------------------------------------------------------- HTTP


def _parse_range(value: str, size: int) -> tuple[int, int] | str | None:
    """``(start, stop)`` of a single byte range (stop exclusive), :data:`_UNSATISFIABLE`, or None to
    ignore the header (not one ``bytes`` range, or invalid: RFC 9110 lets a server serve it all)."""
    m = _RANGE_RE.match(value)
    if not m or (not m[1] and not m[2]):
        return None
    if not m[1]:  # bytes=-n: the last n bytes
        n = int(m[2])
        if n == 0 or size == 0:
            return _UNSATISFIABLE
        return max(0, size - n), size
    start = int(m[1])
    if m[2] and int(m[2]) < start:
        return None
    if start >= size:
        return _UNSATISFIABLE
    return start, size if not m[2] else min(int(m[2]) + 1, size)


class _RangeHTTPD(_TrackingMixIn, ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() joins the connection threads itself, with a timeout

    def __init__(self, controls: RangeHTTPServer) -> None:
        self._init_tracking(controls)
        super().__init__((LOOPBACK, 0), _RangeRequestHandler)


class _RangeRequestHandler(BaseHTTPRequestHandler):
    """GET and HEAD of the files under the server's root; see :class:`RangeHTTPServer`."""

    protocol_version = "HTTP/1.1"  # keep-alive: every answer carries a Content-Length
    timeout = 60  # an idle keep-alive connection ends after this even if the server is never stopped
    # TCP_NODELAY: headers and body go out in separate writes, and Nagle's algorithm would hold the
    # body back until the client's delayed ACK of the headers, 40 ms on Linux: a round trip per request
    disable_nagle_algorithm = True
    server: _RangeHTTPD

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the server keeps its own log."""

    @property
    def controls(self) -> RangeHTTPServer:
        controls = self.server.controls
        assert isinstance(controls, RangeHTTPServer)
        return controls

    def do_GET(self) -> None:
        self.controls._begin()
        try:
            self._answer(head=False)
        finally:
            self.controls._end()

    def do_HEAD(self) -> None:
        self.controls._begin()
        try:
            self._answer(head=True)
        finally:
            self.controls._end()

    def _read_only(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if 0 < length <= 1 << 20:
            self.rfile.read(length)  # keep the connection in step
        elif length or self.headers.get("Transfer-Encoding"):
            self.close_connection = True
        self._simple(HTTPStatus.METHOD_NOT_ALLOWED, head=False, extra={"Allow": "GET, HEAD"})

    do_PUT = do_POST = do_DELETE = do_PATCH = do_OPTIONS = _read_only

    # --- answers
    def _start(self, status: int, headers: dict[str, str], planned: int) -> LoggedRequest:
        """Send the status and headers, logging the request just before the headers go out: a client
        that has the answer (a HEAD's is complete then) finds it logged. ``planned``: body bytes."""
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        entry = LoggedRequest(self.command, self.path, self.headers.get("Range"), int(status), planned)
        self.controls._record(entry)
        self.end_headers()
        return entry

    def _simple(self, status: int, head: bool, extra: dict[str, str] | None = None, body: bytes | None = None) -> None:
        if body is None:
            body = f"{status} {HTTPStatus(status).phrase}\n".encode()
        headers = {"Content-Type": "text/plain; charset=utf-8", "Content-Length": str(len(body)), **(extra or {})}
        self._send(status, headers, body, head)

    def _send(self, status: int, headers: dict[str, str], body: bytes, head: bool) -> None:
        entry = self._start(status, headers, 0 if head else len(body))
        if not head:
            sent = self._write(body)
            if sent != len(body):
                self.controls._amend(entry, sent)

    def _write(self, data: bytes) -> int:
        try:
            self.wfile.write(data)
        except OSError:
            self.close_connection = True
            return 0
        return len(data)

    def _answer(self, head: bool) -> None:
        controls = self.controls
        if not controls._wait_latency():
            self.close_connection = True
            return
        if controls.stall and controls._tracking():
            controls._record(LoggedRequest(self.command, self.path, self.headers.get("Range"), 0, 0))
            self._stall()
            return
        url_path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        status = controls._take_failure(url_path)
        if status is not None:
            self._simple(status, head)
            return
        target = controls._resolve(url_path)
        if target is None:
            self._simple(HTTPStatus.NOT_FOUND, head)
        elif target.is_dir():
            if not controls.listing:
                self._simple(HTTPStatus.NOT_FOUND, head)
            elif not url_path.endswith("/"):  # like python -m http.server: relative links need the slash
                location = urllib.parse.quote(url_path) + "/"
                self._simple(HTTPStatus.MOVED_PERMANENTLY, head, {"Location": location})
            else:
                self._listing(target, url_path, head)
        elif url_path.endswith("/"):  # a file is no folder
            self._simple(HTTPStatus.NOT_FOUND, head)
        else:
            self._file(target, url_path, head)

    def _listing(self, folder: Path, url_path: str, head: bool) -> None:
        items = []
        for entry in sorted(folder.iterdir(), key=lambda p: p.name):
            name = entry.name + ("/" if entry.is_dir() else "")
            items.append(f'<li><a href="{urllib.parse.quote(name)}">{html.escape(name)}</a></li>')
        title = html.escape(f"Directory listing for {url_path}")
        page = (
            f"<!DOCTYPE HTML>\n<html>\n<head><meta charset=\"utf-8\"><title>{title}</title></head>\n"
            f"<body>\n<h1>{title}</h1>\n<hr>\n<ul>\n" + "\n".join(items) + "\n</ul>\n<hr>\n</body>\n</html>\n"
        )
        body = page.encode()
        headers = {"Content-Type": "text/html; charset=utf-8", "Content-Length": str(len(body))}
        self._send(HTTPStatus.OK, headers, body, head)

    def _file(self, path: Path, url_path: str, head: bool) -> None:
        controls = self.controls
        try:
            f = path.open("rb")
        except OSError:
            self._simple(HTTPStatus.NOT_FOUND, head)
            return
        with f:
            st = os.fstat(f.fileno())
            size = st.st_size
            headers = {
                "Content-Type": mimetypes.guess_type(path.name)[0] or "application/octet-stream",
                "Last-Modified": email.utils.formatdate(st.st_mtime, usegmt=True),
                "ETag": f'"{st.st_mtime_ns:x}-{size:x}"',
                "Accept-Ranges": "bytes",
            }
            range_header = self.headers.get("Range")
            span = None if range_header is None or controls.ignore_range else _parse_range(range_header, size)
            if span == _UNSATISFIABLE:
                self._simple(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, head, {"Content-Range": f"bytes */{size}"})
                return
            if isinstance(span, tuple):
                status, (start, stop) = HTTPStatus.PARTIAL_CONTENT, span
                headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
            else:
                status, start, stop = HTTPStatus.OK, 0, size
            f.seek(start)
            mangle = None if head or not controls._tracking() else controls.mangle
            body = None
            if mangle is not None:  # the whole span in memory, as the function returns it
                body = mangle(url_path, f.read(stop - start))
                length = len(body)
            else:
                length = stop - start
            headers["Content-Length"] = str(length)
            keep = None if head else controls._take_truncation(length)
            limit = 0 if head else length if keep is None else keep
            entry = self._start(status, headers, limit)
            sent = 0
            while sent < limit:
                chunk = body[sent : sent + min(_CHUNK, limit - sent)] if body is not None else f.read(
                    min(_CHUNK, limit - sent)
                )
                if not chunk:
                    break
                n = self._write(chunk)
                sent += n
                if n < len(chunk):
                    break
            if sent != limit:
                controls._amend(entry, sent)
            if keep is not None:
                self.close_connection = True  # fewer bytes than Content-Length, then the connection ends

    def _stall(self) -> None:
        """Never answer; end when the client gives up (closes) or the server stops."""
        self.close_connection = True
        sock = self.connection
        while not self.controls._stopping.wait(0.05):
            try:
                readable, _, _ = select.select([sock], [], [], 0)
                if readable and not sock.recv(1, socket.MSG_PEEK):
                    return
            except (OSError, ValueError):  # shut down by stop()
                return


class RangeHTTPServer(_ServerControls):
    """A read-only static HTTP/1.1 server over a local folder, on 127.0.0.1 and an ephemeral port.

    ``with RangeHTTPServer(folder) as server: urlopen(server.url + "/file")``. See the module
    docstring for the knobs and the log. Files only: a folder answers 404 unless ``listing``.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        listing: bool = False,
        latency: float = 0.0,
        ignore_range: bool = False,
        mangle: Callable[[str, bytes], bytes] | None = None,
    ) -> None:
        super().__init__(latency)
        self._root = Path(root).resolve()
        self._mangle = mangle
        self._listing = listing
        self._ignore_range = ignore_range
        self._stall = False
        self._truncate_body: int | None = None
        self._truncate_next_n = 0
        self._truncate_next_keep = 0
        self._httpd: _RangeHTTPD | None = None
        self._thread: threading.Thread | None = None

    # lifecycle
    def start(self) -> RangeHTTPServer:
        """Bind 127.0.0.1:0 and serve in a thread; returns self."""
        if self._httpd is not None:
            raise RuntimeError("already started")
        self._stopping.clear()
        self._httpd = _RangeHTTPD(self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, name=self._httpd.thread_name, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, end every connection (idle, stalled or slow), close the sockets, join the threads.

        Raises RuntimeError if a request handler failed with something other than a connection error.
        """
        if self._httpd is None or self._thread is None:
            return
        self._stopping.set()
        httpd, self._httpd = self._httpd, None
        _stop_server(httpd, httpd, self._thread)
        self._raise_handler_errors()

    def _bound(self) -> Any:
        return self._httpd

    def url_for(self, path: str | os.PathLike[str] = "") -> str:
        """The URL (percent-encoded) of a path relative to the root, or of an absolute path under it."""
        p = Path(path)
        if p.is_absolute():
            p = p.resolve().relative_to(self.root)
        rel = p.as_posix().strip("/")
        return f"{self.url}/{urllib.parse.quote(rel)}" if rel and rel != "." else self.url

    @property
    def root(self) -> Path:
        """The folder served."""
        with self._lock:
            return self._root

    def serve(self, root: str | os.PathLike[str]) -> str:
        """Serve another folder from now on; returns :attr:`url`."""
        with self._lock:
            self._root = Path(root).resolve()
        return self.url

    def _resolve(self, url_path: str) -> Path | None:
        parts = [p for p in url_path.split("/") if p]
        if any(p in (".", "..") or "\\" in p or "\0" in p for p in parts):
            return None
        root = self.root
        try:
            target = root.joinpath(*parts).resolve(strict=True)
            target.relative_to(root)
        except (OSError, ValueError, RuntimeError):
            return None
        return target

    # knobs (HTTP only)
    @property
    def listing(self) -> bool:
        """Answer folders with an HTML index of links (like ``python -m http.server``) instead of 404."""
        with self._lock:
            return self._listing

    @listing.setter
    def listing(self, value: bool) -> None:
        with self._lock:
            self._listing = bool(value)

    @property
    def ignore_range(self) -> bool:
        """Answer 200 with the whole body whatever the Range header (a misconfigured server or proxy).

        HEAD still says ``Accept-Ranges: bytes``: the worst case, a server that claims ranges and ignores them.
        """
        with self._lock:
            return self._ignore_range

    @ignore_range.setter
    def ignore_range(self, value: bool) -> None:
        with self._lock:
            self._ignore_range = bool(value)

    @property
    def stall(self) -> bool:
        """Read each request and never answer (logged with status 0); the connection ends when the
        client gives up or the server stops. Requests stalled stay stalled if this is turned off."""
        with self._lock:
            return self._stall

    @stall.setter
    def stall(self, value: bool) -> None:
        with self._lock:
            self._stall = bool(value)

    @property
    def truncate_body(self) -> int | None:
        """When set, every GET body longer than this is cut after this many bytes (fewer than its
        Content-Length) and the connection closed: a broken transfer. None: off."""
        with self._lock:
            return self._truncate_body

    @truncate_body.setter
    def truncate_body(self, keep: int | None) -> None:
        if keep is not None and keep < 0:
            raise ValueError(f"truncate_body must be >= 0 or None, got {keep}")
        with self._lock:
            self._truncate_body = keep

    @property
    def mangle(self) -> Callable[[str, bytes], bytes] | None:
        """``mangle(url_path, body) -> body``: applied to every GET body of a file (the bytes of the
        range served), e.g. to flip bits in flight; Content-Length is the length it returns. Called in
        the server's threads (one per connection), so it must be thread-safe. None: off."""
        with self._lock:
            return self._mangle

    @mangle.setter
    def mangle(self, function: Callable[[str, bytes], bytes] | None) -> None:
        with self._lock:
            self._mangle = function

    def truncate_next(self, n: int = 1, keep: int = 0) -> None:
        """Cut the next ``n`` GET bodies longer than ``keep`` bytes after ``keep`` bytes (transient)."""
        if n < 0 or keep < 0:
            raise ValueError(f"truncate_next needs n >= 0 and keep >= 0, got n={n}, keep={keep}")
        with self._lock:
            self._truncate_next_n = n
            self._truncate_next_keep = keep

    def reset_faults(self) -> None:
        """Back to a healthy, fast server answering ranges (the log and ``listing`` are kept)."""
        super().reset_faults()
        with self._lock:
            self._ignore_range = False
            self._stall = False
            self._truncate_body = None
            self._truncate_next_n = 0
            self._mangle = None

    def _take_truncation(self, length: int) -> int | None:
        with self._lock:
            if self._untracked:
                return None
            if self._truncate_next_n > 0 and length > self._truncate_next_keep:
                self._truncate_next_n -= 1
                return self._truncate_next_keep
            if self._truncate_body is not None and length > self._truncate_body:
                return self._truncate_body
            return None


# ----------------------------------------------------------------------------- S3 (moto)


_S3_ERROR_CODES = {
    400: "InvalidRequest", 403: "AccessDenied", 404: "NoSuchKey", 500: "InternalError", 503: "SlowDown",
}


class _LoggedBody:
    """moto's WSGI response, logged just before its last chunk goes out (so that a client that has
    the whole answer finds it logged), or when werkzeug closes it early."""

    _END = object()

    def __init__(self, inner: Iterable[bytes], log: Callable[[int], None], done: Callable[[], None]) -> None:
        self._inner = inner
        self._log = log
        self._done = done
        self._logged = False
        self._sent = 0

    def _log_once(self, sent: int) -> None:
        if not self._logged:
            self._logged = True
            self._log(sent)

    def __iter__(self) -> Iterator[bytes]:
        chunks = iter(self._inner)
        current = next(chunks, self._END)
        while current is not self._END:
            following = next(chunks, self._END)
            assert isinstance(current, bytes)
            if following is self._END:
                self._log_once(self._sent + len(current))
            yield current
            self._sent += len(current)
            current = following
        self._log_once(self._sent)

    def close(self) -> None:
        try:
            close = getattr(self._inner, "close", None)
            if close is not None:
                close()
        finally:
            self._log_once(self._sent)
            self._done()


class _S3Middleware:
    """WSGI layer in front of moto's application: latency, injected failures and the request log."""

    def __init__(self, app: Callable[..., Iterable[bytes]], controls: S3Server) -> None:
        self._app = app
        self._controls = controls

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        controls = self._controls
        method = environ["REQUEST_METHOD"]
        path = environ.get("PATH_INFO", "")
        raw = urllib.parse.quote(path, safe="/~!$&'()*+,;=:@")
        if environ.get("QUERY_STRING"):
            raw += "?" + environ["QUERY_STRING"]
        range_header = environ.get("HTTP_RANGE")
        if path.startswith("/moto-api"):  # the fixtures' own resets: not traffic under test
            return self._app(environ, start_response)

        def log(status: int, sent: int) -> None:
            controls._record(LoggedRequest(method, raw, range_header, status, sent))

        controls._begin()  # ended by _LoggedBody.close(), which werkzeug always calls
        try:
            return self._answer(environ, start_response, method, path, log)
        except BaseException:
            controls._end()
            raise

    def _answer(
        self,
        environ: dict[str, Any],
        start_response: Callable[..., Any],
        method: str,
        path: str,
        log: Callable[[int, int], None],
    ) -> Iterable[bytes]:
        controls = self._controls

        failure = None if controls._wait_latency() else 503
        if failure is None:
            failure = controls._take_failure(path)
        if failure is not None:
            self._drain(environ)
            code = _S3_ERROR_CODES.get(failure, "InjectedError")
            body = (
                '<?xml version="1.0" encoding="UTF-8"?>\n'
                f"<Error><Code>{code}</Code><Message>injected by the test server</Message>"
                f"<RequestId>{uuid.uuid4().hex}</RequestId></Error>"
            ).encode()
            if method == "HEAD":
                body = b""
            start_response(
                f"{failure} {HTTPStatus(failure).phrase}",
                [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))],
            )
            failed: int = failure
            return _LoggedBody([body], lambda sent: log(failed, sent), controls._end)

        status: list[int] = []

        def recording_start_response(status_line: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            status.append(int(status_line.split(None, 1)[0]))
            # moto says "server: amazon.com" and werkzeug adds its own Server header: strict HTTP
            # parsers (aiohttp's pure-Python one, used under python -X dev) refuse the duplicate
            headers = [(k, v) for k, v in headers if k.lower() != "server"]
            return start_response(status_line, headers, exc_info)

        inner = self._app(environ, recording_start_response)
        return _LoggedBody(
            inner, lambda sent: log(status[-1] if status else 0, 0 if method == "HEAD" else sent), controls._end
        )

    @staticmethod
    def _drain(environ: dict[str, Any]) -> None:
        stream = environ.get("wsgi.input")
        length = int(environ.get("CONTENT_LENGTH") or 0)
        if stream is None:
            return
        if length:
            stream.read(length)
        elif environ.get("wsgi.input_terminated"):
            stream.read()


@functools.cache
def _moto_parts() -> tuple[type, Callable[[], Any]]:
    """The werkzeug server class and moto's application factory (imported only when S3 is used)."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import ThreadedWSGIServer

    class QuietMotoRequestHandler(MotoRequestHandler):
        disable_nagle_algorithm = True  # as for the HTTP server: no 40 ms delayed-ACK stalls
        def log(self, type: str, message: str, *args: Any) -> None:
            """Silent: the server keeps its own log."""

    class MotoWSGIServer(_TrackingMixIn, ThreadedWSGIServer):
        block_on_close = False

        def __init__(self, controls: S3Server, app: Any) -> None:
            self._init_tracking(controls)
            super().__init__(LOOPBACK, 0, app, handler=QuietMotoRequestHandler)

        def log(self, type: str, message: str, *args: Any) -> None:
            # werkzeug reports an exception of the application (moto's or ours) here: keep it for stop()
            if type == "error":
                with self.controls._lock:
                    self.controls._errors.append(RuntimeError(message % args if args else message))

    def make_app() -> Any:
        return DomainDispatcherApplication(create_backend_app)

    return MotoWSGIServer, make_app


class S3Server(_ServerControls):
    """moto's S3 in server mode on 127.0.0.1 and an ephemeral port, with the request log and knobs.

    It is built from the same parts as ``moto.server.ThreadedMotoServer`` (werkzeug's threaded
    server, moto's ``DomainDispatcherApplication`` and request handler) with a WSGI layer in between
    for the log and the knobs, which ThreadedMotoServer has no place for; the request handler is
    quiet (werkzeug's logs every request to stderr). werkzeug's server closes the connection after
    each answer (no keep-alive). moto's state is global to the process: the ``s3_server`` fixture
    gives each test its own bucket and empties moto afterwards.
    """

    def __init__(self, *, latency: float = 0.0) -> None:
        super().__init__(latency)
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._client: Any = None
        #: the current test's bucket (set by the ``s3_server`` fixture)
        self.bucket: str | None = None

    def start(self) -> S3Server:
        """Bind 127.0.0.1:0 and serve in a thread; returns self."""
        if self._server is not None:
            raise RuntimeError("already started")
        self._stopping.clear()
        server_class, make_app = _moto_parts()
        self._server = server_class(self, _S3Middleware(make_app(), self))
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, name=self._server.thread_name, daemon=True
        )
        self._thread.start()
        _check_loopback(self.url)
        return self

    def stop(self) -> None:
        """Stop serving, end every connection, close the sockets and the set-up client, join the threads."""
        if self._server is None or self._thread is None:
            return
        self._stopping.set()
        if self._client is not None:
            self._client.close()
            self._client = None
        server, self._server = self._server, None
        _stop_server(server, server, self._thread)
        self._raise_handler_errors()

    def _bound(self) -> Any:
        return self._server

    @property
    def endpoint_url(self) -> str:
        """The endpoint URL for S3 clients (the same as :attr:`url`)."""
        return self.url

    def client(self) -> Any:
        """A boto3 S3 client on this server (for set-up; one per server, closed by :meth:`stop`)."""
        if self._client is None:
            import boto3
            from botocore.config import Config

            session = boto3.session.Session(
                aws_access_key_id=S3_KEY, aws_secret_access_key=S3_SECRET, region_name=S3_REGION
            )
            self._client = session.client(
                "s3", endpoint_url=_check_loopback(self.url), config=Config(proxies={})
            )
        return self._client

    def create_bucket(self, name: str) -> None:
        """Create a bucket (untracked: not logged, no knob applies)."""
        with self.untracked():
            self.client().create_bucket(Bucket=name)

    def reset_state(self) -> None:
        """Empty moto: every bucket and object of every server in this process."""
        request = urllib.request.Request(self.url + "/moto-api/reset", method="POST", data=b"")
        with _DIRECT.open(request, timeout=30) as response:
            response.read()


def s3_storage_options(server: S3Server, **extra: Any) -> dict[str, Any]:
    """fsspec/s3fs ``storage_options`` for ``server`` (``extra`` is merged in, e.g. ``skip_instance_cache=True``).

    ``s3fs.S3FileSystem(**s3_storage_options(server))``, ``fsspec.open("s3://bucket/key", **options)``.
    """
    options: dict[str, Any] = {
        "key": S3_KEY,
        "secret": S3_SECRET,
        "client_kwargs": {"endpoint_url": _check_loopback(server.url), "region_name": S3_REGION},
    }
    options.update(extra)
    return options


def upload_folder(server: S3Server, local_dir: str | os.PathLike[str], dest: str) -> str:
    """Upload every file under ``local_dir`` to ``dest`` = ``"bucket/prefix"`` (the bucket is created
    if needed; prefix may be empty), untracked (not logged, no knob applies); returns ``"s3://bucket/prefix"``."""
    bucket, _, prefix = dest.strip("/").partition("/")
    prefix = prefix.strip("/")
    local = Path(local_dir)
    client = server.client()
    with server.untracked():
        if bucket not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
            client.create_bucket(Bucket=bucket)
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            key = "/".join(x for x in (prefix, path.relative_to(local).as_posix()) if x)
            client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
    return f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"


# ----------------------------------------------------------------------------- fixtures


_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


def _isolate_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy for 127.0.0.1, whichever client reads the environment."""
    for name in _PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", f"{LOOPBACK},localhost")
    monkeypatch.setenv("no_proxy", f"{LOOPBACK},localhost")


def _isolate_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake credentials and no user configuration, metadata service or other endpoint for botocore."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    missing = str(tmp_path / "no-aws-config")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", S3_REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", missing)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", missing)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(name="http_server")
def fixture_http_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RangeHTTPServer]:
    """A :class:`RangeHTTPServer` serving the test's ``tmp_path`` (``http_server.serve(folder)`` for
    another), stopped after the test whatever happened."""
    _isolate_network(monkeypatch)
    with RangeHTTPServer(tmp_path) as server:
        yield server


_S3_SERVER = pytest.StashKey[S3Server]()


def _session_s3_server(config: pytest.Config) -> S3Server:
    """One moto server per test session, stopped when the session ends (config cleanup)."""
    server = config.stash.get(_S3_SERVER, None)
    if server is None:
        server = S3Server().start()
        config.stash[_S3_SERVER] = server
        config.add_cleanup(server.stop)
    return server


@pytest.fixture(name="s3_server")
def fixture_s3_server(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    """The session's :class:`S3Server` with a fresh bucket ``s3_server.bucket``, an empty log, no faults
    and AWS_* variables set for this test only; moto is emptied afterwards."""
    pytest.importorskip("moto.moto_server.werkzeug_app", reason="moto[server] is needed for the S3 tests")
    _isolate_network(monkeypatch)
    _isolate_aws(monkeypatch, tmp_path)
    server = _session_s3_server(request.config)
    server.reset_faults()
    server.bucket = f"test-{uuid.uuid4().hex[:16]}"
    server.create_bucket(server.bucket)
    server.reset_log()
    try:
        yield server
    finally:
        server.reset_faults()
        server.bucket = None
        server.reset_state()
        server.reset_log()


#: The same fixtures under their fixture names, for ``from remote_servers import http_server, s3_server``.
#: Ruff then reports each test argument of that name as a redefinition of the import (F811), which
#: the ``fixture_`` names avoid.
http_server = fixture_http_server
s3_server = fixture_s3_server
