"""Block geometry: which part of the array each block file holds (``docs/format.md`` §3). Arithmetic only."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = ["BlockGrid", "grid_shape"]


def _axis_blocks(n: int, b: int, pad: int) -> int:
    if n <= 0:
        return 0
    return max(1, -(-(n - pad) // b))


def grid_shape(
    shape: tuple[int, ...], shape_block: tuple[int, ...], padding: tuple[int, ...] | None = None
) -> tuple[int, ...]:
    """Number of blocks along each axis: ``ceil((n - pad) / b)`` (at least 1 for a non-empty axis).

    Examples
    --------
    >>> grid_shape((23, 3), (5, 3))
    (5, 1)
    >>> grid_shape((11, 6, 5), (4, 3, 5), (1, 1, 0))
    (3, 2, 1)
    """
    pads = padding if padding else (0,) * len(shape)
    return tuple(_axis_blocks(n, b, p) for n, b, p in zip(shape, shape_block, pads))


@dataclass(frozen=True)
class BlockGrid:
    """A regular grid of blocks over an array, with optional overlap (padding).

    Block ``i`` along an axis holds ``[i*b, min(n, (i+1)*b + pad))`` of the array. For
    reading, each element belongs to exactly one block: block ``i`` *owns*
    ``[i*b, (i+1)*b)``, and the last block owns everything up to ``n``.

    Examples
    --------
    >>> g = BlockGrid((9, 20, 11), (4, 8, 11))
    >>> g.grid_shape, g.n_blocks, g.linear((1, 2, 0))
    ((3, 3, 1), 9, 5)
    >>> g.block_shape((2, 2, 0))
    (1, 4, 11)
    """

    shape: tuple[int, ...]
    shape_block: tuple[int, ...]
    padding: tuple[int, ...] = ()
    grid_shape: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "shape_block", tuple(int(s) for s in self.shape_block))
        pads = tuple(int(p) for p in self.padding) if self.padding else (0,) * len(self.shape)
        object.__setattr__(self, "padding", pads)
        if not len(self.shape) == len(self.shape_block) == len(self.padding):
            raise ValueError(
                f"shape {self.shape}, shape_block {self.shape_block} and padding {self.padding} "
                "must have the same length"
            )
        if any(b < 1 for b in self.shape_block):
            raise ValueError(f"block sizes must be >= 1, got {self.shape_block}")
        object.__setattr__(self, "grid_shape", grid_shape(self.shape, self.shape_block, self.padding))

    @property
    def ndim(self) -> int:
        """Number of dimensions of the array."""
        return len(self.shape)

    @property
    def n_blocks(self) -> int:
        """Total number of blocks (files)."""
        return math.prod(self.grid_shape)

    def linear(self, coords: tuple[int, ...]) -> int:
        """C-order (row-major) index of the block at `coords`: the file number."""
        idx = 0
        for c, n in zip(coords, self.grid_shape):
            if not 0 <= c < n:
                raise IndexError(f"block {tuple(coords)} is outside the block grid {self.grid_shape}")
            idx = idx * n + c
        return idx

    def coords(self, linear: int) -> tuple[int, ...]:
        """Block coordinates of file number `linear`."""
        if not 0 <= linear < self.n_blocks:
            raise IndexError(f"block {linear} is outside 0..{self.n_blocks - 1}")
        out = []
        for n in reversed(self.grid_shape):
            linear, r = divmod(linear, n)
            out.append(r)
        return tuple(reversed(out))

    def block_start(self, axis: int, i: int) -> int:
        """First array index held by block `i` along `axis`."""
        return i * self.shape_block[axis]

    def owned_stop(self, axis: int, i: int) -> int:
        """End (exclusive) of the part of block `i` that no later block overrides."""
        if i == self.grid_shape[axis] - 1:
            return self.shape[axis]
        return min(self.shape[axis], (i + 1) * self.shape_block[axis])

    def stored_stop(self, axis: int, i: int) -> int:
        """End (exclusive) of what block `i` holds, padding included."""
        return min(self.shape[axis], (i + 1) * self.shape_block[axis] + self.padding[axis])

    def block_of(self, axis: int, index: int) -> int:
        """The block along `axis` that owns array index `index`."""
        return min(index // self.shape_block[axis], self.grid_shape[axis] - 1)

    def block_slices(self, coords: tuple[int, ...]) -> tuple[slice, ...]:
        """Region of the array stored in block `coords`, padding included."""
        return tuple(
            slice(self.block_start(a, c), self.stored_stop(a, c)) for a, c in enumerate(coords)
        )

    def block_shape(self, coords: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of the array stored in block `coords`, padding included."""
        return tuple(s.stop - s.start for s in self.block_slices(coords))

    def iter_coords(self) -> Iterator[tuple[int, ...]]:
        """All block coordinates, in file order."""
        return itertools.product(*(range(n) for n in self.grid_shape))

    def with_shape(self, shape: tuple[int, ...]) -> BlockGrid:
        """The same blocking over an array of another shape (a growing or truncated dataset)."""
        return BlockGrid(tuple(shape), self.shape_block, self.padding)
