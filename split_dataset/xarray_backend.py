"""xarray backend: ``xr.open_dataset(path, engine="split_dataset")`` (``pip install "split_dataset[xarray]"``).

xarray finds :class:`SplitDatasetBackendEntrypoint` through the ``xarray.backends`` entry
point; ``import split_dataset`` never imports this module (nor xarray).

What ``open_dataset`` returns, for a dataset of shape ``(t, z, y, x)``:

- one data variable, always named ``"data"`` (:data:`VARIABLE`; the HDF5 key inside the
  blocks varies between dialects, and ``"stack"`` would hide behind ``Dataset.stack``), lazy: nothing is read
  until it is indexed or loaded, and then only the chunks the selection needs, through the
  package's reader with outer (orthogonal) indexing. ``chunks={}`` gives a dask array with
  one chunk per block file (``encoding["preferred_chunks"]`` is the block shape).
- dims named by the letters of ``axis_order`` (``t z y x`` or as stored; a letter that
  repeats gets its axis number appended: ``"xyx"`` gives ``x0, y, x2``).
- one float64 coordinate per dim, ``index * step``: the step is ``frame_interval`` for
  axis 0 when it is recorded (``units: "s"``), else ``resolution`` (1.0 where unknown).
  ``units`` go into the coordinate's attrs when known. The coordinates are lazy (an
  xarray ``RangeIndex``: a 10^5-long time axis costs nothing until used) and select like
  pandas indexes: ``.sel(x=slice(0, 10.0))`` includes both ends, a scalar or list must
  match a coordinate value (within 1e-9 of a step) unless ``method="nearest"``.
- attrs (on the dataset and on the variable, so ``open_dataarray`` keeps them): the
  dataset's ``attrs`` (JSON values), then ``axis_order``, ``resolution``, ``units``,
  ``shape_block`` and, when recorded, ``frame_interval`` (these win over user attrs of the
  same names).
"""

from __future__ import annotations

import math
import os
from collections.abc import Hashable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from xarray.backends import BackendArray, BackendEntrypoint
from xarray.core import indexing
from xarray.core.indexing import IndexSelResult
from xarray.indexes import RangeIndex
from xarray.indexes.range_index import RangeCoordinateTransform

from .dataset import SplitDataset
from .storage import METADATA_FILENAME, scan_block_files

__all__ = ["VARIABLE", "SplitDatasetArray", "SplitDatasetBackendEntrypoint", "open_split_dataset"]

#: Name of the one data variable.
VARIABLE = "data"

#: A label matches a coordinate value when it is this close to it, in steps.
_MATCH = 1e-9


class SplitDatasetArray(BackendArray):
    """The lazy array xarray wraps: outer indexing through :attr:`SplitDataset.oindex`.

    Thread-safe (the reader is); pickles as the dataset, i.e. as its path.
    """

    __slots__ = ("dataset", "dtype", "shape")

    def __init__(self, dataset: SplitDataset) -> None:
        self.dataset = dataset
        self.shape: tuple[int, ...] = dataset.shape
        self.dtype: np.dtype[Any] = dataset.dtype

    def __getitem__(self, key: indexing.ExplicitIndexer) -> Any:
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.OUTER, self._read)

    def _read(self, key: tuple[Any, ...]) -> np.ndarray[Any, Any]:
        return np.asarray(self.dataset.oindex[key])


class _StepIndex(RangeIndex):
    """xarray's lazy ``RangeIndex`` (values ``start + i * step``) with pandas-like ``sel``.

    ``RangeIndex.sel`` accepts only ``method="nearest"`` and treats a slice's stop as
    exclusive; here slices include both ends and exact labels work, as on a pandas index.
    """

    def isel(self, indexers: Mapping[Any, Any]) -> Any:
        out = super().isel(indexers)
        return _StepIndex(out.transform) if type(out) is RangeIndex else out

    def sel(self, labels: dict[Any, Any], method: Any = None, tolerance: Any = None) -> IndexSelResult:
        label = labels[self.dim]
        start, step, size = float(self.start), float(self.step), int(self.size)
        if isinstance(label, slice):
            if label.step is not None:
                raise ValueError(f"a label slice on {self.dim!r} cannot have a step (use .isel for that)")
            lo = 0 if label.start is None else math.ceil((float(label.start) - start) / step - _MATCH)
            hi = size - 1 if label.stop is None else math.floor((float(label.stop) - start) / step + _MATCH)
            lo, hi = max(lo, 0), min(hi, size - 1)
            return IndexSelResult({self.dim: slice(lo, max(hi + 1, lo))})
        if isinstance(label, xr.DataArray | xr.Variable):
            raise NotImplementedError(f"vectorised label selection on {self.dim!r}: use .isel")
        values = np.asarray(label, dtype=np.float64)
        where = (values - start) / step
        nearest = np.rint(where)
        if method == "nearest":
            if tolerance is not None and np.any(np.abs(where - nearest) * abs(step) > tolerance):
                raise KeyError(f"no {self.dim!r} value within {tolerance} of {label!r}")
            nearest = np.clip(nearest, 0, size - 1)
        elif method is not None:
            raise ValueError(f"selection method {method!r} is not supported on {self.dim!r} (None or 'nearest')")
        elif np.any(np.abs(where - nearest) > _MATCH) or np.any((nearest < 0) | (nearest > size - 1)):
            raise KeyError(f"{label!r} is not a value of coordinate {self.dim!r}")
        positions = nearest.astype(np.intp)
        return IndexSelResult({self.dim: int(positions) if positions.ndim == 0 else positions})


