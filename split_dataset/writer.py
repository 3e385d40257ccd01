"""Writing split datasets: :func:`save` (for anything but dask arrays; see :func:`split_dataset.save`).

The write pipeline lives in :mod:`split_dataset.write`: :class:`~split_dataset.write.WriteOptions`
(one value for the keywords every writer takes, and the one metadata builder),
:mod:`~split_dataset.write.folder` (the one policy for an existing folder, and the lock),
:class:`~split_dataset.write.BlockSink` (blocks, ``SHA256SUMS``, metadata). The names this
module exported before stay importable from here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .dataset import SplitDataset
from .metadata import Metadata
from .storage import Codec
from .write.folder import claim_folder, prepare_folder
from .write.options import (
    DEFAULT_BLOCK_BYTES,
    DEFAULT_COMPRESSION,
    WriteOptions,
    check_dtype,
    default_shape_block,
    like_metadata,
)
from .write.sink import BlockSink

__all__ = ["save", "write_array", "default_shape_block", "DEFAULT_COMPRESSION", "DEFAULT_BLOCK_BYTES", "BlockSink",
           "like_metadata", "claim_folder", "prepare_folder", "make_metadata", "WriteOptions"]

_check_dtype = check_dtype  # the name 1.x modules imported


def make_metadata(
    shape: tuple[int, ...],
    dtype: np.dtype[Any],
    shape_block: Sequence[int | None] | int | None,
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
    """The metadata of a dataset about to be written (validates every argument).

    Kept for callers of 1.x; it is :meth:`WriteOptions.metadata` of the options these
    keywords describe.

    Examples
    --------
    >>> from split_dataset.storage import Codec
    >>> make_metadata((10, 4), np.dtype("u2"), (3,), Codec.parse(None)).shape_block
    (3, 4)
    """
    options = WriteOptions(codec=codec, chunks=tuple(chunks) if chunks is not None else None,
                           resolution=tuple(resolution) if resolution is not None else None,
                           units=tuple(units) if units is not None else None, axis_order=axis_order,
                           frame_interval=frame_interval, attrs=dict(attrs or {}))
    return options.metadata(shape, dtype, shape_block, padding=padding, complete=complete, extra=extra)


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
        at a time, so peak memory is about one block. :func:`split_dataset.save` sends
        dask arrays to :func:`split_dataset.dask_adapter.save_dask` (parallel, one task
        per block); this function computes them one block at a time, like any array.
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
        user metadata (JSON values, checked as ``ds.attrs[...] = ...`` checks them, before
        anything is written: NaN, infinities, integers beyond 64 bits raise ``ValueError``),
        all stored in ``stack_metadata.json``.
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
    if not (hasattr(data, "shape") and hasattr(data, "dtype") and hasattr(data, "__getitem__")):
        data = np.asarray(data)
    check_dtype(data.dtype)  # refused before anything else is looked at
    shape = tuple(int(s) for s in data.shape)
    if len(shape) == 0:
        raise ValueError("cannot save a 0-dimensional array as a split dataset")
    options = WriteOptions.from_keywords(
        compression=compression, chunks=chunks, checksums=checksums, fsync=fsync, resolution=resolution,
        units=units, axis_order=axis_order, frame_interval=frame_interval, attrs=attrs, like=like, ndim=len(shape))
    return write_array(data, path, shape_block, options, overwrite=overwrite)


def write_array(data: Any, path: str | os.PathLike[str], shape_block: Sequence[int | None] | int | None,
                options: WriteOptions, *, overwrite: bool = False) -> SplitDataset:
    """Write `data` (anything with ``shape``, ``dtype`` and numpy slicing) with `options`; open it.

    What :func:`save` does once its keywords are one :class:`WriteOptions`; for callers
    that hold the options already (``convert``). docs/format.md §10 gives the order:
    lock, old dataset removed, blocks, ``SHA256SUMS``, metadata.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> ds = write_array(np.ones((5, 2), "u1"), os.path.join(tempfile.mkdtemp(), "d"), (2,), WriteOptions(fsync=False))
    >>> ds.n_blocks
    3
    """
    dtype = check_dtype(data.dtype)
    meta = options.metadata(tuple(int(s) for s in data.shape), dtype, shape_block)
    root = Path(path)
    with claim_folder(root, overwrite):
        sink = BlockSink.for_options(root, meta, options, defer_fsync=True)
        for index, coords in enumerate(sink.grid.iter_coords()):
            block = np.asarray(data[sink.grid.block_slices(coords)])
            sink.write(index, block.astype(dtype, copy=False) if block.dtype != dtype else block)
        sink.write_checksums()
        sink.write_chunk_index()
        sink.write_metadata()
    return SplitDataset(root)

