"""Indexing against numpy, without files: the indexer's block reads are replayed on an in-memory array.

numpy decides what is correct: the same result (shape, dtype, values), or the same
exception type. The file-backed equivalent lives in test_dataset.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import hypothesis.extra.numpy as npst
import numpy as np
import pytest
from conftest import save_fast
from hypothesis import given
from hypothesis import strategies as st

from split_dataset.errors import InvalidIndexError
from split_dataset.grid import BlockGrid
from split_dataset.indexing import Indexer


def outer_take(block: np.ndarray, local: tuple[Any, ...]) -> np.ndarray:
    """``block[local]`` with each index array selecting along its own axis (what storage does)."""
    for axis, sel in enumerate(local):
        if isinstance(sel, slice):
            assert sel.step is not None and sel.step > 0
            block = block[(slice(None),) * axis + (sel,)]
        else:
            assert sel.ndim == 1 and np.all(np.diff(sel) > 0), sel  # sorted, unique
            block = np.take(block, sel, axis=axis)
    return block


def replay(arr: np.ndarray, shape_block, selection: Any, padding=(), outer=False) -> Any:
    """What SplitDataset does, with blocks cut out of `arr` instead of read from files."""
    grid = BlockGrid(arr.shape, tuple(shape_block), tuple(padding))
    ix = Indexer.create(selection, arr.shape, outer=outer)
    buf = np.full(ix.buffer_shape, 123, arr.dtype)
    writes = np.zeros(ix.buffer_shape, np.int8)
    for coords, local, out in ix.block_reads(grid):
        block = arr[grid.block_slices(coords)]
        buf[out] = outer_take(block, local)
        writes[out] += 1
    assert writes.max(initial=0) <= 1  # no two reads fill the same part of the buffer
    result = ix.finish(buf)
    assert np.shape(result) == ix.shape
    return result


def assert_same(arr: np.ndarray, shape_block, selection: Any, padding=()) -> None:
    try:
        expected = arr[selection]
    except Exception as e:  # numpy refuses: so must we, with the same type
        with pytest.raises(type(e)):
            replay(arr, shape_block, selection, padding)
        return
    got = replay(arr, shape_block, selection, padding)
    assert type(got) is type(expected) or (isinstance(got, np.ndarray) and isinstance(expected, np.ndarray))
    assert np.shape(got) == np.shape(expected)
    assert np.asarray(got).dtype == np.asarray(expected).dtype
    np.testing.assert_array_equal(got, expected)


@dataclass(frozen=True)
class Expect:
    selection: Any
    id: str


A = np.arange(4 * 5 * 6).reshape(4, 5, 6)
CASES = [
    Expect(0, "int"),
    Expect(-1, "negative-int"),
    Expect(np.int16(2), "np-int16"),
    Expect(np.uint64(3), "np-uint64"),
    Expect((1, 2, 3), "all-ints-scalar"),
    Expect((-4, -5, -6), "all-negative-ints"),
    Expect(slice(None, None, 2), "step"),
    Expect(slice(None, None, -1), "reverse"),
    Expect(slice(None, None, -3), "negative-step"),
    Expect((slice(3, 0, -2), slice(-1, None, -2)), "negative-steps-2-axes"),
    Expect(slice(5, 2), "empty-slice"),
    Expect(slice(-100, 100), "clipped-slice"),
    Expect(..., "ellipsis"),
    Expect((..., 0), "ellipsis-int"),
    Expect((0, ..., 1), "int-ellipsis-int"),
    Expect(None, "newaxis"),
    Expect((None, 1, None, slice(1, 3), None), "newaxes"),
    Expect([3, 0, 0, -1], "int-list-duplicates"),
    Expect(np.array([[1, 2], [0, 3]]), "2d-int-array"),
    Expect((slice(None), [4, 0, 2]), "list-axis-1"),
    Expect((0, slice(None), [1, 2]), "advanced-not-adjacent"),
    Expect((slice(None), 0, [1, 2]), "advanced-adjacent"),
    Expect(([1, 2], None, 0), "advanced-split-by-newaxis"),
    Expect((np.array([True, False, True, True]),), "bool-mask"),
    Expect((slice(None), np.zeros(5, bool)), "empty-bool-mask"),
    Expect([], "empty-list"),
    Expect((slice(None), np.array([], dtype=np.int64)), "empty-int-array"),
    Expect(np.array(2), "0d-int-array"),
    Expect((), "empty-tuple"),
    # errors: numpy's exception type
    Expect(4, "out-of-range"),
    Expect(-5, "out-of-range-negative"),
    Expect((0, 0, 0, 0), "too-many"),
    Expect((..., ...), "two-ellipses"),
    Expect(1.0, "float"),
    Expect("a", "string"),
    Expect([0, 9], "list-out-of-range"),
    Expect(np.array([True, False]), "mask-wrong-length"),
    Expect(slice(0, 2, 0), "zero-step"),
    Expect(slice(0.5, 2), "float-slice"),
    Expect(np.array([1.5]), "float-array"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
@pytest.mark.parametrize("shape_block", [(1, 1, 1), (3, 2, 4), (4, 5, 6)], ids=str)
def test_table(case: Expect, shape_block) -> None:
    assert_same(A, shape_block, case.selection)


def test_oindex_refuses_what_it_cannot_place() -> None:
    with pytest.raises(IndexError, match="1-D"):
        Indexer.create(np.ones((4, 5), bool), A.shape, outer=True)
    with pytest.raises(IndexError, match="1-D"):
        Indexer.create(([[0, 1]], 0), A.shape, outer=True)
    with pytest.raises(InvalidIndexError, match="scalar boolean"):
        Indexer.create((0, True), A.shape, outer=True)


def test_wrong_type_is_also_type_error() -> None:
    with pytest.raises(TypeError):
        Indexer.create(object(), A.shape)
    assert issubclass(InvalidIndexError, TypeError) and issubclass(InvalidIndexError, IndexError)


def test_outer_indexing_matches_ix() -> None:
    got = replay(A, (3, 2, 4), ([2, 0], slice(None), [5, 1, 1]), outer=True)
    np.testing.assert_array_equal(got, A[np.ix_([2, 0], range(5), [5, 1, 1])])
    got = replay(A, (3, 2, 4), (1, [3, 0], [5, 1]), outer=True)
    np.testing.assert_array_equal(got, A[1][np.ix_([3, 0], [5, 1])])


def test_reads_only_touched_blocks() -> None:
    grid = BlockGrid((100, 10), (10, 10))
    ix = Indexer.create((slice(25, 37), 3), (100, 10))
    assert [c for c, _, _ in ix.block_reads(grid)] == [(2, 0), (3, 0)]
    ix = Indexer.create([99, 5, 5], (100, 10))
    reads = list(ix.block_reads(grid))
    assert [c for c, _, _ in reads] == [(0, 0), (9, 0)]  # duplicates read once


def test_evenly_spaced_array_becomes_slice() -> None:
    ix = Indexer.create([10, 12, 14], (100,))
    ((_, local, _),) = ix.block_reads(BlockGrid((100,), (50,)))
    assert local == (slice(10, 15, 2),)


# ----------------------------------------------------------------------------- regressions
# 1. `...` between advanced indices separates them, even when it expands to no axis

BLOCKS = [(1, 1, 1), (3, 2, 4), (2, 5, 5)]


@pytest.mark.parametrize(
    "selection",
    [
        (slice(None), [0, 2], ..., 1),  # `...` expands to nothing: numpy moves the array axes first
        ([0, 2], ..., 1),
        ([0, 2], ..., [1, 3]),
        (0, ..., [1, 3]),
        (..., 0, [1, 3]),  # adjacent: stays in place
        ([0, 2], None, 1),  # None separates too
        ([0, 2], 1, None),
        ([1, 0], True, 2),  # a scalar boolean is advanced: still adjacent
        (True, slice(None), [1, 0]),
        (0, slice(None), True),
        (1, [0, 2], 3, ...),
        ([[0], [2]], [1, 3], ..., [4, 5]),
    ],
    ids=repr,
)
@pytest.mark.parametrize("shape_block", BLOCKS, ids=str)
def test_separated_advanced_indices_go_first(selection, shape_block) -> None:
    assert_same(A, shape_block, selection)


def test_ellipsis_of_no_axis_still_separates() -> None:
    got = replay(A, (3, 2, 4), (slice(None), [0, 2], ..., 1))
    assert got.shape == (2, 4)  # not (4, 2), the transpose
    np.testing.assert_array_equal(got, A[:, [0, 2], ..., 1])


# 2. size-0 boolean masks


@pytest.mark.parametrize(
    "shape, selection",
    [
        ((0, 3), np.zeros(0, bool)),
        ((0, 3), (np.zeros(0, bool), 1)),
        ((4, 0), (slice(None), np.zeros(0, bool))),
        ((0, 3), np.zeros((0, 3), bool)),
        ((5, 4), np.zeros(0, bool)),  # numpy skips the length check of a 0-length mask axis
        ((5, 4), np.zeros((0, 4), bool)),
        ((5, 4), np.zeros((0, 3), bool)),  # ...but not of the others: IndexError
        ((5, 4), (np.zeros(0, bool), [1, 2])),
        ((2, 3), [[]]),
    ],
    ids=repr,
)
def test_empty_masks(shape, selection) -> None:
    arr = np.arange(int(np.prod(shape)), dtype=np.uint16).reshape(shape)
    for block in [(1, 1), (2, 2)]:
        assert_same(arr, block, selection)


# 3. two errors at once: numpy's precedence decides the exception type


@pytest.mark.parametrize(
    "selection",
    [
        (0, 0, 0, "x"),  # too many indices and a bad type: the type (IndexError)
        (slice(0, 1, 0), 0, 0, 0),  # too many indices and a zero step: IndexError, not ValueError
        (slice(0.5, 2), 0, 0, 0),  # too many and a float bound: IndexError, not TypeError
        ([[0, 1], [0]], 0, 0, 0),  # ragged list and too many: ValueError (numpy converts first)
        ("x", [[0, 1], [0]]),  # bad type first: IndexError
        (9, slice(0, 1, 0)),  # out of range before a zero step: IndexError
        (slice(0, 1, 0), 9),  # zero step before out of range: ValueError
        ([9], slice(0, 1, 0)),  # arrays are checked last: ValueError
        ([9], slice(0.5, 2)),  # TypeError
        (slice(0.5, 2), np.ones(3, bool)),  # mask of the wrong shape before slices: IndexError
        (9, np.ones(3, bool)),  # out of range and a wrong mask: IndexError
        ([0, 1], [0, 1, 2], slice(0, 1, 0)),  # broadcast error after the slice: ValueError
        (2**63, "x"),  # OverflowError
        ("x", 2**63),  # IndexError
        ([9], []),  # no error: numpy does not check an empty broadcast
        ([9], False),
        (..., 0, ..., "x"),  # two ellipses first: IndexError
    ],
    ids=repr,
)
def test_error_precedence(selection) -> None:
    assert_same(A, (3, 2, 4), selection)


def test_huge_integer_is_overflow_and_index_error() -> None:
    with pytest.raises(OverflowError) as info:
        Indexer.create((0, 2**63), A.shape)
    assert isinstance(info.value, IndexError)


# 4. a k-dimensional mask indexes k consecutive axes; the ROI trace


@pytest.fixture(scope="module")
def movie(tmp_path_factory) -> tuple[np.ndarray, Any]:
    """A (t, z, y, x) stack split on every axis."""
    rng = np.random.default_rng(3)
    arr = rng.integers(0, 4000, (9, 3, 20, 22), dtype=np.uint16)
    ds = save_fast(arr, tmp_path_factory.mktemp("movie") / "movie", (4, 2, 8, 6))
    return arr, ds


def test_roi_trace(movie) -> None:
    arr, ds = movie
    roi = np.zeros(arr.shape[2:], bool)
    roi[5:12, 3:9] = True
    roi[15, 20] = True
    for z in [0, 2, -1]:
        expected = arr[:, z, roi]
        got = ds[:, z, roi]
        assert got.shape == expected.shape == (9, int(roi.sum()))
        np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(ds[2:7, :, roi], arr[2:7, :, roi])
    np.testing.assert_array_equal(ds[..., roi], arr[..., roi])


def test_roi_reads_only_blocks_holding_pixels() -> None:
    roi = np.zeros((20, 22), bool)
    roi[1, 1] = roi[18, 20] = True  # two corners: their bounding box spans every block
    ix = Indexer.create((slice(None), 0, roi), (9, 3, 20, 22))
    coords = {c[2:] for c, _, _ in ix.block_reads(BlockGrid((9, 3, 20, 22), (4, 2, 8, 6)))}
    assert coords == {(0, 0), (2, 3)}


@pytest.mark.parametrize(
    "selection",
    [
        np.ones((4, 5), bool),
        np.arange(20).reshape(4, 5) % 3 == 0,
        (slice(None), np.arange(30).reshape(5, 6) % 4 == 1),
        (np.arange(120).reshape(4, 5, 6) % 7 == 0,),
        (1, np.arange(30).reshape(5, 6) % 4 == 1),
        (np.eye(4, 5, dtype=bool), [0, 5, 5, 1]),  # a mask and an array broadcast together
    ],
    ids=["full-2d", "2d", "2d-after-slice", "3d", "int-then-2d", "2d-with-array"],
)
@pytest.mark.parametrize("shape_block", BLOCKS, ids=str)
def test_multi_axis_masks(selection, shape_block) -> None:
    assert_same(A, shape_block, selection)


# 5. several index arrays: numpy's pointwise broadcasting


@pytest.mark.parametrize(
    "selection",
    [
        ([0, 1, 3], [4, 0, 2]),
        ([0, 1, 3], [4, 0, 2], [5, 5, 0]),
        (np.array([[0], [3]]), [1, 4]),  # column and row: a 2-D result
        ([0, 3], slice(None), [5, 1]),  # separated by a slice: broadcast dimension first
        (slice(1, None, -1), [1, 4], [[5], [0]]),  # adjacent, after a slice
        ([-1, 0], 2, [3, -6]),
        (np.array([2, 0], np.uint8), np.array([1], np.int8), np.array([0, 5], np.uint64)),
        ([0, 1], [[]]),  # broadcasts to (1, 0)
        ([0, 1], [0, 1, 2]),  # does not broadcast: IndexError
        ([0, 9], [0, 1]),  # out of range: IndexError
        ([[0, 1], [1, 0]], ..., [[2, 3]]),
    ],
    ids=repr,
)
@pytest.mark.parametrize("shape_block", BLOCKS, ids=str)
def test_several_index_arrays(selection, shape_block) -> None:
    assert_same(A, shape_block, selection)


def test_diagonal_reads_only_diagonal_blocks() -> None:
    n = 100
    ix = Indexer.create((np.arange(n), np.arange(n)), (n, n))
    assert ix.shape == (n,) and ix.buffer_shape == (n, n)  # the buffer is the outer product...
    coords = [c for c, _, _ in ix.block_reads(BlockGrid((n, n), (10, 10)))]
    assert coords == [(i, i) for i in range(10)]  # ...but only blocks holding points are read
    arr = np.arange(n * n).reshape(n, n)
    np.testing.assert_array_equal(replay(arr, (10, 10), (np.arange(n), np.arange(n))), np.diag(arr))


def test_several_arrays_on_files(movie) -> None:
    arr, ds = movie
    t, y, x = [0, 8, 3, 3], [19, 0, 7, 7], [21, 0, 5, 6]
    np.testing.assert_array_equal(ds[t, 1, y, x], arr[t, 1, y, x])
    np.testing.assert_array_equal(ds[t, :, y, x], arr[t, :, y, x])
    np.testing.assert_array_equal(ds[np.ix_([0, 8], [2], [1, 19], [0, 21])], arr[np.ix_([0, 8], [2], [1, 19], [0, 21])])
    np.testing.assert_array_equal(ds.oindex[[8, 0], 1, [1, 19], :], arr[[8, 0]][:, 1][:, [1, 19]])


def test_scalar_booleans() -> None:
    for selection in [True, False, np.True_, (0, True), (True, 0, [1, 2]), (0, 1, 2, False)]:
        assert_same(A, (3, 2, 4), selection)


def test_empty_selection_reads_nothing() -> None:
    grid = BlockGrid(A.shape, (3, 2, 4))
    for selection in [([9], []), (slice(0, 0), [1, 2]), (False, 1), ([0, 1], np.zeros((0, 1), int))]:
        ix = Indexer.create(selection, A.shape)
        assert math.prod(ix.buffer_shape) == 0 and list(ix.block_reads(grid)) == []
        assert_same(A, (3, 2, 4), selection)


def test_precedence_through_the_dataset_fast_path(movie) -> None:
    _, ds = movie
    with pytest.raises(IndexError):
        ds[slice(0.5, 2), np.ones((3, 20, 22, 1), bool)]  # too many indices (5), then a float bound


# ----------------------------------------------------------------------------- properties


@st.composite
def arrays_and_blocks(draw, max_dims: int = 5):
    shape = draw(npst.array_shapes(min_dims=1, max_dims=max_dims, min_side=0, max_side=7))
    block = tuple(draw(st.integers(1, max(1, s + 1))) for s in shape)
    padding = tuple(draw(st.sampled_from([0, 0, 1, 2])) for _ in shape)
    dtype = draw(st.sampled_from([np.uint8, np.uint16, np.int16, np.float32, np.float64]))
    arr = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape).astype(dtype)
    return arr, block, padding


@st.composite
def one_array_index(draw, shape):
    """Basic indices on every axis but one, which gets an int array or a bool mask."""
    if not shape:
        return ()
    axis = draw(st.integers(0, len(shape) - 1))
    n = shape[axis]
    if n and draw(st.booleans()):
        idx = draw(npst.arrays(np.int64, npst.array_shapes(min_dims=1, max_dims=2, min_side=0, max_side=5),
                               elements=st.integers(-n, n - 1)))
    else:
        idx = draw(npst.arrays(np.bool_, (n,)))
    basic = draw(npst.basic_indices(shape, min_dims=0, allow_newaxis=True, allow_ellipsis=False))
    basic = basic if isinstance(basic, tuple) else (basic,)
    basic = list(basic) + [slice(None)] * (len(shape) - sum(1 for b in basic if b is not None))
    # replace the entry for `axis` (counting only real axes)
    real = [i for i, b in enumerate(basic) if b is not None]
    basic[real[axis]] = idx if draw(st.booleans()) else idx.tolist()
    return tuple(basic)


@given(data=st.data(), ab=arrays_and_blocks())
def test_basic_indices_match_numpy(data, ab) -> None:
    arr, block, padding = ab
    sel = data.draw(npst.basic_indices(arr.shape, allow_newaxis=True, allow_ellipsis=True))
    assert_same(arr, block, sel, padding)


@given(data=st.data(), ab=arrays_and_blocks(max_dims=4))
def test_one_advanced_index_matches_numpy(data, ab) -> None:
    arr, block, padding = ab
    sel = data.draw(one_array_index(arr.shape))
    assert_same(arr, block, sel, padding)


@given(data=st.data(), ab=arrays_and_blocks(max_dims=3))
def test_out_of_range_integers_raise_like_numpy(data, ab) -> None:
    arr, block, padding = ab
    axis = data.draw(st.integers(0, arr.ndim - 1))
    n = arr.shape[axis]
    i = data.draw(st.one_of(st.integers(n, n + 5), st.integers(-n - 5, -n - 1)))
    sel = (slice(None),) * axis + (i,)
    assert_same(arr, block, sel, padding)


@given(data=st.data(), ab=arrays_and_blocks(max_dims=4))
def test_pointwise_integer_arrays_match_numpy(data, ab) -> None:
    arr, block, padding = ab
    if 0 in arr.shape:
        return
    sel = data.draw(npst.integer_array_indices(arr.shape, result_shape=npst.array_shapes(min_dims=0, max_dims=2)))
    k = data.draw(st.integers(1, len(sel)))  # index arrays on the first k axes, the rest whole
    assert_same(arr, block, sel[:k], padding)
