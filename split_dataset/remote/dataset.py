""":class:`RemoteSplitDataset`: a split dataset read by URL, with the API of a local one.

Opening fetches ``stack_metadata.json`` and ``chunk_index.bin`` by name (and lists the
folder where the store can, to know which blocks exist; a plain HTTP server cannot, so
every block the metadata describes is taken to exist until a read finds it missing).
A block's chunk locations come from the chunk index; without one, from the block's HDF5
file, read through a 1 MiB block cache, once per block while the block stays in the
dataset's handle cache. A selection then fetches exactly the chunks it needs, neighbours
coalesced into one range request, the requests of different block files in flight
together. Every whole chunk read is checked against the index's checksum, every blosc
frame validated, as for local files.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from types import MappingProxyType
from typing import Any

import h5py
import hdf5plugin  # noqa: F401  (the blosc filter, for blocks HDF5 decodes)
import numpy as np

from ..dataset import SplitDataset
from ..errors import (
    ChunkIndexError,
    ChunkIndexWarning,
    CorruptBlockError,
    MetadataError,
    MissingBlockError,
    NotASplitDatasetError,
    RemoteError,
)
from ..grid import BlockGrid
from ..indexing import Indexer
from ..metadata import Metadata
from ..opening import choose_prefix, usable_index
from ..storage import METADATA_FILENAME, BlockHandle, HandleCache, IndexFile, block_name
from ..storage import blosc as _blosc
from ..storage.files import MAX_JSON_BYTES, parse_json
from ..storage.handles import block_handle
from ..storage.hdf5 import frame_meta_of
from ..storage.indexbuild import indexed_handle
from ..storage.indexfile import CHUNK_INDEX_FILENAME, read_index_bytes
from ..storage.layout import group_block_names
from ..storage.legacymeta import parse_legacy_group
from .source import RemoteFile
from .store import RemotePath, Store

__all__ = ["RemoteSplitDataset", "IO_THREADS"]

#: Block files read at the same time by one selection.
IO_THREADS = 16
_POOL: tuple[int, ThreadPoolExecutor] | None = None
_POOL_LOCK = threading.Lock()


_GC_LOCK = threading.Lock()
_GC_STATE = {"depth": 0, "was_enabled": False}


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Automatic garbage collection paused while HDF5 reads through an fsspec file object.

    HDF5 holds h5py's global lock while it reads, and the read waits on fsspec's event-loop
    thread; a collection started there that frees an h5py object waits for that lock:
    both threads stop for good (h5py issue 2019; seen in benchmarks/remote.py). Only the
    short HDF5 steps (open, chunk index walk, small arrays) run under this.
    """
    with _GC_LOCK:
        if _GC_STATE["depth"] == 0:
            _GC_STATE["was_enabled"] = gc.isenabled()
            gc.disable()
        _GC_STATE["depth"] += 1
    try:
        yield
    finally:
        with _GC_LOCK:
            _GC_STATE["depth"] -= 1
            if _GC_STATE["depth"] == 0 and _GC_STATE["was_enabled"]:
                gc.enable()


def _paused(fn: Callable[[], Any]) -> Callable[[], Any]:
    def call() -> Any:
        with _gc_paused():
            return fn()

    return call


