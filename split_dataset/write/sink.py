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

from ..errors import BlockMismatchError, ChunkIndexError
from ..grid import BlockGrid
from ..metadata import Metadata
from ..storage import (
    CHUNK_INDEX_FILENAME,
    METADATA_FILENAME,
    BlockRecord,
    Codec,
    block_name,
    fsync_dir,
    fsync_file,
    pool,
    read_index,
    sha256_file,
    write_checksums,
    write_index,
    write_json_atomic,
)
from ..storage.hdf5 import StagedBlock, commit_block, stage_block
from ..storage.indexbuild import current_record
from .display import RangeSampler
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
        chunk_index: bool = True,
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
        self.chunk_index = chunk_index
        self._records: dict[int, BlockRecord | None] = {}  # block -> its chunk-index record
        self.display = RangeSampler()  # pixels sampled for the metadata's display_range
        self.grid = BlockGrid(meta.shape, meta.shape_block, meta.padding)

    @classmethod
    def for_options(cls, root: Path, meta: Metadata, options: WriteOptions, *, checksums: bool | None = None,
                    defer_fsync: bool = False) -> BlockSink:
        """A sink writing with `options` (codec, fsync, checksums unless `checksums` says otherwise)."""
        return cls(root, meta, options.codec, fsync=options.fsync,
                   checksums=options.checksums if checksums is None else checksums, defer_fsync=defer_fsync,
                   chunk_index=options.chunk_index)

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
        return self.commit(index, self.stage(index, arr))

    def stage(self, index: int, arr: np.ndarray[Any, Any], frame_meta: np.ndarray[Any, Any] | None = None
              ) -> StagedBlock:
        """The first half of :meth:`write_unchecked`: block `index` written whole under a
        temporary name, invisible to readers until :meth:`commit` (or :func:`discard_block`);
        `frame_meta` (one record per frame) is stored in the same file."""
        path = self.root / block_name(index, self.prefix)
        self.display.add(arr)
        return stage_block(path, arr, self.meta.data_key or f"stack_{arr.ndim}D", self.codec, self.meta.chunks,
                           frame_meta)

    def commit(self, index: int, staged: StagedBlock) -> Path:
        """The second half of :meth:`write_unchecked`: flush (unless deferred), rename into place,
        record the block's checksum and chunk-index record."""
        path = staged.path
        deferred = self.fsync and self.defer_fsync
        record = commit_block(staged, fsync=self.fsync and not deferred, block=index)
        if deferred:
            if self._sync_pool is None:
                self._sync_pool = ThreadPoolExecutor(1, thread_name_prefix="split_dataset-fsync")
            self._syncing.append(self._sync_pool.submit(fsync_file, path))
        if self.checksums:  # hashed on the pool while the next block is compressed
            self._sums[path.name] = pool().submit(sha256_file, path)
        self._records[index] = record  # its chunk-index record, from the chunks as written
        return path

    @property
    def sums(self) -> dict[str, str]:
        """``{file name: SHA-256}`` of the blocks written (waits for pending hashes)."""
        return {name: self.digest(name) for name in list(self._sums)}

    def digest(self, name: str) -> str:
        """SHA-256 of block file `name` as written (waits if it is still being hashed)."""
        value = self._sums[name]
        return value if isinstance(value, str) else value.result()

    def records_of(self, blocks: Any) -> dict[int, BlockRecord | None]:
        """The chunk-index records of `blocks` written by this sink (to send to another process)."""
        return {i: self._records[i] for i in blocks if i in self._records}

    def add_records(self, records: Mapping[int, BlockRecord | None]) -> None:
        """Record chunk-index records of blocks written elsewhere (by other processes)."""
        self._records.update(records)

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

    def write_chunk_index(self, n_blocks: int | None = None) -> None:
        """Replace ``chunk_index.bin`` with one describing every block of the grid (or the first
        `n_blocks`, for a growing dataset) on disk now.

        Blocks this sink wrote are indexed as they were written; the others (written by
        other processes, or before a resume) keep their record from the index already
        there when their file is still the one it describes, else are indexed from their
        file. A block that cannot be indexed is left out (it reads through HDF5).
        """
        if not self.chunk_index:
            return
        self.sync()
        try:
            old = read_index(self.root, self.prefix)
        except ChunkIndexError:
            old = None
        n = self.grid.n_blocks if n_blocks is None else n_blocks

        def record_of(index: int) -> BlockRecord | None:
            if index in self._records:
                return self._records[index]
            path = self.root / block_name(index, self.prefix)
            coords = self.grid.coords(index) if index < self.grid.n_blocks else (index,) + (0,) * (self.grid.ndim - 1)
            try:
                return current_record(path, index, coords, self.meta.data_key, old)[0]
            except (OSError, ValueError, RuntimeError):  # missing or unreadable: left out, HDF5 says why
                return None

        records = [r for r in pool().map(record_of, range(n)) if r is not None]
        if records:
            write_index(self.root, records, self.prefix, fsync=self.fsync)
        else:  # nothing this package reads directly (gzip, uncompressed): no index, and no stale one
            (self.root / CHUNK_INDEX_FILENAME).unlink(missing_ok=True)

    def write_metadata(self, meta: Metadata | None = None) -> None:
        """Replace ``stack_metadata.json`` atomically, once the blocks it describes are on the disk."""
        self.sync()
        meta = meta or self.meta
        if meta.display_range is None:
            meta = meta.replace(display_range=self.display.range())
        write_json_atomic(self.root / METADATA_FILENAME, meta.to_dict(), fsync=self.fsync)
