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
from importlib.metadata import PackageNotFoundError, version as _version
from typing import Any

from . import errors
from .dataset import SplitDataset, open
from .legacy import Blocks, EmptySplitDataset, save_to_split_dataset
from .storage import Codec
from .stream import SplitDatasetWriter
from .writer import save



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
    "Codec",
    "errors",
    "Blocks",
    "EmptySplitDataset",
    "save_to_split_dataset",
    "__version__",
]
