"""Turn a numpy-style index into per-block reads. Pure: no file I/O.

Semantics (the contract of ``SplitDataset.__getitem__``): exactly numpy's for integers
(Python or NumPy, negative too), slices with any step (negative included), ``...``,
``None``/``np.newaxis``, and *one* advanced index: an integer array or list (any
shape) or a boolean mask on one axis. Integers combined with that array follow
numpy's rule, including moving the array's dimensions to the front when the
advanced indices are not next to each other. Arrays on several axes raise
``IndexError``; ``SplitDataset.oindex`` offers outer (orthogonal) selection for them.

The read is planned in the *buffer* space: one buffer axis per array axis (an
integer keeps a length-1 axis, a negative-step slice is read forwards, an index
array is read as its sorted unique values). :meth:`Indexer.finish` then turns the
buffer into numpy's result with views and one ``take`` at most.
"""

from __future__ import annotations

import itertools
import operator
from dataclasses import dataclass
from typing import Any, Iterator, Sequence, Union

import numpy as np

from .errors import InvalidIndexError
from .grid import BlockGrid

__all__ = ["Indexer", "DimSelection", "LocalSel", "normalize_index"]

#: What one axis of a block read selects: a slice (step > 0) or sorted unique indices.
LocalSel = Union[slice, np.ndarray]

_INT = 0
_SLICE = 1
_ARRAY = 2


