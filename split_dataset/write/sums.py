"""``SHA256SUMS`` as a growing writer keeps it: lines appended, reconciled on resume (docs/format.md §7, §10)."""

from __future__ import annotations

import errno
import os
import stat
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

from ..dataset import SplitDataset
from ..errors import UnsafeDatasetError
from ..storage import CHECKSUM_FILENAME, block_name, read_checksums, sha256_file, write_checksums

__all__ = ["append_line", "reconcile_checksums", "ChecksumLog"]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def append_line(root: Path, name: str, digest: str) -> None:
    """Add one line to ``SHA256SUMS`` (one ``write``, ``O_APPEND``), never through a symbolic link.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp()); _ = (root / "SHA256SUMS").write_text("")
    >>> append_line(root, "0000.h5", "a" * 64)
    >>> (root / "SHA256SUMS").read_text() == "a" * 64 + "  0000.h5\\n"
    True
    """
    path = Path(root) / CHECKSUM_FILENAME
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0)
                     | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        if e.errno == errno.ELOOP or os.path.islink(path):
            raise UnsafeDatasetError(
                f"{str(path)!r} is a symbolic link; this package never writes through one (remove it)"
            ) from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafeDatasetError(f"{str(path)!r} is not a regular file; refusing to append to it")
        os.write(fd, f"{digest}  {name}\n".encode())
    finally:
        os.close(fd)


def reconcile_checksums(ds: SplitDataset, frames_per_file: int, *, fsync: bool) -> dict[str, str]:
    """Make ``SHA256SUMS`` right for the blocks a resumed writer adopts; returns its lines.

    A kill can leave ``SHA256SUMS`` behind the blocks: a block's line is written after
    the block is renamed into place (while the next block compresses), so the one or
    two newest blocks may have no line, or the line of the shorter partial block that a
    longer one replaced. So:

    - a block without a line gets one once it was decoded in full through the reader;
    - the last two adopted blocks are hashed, and a line that disagrees is replaced if
      the block decodes in full (a partial block replaced after a kill), else kept (so
      ``verify`` reports the damage);
    - lines of earlier blocks are kept as they are (checking them would read the whole
      dataset; ``verify`` does that);
    - lines of this dataset's block names beyond the adopted blocks are dropped (they
      are written again with those blocks).

    A block that does not decode gets no line, and a ``RuntimeWarning``: nothing that can
    be found damaged by decoding is ever blessed with a checksum.

    Examples
    --------
    >>> import numpy as np, split_dataset, tempfile, os
    >>> ds = split_dataset.save(np.zeros((6, 2), "u1"), os.path.join(tempfile.mkdtemp(), "d"), (4,))
    >>> sorted(reconcile_checksums(ds, 4, fsync=False))
    ['0000.h5', '0001.h5']
    """
    root = Path(ds.root)
    path = root / CHECKSUM_FILENAME
    if os.path.islink(path):
        raise UnsafeDatasetError(
            f"{str(path)!r} is a symbolic link; this package never writes through one (replace it "
            "with the dataset's own SHA256SUMS, or remove it to have the checksums recomputed)"
        )
    old = read_checksums(root) if os.path.lexists(path) else None
    sums = dict(old or {})
    n_frames = ds.shape[0]
    n_blocks = -(-n_frames // frames_per_file)
    for name in list(sums):
        stem = name[: -len(".h5")] if name.endswith(".h5") else ""
        if stem.isdigit() and len(stem) >= 4 and int(stem) >= n_blocks:
            del sums[name]
    for index in range(n_blocks):
        name = block_name(index)
        recorded = sums.get(name)
        if recorded is not None and index < n_blocks - 2:
            continue
        file = root / name
        try:
            regular = stat.S_ISREG(os.lstat(file).st_mode)
            actual = sha256_file(file) if regular else None
        except OSError:
            actual = None
        if actual is not None and actual == recorded:
            continue
        if actual is not None and _decodes(ds, index, frames_per_file):
            sums[name] = actual
            continue
        warnings.warn(
            f"{str(file)!r}: block {index} {'is not a regular file' if actual is None else 'does not decode'}"
            f"{'' if recorded is None else ' and differs from its line in SHA256SUMS'}; it gets no new "
            "checksum (split-dataset verify reports it)",
            RuntimeWarning, stacklevel=4,
        )
    if sums != old:
        write_checksums(root, sums, fsync=fsync)  # atomic: replaces the file, never writes through it
    return sums


def _decodes(ds: SplitDataset, index: int, frames_per_file: int) -> bool:
    """Whether block `index` decodes in full through the reader (a frame at a time)."""
    lo, hi = index * frames_per_file, min((index + 1) * frames_per_file, ds.shape[0])
    try:
        for t in range(lo, hi):
            ds[t]
    except Exception:
        return False
    return True


class ChecksumLog:
    """The ``SHA256SUMS`` lines of a growing dataset: those on disk, and those still owed.

    A block's line is appended after the block is renamed into place; a writer hashes
    block k while block k+1 compresses, so the newest line may wait (docs/format.md §10).
    When a listed partial block was replaced, the whole file is rewritten instead.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp()); _ = (root / "SHA256SUMS").write_text("")
    >>> log = ChecksumLog(root, {"0000.h5": "a" * 64}.__getitem__)
    >>> log.owe("0000.h5"); log.record(everything=True)
    >>> (root / "SHA256SUMS").read_text().split()
    ['aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', '0000.h5']
    """

    def __init__(self, root: Path, digest: Callable[[str], str], on_disk: Iterable[str] = ()) -> None:
        self.root = Path(root)
        self._digest = digest
        self._on_disk: set[str] = set(on_disk)
        self._pending: list[str] = []

    def owe(self, name: str) -> None:
        """Block file `name` was (re)written: its line is owed."""
        if name not in self._pending:
            self._pending.append(name)

    def record(self, everything: bool) -> None:
        """Write the owed lines (all, or all but the newest)."""
        pending = self._pending
        names = pending if everything else pending[:-1]
        if not names:
            return
        if any(n in self._on_disk for n in names):  # a partial block was replaced: rewrite
            listed = self._on_disk | set(names)
            write_checksums(self.root, {n: self._digest(n) for n in listed}, fsync=False)
        else:
            for name in names:
                append_line(self.root, name, self._digest(name))
        self._on_disk.update(names)
        self._pending = [] if everything else pending[-1:]
