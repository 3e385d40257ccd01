"""Names in a dataset folder: block files, the metadata file, the checksum file (``docs/format.md`` §2, §7, §9)."""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["METADATA_FILENAME", "CHECKSUM_FILENAME", "TMP_SUFFIX", "block_name", "scan_block_files"]

METADATA_FILENAME = "stack_metadata.json"
_BLOCK_RE = re.compile(r"^(?P<prefix>.*?)(?P<index>\d{4,})\.h5$")
TMP_SUFFIX = ".tmp"  # temporary files: .<name>.<uuid>.tmp, which no reader lists
CHECKSUM_FILENAME = "SHA256SUMS"


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
    found: dict[str, dict[int, str]] = {}
    with os.scandir(root) as it:
        for entry in it:
            m = _BLOCK_RE.match(entry.name)
            if m is None:
                continue
            index = int(m["index"])
            if block_name(index, m["prefix"]) != entry.name:
                continue
            found.setdefault(m["prefix"], {})[index] = entry.name
    return found
