"""A block file on a remote store as a :class:`~split_dataset.storage.source.ByteSource`.

The chunk reader announces the chunks a read needs (:meth:`RemoteFile.prefetch`); they
are fetched at once, neighbours coalesced into one range request (gaps up to
:data:`MAX_GAP` are read through), the requests of one batch in flight together. The
decoding threads then find their bytes in memory. A read that was not announced (a
single chunk, a frame header) is one range request.
"""

from __future__ import annotations

import bisect
import itertools
import threading
from collections.abc import Sequence

from ..errors import BloscError
from .store import Store

__all__ = ["MAX_GAP", "MAX_REQUEST", "RemoteFile", "coalesce"]

#: Bytes between two wanted ranges that are fetched rather than split into two requests.
MAX_GAP = 256 << 10
#: Largest single coalesced request.
MAX_REQUEST = 64 << 20


def coalesce(spans: Sequence[tuple[int, int]], max_gap: int = MAX_GAP, max_request: int = MAX_REQUEST
             ) -> list[tuple[int, int]]:
    """Merge ``(offset, size)`` spans into ``(start, end)`` requests: sorted, overlapping or
    nearly adjacent spans (gap up to `max_gap`) joined while a request stays under `max_request`.

    Examples
    --------
    >>> coalesce([(100, 10), (0, 50), (50, 50), (10_000_000, 5)])
    [(0, 110), (10000000, 10000005)]
    """
    out: list[tuple[int, int]] = []
    for offset, size in sorted((int(o), int(n)) for o, n in spans if n > 0):
        end = offset + size
        if out and offset - out[-1][1] <= max_gap and end - out[-1][0] <= max_request:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((offset, end))
    return out


class RemoteFile:
    """Bytes of one remote block file (see the module docstring).

    Thread-safe: reads from several threads share the fetched spans of every batch still
    in use; a batch's memory is dropped when the read that announced it ends.
    """

    __slots__ = ("_lock", "_next", "_size", "_spans", "name", "path", "store")

    def __init__(self, store: Store, path: str, size: int | None = None) -> None:
        self.store = store
        self.path = path  # the file's name in the store's folder
        self.name = store.where(path)
        self._size = size
        self._lock = threading.Lock()
        self._spans: dict[int, tuple[list[int], list[memoryview]]] = {}  # token -> (starts, data), sorted
        self._next = itertools.count(1)

    def size(self) -> int:
        if self._size is None:
            self._size = self.store.size(self.path)
        return self._size

    def prefetch(self, spans: Sequence[tuple[int, int]]) -> int:
        """Fetch the ``(offset, size)`` spans in a few requests; returns a token for :meth:`release`."""
        requests = coalesce(spans)
        token = next(self._next)
        if not requests:
            return token
        data = self.store.ranges(self.path, requests)
        fetched: list[tuple[int, bytes]] = sorted(((start, blob) for (start, _), blob in zip(requests, data)),
                                                  key=lambda x: x[0])
        with self._lock:
            self._spans[token] = ([start for start, _ in fetched], [memoryview(blob) for _, blob in fetched])
        return token

    def release(self, token: int) -> None:
        """Drop the bytes fetched under `token`."""
        with self._lock:
            self._spans.pop(token, None)

    def _cached(self, view: memoryview, offset: int) -> int | None:
        n = len(view)
        found = None
        with self._lock:  # a binary search per batch in use (usually one); the copy is made outside
            for starts, blobs in self._spans.values():
                k = bisect.bisect_right(starts, offset) - 1
                if k >= 0 and offset + n <= starts[k] + len(blobs[k]):
                    found = blobs[k][offset - starts[k]:offset - starts[k] + n]
                    break
        if found is None:
            return None
        view[:] = found  # the fetched bytes never change: safe to copy without the lock
        return n

    def pread(self, view: memoryview, offset: int) -> int:
        n = self._cached(view, offset)
        if n is not None:
            return n
        if not len(view):
            return 0
        blob = self.store.ranges(self.path, [(offset, offset + len(view))])[0]
        view[:len(blob)] = blob
        return len(blob)

    def read_exactly(self, view: memoryview, offset: int) -> None:
        if self.pread(view, offset) != len(view):
            raise BloscError(f"the chunk bytes {offset}..{offset + len(view)} lie past the end of {self.name} "
                             "(a truncated file?)")

    def read_many(self, requests: Sequence[tuple[memoryview, int]]) -> None:
        token = self.prefetch([(offset, len(view)) for view, offset in requests])
        try:
            for view, offset in requests:
                self.read_exactly(view, offset)
        finally:
            self.release(token)

    def close(self) -> None:
        with self._lock:
            self._spans.clear()

    def __repr__(self) -> str:
        return f"<RemoteFile {self.name}>"


