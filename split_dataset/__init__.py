"""split_dataset: numpy-like arrays stored as a folder of HDF5 block files.

The public API lives here; submodules (``split_dataset.errors``,
``split_dataset.storage``...) hold the details.

Examples
--------
>>> import numpy as np, split_dataset, tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "stack")
>>> ds = split_dataset.save(np.zeros((20, 4, 8, 8), "uint16"), path, shape_block=(5,))
>>> split_dataset.open(path)[3, 1].shape
(8, 8)
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version
from typing import Any

from . import errors, writer
from .cameras import CameraStack, open_cameras
from .chunk_index import build_chunk_index
from .dataset import SplitDataset, open
from .legacy import Blocks, EmptySplitDataset, save_to_split_dataset
from .live import follow
from .refs import virtual_refs
from .remote.store import is_url
from .storage import Codec
from .stream import SplitDatasetWriter
from .write.options import DEFAULT_COMPRESSION


def _is_dask_array(data: Any) -> bool:
    """Whether `data` is a dask collection (told without importing dask)."""
    return type(data).__module__.startswith("dask.") and hasattr(data, "dask")


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
    storage_options: dict[str, Any] | None = None,
) -> SplitDataset:
    """Write an array as a split dataset, block by block, and open it.

    A dask array is computed and written in parallel on the active scheduler, one task
    per block file (:func:`split_dataset.dask_adapter.save_dask`, which needs the
    ``dask`` extra); anything else is written by :func:`split_dataset.writer.save`, whose
    documentation describes every parameter.

    `path` may be a URL of an object store (``s3://bucket/ds``, with `storage_options`
    for fsspec; the ``remote`` extra): the dataset is written to a local staging folder
    (in ``$TMPDIR``, which needs room for it), then each file is uploaded as one object,
    ``stack_metadata.json`` last, so readers never see half a dataset
    (:func:`split_dataset.remote.upload.upload`). The dataset is returned opened by URL.

    Examples
    --------
    >>> import numpy as np, split_dataset, tempfile, os
    >>> x = np.random.default_rng(0).integers(0, 1000, (23, 3, 17, 19), dtype=np.uint16)
    >>> ds = split_dataset.save(x, os.path.join(tempfile.mkdtemp(), "ds"), shape_block=(5,))
    >>> ds.shape_block, ds.n_blocks, bool((ds[:] == x).all())
    ((5, 3, 17, 19), 5, True)
    """
    keywords: dict[str, Any] = dict(
        compression=compression, resolution=resolution, axis_order=axis_order, attrs=attrs, chunks=chunks,
        units=units, frame_interval=frame_interval, like=like, overwrite=overwrite, fsync=fsync, checksums=checksums)
    if is_url(path):
        from .remote.upload import save_remote

        local = dict(keywords, overwrite=False, fsync=False)  # the staging folder is new and temporary
        url = save_remote(lambda folder: save(data, folder, shape_block, **local).close(), str(path),
                          storage_options, overwrite=overwrite)
        return open(url, storage_options=storage_options)
    if storage_options:
        raise TypeError(f"storage_options apply to URLs; {str(path)!r} is a local path")
    if _is_dask_array(data):
        from .dask_adapter import save_dask  # the optional extra: dask is imported only when used

        result: SplitDataset = save_dask(data, path, shape_block, **keywords)
        return result
    return writer.save(data, path, shape_block, **keywords)



def to_dask(path: str | os.PathLike[str] | SplitDataset, chunks: Any = None) -> Any:
    """A lazy dask array over the split dataset at `path`, one chunk per block file.

    Needs the ``dask`` extra: ``pip install "split_dataset[dask]"``.

    Examples
    --------
    >>> x = split_dataset.to_dask("fish1/raw")  # doctest: +SKIP
    >>> f0 = x.mean(axis=0).compute()  # doctest: +SKIP
    """
    from .dask_adapter import to_dask as _to_dask

    return _to_dask(path, chunks)


try:
    __version__ = _version("split_dataset")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "SplitDataset",
    "open",
    "save",
    "SplitDatasetWriter",
    "to_dask",
    "follow",
    "open_cameras",
    "CameraStack",
    "build_chunk_index",
    "virtual_refs",
    "Codec",
    "errors",
    "Blocks",
    "EmptySplitDataset",
    "save_to_split_dataset",
    "__version__",
]
