"""Writing split datasets: the block-writing machinery and :func:`save`."""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from .dataset import SplitDataset
from .errors import BlockMismatchError
from .grid import BlockGrid
from .locks import LOCK_FILENAME, WriterLock, refuse_if_written
from .metadata import Metadata
from .storage import (
    CHECKSUM_FILENAME,
    METADATA_FILENAME,
    Codec,
    block_name,
    default_chunks,
    scan_block_files,
    sha256_file,
    fsync_dir,
    fsync_file,
    pool,
    write_block_atomic,
    write_checksums,
    write_json_atomic,
)

__all__ = ["save", "default_shape_block", "DEFAULT_COMPRESSION", "BlockSink", "like_metadata", "claim_folder"]

#: The default codec: blosc with lz4 and byte shuffle. PyTables/flammkuchen read it; on noisy
#: camera data it matches the old blosclz level 9 in size and speed, on dimmer data it is smaller
#: and faster (measured: ratio 2.59 vs 2.48, 1.4x faster to write and read).
DEFAULT_COMPRESSION = "blosc-lz4"
#: Default block size in bytes, see :func:`default_shape_block`.
DEFAULT_BLOCK_BYTES = 64 << 20


def default_shape_block(
    shape: Sequence[int], itemsize: int, target_bytes: int = DEFAULT_BLOCK_BYTES
) -> tuple[int, ...]:
    """Blocks of about `target_bytes` (64 MiB), split along the first axes only.

    Whole frames (everything but axis 0) stay in one file, and as many frames as fit in
    `target_bytes` go in each file. A frame larger than that is split along axis 1, and so on.

    Examples
    --------
    >>> default_shape_block((200, 10, 256, 256), 2)
    (51, 10, 256, 256)
    >>> default_shape_block((1000, 2048, 2048), 2)
    (8, 2048, 2048)
    """
    shape = tuple(int(s) for s in shape)
    block = list(max(1, s) for s in shape)
    for axis in range(len(shape)):
        n = target_bytes // max(math.prod(block[axis + 1 :]) * itemsize, 1)
        if n == 0:  # one slice along this axis is already too large: split the next axis too
            block[axis] = 1
            continue
        block[axis] = min(block[axis], n)
        break
    return tuple(block)


