"""``SplitDataset``: a folder of HDF5 block files read as one numpy-like array."""

from __future__ import annotations

import operator
import os
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from .dataset_info import DatasetInfo
from .errors import (
    BlockMismatchError,
    CorruptBlockError,
    MetadataError,
    MissingBlockError,
    MissingBlocksWarning,
    SplitDatasetError,
    TruncatedDatasetWarning,
)
from .frames import expand_gaps, join_records
from .grid import BlockGrid
from .indexing import Indexer
from .metadata import Metadata
from .opening import choose_prefix, load_chunk_index, read_metadata, resolve_root
from .remote.store import is_url
from .storage import (
    METADATA_FILENAME,
    BlockHandle,
    HandleCache,
    IndexFile,
    block_name,
    open_block,
    open_indexed,
    scan_block_files,
)
from .storage.hdf5 import read_frame_meta

__all__ = ["SplitDataset", "open", "TruncatedDatasetWarning", "MissingBlocksWarning"]


_MISS = object()
#: HDF5 chunk cache per open block; blosc blocks are read around it (see storage.BlockHandle)
_CHUNK_CACHE = 1 << 20
_ALL = slice(None)
_NP_INTS = frozenset(np.sctypeDict[k] for k in ("int8", "int16", "int32", "int64",
                                                "uint8", "uint16", "uint32", "uint64"))


