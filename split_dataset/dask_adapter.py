"""Dask integration: lazy arrays over split datasets, and parallel writes of dask arrays.

Only this module imports dask (``pip install "split_dataset[dask]"``). The graphs hold
the dataset object, which pickles as its path and metadata (no open file), and
block slices: they run on the threaded, processes and distributed schedulers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .dataset import SplitDataset
from .metadata import Metadata
from .write.display import RangeSampler
from .write.folder import claim_folder
from .write.options import DEFAULT_COMPRESSION, WriteOptions, check_dtype
from .write.sink import BlockSink

try:
    import dask.array as da
    from dask.base import tokenize
    from dask.delayed import delayed
except ImportError as e:  # pragma: no cover - exercised by a test that hides dask
    raise ImportError(
        "the dask integration of split_dataset needs dask: pip install \"split_dataset[dask]\""
    ) from e

__all__ = ["to_dask", "save_dask"]


def to_dask(dataset: SplitDataset | str | os.PathLike[str], chunks: Any = None) -> da.Array:
    """A lazy dask array over a split dataset, one chunk per block file by default.

    Parameters
    ----------
    dataset
        A :class:`SplitDataset` or the path of one.
    chunks
        Dask chunks; default ``dataset.shape_block`` (partial edge blocks included).
        Multiples of the block shape keep each task inside whole files.

    Examples
    --------
    >>> import numpy as np, split_dataset, tempfile, os
    >>> ds = split_dataset.save(np.ones((10, 4, 4), "uint16"), os.path.join(tempfile.mkdtemp(), "d"), (3,))
    >>> x = split_dataset.to_dask(ds)
    >>> x.chunks[0], int(x.sum().compute())
    ((3, 3, 3, 1), 160)
    """
    ds = dataset if isinstance(dataset, SplitDataset) else SplitDataset(dataset)
    chunks = ds.shape_block if chunks is None else chunks
    name = "split-dataset-" + tokenize(ds, chunks)
    from_array: Callable[..., da.Array] = da.from_array  # untyped in dask
    return from_array(
        ds, chunks=chunks, name=name, lock=False, asarray=False, fancy=False,
        meta=np.empty((0,) * ds.ndim, dtype=ds.dtype),
    )


def _write_block(sink: BlockSink, index: int, block: np.ndarray[Any, Any]) -> tuple[dict[str, str], Any, Any]:
    arr = np.asarray(block)
    name = sink.write(index, arr).name
    sampled = RangeSampler()  # this block's sample (the sink's may be another process's copy)
    sampled.add(arr)
    return ({name: sink.digest(name)} if sink.checksums else {}), sink.records_of((index,)), sampled.values()


def save_dask(
    x: da.Array,
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
    compute: bool = True,
) -> SplitDataset | Any:
    """Compute a dask array and write it as a split dataset, one task per block file.

    Called by :func:`split_dataset.save` for dask arrays. The array is rechunked to the
    block shape (default: its own chunks if they are regular, else about 64 MiB blocks);
    each task computes one block and writes it (temporary name, then rename) on the
    active scheduler, so memory per worker is about one block. The metadata is written
    once, after every block was written: a failed run leaves no metadata. `like` copies
    the physical metadata of a source dataset, as for :func:`split_dataset.save`. The
    folder's writer lock is held while the blocks are computed (with ``compute=True``); a
    folder a live writer holds raises :class:`~split_dataset.errors.WriterLockedError`.

    Returns the dataset, or with ``compute=False`` a ``dask.delayed`` object that writes it.

    Examples
    --------
    >>> import dask.array as da, split_dataset, tempfile, os
    >>> x = da.ones((10, 4, 4), chunks=(5, 4, 4), dtype="float32")
    >>> ds = split_dataset.save(x * 2, os.path.join(tempfile.mkdtemp(), "d"))
    >>> ds.shape_block, float(ds[9, 3, 3])
    ((5, 4, 4), 2.0)
    """
    dtype = check_dtype(x.dtype)
    if any(np.isnan(c) for cs in x.chunks for c in cs):
        raise ValueError("the dask array has unknown chunk sizes; call x.compute_chunk_sizes() first")
    shape = tuple(int(s) for s in x.shape)
    if shape_block is None and all(len(set(c[:-1])) <= 1 for c in x.chunks):
        shape_block = tuple(int(c[0]) for c in x.chunks)
    options = WriteOptions.from_keywords(
        compression=compression, chunks=chunks, checksums=checksums, fsync=fsync, resolution=resolution,
        units=units, axis_order=axis_order, frame_interval=frame_interval, attrs=attrs, like=like, ndim=len(shape))
    meta = options.metadata(shape, dtype, shape_block)
    root = Path(path)
    if compute:
        with claim_folder(root, overwrite):
            return _save_blocks(x, root.resolve(), meta, options).compute()
    with claim_folder(root, overwrite):
        pass  # emptied now (refused if a live writer holds it); the lock is not held until compute
    return _save_blocks(x, root.resolve(), meta, options)


def _save_blocks(x: da.Array, root: Path, meta: Metadata, options: WriteOptions) -> Any:
    """The delayed object that writes every block, then the checksums and the metadata."""
    sink = BlockSink.for_options(root, meta, options)
    array: Any = x  # dask's methods are untyped
    blocks = array.rechunk(meta.shape_block).to_delayed()
    write = delayed(_write_block, pure=False)
    tasks = [write(sink, sink.grid.linear(coords), blocks[coords]) for coords in sink.grid.iter_coords()]

    def finish(results: list[tuple[dict[str, str], Any, Any]]) -> SplitDataset:
        for sums, records, sampled in results:
            sink.add_sums(sums)
            sink.add_records(records)
            sink.display.extend(sampled)
        sink.write_checksums()
        sink.write_chunk_index()
        sink.write_metadata()
        return SplitDataset(root)

    return delayed(finish, pure=False)(tasks)
