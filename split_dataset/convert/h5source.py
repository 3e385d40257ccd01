"""An HDF5 dataset as a conversion source, read through the storage layer.

Foreign HDF5 files may hold damaged blosc chunks; handed to HDF5's blosc filter, a
damaged header can crash the process inside c-blosc. :class:`HDF5Array` reads through
:class:`~split_dataset.storage.BlockHandle`, which validates every blosc frame (for any
filter pipeline containing blosc, see ``docs/format.md`` §4.3) before a decoder sees it,
and lets h5py read arrays without blosc (gzip, none, contiguous, virtual).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import CorruptSourceError, SplitDatasetError
from ..grid import BlockGrid
from ..indexing import Indexer
from ..storage import BlockHandle
from ..storage.hdf5 import open_readonly

__all__ = ["HDF5Array"]


class HDF5Array:
    """Read-only numpy-style access to an h5py dataset, every blosc frame validated first.

    Indexing follows numpy's semantics (integers, slices with any step, ``...``,
    ``None``, index arrays, masks). A damaged chunk raises
    :class:`~split_dataset.errors.CorruptSourceError` naming the file.

    Parameters
    ----------
    file
        The open h5py file holding `dset` (closed by :meth:`close`).
    dset
        The dataset to read.

    Examples
    --------
    >>> import h5py, io, numpy as np
    >>> f = h5py.File(io.BytesIO(), "w")
    >>> a = HDF5Array(f, f.create_dataset("x", data=np.arange(12).reshape(3, 4), chunks=(1, 4)))
    >>> a.shape, a[1, ::2].tolist(), a[[2, 0], -1].tolist()
    ((3, 4), [4, 6], [11, 3])
    >>> a.close()
    """

    def __init__(self, file: h5py.File, dset: h5py.Dataset) -> None:
        self._handle = BlockHandle(file, dset)
        self.dset = dset
        self.path = Path(file.filename)
        if dset.is_virtual:
            _validate_virtual_sources(self.path, dset)
        self.shape: tuple[int, ...] = tuple(int(n) for n in dset.shape)
        self.dtype: np.dtype = np.dtype(dset.dtype)
        self.chunks: tuple[int, ...] | None = dset.chunks

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    @property
    def name(self) -> str:
        """The dataset's path in the file."""
        return str(self.dset.name)

    @property
    def attrs(self) -> Any:
        """The dataset's HDF5 attributes (h5py's ``AttributeManager``)."""
        return self.dset.attrs

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, selection: Any) -> Any:
        ix = Indexer.create(selection, self.shape)
        buf = np.empty(ix.buffer_shape, self.dtype)
        if not ix.empty:
            grid = BlockGrid(self.shape, tuple(max(1, n) for n in self.shape))
            try:
                for _, local, out in ix.block_reads(grid):
                    self._handle.read(local, buf, out)
            except SplitDatasetError:
                raise
            except (OSError, RuntimeError) as e:  # BloscError (a damaged frame or index), HDF5's own errors
                raise CorruptSourceError(self.path, f"{self.name}: {' '.join(str(e).split())}") from e
        return ix.finish(buf)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.asarray(self[...])
        return out if dtype is None else out.astype(dtype, copy=False)

    def close(self) -> None:
        """Close the file (and the descriptor of direct chunk reads). Idempotent."""
        self._handle.close()

    def __repr__(self) -> str:
        return f"<HDF5Array {str(self.path)!r}:{self.name} shape={self.shape} dtype={self.dtype}>"


def _validate_virtual_sources(path: Path, dset: h5py.Dataset) -> None:
    """A virtual dataset's sources are decoded by HDF5 itself: validate every blosc frame of every
    source first (headers and block offsets, no decoding), refusing what cannot be validated."""
    seen: set[tuple[str, str]] = set()
    for vs in dset.virtual_sources():
        name = vs.file_name
        source = path if name == "." else (Path(name) if os.path.isabs(name) else path.parent / name)
        if (str(source), vs.dset_name) in seen or not source.exists():
            continue  # HDF5 reads a missing source as the fill value
        seen.add((str(source), vs.dset_name))
        try:
            with open_readonly(source) as f:
                inner = f.get(vs.dset_name)
                if not isinstance(inner, h5py.Dataset):
                    continue
                if inner.is_virtual:
                    raise CorruptSourceError(path, f"{dset.name}: its source {inner.name!r} in {str(source)!r} is "
                                             "virtual too; nested virtual datasets are refused")
                handle = BlockHandle(f, inner)
                try:
                    handle.validate_frames()
                finally:
                    if handle.source is not None:
                        handle.source.close()
        except SplitDatasetError:
            raise
        except (OSError, RuntimeError) as e:
            raise CorruptSourceError(path, f"{dset.name}: its source {vs.dset_name!r} in {str(source)!r}: "
                                     f"{' '.join(str(e).split())}") from e
