"""``SHA256SUMS`` beside the blocks (``sha256sum`` format) and hashing block files."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path

from .files import open_regular, write_bytes_atomic
from .layout import CHECKSUM_FILENAME

__all__ = ["sha256_file", "read_checksums", "write_checksums"]


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes; anything but a regular file raises :class:`NotRegularFileError`."""
    h = hashlib.sha256()
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    with os.fdopen(open_regular(path), "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def read_checksums(root: Path) -> dict[str, str] | None:
    r"""``{file name: hex digest}`` from ``SHA256SUMS`` (``sha256sum`` format, text ``"<hex>  <name>"``
    or binary ``"<hex> *<name>"`` lines), or None if absent. Lines of another form are skipped.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (root / "SHA256SUMS").write_text("a" * 64 + "  0000.h5\n" + "B" * 64 + " *0001.h5\n")
    >>> {name: digest[:4] for name, digest in read_checksums(root).items()}
    {'0000.h5': 'aaaa', '0001.h5': 'bbbb'}
    """
    path = Path(root) / CHECKSUM_FILENAME
    if not path.is_file():
        return None
    with os.fdopen(open_regular(path), "rb") as f:
        text = f.read(_MAX_SUMS_BYTES).decode(errors="replace")
    sums: dict[str, str] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if m is not None:
            sums[m["name"]] = m["digest"].lower()
    return sums


_LINE = re.compile(r"^(?P<digest>[0-9A-Fa-f]{64}) [ *](?P<name>.+)$")
_MAX_SUMS_BYTES = 64 << 20  # a line per block: far more than any dataset has


def write_checksums(root: Path, sums: Mapping[str, str], *, fsync: bool = True) -> None:
    """Replace ``SHA256SUMS`` atomically; ``sha256sum -c SHA256SUMS`` checks it."""
    text = "".join(f"{sums[name]}  {name}\n" for name in sorted(sums))
    write_bytes_atomic(Path(root) / CHECKSUM_FILENAME, text.encode(), fsync=fsync)
