"""What a split dataset's metadata and block layout say: the attributes of :class:`~split_dataset.SplitDataset`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .attrs import DatasetAttrs
from .blocks import Blocks
from .grid import BlockGrid
from .metadata import Metadata
from .storage import BlockHandle, block_name

__all__ = ["DatasetInfo"]


class DatasetInfo:
    """Shape, dtype, block layout and physical metadata of an open split dataset (the base
    class of :class:`~split_dataset.SplitDataset`, which sets the state these read)."""

    _grid: BlockGrid
    _meta: Metadata
    _raw: dict[str, Any]
    _root: Path
    _prefix: str
    _present: frozenset[int]
    _key: str | None
    _dtype: np.dtype | None

    def _path(self, index: int, prefix: str | None = None) -> Path:
        return self._root / block_name(index, self._prefix if prefix is None else prefix)

    def _handle(self, index: int, grid: BlockGrid | None = None) -> BlockHandle:
        raise NotImplementedError


    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the readable array (fewer frames than claimed if the acquisition stopped early)."""
        return self._grid.shape

    @property
    def dtype(self) -> np.dtype:
        """Element type."""
        return self._dtype  # type: ignore[return-value]

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    @property
    def size(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of the uncompressed array."""
        return self.size * self.dtype.itemsize

    @property
    def shape_block(self) -> tuple[int, ...]:
        """Shape of one block (edge blocks are shorter)."""
        return self._grid.shape_block

    @property
    def chunks(self) -> tuple[int, ...]:
        """Same as :attr:`shape_block`; lets ``dask.array.from_array`` pick one chunk per file."""
        return self._grid.shape_block

    @property
    def shape_full(self) -> tuple[int, ...]:
        """Same as :attr:`shape` (the old package's name)."""
        return self.shape

    @property
    def padding(self) -> tuple[int, ...]:
        """Overlap between neighbouring blocks, per axis."""
        return self._grid.padding

    @property
    def grid(self) -> BlockGrid:
        """The block geometry."""
        return self._grid

    @property
    def n_blocks(self) -> int:
        """Number of block files the array is made of."""
        return self._grid.n_blocks

    @property
    def root(self) -> Path:
        """The dataset folder."""
        return self._root

    @property
    def prefix(self) -> str:
        """Name prefix of the block files ('' for ``0000.h5``)."""
        return self._prefix

    @property
    def files(self) -> np.ndarray:
        """Paths of the block files, shaped as the block grid."""
        out = np.empty(self._grid.n_blocks, dtype=object)
        for i in range(self._grid.n_blocks):
            out[i] = self._path(i)
        return out.reshape(self._grid.grid_shape)

    @property
    def resolution(self) -> tuple[float, ...]:
        """Physical size of one step along each axis (1.0 where unknown)."""
        return self._meta.resolution

    @property
    def units(self) -> tuple[str, ...]:
        """Unit of each axis' resolution (``""`` where unknown)."""
        return self._meta.units

    @property
    def frame_interval(self) -> float | None:
        """Seconds between frames along axis 0, if recorded."""
        return self._meta.frame_interval

    @property
    def frame_rate(self) -> float | None:
        """Frames per second along axis 0, if recorded."""
        return 1.0 / self._meta.frame_interval if self._meta.frame_interval else None

    @property
    def axis_order(self) -> str:
        """One letter per axis, e.g. ``"tzyx"``."""
        return self._meta.axis_order

    @property
    def metadata(self) -> dict[str, Any]:
        """The metadata as read from disk (a copy)."""
        return dict(self._raw)

    @property
    def meta(self) -> Metadata:
        """The parsed metadata, describing what is readable."""
        return self._meta

    @property
    def attrs(self) -> DatasetAttrs:
        """User metadata stored with the dataset; assignments are saved at once, atomically.

        Like h5py's and zarr's attributes: ``ds.attrs["fish"] = "F1"``, ``del``,
        ``update()`` rewrite ``stack_metadata.json`` (refused while a live writer holds
        the folder); values must be JSON values. See :class:`~split_dataset.attrs.DatasetAttrs`.

        Examples
        --------
        >>> ds.attrs["stimulus"] = "looming"  # doctest: +SKIP
        """
        return DatasetAttrs(self._root, self._meta.attrs, on_change=self._attrs_saved)

    def _attrs_saved(self, doc: dict[str, Any]) -> None:
        self._raw = doc
        self._meta = self._meta.replace(attrs=dict(doc.get("attrs") or {}))

    @property
    def complete(self) -> bool | None:
        """False for an acquisition still being written or stopped early; None if unknown."""
        return self._meta.complete

    @property
    def missing_blocks(self) -> list[int]:
        """File numbers of block files that are not on disk."""
        return [i for i in range(self._grid.n_blocks) if i not in self._present]

    # old names, kept for scripts written against split_dataset 0.4
    @property
    def shape_cropped(self) -> tuple[int, ...]:
        """Same as :attr:`shape` (the old package's name)."""
        return self.shape

    @property
    def n_dims(self) -> int:
        """Same as :attr:`ndim` (the old package's name)."""
        return self.ndim

    @property
    def data_key(self) -> str:
        """Name of the array inside the block files."""
        if self._key is None and self._present and min(self._present) < self._grid.n_blocks:
            return self._handle(min(self._present)).name
        return self._key or "stack"

    def slices(self, as_tuples: bool = False) -> Any:
        """Iterate ``(block_coords, slices)`` over the blocks, as the old ``Blocks.slices``."""
        return Blocks(self.shape, shape_block=self.shape_block, padding=self.padding).slices(as_tuples=as_tuples)

    def __getattr__(self, name: str) -> Any:
        # the rest of the old Blocks API (block_starts, linear_to_cartesian, ...) on demand
        if name.startswith("_") or name in ("oindex",):
            raise AttributeError(name)
        if hasattr(Blocks, name):
            blocks = Blocks(self.shape, shape_block=self.shape_block, padding=self.padding)
            return getattr(blocks, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
