"""Indexing against numpy, without files: the indexer's block reads are replayed on an in-memory array.

numpy decides what is correct: the same result (shape, dtype, values), or the same
exception type. The file-backed equivalent lives in test_dataset.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import hypothesis.extra.numpy as npst
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from split_dataset.errors import InvalidIndexError
from split_dataset.grid import BlockGrid
from split_dataset.indexing import Indexer


def replay(arr: np.ndarray, shape_block, selection: Any, padding=(), outer=False) -> Any:
    """What SplitDataset does, with blocks cut out of `arr` instead of read from files."""
    grid = BlockGrid(arr.shape, tuple(shape_block), tuple(padding))
    ix = Indexer.create(selection, arr.shape, outer=outer)
    buf = np.full(ix.buffer_shape, 123, arr.dtype)
    touched = set()
    for coords, local, out in ix.block_reads(grid):
        touched.add(coords)
        block = arr[grid.block_slices(coords)]
        buf[out] = block[local]
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


@pytest.mark.parametrize(
    "selection, match",
    [
        (([0, 1], [0, 1]), "more than one axis"),
        (np.ones((4, 5), bool), "several axes"),
        (True, "scalar boolean"),
        (1.0, "valid indices"),
    ],
    ids=["two-arrays", "2d-mask", "scalar-bool", "float"],
)
def test_unsupported_raise_index_error(selection, match) -> None:
    with pytest.raises(IndexError, match=match):
        Indexer.create(selection, A.shape)


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