def _io_pool() -> ThreadPoolExecutor:
    """The process's pool of I/O threads (made again after a fork)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL[0] != os.getpid():
            _POOL = (os.getpid(), ThreadPoolExecutor(IO_THREADS, thread_name_prefix="split_dataset-io"))
        return _POOL[1]


def _unwrapped(e: CorruptBlockError) -> Exception:
    """What the store said, where a read wrapped it as a damaged block: an unreachable block is a
    :class:`RemoteError`, one the store does not have a :class:`MissingBlockError`; else `e`."""
    cause = e.__cause__
    if isinstance(cause, RemoteError):
        return RemoteError(str(e.path), f"block {e.block}: {cause}")
    if isinstance(cause, FileNotFoundError):
        return MissingBlockError(e.path, e.block)
    return e


class RemoteSplitDataset(SplitDataset):
    """A split dataset on object storage or an HTTP server, read-only (see the module docstring).

    Made by :func:`split_dataset.open` (or ``SplitDataset(url)``) for a URL; indexing,
    ``oindex``, ``to_dask`` and the metadata properties work as for a local dataset.
    ``attrs`` is read-only.

    Parameters
    ----------
    url
        The dataset folder's URL: ``s3://bucket/path/ds``, ``https://host/path/ds``, or any
        URL an installed fsspec filesystem handles.
    prefix, cache_size, fill_value, chunk_index
        As for :class:`~split_dataset.SplitDataset`.
    storage_options
        Passed to fsspec (credentials, ``endpoint_url`` in ``client_kwargs``, headers...).
    retries
        Further tries after a transient failure (timeouts, dropped connections, HTTP 5xx).
    timeout
        Seconds to wait for a connection or the next bytes of an answer.

    Examples
    --------
    >>> import numpy as np, split_dataset, fsspec
    >>> fs = fsspec.filesystem("memory")
    >>> local = split_dataset.save(np.arange(64, dtype="uint16").reshape(4, 4, 4), "/tmp/_sd_doc", (2, 4, 4),
    ...                            overwrite=True)
    >>> fs.put("/tmp/_sd_doc", "memory://doc/ds", recursive=True)
    >>> ds = split_dataset.open("memory://doc/ds")
    >>> type(ds).__name__, ds.shape, ds[3, 1].tolist()
    ('RemoteSplitDataset', (4, 4, 4), [52, 53, 54, 55])
    """

    def __init__(
        self,
        url: Any,
        prefix: str | None = None,
        *,
        cache_size: int = 128,
        fill_value: Any = None,
        chunk_index: bool = True,
        storage_options: dict[str, Any] | None = None,
        retries: int = 4,
        timeout: float = 30.0,
    ) -> None:
        self._store = Store(str(url), storage_options, retries=retries, timeout=timeout)
        self._root = RemotePath(self._store.url)  # type: ignore[assignment]
        self._prefix_arg = prefix
        self._fill_value = fill_value
        self._use_index = chunk_index
        self._handles = HandleCache(cache_size)
        self._load()

    @property
    def store(self) -> Store:
        """Where the dataset lives (its URL, storage options and fsspec filesystem)."""
        return self._store

    @property
    def url(self) -> str:
        """The dataset folder's URL."""
        return self._store.url

    # ------------------------------------------------------------------ opening

    def _find(self) -> tuple[str, Any, dict[str, Any], Metadata]:
        store = self._store
        names = store.listing()
        groups = group_block_names(names) if names is not None else None
        if groups is not None:
            prefix = choose_prefix(self._root, groups, self._prefix_arg)
        else:
            prefix = self._prefix_arg or ""
        try:
            raw = parse_json(store.cat(METADATA_FILENAME, MAX_JSON_BYTES), store.where(METADATA_FILENAME))
            where = store.where(METADATA_FILENAME)
        except FileNotFoundError:
            raw, where = self._legacy_metadata(groups, prefix)
        try:
            meta = Metadata.from_dict(raw)
        except MetadataError as e:
            raise MetadataError(f"{where!r}: {e}") from e
        if groups is not None:
            present: Any = groups.get(prefix, {})
        else:
            grid = BlockGrid(meta.shape, meta.shape_block, meta.padding)
            present = {i: block_name(i, prefix) for i in range(grid.n_blocks)}
            if meta.complete is False:  # an acquisition that stopped early: ask which blocks exist
                present = self._existing(present)
        return prefix, present, raw, meta

    def _legacy_metadata(self, groups: dict[str, dict[int, str]] | None, prefix: str) -> tuple[dict[str, Any], str]:
        """The metadata split_dataset < 0.3 kept inside the last block file (stores that list only)."""
        url = self._store.url
        if groups is None:
            raise NotASplitDatasetError(
                f"{url!r}: no {METADATA_FILENAME} there. Datasets without one (written by split_dataset < 0.3) "
                "are found by listing their folder, which a plain HTTP server cannot do; add the metadata "
                "(`split-dataset convert` writes it) or serve the dataset from an object store")
        present = groups.get(prefix, {})
        if not present:
            raise NotASplitDatasetError(
                f"{url!r} is not a split dataset: no {METADATA_FILENAME} and no block files named like '0000.h5'")
        name = present[max(present)]
        with self._h5(name) as (f, _):
            link = f.get("stack_metadata", getlink=True)
            if not isinstance(link, h5py.HardLink) or not isinstance(f["stack_metadata"], h5py.Group):
                raise MetadataError(f"{url!r} is not a split dataset: it has no {METADATA_FILENAME}, and its last "
                                    f"block {name!r} has no legacy 'stack_metadata' group either")
            return parse_legacy_group(f["stack_metadata"], self._store.where(name)), self._store.where(name)

    def _existing(self, present: dict[int, str]) -> dict[int, str]:
        def exists(item: tuple[int, str]) -> bool:
            try:
                self._store.size(item[1])
                return True
            except FileNotFoundError:
                return False

        found = list(_io_pool().map(exists, present.items()))
        return {i: n for (i, n), ok in zip(present.items(), found) if ok}

    def _load_index(self, prefix: str, meta: Metadata) -> IndexFile | None:
        store = self._store
        try:
            data = store.cat(CHUNK_INDEX_FILENAME)
        except FileNotFoundError:
            return None
        try:
            index = read_index_bytes(data, store.where(CHUNK_INDEX_FILENAME))
        except ChunkIndexError as e:
            warnings.warn(f"{e}; the chunk index is ignored", ChunkIndexWarning, stacklevel=4)
            return None
        return usable_index(index, prefix, meta.data_key, meta.dtype)

    # ------------------------------------------------------------------ blocks

    class _Opened:
        """``with self._h5(name) as (file, file object)``: a block's HDF5 file read through the store."""

        def __init__(self, ds: RemoteSplitDataset, name: str, coords: tuple[int, ...] = ()) -> None:
            self.ds, self.name, self.coords = ds, name, coords
            self.fobj: Any = None
            self.file: Any = None

        def __enter__(self) -> tuple[h5py.File, Any]:
            self.paused = _gc_paused()
            self.paused.__enter__()
            try:
                self.file, self.fobj = self.ds._open_h5(self.name, self.coords)
            except BaseException:
                self.paused.__exit__(None, None, None)
                raise
            return self.file, self.fobj

        def __exit__(self, *exc: Any) -> None:
            try:
                self.file.close()
            finally:
                self.fobj.close()
                self.paused.__exit__(None, None, None)

    def _h5(self, name: str, coords: tuple[int, ...] = ()) -> RemoteSplitDataset._Opened:
        return RemoteSplitDataset._Opened(self, name, coords)

    def _open_h5(self, name: str, coords: tuple[int, ...]) -> tuple[h5py.File, Any]:
        path = self._root / name
        try:
            fobj = self._store.open(name)
        except FileNotFoundError as e:
            raise MissingBlockError(path, coords) from e
        try:
            f = h5py.File(fobj, "r")
        except RemoteError:
            fobj.close()
            raise
        except (OSError, ValueError) as e:
            fobj.close()
            cause = e.__cause__ or e.__context__
            if isinstance(cause, RemoteError):
                raise cause from e
            raise CorruptBlockError(path, coords, f"not an HDF5 file ({' '.join(str(e).split())})") from e
        return f, fobj

    def _opener(self, index: int, grid: BlockGrid, prefix: str, key: str | None,
                cindex: IndexFile | None = None) -> Any:
        name = block_name(index, prefix)
        path = RemotePath(self._store.url) / name
        coords = grid.coords(index)
        record = cindex.record(index) if cindex is not None else None

        def opener() -> BlockHandle:
            if record is not None and _blosc.available():
                return indexed_handle(path, record, RemoteFile(self._store, name, record.size))
            return self._open_block(name, path, coords, key)

        return opener

    def _open_block(self, name: str, path: RemotePath, coords: tuple[int, ...], key: str | None) -> BlockHandle:
        """Block `name` opened through HDF5 over the store; a blosc block's chunks are then read by range."""
        with _gc_paused():
            handle = self._open_block_paused(name, path, coords, key)
        if handle.reader is not None:  # its chunk index is walked later, through HDF5 again
            handle.reader._loader = _paused(handle.reader._loader)
        return handle

    def _open_block_paused(self, name: str, path: RemotePath, coords: tuple[int, ...], key: str | None
                           ) -> BlockHandle:
        f, fobj = self._open_h5(name, coords)
        try:
            return block_handle(f, path, coords, key, RemoteFile(self._store, name, int(fobj.size)))
        except BaseException:
            f.close()
            fobj.close()
            raise

    def _read_frame_metas(self, blocks: list[tuple[int, int]]) -> dict[int, np.ndarray | None]:
        """The blocks' per-frame records, read through HDF5 over the store, several blocks at once.
        A block that cannot be read raises (:class:`RemoteError`...): never taken for one without records."""

        return dict(zip((i for i, _ in blocks), _io_pool().map(lambda b: self._read_frame_meta(*b), blocks)))

    def _read_frame_meta(self, index: int, frames: int) -> np.ndarray | None:
        with self._h5(block_name(index, self._prefix), self._grid.coords(index)) as (f, _):
            return frame_meta_of(f, frames)

    def _read_into(self, buf: np.ndarray, indexer: Indexer) -> None:
        """Blocks read concurrently: each block's requests are in flight with the others'."""
        view = self._view
        grid, present, prefix, _, _ = view
        reads = list(indexer.block_reads(grid))
        if len(reads) <= 1:
            super()._read_into(buf, indexer)
            return

        def one(item: tuple[tuple[int, ...], Any, Any]) -> None:
            coords, local, out = item
            index = grid.linear(coords)
            if index not in present:
                if self._fill_value is None:
                    raise MissingBlockError(self._path(index, prefix), coords)
                buf[out] = self._fill_value
                return
            self._read_block(index, view, local, buf, out)

        for future in [_io_pool().submit(one, item) for item in reads]:
            future.result()

    def _read_block(self, index: int, view: tuple[Any, ...], local: tuple[Any, ...], buf: np.ndarray,
                    out: tuple[slice, ...]) -> None:
        try:
            super()._read_block(index, view, local, buf, out)
        except CorruptBlockError as e:
            store_error = _unwrapped(e)
            if store_error is e:
                raise
            raise store_error from e

    def __getitem__(self, selection: Any) -> Any:
        try:
            return super().__getitem__(selection)
        except CorruptBlockError as e:  # the one-block fast path wraps what the store raised too
            store_error = _unwrapped(e)
            if store_error is e:
                raise
            raise store_error from e

    # ------------------------------------------------------------------ read-only, picklable

    @property
    def attrs(self) -> Any:
        """User metadata (read-only for a dataset read by URL)."""
        return MappingProxyType(dict(self._meta.attrs))

    def __dask_tokenize__(self) -> Any:
        digest = hashlib.sha256(repr(sorted(self._raw.items())).encode()).hexdigest()
        return ("split_dataset.RemoteSplitDataset", self._store.url, self._prefix, self.shape, str(self.dtype), digest)

    def __repr__(self) -> str:
        return (f"<RemoteSplitDataset {self._store.url!r} shape={self.shape} dtype={self.dtype} "
                f"blocks={self.shape_block} ({self.n_blocks} files)>")
