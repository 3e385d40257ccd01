"""Files in a dataset folder: reading JSON and regular files safely, writing atomically (``docs/format.md`` §9)."""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MetadataError, NotRegularFileError
from .layout import temporary_name

__all__ = ["read_json", "parse_json", "MAX_JSON_BYTES",
           "write_json_atomic", "write_bytes_atomic", "atomic_path", "fsync_file", "fsync_dir",
           "regular_stat", "open_regular"]


def read_json(path: Path) -> dict[str, Any]:
    """Parse a metadata JSON file; malformed content raises :class:`MetadataError`.

    At most 16 MiB are read; anything but a regular file, nesting deeper than Python's
    parser goes, and integers longer than Python converts are malformed too.
    """
    try:
        fd = open_regular(path)
    except NotRegularFileError as e:
        raise MetadataError(str(e)) from None
    except OSError as e:
        raise MetadataError(f"{str(path)!r} cannot be read: {e.strerror or e}") from e
    with os.fdopen(fd, "rb") as f:
        raw = f.read(min(os.fstat(f.fileno()).st_size + 1, MAX_JSON_BYTES))
    return parse_json(raw, str(path))


#: Most bytes of a metadata file read.
MAX_JSON_BYTES = 1 << 24


def parse_json(raw: bytes, where: str) -> dict[str, Any]:
    """Parse metadata JSON bytes read from `where` (a path or URL, for messages); see :func:`read_json`.

    Examples
    --------
    >>> parse_json(b'{"shape": [2]}', "x.json")
    {'shape': [2]}
    """
    try:
        doc = json.loads(raw)
    except RecursionError:
        raise MetadataError(f"{where!r} nests JSON values too deeply to be metadata") from None
    except ValueError as e:  # invalid JSON or UTF-8, integers past Python's digit limit
        raise MetadataError(f"{where!r} is not valid JSON: {_short(str(e))}") from None
    if not isinstance(doc, dict):
        raise MetadataError(f"{where!r} must hold a JSON object, found {type(doc).__name__}")
    return doc


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def fsync_file(path: Path) -> None:
    """Flush a file's data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (renames) to the disk, where the platform allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # not supported (Windows)
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: Path, *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary name beside `path`; when the block exits, that file becomes `path`.

    The temporary file (``.<name>.<uuid>.tmp``, which no reader lists) is flushed to the
    disk and renamed over `path`, so readers see the old file or the whole new one. On any
    error it is removed and `path` is untouched.
    """
    path = Path(path)
    tmp = temporary_name(path)
    try:
        yield tmp
        if fsync:
            fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    if fsync:
        fsync_dir(path.parent)


def write_bytes_atomic(path: Path, data: bytes | memoryview, *, fsync: bool = True) -> None:
    """Write `data` to `path` atomically (see :func:`atomic_path`)."""
    with atomic_path(path, fsync=fsync) as tmp, open(tmp, "xb") as f:
        f.write(data)


def write_json_atomic(path: Path, doc: Mapping[str, Any], *, fsync: bool = True) -> None:
    """Write a JSON document atomically (see :func:`write_bytes_atomic`)."""
    data = json.dumps(doc, indent=1, default=_json_default).encode()
    write_bytes_atomic(path, data, fsync=fsync)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, Mapping):  # ds.attrs
        return dict(o)
    raise TypeError(f"attrs must be JSON-serialisable; {o!r} of type {type(o).__name__} is not")


def regular_stat(path: Path) -> os.stat_result:
    """``os.stat(path)`` (following links) if it is a regular file, else :class:`NotRegularFileError`."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise NotRegularFileError(f"{str(path)!r} is {_file_kind(st.st_mode)}, not a regular file; refused")
    return st


def open_regular(path: Path) -> int:
    """A read-only descriptor of `path`, which must be a regular file (checked on the open file,
    which a FIFO's open cannot block: ``O_NONBLOCK``)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFileError(f"{str(path)!r} is {_file_kind(mode)}, not a regular file; refused")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"
