"""A dataset's folder on an fsspec filesystem: files found by name, bytes fetched by range.

:class:`Store` wraps an fsspec filesystem and the dataset's URL: it fetches whole small
files (the metadata, the chunk index), byte ranges of block files (many at once,
concurrently), and, where the store can list, the folder's names. Transient failures
(timeouts, dropped connections, HTTP 408/429/5xx) are retried with exponential backoff;
what remains becomes :class:`~split_dataset.errors.RemoteError` naming the URL. A store
pickles as its URL and options; each process makes its own filesystem.

HTTP(S) range reads are made here rather than through fsspec's ``cat_file``, so that a
server answering a range request with the whole file (status 200) is refused before its
body is read, instead of downloading every block in full.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ..errors import RemoteError

__all__ = ["RemotePath", "Store", "is_url", "split_url"]

T = TypeVar("T")

#: Status codes worth another try (the server or a proxy was briefly unable to answer).
TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
#: Largest metadata or chunk-index file fetched whole.
MAX_SMALL_FILE = 1 << 30


def is_url(path: Any) -> bool:
    """Whether `path` is a URL for fsspec (``s3://``, ``https://``, ...) rather than a local path.

    ``file://`` URLs and Windows drive letters count as local paths.

    Examples
    --------
    >>> is_url("s3://bucket/ds"), is_url("https://host/ds"), is_url("/data/ds"), is_url("file:///data/ds")
    (True, True, False, False)
    """
    if isinstance(path, RemotePath):
        return True
    if not isinstance(path, str):
        return False
    scheme, sep, _ = path.partition("://")
    return bool(sep) and len(scheme) > 1 and scheme.replace("+", "").replace("-", "").isalnum() and scheme != "file"


def split_url(url: str) -> tuple[str, str]:
    """(protocol, the rest): ``("s3", "bucket/ds")``, ``("https", "https://host/ds")``.

    Examples
    --------
    >>> split_url("s3://bucket/ds/"), split_url("https://host/ds")
    (('s3', 'bucket/ds'), ('https', 'https://host/ds'))
    """
    scheme = url.partition("://")[0].lower()
    if scheme in ("http", "https"):
        return scheme, url.rstrip("/")
    return scheme, url.partition("://")[2].rstrip("/")


def _content_range_length(header: str, start: int, end: int) -> int | None:
    """Bytes a ``206`` answer to ``Range: bytes=start-(end-1)`` must hold, from its ``Content-Range``
    (``bytes a-b/size``), or None if the header does not describe that range.

    Examples
    --------
    >>> _content_range_length("bytes 10-19/100", 10, 20), _content_range_length("bytes 90-99/95", 90, 100)
    (10, None)
    >>> _content_range_length("bytes 90-94/95", 90, 100), _content_range_length("junk", 0, 5)
    (5, None)
    """
    parts = header.strip().split()
    if len(parts) != 2 or parts[0] != "bytes":
        return None
    span, _, total = parts[1].partition("/")
    first, _, last = span.partition("-")
    try:
        a, b = int(first), int(last)
        size = None if total == "*" else int(total)
    except ValueError:
        return None
    if a != start or b < a or b > end - 1 or (size is not None and b >= size):
        return None
    if b != end - 1 and (size is None or b != size - 1):  # short only where the file ends
        return None
    return b - a + 1


class RemotePath:
    """A URL that stands where a local dataset has a ``Path``: ``/`` joins names, ``name``
    and ``parent`` work, ``str()`` gives the URL (for messages). It cannot be opened locally.

    Examples
    --------
    >>> p = RemotePath("s3://bucket/ds") / "0000.h5"
    >>> str(p), p.name, str(p.parent)
    ('s3://bucket/ds/0000.h5', '0000.h5', 's3://bucket/ds')
    """

    __slots__ = ("url",)

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def __truediv__(self, name: str) -> RemotePath:
        return RemotePath(f"{self.url}/{name}")

    @property
    def name(self) -> str:
        """The last part of the URL."""
        return self.url.rsplit("/", 1)[-1]

    @property
    def parent(self) -> RemotePath:
        """The URL without its last part."""
        return RemotePath(self.url.rsplit("/", 1)[0])

    def exists(self) -> bool:
        """Unknown without a request: False (callers only use it for messages)."""
        return False

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"RemotePath({self.url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemotePath) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)


def _status(e: BaseException) -> int | None:
    """The HTTP status an exception carries (aiohttp, botocore, fsspec), if any."""
    for attr in ("status", "status_code"):
        value = getattr(e, attr, None)
        if isinstance(value, int):
            return value
    response = getattr(e, "response", None)
    if isinstance(response, dict):  # botocore ClientError
        code = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if isinstance(code, int):
            return code
    return None


def transient(e: BaseException) -> bool:
    """Whether another try may succeed: timeouts, dropped connections, HTTP 408/429/5xx."""
    if isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, RemoteError)):
        return False
    status = _status(e)
    if status is not None:
        return status in TRANSIENT_STATUS
    if isinstance(e, (TimeoutError, ConnectionError)):
        return True
    name = type(e).__name__
    module = type(e).__module__
    if module.startswith("aiohttp") and ("Connection" in name or "Disconnected" in name or "Payload" in name
                                         or "Timeout" in name):
        return True
    if module.startswith(("botocore", "aiobotocore")) and ("Timeout" in name or "Connection" in name
                                                           or "Throttl" in name):
        return True
    return isinstance(e, OSError) and getattr(e, "errno", None) is None and "timed out" in str(e).lower()


class Store:
    """A dataset folder on an fsspec filesystem (see the module docstring).

    Parameters
    ----------
    url
        The folder's URL (``s3://bucket/ds``, ``https://host/path/ds``).
    storage_options
        Passed to fsspec for this protocol (credentials, endpoint, headers...).
    retries
        Further tries after a transient failure (backoff 0.1 s, 0.2 s, 0.4 s, ..., jittered).
    timeout
        Seconds to wait for a connection or for the next bytes of an answer (HTTP(S) and S3).

    Examples
    --------
    >>> store = Store("memory://examples/ds")
    >>> store.fs.pipe("memory://examples/ds/a.txt", b"hello")
    >>> store.cat("a.txt"), store.ranges("a.txt", [(1, 3)])
    (b'hello', [b'el'])
    """

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None, *, retries: int = 4,
                 timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.protocol, self._base = split_url(self.url)
        self.storage_options = dict(storage_options or {})
        self.retries = max(0, int(retries))
        self.timeout = float(timeout)
        self._fs: Any = None
        self._pid = -1
        self._lock = threading.Lock()

    @property
    def http(self) -> bool:
        """Whether the store is a plain HTTP(S) server (no listing; ranges checked here)."""
        return self.protocol in ("http", "https")

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "storage_options": self.storage_options, "retries": self.retries,
                "timeout": self.timeout}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["url"], state["storage_options"], retries=state["retries"],  # type: ignore[misc]
                      timeout=state["timeout"])

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    @property
    def fs(self) -> Any:
        """The fsspec filesystem, made once per process."""
        with self._lock:
            if self._fs is None or self._pid != os.getpid():
                self._fs = self._make_fs()
                self._pid = os.getpid()
            return self._fs

    def _make_fs(self) -> Any:
        try:
            import fsspec
        except ImportError as e:
            raise ImportError('reading datasets by URL needs fsspec: pip install "split_dataset[remote]"') from e
        options = dict(self.storage_options)
        if self.http:
            import aiohttp

            client = dict(options.get("client_kwargs") or {})
            client.setdefault("timeout", aiohttp.ClientTimeout(total=None, sock_connect=self.timeout,
                                                               sock_read=self.timeout))
            options["client_kwargs"] = client
        elif self.protocol in ("s3", "s3a"):
            config = dict(options.get("config_kwargs") or {})
            config.setdefault("connect_timeout", self.timeout)
            config.setdefault("read_timeout", self.timeout)
            options["config_kwargs"] = config
        try:
            return fsspec.filesystem(self.protocol, **options)
        except (ImportError, ValueError) as e:
            raise ImportError(f"no fsspec filesystem for {self.protocol!r} URLs ({e}); "
                              'pip install "split_dataset[remote]" (and the package for this protocol)') from e

    def path(self, name: str) -> str:
        """The full fsspec path of `name` in the folder."""
        return f"{self._base}/{name}" if name else self._base

    def where(self, name: str) -> str:
        """The URL of `name`, for messages."""
        return f"{self.url}/{name}" if name else self.url

    # ------------------------------------------------------------------ retries

    def _retry(self, what: str, name: str, call: Callable[[], T]) -> T:
        """`call()`, tried again after transient failures; other failures mapped to this package's errors."""
        delay = 0.1
        for attempt in range(self.retries + 1):
            try:
                return call()
            except FileNotFoundError:
                raise
            except RemoteError:
                raise
            except Exception as e:
                if transient(e) and attempt < self.retries:
                    time.sleep(delay * (0.5 + random.random()))
                    delay *= 2
                    continue
                raise self._error(what, name, e, attempt + 1) from e
        raise AssertionError("unreachable")  # pragma: no cover

    def _error(self, what: str, name: str, e: BaseException, tries: int) -> RemoteError:
        if isinstance(e, PermissionError) or _status(e) in (401, 403):
            why = "access denied (check the credentials in storage_options)"
        elif _status(e) is not None:
            why = f"HTTP status {_status(e)}"
        elif transient(e):
            why = f"{type(e).__name__} (timed out or disconnected)"
        else:
            why = type(e).__name__
        detail = " ".join(str(e).split())[:300]
        after = f" after {tries} tries" if tries > 1 else ""
        return RemoteError(self.where(name), f"{what} failed{after}: {why}" + (f": {detail}" if detail else ""))

    # ------------------------------------------------------------------ reads

    def cat(self, name: str, limit: int = MAX_SMALL_FILE) -> bytes:
        """The whole file `name`; ``FileNotFoundError`` if it is not there."""
        data: bytes = self._retry("reading", name, lambda: self.fs.cat_file(self.path(name)))
        if len(data) > limit:
            raise RemoteError(self.where(name), f"it holds {len(data)} bytes; at most {limit} were expected")
        return data

    def size(self, name: str) -> int:
        """Bytes in file `name`; ``FileNotFoundError`` if it is not there."""
        if self.http:  # fsspec's HTTP info() turns every failure (a 503...) into FileNotFoundError
            return self._retry("looking up", name, lambda: self._http_size(name))
        info = self._retry("looking up", name, lambda: self.fs.info(self.path(name)))
        size = info.get("size")
        if not isinstance(size, int) or size < 0:
            raise RemoteError(self.where(name), f"the server reports no size for it ({size!r})")
        return size

    def listing(self) -> list[str] | None:
        """Names in the folder, or None where the store cannot list (plain HTTP servers)."""
        if self.http:
            return None

        def ls() -> list[str]:
            self.fs.invalidate_cache(self.path(""))  # s3fs and others cache listings: never a stale one
            return [str(p).rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.path(""), detail=False)]

        try:
            return self._retry("listing", "", ls)
        except FileNotFoundError:
            return []

    def ranges(self, name: str, spans: Sequence[tuple[int, int]]) -> list[bytes]:
        """The bytes ``[start, end)`` of each span of file `name`, fetched concurrently.

        A span past the end of the file comes back short; a server that ignores range
        requests raises :class:`~split_dataset.errors.RemoteError` before sending the file.
        """
        if not spans:
            return []
        if self.http:
            return self._retry("reading byte ranges of", name, lambda: self._http_ranges(name, spans))
        path = self.path(name)

        def fetch() -> list[bytes]:
            out = self.fs.cat_ranges([path] * len(spans), [s for s, _ in spans], [e for _, e in spans],
                                     on_error="return")
            for item in out:
                if isinstance(item, BaseException):
                    raise item
            return list(out)

        return self._retry("reading byte ranges of", name, fetch)

    def _http_size(self, name: str) -> int:
        from fsspec.asyn import sync

        fs = self.fs
        url = fs.encode_url(self.path(name))

        async def head() -> int:
            session = await fs.set_session()
            kw = dict(fs.kwargs)
            async with session.head(url, allow_redirects=True, **kw) as r:
                if r.status == 404:
                    raise FileNotFoundError(url)
                r.raise_for_status()
                length = r.headers.get("Content-Length")
                if length is None or not length.isdigit() or r.headers.get("Content-Encoding"):
                    raise RemoteError(self.where(name), "the server gives no plain Content-Length for it")
                return int(length)

        size: int = sync(fs.loop, head)
        return size

    def _http_ranges(self, name: str, spans: Sequence[tuple[int, int]]) -> list[bytes]:
        from fsspec.asyn import sync

        fs = self.fs
        url = fs.encode_url(self.path(name))

        async def one(start: int, end: int) -> bytes:
            import asyncio

            session = await fs.set_session()
            kw = dict(fs.kwargs)  # every option fsspec's own requests use: auth, ssl, proxy, cookies...
            headers = dict(kw.pop("headers", None) or {})
            headers["Range"] = f"bytes={start}-{end - 1}"
            async with session.get(url, headers=headers, **kw) as r:
                if r.status == 404:
                    raise FileNotFoundError(url)
                if r.status == 416:
                    return b""
                if r.status == 200:
                    raise RemoteError(self.where(name), "the server ignores range requests (status 200 for "
                                      f"'Range: bytes={start}-{end - 1}'); a block would be downloaded whole for "
                                      "every chunk read, so this server is refused. Serve the dataset from a "
                                      "server that honours Range headers (most do: nginx, Apache, S3, GCS)")
                r.raise_for_status()
                if r.status != 206:
                    raise RemoteError(self.where(name), f"unexpected status {r.status} for a range request")
                expected = _content_range_length(r.headers.get("Content-Range", ""), start, end)
                if expected is None:
                    raise RemoteError(self.where(name), "a range answer without a valid Content-Range header "
                                      f"('{r.headers.get('Content-Range', '')}' for bytes {start}-{end - 1})")
                try:
                    data: bytes = await r.content.readexactly(expected)  # read() returns what is buffered
                except asyncio.IncompleteReadError as e:  # the connection closed early: worth another try
                    raise ConnectionError(f"the answer for bytes {start}-{end - 1} of {self.where(name)} ended after "
                                          f"{len(e.partial)} of {expected} bytes") from None
                if await r.content.read(1):
                    raise RemoteError(self.where(name), f"the server sent more than the {expected} bytes of its "
                                      f"Content-Range for bytes {start}-{end - 1}")
                return data

        async def all_of() -> list[bytes]:
            import asyncio

            return list(await asyncio.gather(*(one(s, e) for s, e in spans)))

        result: list[bytes] = sync(fs.loop, all_of)
        return result

    def open(self, name: str, size: int | None = None) -> Any:
        """A read-only file object over `name` with a read-ahead cache (for HDF5's own reads)."""
        kwargs: dict[str, Any] = {"block_size": 1 << 20, "cache_type": "blockcache"}
        if size is None and self.http:
            size = self.size(name)  # our HEAD: a 503 is retried and named, not taken for a missing file
        if size is not None:
            kwargs["size"] = size
        return self._retry("opening", name, lambda: self.fs.open(self.path(name), "rb", **kwargs))
