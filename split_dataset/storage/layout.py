"""Names in a dataset folder: block files, the metadata file, the checksum file (``docs/format.md`` §2, §7, §9)."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterable
from pathlib import Path

__all__ = ["METADATA_FILENAME", "CHECKSUM_FILENAME", "STATUS_FILENAME",
           "TMP_SUFFIX", "block_name", "scan_block_files", "temporary_name",
           "is_temporary_name"]

METADATA_FILENAME = "stack_metadata.json"
_BLOCK_RE = re.compile(r"^(?P<prefix>.*?)(?P<index>\d{4,})\.h5$")
TMP_SUFFIX = ".tmp"  # temporary files: .<name>.<uuid>.tmp, which no reader lists
CHECKSUM_FILENAME = "SHA256SUMS"
#: The acquisition writer's live figures (queue, rate, latency), for ``split-dataset watch``; removed on close.
STATUS_FILENAME = ".split_dataset.writer.status.json"


def block_name(index: int, prefix: str = "") -> str:
    """File name of block `index`: ``0000.h5``, ``0001.h5``, ... (``prefix`` in front).

    Examples
    --------
    >>> block_name(5), block_name(12345, "stack_")
    ('0005.h5', 'stack_12345.h5')
    """
    return f"{prefix}{index:04d}.h5"


def scan_block_files(root: Path) -> dict[str, dict[int, str]]:
    """Block files in `root`, grouped by name prefix: ``{prefix: {index: name}}``.

    Only names that :func:`block_name` would produce count; everything else
    (``0001 copy.h5``, notes, temporary files) is ignored.
    """
    with os.scandir(root) as it:
        return group_block_names(entry.name for entry in it)


def group_block_names(names: Iterable[str]) -> dict[str, dict[int, str]]:
    """The block file names among `names`, grouped by prefix (see :func:`scan_block_files`).

    Examples
    --------
    >>> group_block_names(["0000.h5", "0001.h5", "notes.txt", "stack_0000.h5", "0001 copy.h5"])
    {'': {0: '0000.h5', 1: '0001.h5'}, 'stack_': {0: 'stack_0000.h5'}}
    """
    found: dict[str, dict[int, str]] = {}
    for name in names:
        m = _BLOCK_RE.match(name)
        if m is None:
            continue
        index = int(m["index"])
        if block_name(index, m["prefix"]) != name:
            continue
        found.setdefault(m["prefix"], {})[index] = name
    return found


#: Names of this package's temporary files: ``.<final name>.<12 hex>.tmp`` (docs/format.md §9).
_TMP_NAME = re.compile(r"^\..+\.[0-9a-f]{12}" + re.escape(TMP_SUFFIX) + r"$")


def temporary_name(path: Path) -> Path:
    """A new temporary name beside `path`, which no reader lists: ``.<name>.<12 hex>.tmp``.

    Examples
    --------
    >>> is_temporary_name(temporary_name(Path("ds/0003.h5")).name)
    True
    """
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}{TMP_SUFFIX}")


def is_temporary_name(name: str) -> bool:
    """Whether `name` is one of this package's temporary file names (which readers ignore).

    Examples
    --------
    >>> is_temporary_name(".0003.h5.9c1e0b7a4d22.tmp"), is_temporary_name("notes.tmp")
    (True, False)
    """
    return _TMP_NAME.match(name) is not None
