"""``Blocks``: the block geometry of split_dataset 0.4 (a regular tiling, with crop and padding).

Same signatures and results as 0.4.4, minus its bugs: NumPy 2 works, ``Blocks(shape)``
without a block shape is one block, ``neighbour_blocks`` returns all neighbours and
honours ``dims``, coordinates on a block boundary map to the block that starts there.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .grid import grid_shape

__all__ = ["Blocks"]


def _drop_ith(xs: Sequence[Any], i: int) -> tuple[Any, ...]:
    return tuple(x for j, x in enumerate(xs) if j != i)


def _make_iterable(value: Any, n: int = 1) -> Any:
    try:
        iter(value)
        return value
    except TypeError:
        return (value,) * n


class Blocks:
    """A regular tiling of an array into blocks (the old package's geometry object).

    The grid can be given by block size or by number of blocks, on all axes or on
    those in `dim_split`; these are equivalent for a (100, 20, 40, 10) array::

        Blocks((100, 20, 40, 10), shape_block=(100, 10, 20, 10))
        Blocks((100, 20, 40, 10), shape_block=(None, 10, 20))
        Blocks((100, 20, 40, 10), dim_split=(1, 2), blocks_number=(2, 2))

    Parameters
    ----------
    shape_full
        Shape of the whole array (before `crop`).
    shape_block
        Block size per axis; None (or missing trailing entries) means the whole axis.
    dim_split
        Axes that are split (default: those with a block size).
    blocks_number
        Number of blocks per split axis, instead of `shape_block`.
    padding
        Overlap between neighbouring blocks, per axis.
    crop
        ``((low, high), ...)`` elements to leave out at each end of each axis.

    Examples
    --------
    >>> b = Blocks((10, 4), shape_block=(3, None))
    >>> b.n_blocks, b.shape_block, b[3]
    (4, (3, 4), (slice(9, 10, None), slice(0, 4, None)))
    """

    def __init__(
        self,
        shape_full: Sequence[int],
        shape_block: Sequence[int | None] | int | None = None,
        dim_split: Sequence[int] | int | None = None,
        blocks_number: Sequence[int] | int | None = None,
        padding: Sequence[int] | int = 0,
        crop: Sequence[tuple[int, int]] | None = None,
    ) -> None:
        self._shape_full = tuple(int(s) for s in shape_full)
        ndim = len(self._shape_full)
        self._crop = tuple(tuple(c) for c in crop) if crop is not None else ((0, 0),) * ndim
        self._cache: dict[str, Any] = {}
        block = list(self.shape_cropped)
        pad = [0] * ndim
        if dim_split is None or (not isinstance(dim_split, (int, np.integer)) and len(dim_split) == 0):
            if shape_block is not None:
                sb = _make_iterable(shape_block, ndim)
                dim_split = [j for j, d in enumerate(sb) if d is not None]
            elif blocks_number is not None:
                dim_split = list(range(len(_make_iterable(blocks_number))))
            else:
                dim_split = []
        self.dim_split = tuple(int(d) for d in _make_iterable(dim_split))
        n_rep = max(self.dim_split) + 1 if self.dim_split else ndim
        pad_amount = _make_iterable(padding, n_rep)
        sizes: dict[int, int]
        if blocks_number is not None:
            numbers = _make_iterable(blocks_number, len(self.dim_split))
            sizes = {d: int(np.ceil(self.shape_cropped[d] / n)) for d, n in zip(self.dim_split, numbers)}
        else:
            sb = _make_iterable(shape_block, n_rep) if shape_block is not None else ()
            sizes = {d: sb[d] for d in self.dim_split if d < len(sb) and sb[d] is not None}
        for dim in self.dim_split:
            if dim in sizes:
                block[dim] = max(1, min(int(sizes[dim]), self.shape_cropped[dim]))
            if dim < len(pad_amount):
                pad[dim] = int(pad_amount[dim])
        self._shape_block = tuple(block)
        self._padding = tuple(pad)

    # geometry, recomputed when a setter changes an input
    @property
    def shape_full(self) -> tuple[int, ...]:
        """Shape of the whole array, before cropping."""
        return self._shape_full

    @shape_full.setter
    def shape_full(self, value: Sequence[int]) -> None:
        self._shape_full = tuple(value)
        self._cache.clear()

    @property
    def crop(self) -> tuple[tuple[int, int], ...]:
        """Elements left out at each end of each axis."""
        return self._crop  # type: ignore[return-value]

    @crop.setter
    def crop(self, value: Sequence[tuple[int, int]] | None) -> None:
        self._crop = tuple(tuple(c) for c in value) if value is not None else ((0, 0),) * len(self.shape_full)
        self._cache.clear()

    @property
    def shape_block(self) -> tuple[int, ...]:
        """Block size per axis."""
        return self._shape_block

    @shape_block.setter
    def shape_block(self, value: Sequence[int]) -> None:
        self._shape_block = tuple(value)
        self._cache.clear()

    @property
    def padding(self) -> tuple[int, ...]:
        """Overlap between neighbouring blocks per axis."""
        return self._padding

    @padding.setter
    def padding(self, value: Sequence[int]) -> None:
        self._padding = tuple(value)
        self._cache.clear()

    @property
    def shape_cropped(self) -> tuple[int, ...]:
        """Shape of the array after cropping: what the blocks tile."""
        return tuple(d - lo - hi for d, (lo, hi) in zip(self._shape_full, self._crop))

    @property
    def starts(self) -> tuple[int, ...]:
        """Offset of the cropped array in the full one."""
        return tuple(lo for lo, _ in self._crop)

    @property
    def n_dims(self) -> int:
        """Number of dimensions."""
        return len(self.shape_cropped)

    @property
    def grid_shape(self) -> tuple[int, ...]:
        """Number of blocks along each axis."""
        return grid_shape(self.shape_cropped, self.shape_block, self.padding)

    @property
    def n_blocks(self) -> int:
        """Total number of blocks."""
        return int(np.prod(self.grid_shape, dtype=np.int64))

    def _bounds(self) -> tuple[np.ndarray, np.ndarray]:
        if "bounds" not in self._cache:
            grid = self.grid_shape
            idx = np.stack(np.meshgrid(*(np.arange(n) for n in grid), indexing="ij"), axis=-1)
            idx = idx.reshape(grid + (len(grid),)).astype(np.int64)
            bs, pd = np.array(self.shape_block), np.array(self.padding)
            st, n = np.array(self.starts), np.array(self.shape_cropped)
            starts = st + idx * bs
            ends = np.minimum(n + st, (idx + 1) * bs + pd + st)
            self._cache["bounds"] = (starts, ends)
        return self._cache["bounds"]  # type: ignore[no-any-return]

    @property
    def block_starts(self) -> np.ndarray:
        """Start of every block, shaped ``grid_shape + (ndim,)``."""
        return self._bounds()[0]

    @property
    def block_ends(self) -> np.ndarray:
        """End (exclusive) of every block, padding included, shaped ``grid_shape + (ndim,)``."""
        return self._bounds()[1]

    def slices(self, as_tuples: bool = False) -> Iterator[tuple[tuple[int, ...], tuple[Any, ...]]]:
        """Iterate ``(block coords, slices)`` (or ``(coords, ((start, end), ...))``) in file order."""
        starts, ends = self._bounds()
        for idx in itertools.product(*(range(n) for n in self.grid_shape)):
            pairs = zip(starts[idx].tolist(), ends[idx].tolist())
            if as_tuples:
                yield idx, tuple((s, e) for s, e in pairs)
            else:
                yield idx, tuple(slice(s, e) for s, e in pairs)

    def __getitem__(self, item: int | Sequence[int]) -> tuple[slice, ...]:
        """Slices of block `item` (a linear index or block coordinates)."""
        if isinstance(item, (int, np.integer)):
            idx = self.linear_to_cartesian(int(item))
        elif isinstance(item, tuple):
            idx = item
        else:
            raise TypeError(f"a block is selected by an integer or a tuple of integers, got {item!r}")
        starts, ends = self._bounds()
        return tuple(slice(int(s), int(e)) for s, e in zip(starts[idx], ends[idx]))

    def __len__(self) -> int:
        return self.n_blocks

    def linear_to_cartesian(self, lin_idx: int) -> tuple[int, ...]:
        """Block coordinates of linear block index `lin_idx` (C order)."""
        return tuple(int(i) for i in np.unravel_index(lin_idx, self.grid_shape))

    def cartesian_to_linear(self, ca_idx: Sequence[int]) -> int:
        """Linear index (file number) of the block at coordinates `ca_idx`."""
        return int(np.ravel_multi_index(tuple(ca_idx), self.grid_shape))

    def neighbour_blocks(self, i_block: int, dims: Sequence[int] | int | None = None) -> np.ndarray:
        """Linear indices of the blocks next to `i_block` (diagonals included), along `dims` only if given."""
        block_idx = self.linear_to_cartesian(i_block)
        grid = self.grid_shape
        active = np.ones(self.n_dims, dtype=bool)
        if dims is not None:
            active[:] = False
            active[list(_make_iterable(dims))] = True
        ranges = [
            range(max(c - 1, 0), min(c + 2, grid[d])) if active[d] else [c]
            for d, c in enumerate(block_idx)
        ]
        neighbours = [idx for idx in itertools.product(*ranges) if idx != block_idx]
        if not neighbours:
            return np.array([], dtype=np.intp)
        linear: np.ndarray[Any, Any] = np.ravel_multi_index(np.stack(neighbours, 1), grid)
        return linear

    def _axis_starts(self, axis: int) -> np.ndarray:
        sel = tuple(slice(None) if i == axis else 0 for i in range(self.n_dims)) + (axis,)
        return self.block_starts[sel]

    def blocks_to_take(
        self, start_take: Sequence[int], end_take: Sequence[int]
    ) -> tuple[list[tuple[int, int]], list[int], list[int]]:
        """Blocks covering ``[start_take, end_take)``: per axis (first, last+1), and offsets in the end blocks."""
        block_slices, s_idx, e_idx = [], [], []
        for axis, (start, end) in enumerate(zip(start_take, end_take)):
            starts = self._axis_starts(axis)
            s = max(0, int(np.searchsorted(starts, start, side="right")) - 1)
            e = max(s + 1, int(np.searchsorted(starts, end, side="left")))
            block_slices.append((s, e))
            s_idx.append(int(start - starts[s]))
            e_idx.append(int(end - starts[e - 1]))
        return block_slices, s_idx, e_idx

    @staticmethod
    def block_to_slices(block: Sequence[tuple[int, int]]) -> tuple[slice, ...]:
        """``((start, end), ...)`` → ``(slice(start, end), ...)``."""
        return tuple(slice(lb, rb) for lb, rb in block)

    def centres(self) -> np.ndarray:
        """Centre of every block, shaped ``grid_shape + (ndim,)``."""
        centres: np.ndarray[Any, Any] = (self.block_ends + self.block_starts) / 2
        return centres

    def block_containing_coords(self, coords: Sequence[int]) -> list[int]:
        """Block coordinates of the block whose start is the last one at or before `coords`."""
        return [
            max(int(np.searchsorted(self._axis_starts(axis), c, side="right")) - 1, 0)
            for axis, c in enumerate(coords)
        ]

    def drop_dim(self, dim_to_drop: int) -> Blocks:
        """The same tiling without axis `dim_to_drop` (e.g. spatial blocks of spatio-temporal ones)."""
        return Blocks(
            _drop_ith(self.shape_full, dim_to_drop),
            shape_block=_drop_ith(self.shape_block, dim_to_drop),
            padding=_drop_ith(self.padding, dim_to_drop),
            crop=_drop_ith(self.crop, dim_to_drop),
        )

    def serialize(self) -> dict[str, Any]:
        """A JSON-able description; :meth:`deserialize` rebuilds the object from it."""
        return dict(
            shape_full=self.shape_full,
            shape_block=self.shape_block,
            crop_start=tuple(c[0] for c in self.crop),
            crop_end=tuple(c[1] for c in self.crop),
            padding=self.padding,
        )

    @classmethod
    def deserialize(cls, d: dict[str, Any]) -> Blocks:
        """Inverse of :meth:`serialize`."""
        ndim = len(d["shape_full"])
        crop = tuple(zip(d.get("crop_start", (0,) * ndim), d.get("crop_end", (0,) * ndim)))
        return cls(d["shape_full"], shape_block=d["shape_block"], padding=d.get("padding", 0), crop=crop)

    def __repr__(self) -> str:
        return f"Blocks(shape={self.shape_cropped}, shape_block={self.shape_block}, grid={self.grid_shape})"