class SplitDataset(DatasetInfo):
    """A split dataset on disk, indexed like a numpy array.

    Opening reads ``stack_metadata.json`` (or the legacy metadata inside the last
    block), lists the block files, reads ``chunk_index.bin`` if there is one, and looks
    at one block; no pixel data. Indexing reads only the blocks the selection touches
    and, inside each, only the chunks (or blosc blocks) holding it, straight into the
    output array. With a chunk index, a block is read without opening its HDF5 file and
    every whole chunk read is checked against its recorded checksum.

    Parameters
    ----------
    path
        The dataset folder (or its ``stack_metadata.json``).
    prefix
        Name prefix of the block files (``"stack_"`` for ``stack_0000.h5``). By
        default the files are ``0000.h5``, ... or, if there are none, the one
        prefix found in the folder.
    cache_size
        How many block files stay open (a per-process LRU; each holds one or two
        descriptors).
    fill_value
        None (the default) makes reading a missing block raise
        :class:`~split_dataset.errors.MissingBlockError`; a number fills it instead,
        for viewing incomplete data.
    chunk_index
        Use the dataset's ``chunk_index.bin`` (True, the default) or ignore it and
        read every block's chunk index from its HDF5 file. A block whose file is not
        the one indexed is read through HDF5 either way.
    storage_options
        For a URL (``s3://``, ``https://``, any fsspec URL): passed to fsspec. A URL
        opens a :class:`~split_dataset.remote.dataset.RemoteSplitDataset` (read-only;
        needs the ``remote`` extra).

    Examples
    --------
    >>> import numpy as np, split_dataset, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "ds")
    >>> ds = split_dataset.save(np.arange(24, dtype="uint16").reshape(6, 4), path, (4, 4))
    >>> ds.shape, ds.n_blocks, ds[-1, ::2].tolist()
    ((6, 4), 2, [20, 22])
    """

    def __new__(cls, path: Any = None, *args: Any, **kwargs: Any) -> SplitDataset:
        if cls is SplitDataset and is_url(path):  # a URL: the same API over fsspec
            from .remote.dataset import RemoteSplitDataset

            return super().__new__(RemoteSplitDataset)
        return super().__new__(cls)

    def __init__(
        self,
        path: str | os.PathLike[str],
        prefix: str | None = None,
        *,
        cache_size: int = 128,
        fill_value: Any = None,
        chunk_index: bool = True,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        if storage_options:
            raise TypeError(f"storage_options apply to datasets opened by URL; {str(path)!r} is a local path")
        self._root = resolve_root(path)
        self._prefix_arg = prefix
        self._fill_value = fill_value
        self._use_index = chunk_index
        self._handles = HandleCache(cache_size)
        self._load()

    # ------------------------------------------------------------------ opening

    def _load(self) -> None:
        """Read the metadata and the block list; the new state is assigned at the end, all at
        once, so reads running in other threads (``refresh()``) see the old state or the new."""
        root = self._root
        prefix, present, raw, meta = self._find()
        claimed = BlockGrid(meta.shape, meta.shape_block, meta.padding)
        self._loading = (prefix, frozenset(present), meta.data_key, meta.dtype)
        self._loading_index = self._load_index(prefix, meta) if self._use_index else None
        try:
            shape = self._reconcile(claimed, meta)
            grid = claimed if shape == meta.shape else claimed.with_shape(shape)
            prefix, present_set, key, dtype = self._loading
            missing = [i for i in range(grid.n_blocks) if i not in present_set]
            if dtype is None:
                inside = [i for i in present_set if i < grid.n_blocks]
                if not inside:
                    raise MetadataError(
                        f"{str(root)!r}: the metadata records no dtype and there is no block to read it from"
                    )
                dtype = self._handle(max(inside), grid).dtype
            cindex = self._loading_index
        finally:  # a failed refresh() leaves the state it had
            del self._loading, self._loading_index
        self._raw = raw
        self._prefix = prefix
        self._present = present_set
        self._key = key
        self._dtype = dtype
        self._meta = meta if shape == meta.shape else meta.with_shape(shape)
        self._grid = grid
        self._view = (grid, present_set, prefix, key, cindex)
        if missing:
            names = ", ".join(block_name(i, prefix) for i in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            warnings.warn(
                f"{str(root)!r}: {len(missing)} block file(s) missing ({names}{more}); "
                "reading them raises MissingBlockError",
                MissingBlocksWarning,
                stacklevel=3,
            )

    def _find(self) -> tuple[str, Any, dict[str, Any], Metadata]:
        """(block-name prefix, the block files present by number, raw metadata, parsed metadata)."""
        groups = scan_block_files(self._root)
        prefix = choose_prefix(self._root, groups, self._prefix_arg)
        present = groups.get(prefix, {})
        _, raw, meta = read_metadata(self._root, present)
        return prefix, present, raw, meta

    def _load_index(self, prefix: str, meta: Metadata) -> IndexFile | None:
        """The dataset's chunk index, if it has a valid one for these blocks."""
        return load_chunk_index(self._root, prefix, meta.data_key, meta.dtype)

    def _reconcile(self, grid: BlockGrid, meta: Metadata) -> tuple[int, ...]:
        """The shape the files on disk support: the metadata's, or another number of frames on axis 0."""
        rest = meta.shape[1:]
        if meta.complete is False and grid.padding[0] == 0 and all(n == 1 for n in grid.grid_shape[1:]):
            # written by SplitDatasetWriter, which renames each block into place before it
            # updates the metadata: the consecutive blocks on disk are the truth
            present = self._loading[1]
            k = 0
            while k in present:
                k += 1
            frames = 0
            if k:
                live = grid.with_shape((k * grid.shape_block[0],) + rest)
                frames = grid.block_start(0, k - 1) + self._handle_for_check(k - 1, live)
            if frames >= meta.shape[0]:
                return (frames,) + rest
            return self._truncated(meta, frames)
        if grid.n_blocks == 0:
            return meta.shape
        layer = grid.n_blocks // grid.grid_shape[0]  # blocks per axis-0 layer
        n_layers = grid.grid_shape[0]
        present = self._loading[1]
        first_gap = next(
            (k for k in range(n_layers) if any(k * layer + j not in present for j in range(layer))),
            n_layers,
        )
        later = any(first_gap * layer + layer <= i < grid.n_blocks for i in present)
        if first_gap < n_layers and later:
            return meta.shape  # a hole in the middle: keep the shape, reading the hole raises
        # the last complete layer may itself be shorter than the metadata says
        frames = meta.shape[0] if first_gap == n_layers else first_gap * grid.shape_block[0]
        if first_gap > 0:
            held = self._handle_for_check((first_gap - 1) * layer + layer - 1, grid)
            frames = min(frames, grid.block_start(0, first_gap - 1) + held)
        return meta.shape if frames == meta.shape[0] else self._truncated(meta, frames)

    def _truncated(self, meta: Metadata, frames: int) -> tuple[int, ...]:
        warnings.warn(
            f"{str(self._root)!r}: the metadata describes {meta.shape[0]} frames along axis 0 but the "
            f"block files hold {frames}; opening the {frames} complete frames",
            TruncatedDatasetWarning,
            stacklevel=5,
        )
        return (frames,) + meta.shape[1:]

    def _handle_for_check(self, index: int, grid: BlockGrid) -> int:
        """Frames held along axis 0 by block `index` (opening it, which also caches it)."""
        handle = self._handle(index, grid)
        if self._loading[3] is None:
            self._loading = self._loading[:3] + (handle.dtype,)
        if len(handle.shape) != grid.ndim:
            raise BlockMismatchError(
                f"{str(handle.path)!r}: expected a {grid.ndim}-dimensional array, found shape {handle.shape}"
            )
        return int(handle.shape[0])

    # ------------------------------------------------------------------ block access

    def _opener(self, index: int, grid: BlockGrid, prefix: str, key: str | None,
                cindex: IndexFile | None = None) -> Any:
        path = self._path(index, prefix)
        record = cindex.record(index) if cindex is not None else None
        if record is None:
            return lambda: open_block(path, grid.coords(index), self._root, key, _CHUNK_CACHE)

        def indexed() -> BlockHandle:  # no HDF5 open, unless the file is not the one indexed
            try:
                handle = open_indexed(path, record)
            except OSError:
                handle = None  # missing, unreadable: open_block says what is wrong
            return handle or open_block(path, grid.coords(index), self._root, key, _CHUNK_CACHE)

        return indexed

    def block(self, index: int) -> BlockHandle:
        """Block file `index` (C order over the block grid), opened for the caller: its ``path``,
        array ``name``, ``shape``, ``dtype``, ``chunks``, read ``mode``, h5py dataset ``dset``
        and ``read(local, buf, out)``, validated like every read of this package. The caller
        owns it: close it (or use ``with``); the dataset's own open files are not touched.

        Raises :class:`~split_dataset.errors.MissingBlockError` for a block not on disk.

        Examples
        --------
        >>> with ds.block(0) as b:  # doctest: +SKIP
        ...     b.path.name, b.shape, b.mode
        ('0000.h5', (20, 10, 256, 256), 'direct')
        """
        index = operator.index(index)
        grid = self._grid
        if not 0 <= index < grid.n_blocks:
            raise IndexError(f"block {index} is out of range for {grid.n_blocks} blocks")
        if index not in self._present:
            raise MissingBlockError(self._path(index), grid.coords(index))
        handle: BlockHandle = self._opener(index, grid, self._prefix, self._key)()
        return handle

    def _handle(self, index: int, grid: BlockGrid | None = None) -> BlockHandle:
        """Block `index`'s handle, for its shape and dtype only (reads use :meth:`_read_block`)."""
        if hasattr(self, "_loading"):  # while _load() runs
            prefix, _, key, _ = self._loading
            cindex = self._loading_index
        else:
            prefix, key, cindex = self._prefix, self._key, self._view[4]
        return self._handles.get_or_open(index, self._opener(index, grid or self._grid, prefix, key, cindex))

    def _read_block(self, index: int, view: tuple[Any, ...], local: tuple[Any, ...], buf: np.ndarray,
                    out: tuple[slice, ...]) -> None:
        """``buf[out] = block[local]``, the block's file held open for the read."""
        grid, _, prefix, key, cindex = view
        cache = self._handles
        handle = cache.acquire(index, self._opener(index, grid, prefix, key, cindex))
        try:
            if not handle.checked:
                self._check_block(handle, grid.coords(index), index, grid)
            try:
                handle.read(local, buf, out)
            except (OSError, ValueError, RuntimeError) as e:
                raise CorruptBlockError(self._path(index, prefix), grid.coords(index), str(e)) from e
        finally:
            cache.release(handle)

    def _read_into(self, buf: np.ndarray, indexer: Indexer) -> None:
        view = self._view
        grid, present, prefix, _, _ = view
        for coords, local, out in indexer.block_reads(grid):
            index = grid.linear(coords)
            if index not in present:
                if self._fill_value is None:
                    raise MissingBlockError(self._path(index, prefix), coords)
                buf[out] = self._fill_value
                continue
            self._read_block(index, view, local, buf, out)

    def _check_block(self, handle: BlockHandle, coords: tuple[int, ...], index: int, grid: BlockGrid) -> None:
        expected = grid.block_shape(coords)
        shape = handle.shape
        ok = shape == expected and handle.dtype == self._dtype
        if not ok and self._meta.complete is False and coords[0] == grid.grid_shape[0] - 1:
            # a live writer may have grown the last block since this dataset was opened
            ok = shape[1:] == expected[1:] and shape[0] >= expected[0] and handle.dtype == self._dtype
        if not ok:
            raise BlockMismatchError(
                f"block {coords} ({handle.path.name}): expected {expected} "
                f"{self._dtype}, found {shape} {handle.dtype}"
            )
        handle.checked = True

    # ------------------------------------------------------------------ numpy protocol

    def __getitem__(self, selection: Any) -> Any:
        """Read ``selection`` (numpy semantics, see :mod:`split_dataset.indexing`)."""
        result = self._get_in_one_block(selection)
        if result is _MISS:
            result = self._get(Indexer.create(selection, self.shape))
        return result

    def _get_in_one_block(self, selection: Any) -> Any:
        """Fast path: integers and step-1 slices inside one block (a frame, a plane, a volume)."""
        sel = selection if type(selection) is tuple else (selection,)
        grid, present, prefix, key, cindex = self._view
        shape, block, nblocks = grid.shape, grid.shape_block, grid.grid_shape
        if len(sel) > len(shape):
            return _MISS
        local: list[Any] = []
        index = 0
        for axis in range(len(shape)):
            s = sel[axis] if axis < len(sel) else _ALL
            n, b = shape[axis], block[axis]
            t = type(s)
            if t is slice:
                if s.step is not None and s.step != 1:
                    return _MISS
                try:
                    start, stop, _ = s.indices(n)
                except (TypeError, ValueError):
                    return _MISS  # Indexer.create raises numpy's error, in numpy's order
                if stop <= start:
                    return _MISS
                k = min(start // b, nblocks[axis] - 1)
                if min((stop - 1) // b, nblocks[axis] - 1) != k:
                    return _MISS
                local.append(slice(start - k * b, stop - k * b, 1))
            elif t is int or t in _NP_INTS:
                i = operator.index(s)  # type: ignore[arg-type]  # type(s) is int or a NumPy integer
                if i < 0:
                    i += n
                if not 0 <= i < n:
                    return _MISS
                k = min(i // b, nblocks[axis] - 1)
                local.append(i - k * b)
            else:
                return _MISS
            index = index * nblocks[axis] + k
        if index not in present:
            return _MISS
        sl = tuple(x if type(x) is slice else slice(x, x + 1, 1) for x in local)
        cache = self._handles
        handle = cache.acquire(index, self._opener(index, grid, prefix, key, cindex))
        try:
            if not handle.checked:
                self._check_block(handle, grid.coords(index), index, grid)
            if handle.direct:
                buf = handle.get(sl)
            else:
                buf = np.empty(tuple(x.stop - x.start for x in sl), handle.dtype)
                handle.read(sl, buf, tuple(slice(None) for _ in sl))
        except (OSError, ValueError, RuntimeError) as e:
            if isinstance(e, SplitDatasetError):
                raise
            raise CorruptBlockError(self._path(index, prefix), grid.coords(index), str(e)) from e
        finally:
            cache.release(handle)
        return buf[tuple(slice(None) if type(x) is slice else 0 for x in local)]

    def _get(self, indexer: Indexer, out: np.ndarray | None = None) -> Any:
        buf = np.empty(indexer.buffer_shape, dtype=self._dtype)
        if buf.size:
            self._read_into(buf, indexer)
        return indexer.finish(buf)

    # ------------------------------------------------------------------ per-frame records

    @property
    def frame_meta(self) -> np.ndarray | None:
        """Per-frame records the acquisition writer stored with the frames, one per index along
        axis 0: a structured array with ``time`` (s), ``id`` (the camera's frame counter, -1
        where unknown) and the extra fields given to ``append(meta=...)``; None for datasets
        without them (other writers, older versions). Read once from the block files (a small
        array in each), then kept until :meth:`refresh`.

        Examples
        --------
        >>> ds.frame_meta["time"][:3]  # doctest: +SKIP
        array([1764547200.01, 1764547200.51, 1764547201.01])
        """
        key = (self._grid.shape, self._present)
        cached = self.__dict__.get("_frame_meta_cache")
        if cached is not None and cached[0] == key:
            result: np.ndarray | None = cached[1]
            return result
        grid = self._grid
        records = None
        if grid.ndim and not any(grid.padding):
            wanted, lengths = [], []
            for k in range(grid.grid_shape[0]):
                coords = (k,) + (0,) * (grid.ndim - 1)
                wanted.append(grid.linear(coords))
                lengths.append(grid.block_shape(coords)[0])
            found = self._read_frame_metas([(i, n) for i, n in zip(wanted, lengths) if i in self._present])
            records = join_records([found.get(i) for i in wanted], lengths)
        self.__dict__["_frame_meta_cache"] = (key, records)
        return records

    def _read_frame_meta(self, index: int, frames: int) -> np.ndarray | None:
        """Block `index`'s first `frames` per-frame records, or None where it has none."""
        return read_frame_meta(self._path(index), frames)

    def _read_frame_metas(self, blocks: list[tuple[int, int]]) -> dict[int, np.ndarray | None]:
        """``{block: its first n records, or None}`` for each ``(block, n)``."""
        return {index: self._read_frame_meta(index, n) for index, n in blocks}

    @property
    def frame_times(self) -> np.ndarray | None:
        """When each frame along axis 0 was taken (float64 seconds; NaN where unknown), or None.

        Examples
        --------
        >>> np.diff(ds.frame_times).mean()  # doctest: +SKIP
        0.5
        """
        meta = self.frame_meta
        return None if meta is None else np.asarray(meta["time"])

    @property
    def frame_ids(self) -> np.ndarray | None:
        """The camera's frame counter for each frame along axis 0 (-1 where unknown), or None
        where no frame has one."""
        meta = self.frame_meta
        if meta is None or not (meta["id"] >= 0).any():
            return None
        return np.asarray(meta["id"])

    @property
    def dropped_frames(self) -> np.ndarray:
        """Camera frame ids the acquisition writer saw missing (gaps in ``frame_ids``), sorted;
        empty when none were dropped or nothing is known."""
        return expand_gaps(self._meta.dropped_frames)

    @property
    def oindex(self) -> _OIndex:
        """Outer (orthogonal) indexing: each index array selects along its own axis.

        Examples
        --------
        >>> ds.oindex[[0, 2], :, [1, 3]]  # doctest: +SKIP
        """
        return _OIndex(self)

    def to_dask(self, chunks: Any = None) -> Any:
        """A lazy ``dask.array.Array`` over this dataset, one chunk per block file.

        Needs the ``dask`` extra (``pip install "split_dataset[dask]"``).

        Examples
        --------
        >>> ds.to_dask().mean(axis=0).compute()  # doctest: +SKIP
        """
        from .dask_adapter import to_dask

        return to_dask(self, chunks)

    def as_dask(self, chunks: Any = None) -> Any:
        """Same as :meth:`to_dask` (the name of an unreleased 0.4 version)."""
        return self.to_dask(chunks)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out: np.ndarray = self[...]
        return out if dtype is None else out.astype(dtype, copy=False)

    def __len__(self) -> int:
        return self.shape[0]

    def __iter__(self) -> Iterator[Any]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return (
            f"<SplitDataset {str(self._root)!r} shape={self.shape} dtype={self.dtype} "
            f"blocks={self.shape_block} ({self.n_blocks} files)>"
        )

    # ------------------------------------------------------------------ lifecycle

    def refresh(self) -> SplitDataset:
        """Re-read the metadata and the block list (for a dataset still being written).

        Examples
        --------
        >>> ds.refresh().shape  # doctest: +SKIP
        """
        self._handles.clear()
        self._load()
        self.__dict__.pop("_frame_meta_cache", None)
        return self

    def close(self) -> None:
        """Close the open block files (reading again reopens them)."""
        self._handles.clear()

    def __enter__(self) -> SplitDataset:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self._handles.clear()
        except Exception:
            pass

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_handles")
        state["_cache_size"] = self._handles.maxsize
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        cache_size = state.pop("_cache_size")
        self.__dict__.update(state)
        self._handles = HandleCache(cache_size)

    def __dask_tokenize__(self) -> Any:
        json_path = self._root / METADATA_FILENAME
        stamp = json_path.stat().st_mtime_ns if json_path.exists() else None
        return ("split_dataset.SplitDataset", str(self._root), self._prefix, self.shape, str(self.dtype), stamp)


class _OIndex:
    """``ds.oindex[...]``: outer indexing (numpy's ``np.ix_`` behaviour)."""

    def __init__(self, ds: SplitDataset) -> None:
        self._ds = ds

    def __getitem__(self, selection: Any) -> Any:
        return self._ds._get(Indexer.create(selection, self._ds.shape, outer=True))


def open(path: str | os.PathLike[str], prefix: str | None = None, *, storage_options: dict[str, Any] | None = None,
         **kwargs: Any) -> SplitDataset:
    """Open a split dataset for reading: a local folder, or a URL of any fsspec filesystem.

    Parameters
    ----------
    path
        The dataset folder, or its URL (``s3://bucket/ds``, ``https://host/data/ds``,
        ``gs://...``): read-only through fsspec (the ``remote`` extra), fetching only the
        chunks a selection needs, by range requests.
    prefix
        Name prefix of the block files (see :class:`SplitDataset`).
    storage_options
        For a URL: passed to fsspec (credentials, ``client_kwargs={"endpoint_url": ...}``).
    **kwargs
        ``cache_size``, ``fill_value``, ``chunk_index``; for a URL also ``retries`` and
        ``timeout`` (see :class:`~split_dataset.remote.dataset.RemoteSplitDataset`).

    Examples
    --------
    >>> import split_dataset
    >>> ds = split_dataset.open("my_dataset")  # doctest: +SKIP
    >>> frame = ds[0, 5]  # doctest: +SKIP
    >>> ds = split_dataset.open("s3://lab-archive/fish1/raw", storage_options={"anon": True})  # doctest: +SKIP
    """
    if is_url(path):
        from .remote.dataset import RemoteSplitDataset

        return RemoteSplitDataset(path, prefix, storage_options=storage_options, **kwargs)
    return SplitDataset(path, prefix, storage_options=storage_options, **kwargs)
