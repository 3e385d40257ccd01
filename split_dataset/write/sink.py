"""``BlockSink``: writes the block files of one dataset, each atomically, then its metadata.

The one place blocks, ``SHA256SUMS`` (whole) and ``stack_metadata.json`` are written by
every writer, in the order of docs/format.md §10.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BlockMismatchError
from ..grid import BlockGrid
from ..metadata import Metadata
from ..storage import (
    METADATA_FILENAME,
    Codec,
    block_name,
    fsync_dir,
    fsync_file,
    pool,
    sha256_file,
    write_block_atomic,
    write_checksums,
    write_json_atomic,
)
from .options import WriteOptions

__all__ = ["BlockSink"]


class BlockSink:
    """Writes the block files of one dataset, each atomically, then its metadata.

    Each block is validated against the grid (shape and dtype, no casting), encoded in
    memory and renamed into place, so a reader never sees a partial block.

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> opts = WriteOptions(fsync=False)
    >>> meta = opts.metadata((4, 3), "uint8", (2,))
    >>> sink = BlockSink.for_options(pathlib.Path(tempfile.mkdtemp()), meta, opts)
    >>> sink.write(1, np.ones((2, 3), "uint8")).name
    '0001.h5'
    >>> sorted(sink.sums)
    ['0001.h5']
    """

    def __init__(
        self,
        root: Path,
        meta: Metadata,
        codec: Codec,
        *,
        prefix: str = "",
        fsync: bool = True,
        checksums: bool = True,
        defer_fsync: bool = False,
    ) -> None:
        self.root = Path(root)
        self.meta = meta
        self.codec = codec
        self.prefix = prefix
        self.fsync = fsync
        self.checksums = checksums
        # defer_fsync: blocks are flushed in the background, all before anything describes them
        # (checksums, metadata); for writers whose metadata comes only at the end, like save()
        self.defer_fsync = defer_fsync
        self._syncing: list[Future[None]] = []
        self._sync_pool: ThreadPoolExecutor | None = None
        self._sums: dict[str, str | Future[str]] = {}  # name -> hex digest, or a Future of one
        self.grid = BlockGrid(meta.shape, meta.shape_block, meta.padding)

    @classmethod
    def for_options(cls, root: Path, meta: Metadata, options: WriteOptions, *, checksums: bool | None = None,
                    defer_fsync: bool = False) -> BlockSink:
        """A sink writing with `options` (codec, fsync, checksums unless `checksums` says otherwise)."""
        return cls(root, meta, options.codec, fsync=options.fsync,
                   checksums=options.checksums if checksums is None else checksums, defer_fsync=defer_fsync)

    def expected_shape(self, index: int) -> tuple[int, ...]:
        """Shape block `index` must have."""
        return self.grid.block_shape(self.grid.coords(index))

    def write(self, index: int, data: Any) -> Path:
        """Validate and write block `index`; returns its path."""
        coords = self.grid.coords(index)
        arr = np.asarray(data)
        expected = self.grid.block_shape(coords)
        if arr.shape != expected or arr.dtype != self.meta.dtype:
            raise BlockMismatchError(
                f"block {index} {coords}: expected {expected} {self.meta.dtype}, got {arr.shape} {arr.dtype}"
            )
        return self.write_unchecked(index, arr)

    def write_unchecked(self, index: int, arr: np.ndarray[Any, Any]) -> Path:
        """Write block `index` without validating it against the grid; record its checksum."""
        path = self.root / block_name(index, self.prefix)
        deferred = self.fsync and self.defer_fsync
        write_block_atomic(path, arr, self.meta.data_key or f"stack_{arr.ndim}D", self.codec, self.meta.chunks,
                           fsync=self.fsync and not deferred)
        if deferred:
            if self._sync_pool is None:
                self._sync_pool = ThreadPoolExecutor(1, thread_name_prefix="split_dataset-fsync")
            self._syncing.append(self._sync_pool.submit(fsync_file, path))
        if self.checksums:  # hashed on the pool while the next block is compressed
            self._sums[path.name] = pool().submit(sha256_file, path)
        return path

    @property
    def sums(self) -> dict[str, str]:
        """``{file name: SHA-256}`` of the blocks written (waits for pending hashes)."""
        return {name: self.digest(name) for name in list(self._sums)}

    def digest(self, name: str) -> str:
        """SHA-256 of block file `name` as written (waits if it is still being hashed)."""
        value = self._sums[name]
        return value if isinstance(value, str) else value.result()

    def add_sums(self, sums: Mapping[str, str]) -> None:
        """Record checksums computed elsewhere (by other processes, or found on disk)."""
        self._sums.update(sums)

    def sync(self) -> None:
        """Wait until every block written so far is on the disk (with ``defer_fsync``)."""
        if self._syncing:
            for future in self._syncing:
                future.result()
            self._syncing = []
            fsync_dir(self.root)
        if self._sync_pool is not None:
            self._sync_pool.shutdown()
            self._sync_pool = None

    def write_checksums(self) -> None:
        """Replace ``SHA256SUMS`` with the checksums of the blocks written so far."""
        if self.checksums:
            self.sync()
            write_checksums(self.root, self.sums, fsync=self.fsync)

    def write_metadata(self, meta: Metadata | None = None) -> None:
        """Replace ``stack_metadata.json`` atomically, once the blocks it describes are on the disk."""
        self.sync()
        write_json_atomic(self.root / METADATA_FILENAME, (meta or self.meta).to_dict(), fsync=self.fsync)