def _dims(axis_order: str, ndim: int) -> list[str]:
    letters = list(axis_order) if len(axis_order) == ndim else [f"dim_{i}" for i in range(ndim)]
    return [c if letters.count(c) == 1 else f"{c}{i}" for i, c in enumerate(letters)]


def _coordinate(dim: str, size: int, step: float, unit: str) -> xr.Coordinates:
    attrs = {"units": unit} if unit else {}
    coords: xr.Coordinates | None = None
    if size > 0 and step > 0 and math.isfinite(step):
        try:
            transform = RangeCoordinateTransform(0.0, size * step, size, dim, dim, np.dtype(np.float64), step=step)
            coords = xr.Coordinates.from_xindex(_StepIndex(transform))
        except TypeError:  # an xarray whose RangeIndex is built otherwise (before 2026.1): plain values below
            coords = None
    if coords is None:  # nothing to be lazy about, a zero step no index can invert, or an older xarray
        coords = xr.Coordinates({dim: xr.Variable(dim, np.arange(size, dtype=np.float64) * step)})
    coords[dim].attrs.update(attrs)
    return coords


def _attrs(ds: SplitDataset) -> dict[str, Any]:
    attrs: dict[str, Any] = dict(ds.attrs)
    attrs.update(axis_order=ds.axis_order, resolution=[float(r) for r in ds.resolution], units=list(ds.units),
                 shape_block=[int(b) for b in ds.shape_block])
    if ds.frame_interval is not None:
        attrs["frame_interval"] = float(ds.frame_interval)
    return attrs


def open_split_dataset(dataset: SplitDataset, drop_variables: Iterable[Hashable] = ()) -> xr.Dataset:
    """The :class:`xarray.Dataset` view of an open split dataset (what the backend returns)."""
    drop = set(drop_variables)
    dims = _dims(dataset.axis_order, dataset.ndim)
    coords = xr.Coordinates()
    for axis, (dim, size) in enumerate(zip(dims, dataset.shape)):
        if dim in drop:
            continue
        step, unit = float(dataset.resolution[axis]), dataset.units[axis]
        if axis == 0 and dataset.frame_interval is not None:
            step, unit = float(dataset.frame_interval), "s"
        coords = coords.merge(_coordinate(dim, size, step, unit)).coords
    attrs = _attrs(dataset)
    variables: dict[Hashable, xr.Variable] = {}
    if VARIABLE not in drop:
        data = indexing.LazilyIndexedArray(SplitDatasetArray(dataset))
        encoding = {"preferred_chunks": dict(zip(dims, dataset.shape_block)), "source": str(dataset.root)}
        variables[VARIABLE] = xr.Variable(dims, data, attrs=dict(attrs), encoding=encoding)
    out = xr.Dataset(variables, coords=coords, attrs=attrs)
    out.encoding["source"] = str(dataset.root)
    out.set_close(dataset.close)
    return out


class SplitDatasetBackendEntrypoint(BackendEntrypoint):
    """``engine="split_dataset"``: a split dataset folder as a lazy :class:`xarray.Dataset`.

    Keywords: ``prefix`` (block file name prefix, default: found) and ``chunk_index``
    (use ``chunk_index.bin``), as for :class:`~split_dataset.SplitDataset`.
    """

    description = "Open split datasets (a folder of numbered HDF5 block files + stack_metadata.json) lazily"
    url = "https://github.com/portugueslab/split_dataset"
    open_dataset_parameters = ("filename_or_obj", "drop_variables", "prefix", "chunk_index")

    def open_dataset(  # type: ignore[override]
        self,
        filename_or_obj: str | os.PathLike[Any] | SplitDataset,
        *,
        drop_variables: str | Iterable[str] | None = None,
        prefix: str | None = None,
        chunk_index: bool = True,
    ) -> xr.Dataset:
        if isinstance(filename_or_obj, SplitDataset):
            dataset = filename_or_obj
        elif isinstance(filename_or_obj, str | os.PathLike):
            dataset = SplitDataset(filename_or_obj, prefix, chunk_index=chunk_index)
        else:
            raise TypeError(f"engine 'split_dataset' opens a folder path, not {type(filename_or_obj).__name__}")
        drop = [drop_variables] if isinstance(drop_variables, str) else list(drop_variables or ())
        return open_split_dataset(dataset, drop)

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        """Whether `filename_or_obj` is a split dataset folder: it holds ``stack_metadata.json``
        or numbered block files (``0000.h5``...). Never raises."""
        if isinstance(filename_or_obj, SplitDataset):
            return True
        if not isinstance(filename_or_obj, str | os.PathLike):
            return False
        try:
            root = Path(filename_or_obj)
            if not root.is_dir():
                return False
            return (root / METADATA_FILENAME).is_file() or bool(scan_block_files(root))
        except (OSError, ValueError, TypeError):
            return False