def _check_dtype(dtype: np.dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype.kind not in "biufc" or dtype.hasobject or dtype.names:
        raise TypeError(f"split datasets store numeric arrays; dtype {dtype} is not supported")
    return dtype


def prepare_folder(path: Path, overwrite: bool, ignore: tuple[str, ...] = (), *, locked: bool = False) -> None:
    """Create `path`, refusing a non-empty folder unless `overwrite` (then only our files go).

    Files named in `ignore` (the caller's own lock file) do not make the folder non-empty.
    Before deleting anything, a folder held by a live writer is refused
    (:class:`~split_dataset.errors.WriterLockedError`) unless `locked` (the caller holds
    that lock itself). Deleting never follows a symbolic link: a link among the old files
    is removed, not its target.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "new"
    >>> prepare_folder(p, overwrite=False); p.is_dir()
    True
    """
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{str(path)!r} exists and is a file, not a folder")
    if path.is_dir() and any(p.name not in ignore for p in path.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"{str(path)!r} exists and is not empty; pass overwrite=True to replace the dataset in it"
            )
        if not locked:
            refuse_if_written(path, "replace the dataset in it")
        meta = path / METADATA_FILENAME
        n_old: int | None = None
        if os.path.lexists(meta):
            if not meta.is_symlink():
                try:
                    n_old = _n_blocks_claimed(meta)
                except (ValueError, OSError):
                    n_old = None
            meta.unlink()  # first: the folder no longer claims the old blocks (a link: the link goes)
        (path / CHECKSUM_FILENAME).unlink(missing_ok=True)  # unlink never follows a link
        for index, name in scan_block_files(path).get("", {}).items():  # only our own names
            if n_old is None or index < n_old:
                (path / name).unlink(missing_ok=True)
    path.mkdir(parents=True, exist_ok=True)


@contextmanager
def claim_folder(root: Path, overwrite: bool) -> Iterator[None]:
    """Create or empty `root` for a new dataset and hold its writer lock while the block runs.

    A folder held by a live writer raises :class:`~split_dataset.errors.WriterLockedError`
    before anything is deleted, and no writer can start in it until the block exits.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp()) / "ds"
    >>> with claim_folder(root, overwrite=False):
    ...     pass
    >>> sorted(p.name for p in root.iterdir())
    []
    """
    if not overwrite:  # refused before a lock file is put in someone's folder
        prepare_folder(root, overwrite=False, ignore=(LOCK_FILENAME,))
    elif root.exists() and not root.is_dir():
        raise FileExistsError(f"{str(root)!r} exists and is a file, not a folder")
    root.mkdir(parents=True, exist_ok=True)
    lock = WriterLock.acquire(root)
    try:
        prepare_folder(root, overwrite, ignore=(LOCK_FILENAME,), locked=True)
        yield
    finally:
        lock.release()


def like_metadata(
    like: Any,
    ndim: int,
    *,
    resolution: Sequence[float] | None = None,
    units: Sequence[str] | None = None,
    axis_order: str | None = None,
    frame_interval: float | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Physical metadata for a new `ndim`-axis dataset derived from `like` (a dataset or its path).

    Explicit arguments win. Axes map as follows: the same number of axes, one to one; a
    different number and an explicit `axis_order`, by letter (``"tyx"`` from ``"tzyx"``
    takes the t, y and x values; a letter `like` lacks raises ``ValueError``); otherwise
    fewer axes take `like`'s trailing axes (a mean over time of ``tzyx`` is ``zyx``), and
    more axes raise ``ValueError``. ``frame_interval`` is copied only when axis 0 maps to
    `like`'s axis 0. ``attrs`` are `like`'s updated with the explicit ones.

    Examples
    --------
    >>> import numpy as np, split_dataset, tempfile, os
    >>> src = split_dataset.save(np.zeros((4, 2, 3, 3), "u1"), os.path.join(tempfile.mkdtemp(), "s"),
    ...                          resolution=(0.5, 2, 0.3, 0.3), frame_interval=0.5, attrs={"fish": 1})
    >>> m = like_metadata(src, 3)
    >>> m["resolution"], m["axis_order"], m["frame_interval"], m["attrs"]
    ((2.0, 0.3, 0.3), 'zyx', None, {'fish': 1})
    >>> like_metadata(src, 3, axis_order="tyx")["resolution"]
    (0.5, 0.3, 0.3)
    """
    ds = like if isinstance(like, SplitDataset) else SplitDataset(like)
    try:
        src_order, src_ndim = ds.axis_order, ds.ndim
        if src_ndim == ndim:
            axes = list(range(ndim))
        elif axis_order is not None:
            if len(axis_order) != ndim:
                raise ValueError(f"axis_order must have {ndim} letters, got {axis_order!r}")
            missing = [c for c in axis_order if c not in src_order]
            if missing:
                raise ValueError(
                    f"like= has axes {src_order!r}: no value for axis {missing[0]!r} of axis_order {axis_order!r}; "
                    "pass resolution= (and units=) yourself"
                )
            axes = [src_order.index(c) for c in axis_order]
        elif ndim < src_ndim:
            axes = list(range(src_ndim - ndim, src_ndim))
        else:
            raise ValueError(
                f"like= has {src_ndim} axes ({src_order!r}), the new dataset {ndim}: pass axis_order= to map "
                "them by letter, or resolution= yourself"
            )
        res, uni = ds.resolution, ds.units
        merged = dict(ds.attrs)
        merged.update(attrs or {})
        return {
            "resolution": tuple(resolution) if resolution is not None else tuple(float(res[a]) for a in axes),
            "units": tuple(units) if units is not None else (tuple(uni[a] for a in axes) if uni else None),
            "axis_order": axis_order if axis_order is not None else "".join(src_order[a] for a in axes),
            "frame_interval": frame_interval if frame_interval is not None else (
                ds.frame_interval if axes[0] == 0 else None),
            "attrs": merged,
        }
    finally:
        if not isinstance(like, SplitDataset):
            ds.close()


def _n_blocks_claimed(meta_path: Path) -> int:
    from .storage import read_json

    m = Metadata.from_dict(read_json(meta_path))
    return BlockGrid(m.shape, m.shape_block, m.padding).n_blocks


class BlockSink:
    """Writes the block files of one dataset, each atomically, then its metadata.

    Each block is validated against the grid (shape and dtype, no casting), encoded in
    memory and renamed into place, so a reader never sees a partial block.
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
        self._syncing: list[Any] = []
        self._sync_pool: ThreadPoolExecutor | None = None
        self._sums: dict[str, Any] = {}  # name -> hex digest, or a Future of one
        self.grid = BlockGrid(meta.shape, meta.shape_block, meta.padding)

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

    def write_unchecked(self, index: int, arr: np.ndarray) -> Path:
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


def make_metadata(
    shape: tuple[int, ...],
    dtype: np.dtype,
    shape_block: Sequence[int | None] | None,
    codec: Codec,
    *,
    resolution: Sequence[float] | None = None,
    axis_order: str | None = None,
    attrs: Mapping[str, Any] | None = None,
    padding: Sequence[int] | int = 0,
    complete: bool | None = True,
    chunks: Sequence[int] | None = None,
    units: Sequence[str] | None = None,
    frame_interval: float | None = None,
    **extra: Any,
) -> Metadata:
    """The metadata of a dataset about to be written (validates every argument)."""
    ndim = len(shape)
    if shape_block is None:
        block = default_shape_block(shape, dtype.itemsize)
    else:
        if isinstance(shape_block, (int, np.integer)):
            shape_block = (int(shape_block),)
        if len(shape_block) > ndim:
            raise ValueError(f"shape_block {tuple(shape_block)} has more entries than the array has axes ({ndim})")
        sb = list(shape_block) + [None] * (ndim - len(shape_block))
        block = tuple(max(1, s) if b is None else b for b, s in zip(sb, shape))
        for i, b in enumerate(block):
            if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 1:
                raise ValueError(f"shape_block[{i}] must be a positive integer, got {b!r}")
        block = tuple(int(min(b, s)) if s else int(b) for b, s in zip(block, shape))  # an empty axis may grow
    pad = (int(padding),) * ndim if isinstance(padding, (int, np.integer)) else tuple(int(p) for p in padding)
    if resolution is not None and len(resolution) != ndim:
        raise ValueError(f"resolution must have {ndim} entries (one per axis), got {len(resolution)}")
    if axis_order is not None and len(axis_order) != ndim:
        raise ValueError(f"axis_order must have {ndim} letters, got {axis_order!r}")
    if chunks is None:
        chunks = default_chunks(block, dtype.itemsize)
    return Metadata(
        shape=tuple(shape),
        shape_block=block,
        padding=pad,
        dtype=dtype,
        resolution=tuple(resolution) if resolution is not None else (),
        axis_order=axis_order or "",
        data_key=f"stack_{ndim}D",
        compression=codec.describe(),
        chunks=tuple(chunks),
        attrs=dict(attrs or {}),
        complete=complete,
        units=tuple(units) if units is not None else (),
        frame_interval=frame_interval,
        extra=extra,
    )


def save(
    data: Any,
    path: str | os.PathLike[str],
    shape_block: Sequence[int | None] | None = None,
    *,
    compression: Any = DEFAULT_COMPRESSION,
    resolution: Sequence[float] | None = None,
    axis_order: str | None = None,
    attrs: Mapping[str, Any] | None = None,
    chunks: Sequence[int] | None = None,
    units: Sequence[str] | None = None,
    frame_interval: float | None = None,
    like: SplitDataset | str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    fsync: bool = True,
    checksums: bool = True,
) -> SplitDataset:
    """Write an array as a split dataset, block by block, and open it.

    Parameters
    ----------
    data
        A numpy array or anything with ``shape``, ``dtype`` and numpy slicing (an
        h5py dataset, a memmap, a zarr array, another SplitDataset). Read one block
        at a time, so peak memory is about one block. A dask array is computed and
        written in parallel on the active scheduler, one task per block file
        (see :func:`split_dataset.dask_adapter.save_dask`).
    path
        Folder to create. A non-empty folder raises ``FileExistsError`` unless
        `overwrite` (which removes only the old dataset's own files). A folder that a
        live :class:`~split_dataset.SplitDatasetWriter` holds raises
        :class:`~split_dataset.errors.WriterLockedError`, even with `overwrite`; the
        folder is locked the same way while `save` writes it.
    shape_block
        Block shape; ``None`` entries (or missing trailing ones) mean the whole axis.
        Default: :func:`default_shape_block` (about 64 MiB, whole frames per file).
    compression
        ``"blosc-lz4"`` (default), ``"blosc-zstd"``, ``"blosc"`` (the old blosclz level 9),
        ``"gzip"``, None, or a :class:`~split_dataset.storage.Codec`.
    resolution, units, axis_order, frame_interval, attrs
        Physical size per axis and its unit (``("s", "um", "um", "um")``), axis letters
        (default ``tzyx``/``zyx``/``yx``...), seconds between frames along axis 0, and
        JSON-serialisable user metadata, all stored in ``stack_metadata.json``.
    like
        A dataset (or its path) whose resolution, units, axis order, frame interval and
        attrs the new one takes, for results derived from it; explicit arguments win, and
        attrs are merged. With fewer axes than `like` (a mean over time), the trailing
        axes' values are taken, or those of the letters of an explicit `axis_order`
        (see :func:`like_metadata`).
    chunks
        HDF5 chunk shape inside each block file. Default: one image plane (the last two
        axes), so reading one frame decodes only that frame.
    fsync
        Flush each file to the disk before renaming it into place (crash safety).
    checksums
        Record each block file's SHA-256 in ``SHA256SUMS`` (``sha256sum -c`` format),
        which ``split-dataset verify`` checks.

    Returns
    -------
    SplitDataset
        The written dataset, open for reading.

    Examples
    --------
    >>> import numpy as np, split_dataset, tempfile, os
    >>> x = np.random.default_rng(0).integers(0, 1000, (23, 3, 17, 19), dtype=np.uint16)
    >>> ds = split_dataset.save(x, os.path.join(tempfile.mkdtemp(), "ds"), shape_block=(5,))
    >>> ds.shape_block, ds.n_blocks, bool((ds[:] == x).all())
    ((5, 3, 17, 19), 5, True)
    """
    if type(data).__module__.startswith("dask.") and hasattr(data, "dask"):
        from .dask_adapter import save_dask

        return save_dask(data, path, shape_block, compression=compression, resolution=resolution,  # type: ignore[no-any-return]
                         axis_order=axis_order, attrs=attrs, chunks=chunks, units=units,
                         frame_interval=frame_interval, like=like, overwrite=overwrite, fsync=fsync,
                         checksums=checksums)
    if not (hasattr(data, "shape") and hasattr(data, "dtype") and hasattr(data, "__getitem__")):
        data = np.asarray(data)
    dtype = _check_dtype(data.dtype)
    shape = tuple(int(s) for s in data.shape)
    if len(shape) == 0:
        raise ValueError("cannot save a 0-dimensional array as a split dataset")
    codec = Codec.parse(compression)
    physical: dict[str, Any] = dict(resolution=resolution, axis_order=axis_order, attrs=attrs, units=units,
                                    frame_interval=frame_interval)
    if like is not None:
        physical = like_metadata(like, len(shape), **physical)
    meta = make_metadata(shape, dtype, shape_block, codec, chunks=chunks, **physical)
    root = Path(path)
    with claim_folder(root, overwrite):
        sink = BlockSink(root, meta, codec, fsync=fsync, checksums=checksums, defer_fsync=True)
        for index, coords in enumerate(sink.grid.iter_coords()):
            block = np.asarray(data[sink.grid.block_slices(coords)])
            sink.write(index, block.astype(dtype, copy=False) if block.dtype != dtype else block)
        sink.write_checksums()
        sink.write_metadata()
    return SplitDataset(root)