@dataclass(frozen=True)
class DimSelection:
    """What is selected along one array axis, in forward order.

    ``kind`` is ``_INT`` (``start``), ``_SLICE`` (``start``, ``step`` > 0, ``count``,
    ``flip`` if the user's step was negative) or ``_ARRAY`` (``values``: sorted unique
    indices; ``take``: how to rebuild the user's order and shape, or None).
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
        if self.kind == _ARRAY:
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
        size, nb = grid.shape_block[axis], grid.grid_shape[axis]
        blocks = np.minimum(values // size, nb - 1)
        cuts = np.flatnonzero(np.diff(blocks)) + 1
        bounds = [0, *cuts.tolist(), len(values)]
        out: list[tuple[int, LocalSel, slice]] = []
        for i0, i1 in zip(bounds[:-1], bounds[1:]):
            b = int(blocks[i0])
            local = values[i0:i1] - b * size
            out.append((b, _as_slice(local), slice(i0, i1)))
        return out


def _as_slice(local: np.ndarray) -> LocalSel:
    """Sorted unique indices as a slice when they are evenly spaced (HDF5 reads those fastest)."""
    if len(local) == 1:
        return slice(int(local[0]), int(local[0]) + 1, 1)
    steps = np.diff(local)
    if np.all(steps == steps[0]):
        return slice(int(local[0]), int(local[-1]) + 1, int(steps[0]))
    return local


def _type_error(item: Any) -> InvalidIndexError:
    return InvalidIndexError(
        "only integers, slices (`:`), ellipsis (`...`), numpy.newaxis (`None`) and "
        f"integer or boolean arrays are valid indices; got {item!r} of type {type(item).__name__}"
    )


def _convert(item: Any) -> Any:
    """One index item as int, slice, None, Ellipsis or ('int'|'bool', ndarray)."""
    if item is None or item is Ellipsis or isinstance(item, slice):
        return item
    if isinstance(item, (bool, np.bool_)):
        raise InvalidIndexError(f"a scalar boolean index ({item!r}) is not supported")
    if isinstance(item, (int, np.integer)):
        return int(item)
    if isinstance(item, (list, np.ndarray)) or (
        hasattr(item, "__array__") and hasattr(item, "dtype") and hasattr(item, "shape")
    ):
        try:
            arr = np.asarray(item)
        except ValueError as e:  # ragged nested lists
            raise InvalidIndexError(f"cannot use {item!r} as an index: {e}") from None
        if arr.dtype == np.bool_:
            if arr.ndim == 0:
                raise InvalidIndexError(f"a scalar boolean index ({item!r}) is not supported")
            return ("bool", arr)
        if arr.dtype.kind in "iu":
            if arr.ndim == 0:
                return int(arr)
            return ("int", arr.astype(np.intp, copy=False))
        if arr.size == 0 and isinstance(item, list):
            return ("int", arr.astype(np.intp))
        raise InvalidIndexError(
            f"arrays used as indices must be of integer or boolean type, got dtype {arr.dtype}"
        )
    if not isinstance(item, (float, complex, str, bytes, tuple)) and hasattr(item, "__index__"):
        return operator.index(item)
    raise _type_error(item)


def _check_int(i: int, n: int, axis: int) -> int:
    if not -n <= i < n:
        raise IndexError(f"index {i} is out of bounds for axis {axis} with size {n}")
    return i + n if i < 0 else i


def _dim_from_slice(s: slice, n: int) -> DimSelection:
    start, stop, step = s.indices(n)  # raises TypeError / ValueError like numpy
    count = len(range(start, stop, step))
    if step > 0:
        return DimSelection(_SLICE, start, step, count)
    if count == 0:
        return DimSelection(_SLICE, 0, 1, 0, flip=True)
    first = start + (count - 1) * step
    return DimSelection(_SLICE, first, -step, count, flip=True)


def _dim_from_array(arr: np.ndarray, n: int, axis: int) -> DimSelection:
    if arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < -n or hi >= n:
            bad = lo if lo < -n else hi
            raise IndexError(f"index {bad} is out of bounds for axis {axis} with size {n}")
        if lo < 0:
            arr = np.where(arr < 0, arr + n, arr)
    flat = arr.reshape(-1)
    if flat.size and np.all(flat[1:] > flat[:-1]):
        values, take = flat, None
    else:
        values, inverse = np.unique(flat, return_inverse=True)
        take = inverse.reshape(arr.shape)
    if take is None and arr.ndim != 1:
        take = np.arange(flat.size).reshape(arr.shape)
    return DimSelection(_ARRAY, count=len(values), values=values, take=take)


@dataclass(frozen=True)
class Indexer:
    """A normalised selection on an array of `shape`.

    Examples
    --------
    >>> ix = Indexer.create((slice(None, None, -2), 1), (5, 3))
    >>> ix.shape, ix.buffer_shape
    ((3,), (3, 1))
    """

    dims: tuple[DimSelection, ...]
    buffer_shape: tuple[int, ...]
    shape: tuple[int, ...]
    # (kind, payload) per expanded index item, used by finish(): 'int', 'slice', 'array', 'new'
    items: tuple[str, ...]
    move_to_front: bool
    outer: bool
    ellipsis: bool = False  # numpy returns a 0-d array, not a scalar, when `...` was used

    @classmethod
    def create(cls, selection: Any, shape: Sequence[int], *, outer: bool = False) -> Indexer:
        """Normalise `selection` against `shape`; raise numpy's exception types on bad input."""
        shape = tuple(shape)
        ndim = len(shape)
        raw = selection if isinstance(selection, tuple) else (selection,)
        conv = [_convert(it) for it in raw]
        n_ell = sum(1 for it in conv if it is Ellipsis)
        if n_ell > 1:
            raise IndexError("an index can only have a single ellipsis ('...')")
        used = sum(it[1].ndim if isinstance(it, tuple) and it[0] == "bool" else 1
                   for it in conv if it is not None and it is not Ellipsis)
        if used > ndim:
            raise IndexError(
                f"too many indices for array: array is {ndim}-dimensional, but {used} were indexed"
            )
        if n_ell:
            pos = next(i for i, it in enumerate(conv) if it is Ellipsis)
            conv[pos : pos + 1] = [slice(None)] * (ndim - used)
        else:
            conv.extend([slice(None)] * (ndim - used))

        dims: list[DimSelection] = []
        items: list[str] = []
        adv_positions: list[int] = []
        n_arrays = 0
        for pos, it in enumerate(conv):
            axis = len(dims)
            if it is None:
                items.append("new")
            elif isinstance(it, int):
                i = _check_int(it, shape[axis], axis)
                dims.append(DimSelection(_INT, i, 1, 1))
                items.append("int")
                adv_positions.append(pos)
            elif isinstance(it, slice):
                dims.append(_dim_from_slice(it, shape[axis]))
                items.append("slice")
            else:
                kind, arr = it
                if kind == "bool":
                    if arr.ndim != 1:
                        raise IndexError(
                            f"a {arr.ndim}-dimensional boolean mask indexes several axes; "
                            "only one axis may take an array index"
                        )
                    if arr.shape[0] != shape[axis]:
                        raise IndexError(
                            f"boolean index did not match indexed array along axis {axis}; "
                            f"size of axis is {shape[axis]} but size of corresponding boolean "
                            f"axis is {arr.shape[0]}"
                        )
                    arr = np.flatnonzero(arr)
                elif outer and arr.ndim != 1:
                    raise IndexError(f"oindex takes 1-D index arrays, got shape {arr.shape}")
                n_arrays += 1
                if n_arrays > 1 and not outer:
                    raise IndexError(
                        "array indices on more than one axis are not supported; "
                        "use ds.oindex[...] for outer (orthogonal) selection"
                    )
                dims.append(_dim_from_array(arr, shape[axis], axis))
                items.append("array")
                adv_positions.append(pos)
        move = False
        if n_arrays and not outer:
            move = adv_positions != list(range(adv_positions[0], adv_positions[-1] + 1))
        buffer_shape = tuple(d.count for d in dims)
        out_shape: list[int] = []
        lead: list[int] = []
        it_dims = iter(dims)
        for kind in items:
            if kind == "new":
                out_shape.append(1)
                continue
            d = next(it_dims)
            if kind == "slice":
                out_shape.append(d.count)
            elif kind == "array":
                idx_shape = list(d.take.shape) if d.take is not None else [d.count]
                if move:
                    lead = idx_shape
                else:
                    out_shape.extend(idx_shape)
        return cls(
            tuple(dims), buffer_shape, tuple(lead + out_shape), tuple(items), move, outer, bool(n_ell)
        )

    def block_reads(self, grid: BlockGrid) -> Iterator[tuple[tuple[int, ...], tuple[LocalSel, ...], tuple[slice, ...]]]:
        """Yield ``(block coords, selection inside the block, selection in the buffer)``."""
        per_axis = [d.project(grid, axis) for axis, d in enumerate(self.dims)]
        for combo in itertools.product(*per_axis):
            yield (
                tuple(c[0] for c in combo),
                tuple(c[1] for c in combo),
                tuple(c[2] for c in combo),
            )

    def finish(self, buf: np.ndarray) -> Any:
        """numpy's result from the buffer the reads filled."""
        dims = self.dims
        # 1. rebuild order/duplicates/shape of the index array (at most one take per array axis)
        offset = 0
        for axis, d in enumerate(dims):
            if d.kind == _ARRAY:
                if d.take is not None:
                    buf = np.take(buf, d.take, axis=axis + offset)
                offset += (d.take.ndim if d.take is not None else 1) - 1
        # 2. negative steps, dropped integer axes and new axes, as one view
        view: list[Any] = []
        it_dims = iter(dims)
        for kind in self.items:
            if kind == "new":
                view.append(np.newaxis)
                continue
            d = next(it_dims)
            if kind == "int":
                view.append(0)
            elif kind == "slice":
                view.append(slice(None, None, -1) if d.flip else slice(None))
            else:
                view.extend([slice(None)] * (d.take.ndim if d.take is not None else 1))
        out = buf[tuple(view) + ((Ellipsis,) if self.ellipsis else ())]
        # 3. numpy puts the advanced dimensions first when they were not adjacent
        if self.move_to_front:
            d_arr = next(d for d in dims if d.kind == _ARRAY)
            k = d_arr.take.ndim if d_arr.take is not None else 1
            start = 0
            it_dims = iter(dims)
            for kind in self.items:
                if kind == "new":
                    start += 1
                    continue
                d = next(it_dims)
                if kind == "slice":
                    start += 1
                elif kind == "array":
                    break
            out = np.moveaxis(out, list(range(start, start + k)), list(range(k)))
        return out


def normalize_index(selection: Any, shape: Sequence[int]) -> Indexer:
    """Normalise a numpy-style index against `shape` (see the module docstring).

    Examples
    --------
    >>> normalize_index((0, ..., [2, 1]), (4, 5, 6)).shape  # numpy moves the array axis first
    (2, 5)
    """
    return Indexer.create(selection, shape)
