"""Turn a numpy-style index into per-block reads. Pure: no file I/O.

Semantics (the contract of ``SplitDataset.__getitem__``): exactly numpy's, with numpy
as the oracle for the values, shape and dtype of the result and for the type of the
exception. That covers integers (Python or NumPy, negative too), slices with any step,
``...``, ``None``/``np.newaxis``, and advanced indices: integer arrays, lists and nested
lists of any shape, boolean masks of any number of dimensions (a k-dimensional mask
indexes k consecutive axes), scalar booleans, and several of them at once, broadcast
together and taken pointwise. As in numpy, integers count as advanced indices when an
array is present, and the advanced dimensions of the result go first unless the
advanced indices are adjacent in the index as written (a slice, ``...`` -- even one
that expands to no axis -- or ``None`` between them separates them).

Errors follow numpy's precedence: the items are converted left to right (a bad type
raises :class:`~split_dataset.errors.InvalidIndexError`, an IndexError and TypeError;
a ragged nested list raises numpy's ValueError; an integer beyond the platform's index
range raises an OverflowError that is also an IndexError), then too many indices and
boolean masks of the wrong shape raise IndexError, then integers and slices are checked
left to right (IndexError out of range, ValueError for a zero step, TypeError for
non-integer slice bounds), then index arrays must broadcast and be in range
(IndexError; like numpy, out-of-range values are not checked when the broadcast
selection is empty).

The read is planned in the *buffer* space, always orthogonally: one buffer axis per
array axis (an integer keeps a length-1 axis, a negative-step slice is read forwards,
an index array is read as the sorted unique values it needs on its axis).
:meth:`Indexer.finish` then turns the buffer into numpy's result by indexing it in
memory with the same index, remapped into the buffer. When several axes carry index
arrays (a pointwise selection), the buffer has the outer product of the unique
coordinates on those axes -- a diagonal of 1000 points on a 1000 x 1000 plane needs a
1000 x 1000 buffer -- but only the block combinations that hold at least one selected
point are read. ``outer=True`` (``SplitDataset.oindex``) selects orthogonally instead:
each 1-D index array or mask selects along its own axis, like ``np.ix_``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InvalidIndexError
from .grid import BlockGrid
from .index_items import ARR as _ARR
from .index_items import BOOL as _BOOL
from .index_items import ELL as _ELL
from .index_items import IDX as _IDX
from .index_items import MASK as _MASK
from .index_items import MAXDIMS as _MAXDIMS
from .index_items import NEW as _NEW
from .index_items import SLC as _SLC
from .index_items import check_array as _check_array
from .index_items import check_int as _check_int
from .index_items import convert as _convert
from .index_items import dim_from_array as _dim_from_array
from .index_items import dim_from_slice as _dim_from_slice
from .index_items import full_dim as _full_dim
from .index_items import used_axes as _used_axes
from .selection import INT as _INT
from .selection import DimSelection, LocalSel
from .selection import blocks_of as _blocks_of
from .selection import walk as _walk

__all__ = ["DimSelection", "Indexer", "LocalSel", "normalize_index"]


@dataclass(frozen=True)
class Indexer:
    """A normalised selection on an array of `shape`: block reads into a buffer, then numpy's result.

    Create it with :meth:`create`. ``buffer_shape`` is the shape of the buffer the
    reads of :meth:`block_reads` fill (one axis per array axis); :meth:`finish` turns
    that buffer into the result, of shape ``shape``.

    Examples
    --------
    >>> ix = Indexer.create((slice(None, None, -2), 1), (5, 3))
    >>> ix.shape, ix.buffer_shape
    ((3,), (3, 1))
    """

    dims: tuple[DimSelection, ...]
    buffer_shape: tuple[int, ...]
    shape: tuple[int, ...]
    outer: bool
    #: index applied to the buffer by finish() (arrays in it are remapped into the buffer)
    view: tuple[Any, ...] = ()
    #: outer mode: (buffer axis, take) applied before `view`
    takes: tuple[tuple[int, np.ndarray], ...] = ()
    #: a single advanced index read as a slice: (axis of the view to move to the front) or None
    move_from: int | None = None
    #: axes whose index arrays broadcast together (pointwise), with their remapped indices
    linked: tuple[tuple[int, np.ndarray], ...] = ()
    #: the result is empty: nothing is read and the buffer is empty
    empty: bool = False

    @classmethod
    def create(cls, selection: Any, shape: Sequence[int], *, outer: bool = False) -> Indexer:
        """Normalise `selection` against `shape`; raise numpy's exception types on bad input.

        Parameters
        ----------
        selection
            Anything numpy accepts as an index (see the module docstring).
        shape
            Shape of the indexed array.
        outer
            Orthogonal selection (``SplitDataset.oindex``): 1-D index arrays and masks
            each select along their own axis and stay in place.

        Examples
        --------
        >>> Indexer.create(([0, 2], [1, 3]), (4, 5)).shape  # pointwise, like numpy
        (2,)
        >>> Indexer.create(([0, 2], [1, 3]), (4, 5), outer=True).shape
        (2, 2)
        """
        shape = tuple(int(n) for n in shape)
        ndim = len(shape)
        raw = selection if isinstance(selection, tuple) else (selection,)
        if len(raw) > 2 * _MAXDIMS:
            raise IndexError("too many indices for array")

        # 1. convert the items left to right (numpy raises type errors in this order)
        items: list[tuple[str, Any]] = []
        has_ell = False
        for it in raw:
            conv = _convert(it)
            if conv[0] == _ELL:
                if has_ell:
                    raise IndexError("an index can only have a single ellipsis ('...')")
                has_ell = True
            items.append(conv)

        # 2. count axes; too many indices, too many dimensions, mask shapes
        used = sum(_used_axes(k, p) for k, p in items)
        if used > ndim:
            raise IndexError(
                f"too many indices for array: array is {ndim}-dimensional, but {used} were indexed"
            )
        n_ell = ndim - used
        if n_ell and not has_ell:
            items.append((_ELL, None))
        n_fancy = sum(1 for k, _ in items if k in (_ARR, _MASK, _BOOL))
        if n_fancy or any(k == _NEW for k, _ in items):
            new_ndim = n_ell + sum(1 for k, _ in items if k in (_SLC, _NEW))
            fancy_ndim = max([p.ndim if k == _ARR else 1 for k, p in items if k in (_ARR, _MASK, _BOOL)] or [0])
            if new_ndim + fancy_ndim > _MAXDIMS:
                raise IndexError(
                    f"number of dimensions must be within [0, {_MAXDIMS}], "
                    f"indexing result would have {new_ndim + fancy_ndim}"
                )
        axis = 0
        for k, p in items:
            if k == _MASK:
                for j, m in enumerate(p.shape):
                    if m and m != shape[axis + j]:  # numpy lets a 0-length mask axis through
                        raise IndexError(
                            f"boolean index did not match indexed array along axis {axis + j}; size "
                            f"of axis is {shape[axis + j]} but size of corresponding boolean axis is {m}"
                        )
            axis += n_ell if k == _ELL else _used_axes(k, p)
        if outer:
            for k, p in items:
                if k == _BOOL:
                    raise InvalidIndexError(f"oindex does not take a scalar boolean index ({p!r})")
                if k in (_ARR, _MASK) and p.ndim != 1:
                    raise IndexError(f"oindex takes 1-D index arrays and masks, got shape {p.shape}")

        # 3. integers and slices, left to right
        resolved: list[tuple[str, Any]] = []
        axis = 0
        for k, p in items:
            used_here = n_ell if k == _ELL else _used_axes(k, p)
            if k == _IDX:
                p = _check_int(p, shape[axis], axis)
            elif k == _SLC:
                p = _dim_from_slice(p, shape[axis])
            elif k == _MASK:
                p = np.nonzero(p)
            resolved.append((k, p))
            axis += used_here

        # 4. index arrays: broadcast (pointwise) or each on its own (outer), then range
        fancy_shapes: list[tuple[int, ...]] = []
        for k, p in resolved:
            if k == _ARR:
                fancy_shapes.append(p.shape)
            elif k == _MASK:
                fancy_shapes.append(p[0].shape)
            elif k == _BOOL:
                fancy_shapes.append((int(p),))
        bshape: tuple[int, ...] = ()
        if n_fancy and not outer:
            try:
                bshape = tuple(np.broadcast_shapes(*fancy_shapes))
            except ValueError:
                raise IndexError(
                    "shape mismatch: indexing arrays could not be broadcast together with shapes "
                    + " ".join(str(s) for s in fancy_shapes)
                ) from None
        check = outer or math.prod(bshape) > 0  # numpy checks no index of an empty broadcast
        axis = 0
        for i, (k, p) in enumerate(resolved):
            if k == _ARR and check:
                resolved[i] = (k, _check_array(p, shape[axis], axis))
            axis += n_ell if k == _ELL else _used_axes(k, items[i][1])

        # 5. the result's shape
        out_shape = _result_shape(resolved, items, shape, n_ell, bshape, outer)
        if math.prod(out_shape) == 0:
            return cls((), (0,) * ndim, out_shape, outer, empty=True)
        return cls._plan(resolved, items, shape, n_ell, out_shape, outer)

    @classmethod
    def _plan(
        cls,
        resolved: list[tuple[str, Any]],
        items: list[tuple[str, Any]],
        shape: tuple[int, ...],
        n_ell: int,
        out_shape: tuple[int, ...],
        outer: bool,
    ) -> Indexer:
        """The buffer (one axis per array axis) and how finish() gets the result from it."""
        dims: list[DimSelection] = []
        view: list[Any] = []
        takes: list[tuple[int, np.ndarray]] = []
        arrays: list[tuple[int, DimSelection, np.ndarray | None, int]] = []  # axis, dim, take, view pos

        def add_array(arr: np.ndarray) -> None:
            d = _dim_from_array(arr)
            arrays.append((len(dims), d, d.take, len(view)))
            dims.append(d)
            view.append(slice(None))

        for k, p in resolved:
            if k == _NEW:
                view.append(None)
            elif k == _ELL:
                first = len(dims)
                dims.extend([_full_dim(shape[first + j]) for j in range(n_ell)])
                view.append(Ellipsis)
            elif k == _SLC:
                dims.append(p)
                view.append(slice(None, None, -1) if p.flip else slice(None))
            elif k == _IDX:
                dims.append(DimSelection(_INT, p, 1, 1))
                view.append(0)
            elif k == _BOOL:
                view.append(True)  # a False one made the result empty
            elif k == _ARR:
                add_array(p)
            else:  # a mask: one index array per axis it covers (numpy's nonzero)
                for a in p:
                    add_array(a)
        buffer_shape = tuple(d.count for d in dims)
        if outer:
            takes = [(axis, t) for axis, _, t, _ in arrays if t is not None]
            return cls(tuple(dims), buffer_shape, out_shape, True, tuple(view), tuple(takes))

        n_fancy = sum(1 for k, _ in items if k in (_ARR, _MASK, _BOOL))
        move_from: int | None = None
        linked: list[tuple[int, np.ndarray]] = []
        if n_fancy == 1 and len(arrays) == 1 and arrays[0][2] is None:
            # one 1-D, sorted, unique advanced index: the buffer holds it as is; read as a view
            if not _adjacent(items):
                # numpy puts its dimension first: count the view's dimensions before it
                pos = arrays[0][3]
                move_from = sum(n_ell if v is Ellipsis else 1 for v in view[:pos] if not isinstance(v, int))
        else:
            for axis, d, take, pos in arrays:
                remap = take if take is not None else np.arange(d.count)
                view[pos] = remap
                linked.append((axis, remap))
            if len(linked) < 2:
                linked = []
        return cls(
            tuple(dims), buffer_shape, out_shape, False, tuple(view), (), move_from, tuple(linked)
        )

    def block_reads(
        self, grid: BlockGrid
    ) -> Iterator[tuple[tuple[int, ...], tuple[LocalSel, ...], tuple[slice, ...]]]:
        """Yield ``(block coords, selection inside the block, selection in the buffer)``.

        Each read fills ``buffer[selection in the buffer]`` with
        ``block[selection inside the block]``, taken as an outer product; the reads
        cover the buffer (for a pointwise selection: every part of it that holds a
        selected point) and do not overlap. Blocks come in C order.

        Examples
        --------
        >>> ix = Indexer.create((slice(2, 9), 3), (10, 6))
        >>> for coords, local, out in ix.block_reads(BlockGrid((10, 6), (4, 6))):
        ...     print(coords, local, out)
        (0, 0) (slice(2, 4, 1), slice(3, 4, 1)) (slice(0, 2, None), slice(0, 1, None))
        (1, 0) (slice(0, 4, 1), slice(3, 4, 1)) (slice(2, 6, None), slice(0, 1, None))
        (2, 0) (slice(0, 1, 1), slice(3, 4, 1)) (slice(6, 7, None), slice(0, 1, None))
        """
        if self.empty:
            return
        per_axis = [d.project(grid, axis) for axis, d in enumerate(self.dims)]
        prefixes = self._linked_blocks(grid, per_axis)
        if prefixes is None:
            for combo in itertools.product(*per_axis):
                yield (
                    tuple(c[0] for c in combo),
                    tuple(c[1] for c in combo),
                    tuple(c[2] for c in combo),
                )
            return
        yield from _walk(per_axis, {axis: j for j, (axis, _) in enumerate(self.linked)}, prefixes)

    def _linked_blocks(
        self, grid: BlockGrid, per_axis: list[list[tuple[int, LocalSel, slice]]]
    ) -> list[set[tuple[int, ...]]] | None:
        """For a pointwise selection spanning several blocks: the block combinations (on the
        linked axes, and their prefixes) that hold a selected point; None: read them all."""
        if not self.linked or all(len(per_axis[axis]) == 1 for axis, _ in self.linked):
            return None
        nb = [grid.grid_shape[axis] for axis, _ in self.linked]
        if math.prod(nb) >= 2**62:
            return None
        code: np.ndarray | int = 0
        for (axis, remap), n in zip(self.linked, nb):
            values = self.dims[axis].values
            assert values is not None
            code = code * n + _blocks_of(values, grid, axis)[remap]
        combos = np.unique(code)
        tuples = list(zip(*(c.tolist() for c in np.unravel_index(combos, nb))))
        return [{t[:j] for t in tuples} for j in range(len(nb) + 1)]

    def finish(self, buf: np.ndarray) -> Any:
        """numpy's result from the buffer the reads filled.

        Examples
        --------
        >>> a = np.arange(12).reshape(3, 4)
        >>> ix = Indexer.create((slice(None), [3, 1, 3]), a.shape)
        >>> buf = a[:, [1, 3]]  # what block_reads fill: the sorted unique columns
        >>> ix.finish(buf)
        array([[ 3,  1,  3],
               [ 7,  5,  7],
               [11,  9, 11]])
        """
        if self.empty:
            return np.empty(self.shape, dtype=buf.dtype)
        for axis, take in self.takes:
            buf = np.take(buf, take, axis=axis)
        out = buf[self.view]
        if self.move_from is not None:
            out = np.moveaxis(out, self.move_from, 0)
        return out


def _adjacent(items: list[tuple[str, Any]]) -> bool:
    """numpy's rule: are the advanced indices (integers too, when an array is present) next to
    each other in the index as written? A slice, ``...`` (even expanding to nothing) or ``None``
    between two of them makes them non-adjacent."""
    pos = [i for i, (k, _) in enumerate(items) if k in (_IDX, _ARR, _MASK, _BOOL)]
    return not pos or pos[-1] - pos[0] + 1 == len(pos)


def _result_shape(
    resolved: list[tuple[str, Any]],
    items: list[tuple[str, Any]],
    shape: tuple[int, ...],
    n_ell: int,
    bshape: tuple[int, ...],
    outer: bool,
) -> tuple[int, ...]:
    """The shape numpy's result has (without computing it)."""
    fancy = not outer and any(k in (_ARR, _MASK, _BOOL) for k, _ in resolved)
    adjacent = not fancy or _adjacent(items)
    out: list[int] = []
    placed = not fancy or not adjacent  # where numpy puts the broadcast dimensions
    axis = 0
    for (k, p), (_, raw) in zip(resolved, items):
        if k == _NEW:
            out.append(1)
        elif k == _ELL:
            out.extend(shape[axis : axis + n_ell])
            axis += n_ell
        elif k == _SLC:
            out.append(p.count)
        elif outer and k == _ARR:
            out.append(len(p))
        elif outer and k == _MASK:
            out.append(len(p[0]))
        elif fancy and not placed:  # the first advanced index (an integer counts)
            out.extend(bshape)
            placed = True
        axis += _used_axes(k, raw)
    if fancy and not adjacent:
        out = list(bshape) + out
    return tuple(out)


def normalize_index(selection: Any, shape: Sequence[int]) -> Indexer:
    """Normalise a numpy-style index against `shape` (see the module docstring).

    Examples
    --------
    >>> normalize_index((0, ..., [2, 1]), (4, 5, 6)).shape  # numpy moves the array axis first
    (2, 5)
    >>> normalize_index((slice(None), [0, 2], ..., 1), (4, 5, 6)).shape  # `...` separates them
    (2, 4)
    """
    return Indexer.create(selection, shape)
