"""Building ``chunk_index.bin`` for a dataset that exists (docs/format.md §8a).

Every writer of this package writes the index when it finishes; datasets written by the
old package, by acquisition programs or by a writer that was killed have none until
:func:`build_chunk_index` (``split-dataset index``) builds it. Reading never writes it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .dataset import SplitDataset
from .errors import ChunkIndexError
from .locks import refuse_if_written
from .storage import BlockRecord, block_name, pool, read_index, write_index
from .storage.indexbuild import current_record
from .storage.indexfile import CHUNK_INDEX_FILENAME

__all__ = ["build_chunk_index", "IndexSummary"]


@dataclass
class IndexSummary:
    """What :func:`build_chunk_index` did."""

    path: Path  #: the index file
    n_blocks: int  #: block files on disk in the dataset's grid
    indexed: int  #: blocks in the index
    reused: int  #: of those, records kept from the index already there (files unchanged)
    n_chunks: int  #: chunks in the index
    bytes: int  #: size of the index file
    seconds: float
    skipped: dict[str, str] = field(default_factory=dict)  #: block file -> why it is not indexed

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "n_blocks": self.n_blocks, "indexed": self.indexed, "reused": self.reused,
                "n_chunks": self.n_chunks, "bytes": self.bytes, "seconds": self.seconds, "skipped": self.skipped}


def build_chunk_index(path: str | os.PathLike[str], prefix: str | None = None, *, rebuild: bool = False,
                      fsync: bool = True) -> IndexSummary:
    """Write (or bring up to date) the ``chunk_index.bin`` of an existing split dataset.

    Each block file is opened through HDF5 once; its chunk index is validated, and every
    stored chunk's blosc frame is read, validated (header and block offsets) and its
    XXH3-64 checksum recorded. Blocks whose chunks this package does not read itself
    (gzip, uncompressed, other filters) are left out and keep reading through HDF5. The
    file is replaced atomically. A folder a live writer holds is refused
    (:class:`~split_dataset.errors.WriterLockedError`): its writer writes the index when
    it closes.

    Parameters
    ----------
    path
        The dataset folder.
    prefix
        Block-name prefix, as for :class:`~split_dataset.SplitDataset`.
    rebuild
        Index every block again. By default a record already in a valid index is kept
        when its file is unchanged (same size, modification time and inode), and only
        new or changed blocks are read.
    fsync
        Flush the index file to the disk before renaming it into place.

    Returns
    -------
    IndexSummary

    Examples
    --------
    >>> import numpy as np, split_dataset, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "ds")
    >>> _ = split_dataset.save(np.zeros((6, 4, 4), "uint16"), path, (2,), fsync=False)
    >>> os.remove(os.path.join(path, "chunk_index.bin"))
    >>> s = split_dataset.build_chunk_index(path, fsync=False)
    >>> s.indexed, s.n_chunks, s.path.name
    (3, 6, 'chunk_index.bin')
    """
    start = time.perf_counter()
    ds = SplitDataset(path, prefix, chunk_index=False)
    try:
        root, grid, present, pfx, key = ds._root, ds._grid, ds._present, ds._prefix, ds._key
    finally:
        ds.close()
    refuse_if_written(root, "index it")
    old = None
    if not rebuild:
        try:
            old = read_index(root, pfx)
        except ChunkIndexError:
            old = None
    blocks = sorted(i for i in present if i < grid.n_blocks)
    skipped: dict[str, str] = {}
    reused = 0

    def one(index: int) -> tuple[int, BlockRecord | None, str, bool]:
        try:
            record, kept = current_record(root / block_name(index, pfx), index, grid.coords(index), key, old)
        except (OSError, ValueError, RuntimeError) as e:  # damaged: left out; reads and verify say why
            return index, None, f"not indexed: {e}", False
        why = "" if record is not None else "its chunks are not blosc alone: read through HDF5"
        return index, record, why, kept

    records = []
    for index, record, why, kept in pool().map(one, blocks):
        if record is not None:
            records.append(record)
            reused += kept
        else:
            skipped[block_name(index, pfx)] = why
    target = root / CHUNK_INDEX_FILENAME
    if not records:
        target.unlink(missing_ok=True)
        return IndexSummary(target, len(blocks), 0, 0, 0, 0, time.perf_counter() - start, skipped)
    write_index(root, records, pfx, fsync=fsync)
    written = read_index(root, pfx)  # read back: what readers will see, validated
    assert written is not None
    for r in records:
        if r.block not in written:
            skipped[block_name(r.block, pfx)] = "its array (dtype, name, fill value) differs from the other blocks'"
    return IndexSummary(target, len(blocks), written.n_blocks, min(reused, written.n_blocks), len(written.entries),
                        target.stat().st_size, time.perf_counter() - start, skipped)
