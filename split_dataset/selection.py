"""What an index selects along each axis, and which block reads that takes. Pure: no file I/O."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .grid import BlockGrid

__all__ = ["DimSelection", "LocalSel", "INT", "SLICE", "ARRAY", "as_slice", "blocks_of", "walk"]

#: What one axis of a block read selects: a slice (step > 0) or sorted unique indices.
LocalSel = slice | np.ndarray

INT = 0
SLICE = 1
ARRAY = 2


@dataclass(frozen=True)
class DimSelection:
    """What is selected along one array axis, in forward order.

    ``kind`` is ``INT`` (``start``), ``SLICE`` (``start``, ``step`` > 0, ``count``,
    ``flip`` if the user's step was negative) or ``ARRAY`` (``values``: sorted unique
    indices; ``take``: how to rebuild the user's order from them, or None).

    Examples
    --------
    >>> d = DimSelection(SLICE, start=2, step=3, count=4)
    >>> [(b, local) for b, local, _ in d.project(BlockGrid((20,), (8,)), 0)]
    [(0, slice(2, 6, 3)), (1, slice(0, 4, 3))]
    """

    kind: int
    start: int = 0
    step: int = 1
    count: int = 1
    flip: bool = False
    values: np.ndarray | None = None
    take: np.ndarray | None = None

    def project(self, grid: BlockGrid, axis: int) -> list[tuple[int, LocalSel, slice]]:
        """Blocks along `axis` that this selection touches: (block, in-block sel, buffer sel)."""
        if self.count == 0:
            return []
        if self.kind == ARRAY:
            return self._project_array(grid, axis)
        start, step, count = self.start, self.step, self.count
        last = start + (count - 1) * step
        out: list[tuple[int, LocalSel, slice]] = []
        for b in range(grid.block_of(axis, start), grid.block_of(axis, last) + 1):
            bs, be = grid.block_start(axis, b), grid.owned_stop(axis, b)
            k0 = max(0, -(-(bs - start) // step))
            k1 = min(count, -(-(be - start) // step))
            if k0 < k1:
                g0 = start + k0 * step - bs
                out.append((b, slice(g0, g0 + (k1 - k0 - 1) * step + 1, step), slice(k0, k1)))
        return out

    def _project_array(self, grid: BlockGrid, axis: int) -> list[tuple[int, LocalSel, slice]]:
        values = self.values
        assert values is not None
        size = grid.shape_block[axis]
        blocks = blocks_of(values, grid, axis)
        cuts = np.flatnonzero(np.diff(blocks)) + 1
        bounds = [0, *cuts.tolist(), len(values)]
        out: list[tuple[int, LocalSel, slice]] = []
        for i0, i1 in itertools.pairwise(bounds):
            b = int(blocks[i0])
            local = values[i0:i1] - b * size
            out.append((b, as_slice(local), slice(i0, i1)))
        return out


def blocks_of(values: np.ndarray, grid: BlockGrid, axis: int) -> np.ndarray:
    """The block along `axis` that owns each of `values`."""
    blocks: np.ndarray = np.minimum(values // grid.shape_block[axis], grid.grid_shape[axis] - 1)
    return blocks


def as_slice(local: np.ndarray) -> LocalSel:
    """Sorted unique indices as a slice when they are evenly spaced (HDF5 reads those fastest)."""
    if len(local) == 1:
        return slice(int(local[0]), int(local[0]) + 1, 1)
    steps = np.diff(local)
    if np.all(steps == steps[0]):
        return slice(int(local[0]), int(local[-1]) + 1, int(steps[0]))
    return local



def walk(
    per_axis: list[list[tuple[int, LocalSel, slice]]],
    linked_pos: dict[int, int],
    prefixes: list[set[tuple[int, ...]]],
) -> Iterator[tuple[tuple[int, ...], tuple[LocalSel, ...], tuple[slice, ...]]]:
    """Block reads in C order, keeping only combinations of linked blocks listed in `prefixes`."""
    ndim = len(per_axis)

    def rec(axis: int, chosen: tuple[tuple[int, LocalSel, slice], ...], key: tuple[int, ...]) -> Iterator[Any]:
        if axis == ndim:
            yield (tuple(c[0] for c in chosen), tuple(c[1] for c in chosen), tuple(c[2] for c in chosen))
            return
        j = linked_pos.get(axis)
        for entry in per_axis[axis]:
            if j is None:
                yield from rec(axis + 1, chosen + (entry,), key)
            else:
                k = key + (entry[0],)
                if k in prefixes[j + 1]:
                    yield from rec(axis + 1, chosen + (entry,), k)

    yield from rec(0, (), ())
