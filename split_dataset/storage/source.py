"""The seam for bytes: where the chunk reader gets compressed chunks from.

A :class:`ByteSource` answers one question, "the bytes at offset o, length n, of this
block file", one range or a batch of them. The chunk reader (``reader.py``) asks
nothing else of a file, so an object store, an HTTP server or a precomputed chunk
index can stand in for the local file without touching the read logic.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from ..errors import BloscError
from .files import open_regular

__all__ = ["ByteSource", "LocalFile"]


class ByteSource(Protocol):
    """Bytes of one block file, by offset (see the module docstring)."""

    name: str  #: what error messages call it (a path, a URL)

    def size(self) -> int:
        """The file's length in bytes."""

    def pread(self, view: memoryview, offset: int) -> int:
        """Read up to ``len(view)`` bytes at `offset` into `view`; the count read (fewer at the end)."""

    def read_exactly(self, view: memoryview, offset: int) -> None:
        """Read ``len(view)`` bytes at `offset` into `view`, or raise :class:`BloscError` (cut short)."""

    def read_many(self, requests: Sequence[tuple[memoryview, int]]) -> None:
        """:meth:`read_exactly` for each ``(view, offset)``, as few round trips as the source allows."""

    def close(self) -> None:
        """Release what the source holds (idempotent)."""


class LocalFile:
    """A local block file read with ``os.pread`` (no shared file position: thread-safe).

    Examples
    --------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "f")
    >>> _ = open(path, "wb").write(b"0123456789")
    >>> src = LocalFile(path)
    >>> buf = bytearray(4); src.read_exactly(memoryview(buf), 3); bytes(buf)
    b'3456'
    >>> src.close()
    """

    __slots__ = ("fd", "name")

    def __init__(self, path: str | os.PathLike[str], fd: int | None = None) -> None:
        self.name = str(path)
        self.fd: int | None = open_regular(Path(path)) if fd is None else fd

    def size(self) -> int:
        assert self.fd is not None
        return os.fstat(self.fd).st_size

    if hasattr(os, "preadv"):

        def pread(self, view: memoryview, offset: int) -> int:
            return os.preadv(self.fd, (view,), offset)  # type: ignore[arg-type]

    else:  # pragma: no cover  (macOS before 11)

        def pread(self, view: memoryview, offset: int) -> int:
            data = os.pread(self.fd, len(view), offset)  # type: ignore[arg-type]
            view[: len(data)] = data
            return len(data)

    def read_exactly(self, view: memoryview, offset: int) -> None:
        if self.pread(view, offset) != len(view):
            raise BloscError(f"the chunk bytes {offset}..{offset + len(view)} lie past the end of the file "
                             "(a truncated file?)")

    def read_many(self, requests: Sequence[tuple[memoryview, int]]) -> None:
        for view, offset in requests:
            self.read_exactly(view, offset)

    def close(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)

    def __del__(self) -> None:
        try:
            self.close()
        except OSError:
            pass
