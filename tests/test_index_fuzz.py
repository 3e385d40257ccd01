"""Fuzz ``SplitDataset.__getitem__`` against numpy: random indexes, numpy is the oracle.

A few small datasets (1-D to 5-D, axes of length 0 and 1, blocks splitting several
axes) are written once per module; each random index is applied to the dataset and
to the numpy array it was written from. Both must give the same values, shape, dtype
and scalar-ness, or both must raise, ours an instance of numpy's exception class.

The generator (:func:`random_index`) mixes every kind of index item numpy knows, and
errors: Python and NumPy integers (negative, out of range, beyond intp), slices with
any step (zero too, non-integer bounds), ``...`` (twice too), ``None``, integer arrays
of any shape and dtype (empty, uint64, int8), lists and nested lists, boolean masks of
0..3 dimensions (of the right shape mostly, of a wrong one sometimes), several arrays
and masks that broadcast together (and some that do not), floats, strings, ragged lists.

The default run checks 12,000 indexes on files plus 8,000 on in-memory block layouts
(random block shapes and paddings, see test_indexing.replay); ``pytest -m full`` runs
ten times as many with other seeds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import save_fast
from test_indexing import replay

#: (shape, block shape, dtype): 1-D to 5-D, length-0 and length-1 axes, several split axes
SHAPES: list[tuple[tuple[int, ...], tuple[int, ...], Any]] = [
    ((11,), (4,), np.int16),
    ((0,), (3,), np.uint8),
    ((1,), (1,), np.float64),
    ((7, 6), (3, 4), np.float32),
    ((1, 5), (1, 2), np.uint16),
    ((5, 4, 6), (2, 3, 4), np.int32),
    ((4, 0, 3), (2, 1, 2), np.int16),
    ((3, 1, 5, 4), (2, 1, 2, 3), np.uint16),
    ((2, 3, 4, 5, 3), (1, 2, 4, 3, 2), np.float32),
]

_INT_DTYPES = [np.int8, np.uint8, np.int16, np.int32, np.int64, np.uint32, np.uint64, np.intp]
_WEIRD = [
    1.0,
    np.float64(2.0),
    "a",
    b"x",
    1j,
    object(),
    [1.0],
    np.array([1.5]),
    np.array([], dtype=float),
    [[0, 1], [0]],
    2**63,
    2**64,
    -(2**63) - 1,
    np.uint64(2**63),
    np.array(2**63, dtype=np.uint64),
    {1},
]


def _int_item(rng: np.random.Generator, n: int) -> Any:
    r = rng.random()
    if r < 0.06 or n == 0:
        v = int(rng.choice([n, n + 1, n + 3, -n - 1, -n - 2]))
    else:
        v = int(rng.integers(-n, n))
    form = rng.integers(0, 6)
    if form == 0:
        return np.int64(v)
    if form == 1 and -128 <= v < 128:
        return np.int8(v)
    if form == 2 and v >= 0:
        return np.uint16(v)
    if form == 3:
        return np.array(v)
    return v


def _slice_bound(rng: np.random.Generator, n: int) -> Any:
    if rng.random() < 0.45:
        return None
    v = int(rng.integers(-n - 2, n + 3))
    return np.int64(v) if rng.random() < 0.1 else v


def _slice_item(rng: np.random.Generator, n: int, float_bounds: bool) -> slice:
    r = rng.random()
    if r < 0.01:
        return slice(0, 1, 0)
    if r < 0.015:
        return slice(0.5, 2, 1 if float_bounds else 2)  # type: ignore[misc]
    step = rng.choice([None, None, 1, 2, 3, -1, -1, -2, -3, 7])
    return slice(_slice_bound(rng, n), _slice_bound(rng, n), step)


def _fit_shape(rng: np.random.Generator, bshape: tuple[int, ...]) -> tuple[int, ...]:
    """A shape that broadcasts to `bshape` (a suffix of it, some sides set to 1)."""
    k = int(rng.integers(0, len(bshape) + 1)) if rng.random() < 0.3 else len(bshape)
    suffix = bshape[len(bshape) - k :]
    return tuple(1 if rng.random() < 0.2 else s for s in suffix)


def _array_item(rng: np.random.Generator, n: int, bshape: tuple[int, ...]) -> Any:
    if rng.random() < 0.8:
        shape = _fit_shape(rng, bshape)
    else:
        shape = tuple(int(s) for s in rng.integers(0, 4, int(rng.integers(1, 4))))
    if not shape:
        shape = (1,)
    size = int(np.prod(shape))
    if n == 0 or rng.random() < 0.04:
        values = rng.integers(-n - 3, n + 3, size)
    else:
        values = rng.integers(-n, n, size)
    dtype = _INT_DTYPES[int(rng.integers(0, len(_INT_DTYPES)))]
    info = np.iinfo(dtype)
    if values.size and (values.min() < info.min or values.max() > info.max):
        values = np.abs(values) if info.min == 0 else values
        if values.size and values.max() > info.max:
            dtype = np.int64
    arr = values.astype(dtype).reshape(shape)
    form = rng.random()
    if form < 0.25:
        return arr.tolist()
    if form < 0.28 and arr.ndim == 1:
        return tuple(arr.tolist())
    return arr


def _mask_item(rng: np.random.Generator, axes_shape: tuple[int, ...], nnz: int | None) -> Any:
    shape = list(axes_shape)
    if rng.random() < 0.08 and shape:
        j = int(rng.integers(0, len(shape)))
        shape[j] = max(0, shape[j] + int(rng.choice([-1, 1, 2])))
    size = int(np.prod(shape))
    if nnz is not None and nnz <= size and rng.random() < 0.85:
        flat = np.zeros(size, bool)
        flat[rng.choice(size, nnz, replace=False)] = True
        mask = flat.reshape(shape)
    else:
        mask = rng.random(shape) < rng.choice([0.0, 0.3, 0.7, 1.0])
    return mask.tolist() if rng.random() < 0.15 and mask.ndim else mask


_AXIS_KINDS = ["int", "slice", "arr", "mask", "empty", "weird"]
_AXIS_WEIGHTS = np.array([20, 28, 38, 10, 2, 2], float) / 100


def random_index(rng: np.random.Generator, shape: tuple[int, ...], float_bounds: bool = True) -> Any:
    """A random index for an array of `shape` (valid most of the time, not always).

    ``float_bounds=False``: slices with a float bound get step 2, not 1 (see test_fuzz_files).
    """
    ndim = len(shape)
    # items that use array axes: usually at most ndim of them
    n_axes = int(rng.integers(0, ndim + 1)) if rng.random() < 0.93 else ndim + int(rng.integers(1, 3))
    kinds: list[tuple[str, int]] = []
    used = 0
    while used < n_axes:
        k = str(rng.choice(_AXIS_KINDS, p=_AXIS_WEIGHTS))
        kd = int(rng.integers(1, max(1, min(3, n_axes - used)) + 1)) if k == "mask" else 1
        kinds.append((k, kd))
        used += kd
    if ndim >= 2 and len(kinds) >= 2 and rng.random() < 0.25:  # pointwise: two index arrays at least
        for j in rng.choice(len(kinds), 2, replace=False):
            if kinds[j][0] != "mask":
                kinds[j] = ("arr", 1)
    # items that use none: None, `...` (rarely twice), scalar booleans
    for k, p in (("none", 0.25), ("ell", 0.45), ("ell", 0.02), ("bool", 0.06), ("none", 0.05)):
        if rng.random() < p:
            kinds.insert(int(rng.integers(0, len(kinds) + 1)), (k, 0))
    n_ell = max(0, ndim - used)
    # the broadcast shape the index arrays aim for (a mask's count of True, if there is a mask)
    bshape = tuple(int(s) for s in rng.integers(1, 4, int(rng.integers(0, 3))))
    if rng.random() < 0.05:
        bshape = bshape + (0,)
    nnz: int | None = None
    if any(k == "mask" for k, _ in kinds):
        nnz = int(rng.integers(0, 5)) if rng.random() < 0.1 else int(rng.integers(1, 4))
        bshape = (nnz,)
    items: list[Any] = []
    axis = 0
    seen_ell = False
    for k, kd in kinds:
        n = shape[axis] if axis < ndim else int(rng.integers(0, 4))
        if k == "int":
            items.append(_int_item(rng, n))
        elif k == "slice":
            items.append(_slice_item(rng, n, float_bounds))
        elif k == "none":
            items.append(None)
        elif k == "ell":
            items.append(...)
            if not seen_ell:
                axis += n_ell
            seen_ell = True
        elif k == "arr":
            items.append(_array_item(rng, n, bshape))
        elif k == "mask":
            axes_shape = tuple(shape[axis + j] if axis + j < ndim else 2 for j in range(kd))
            items.append(_mask_item(rng, axes_shape, nnz))
        elif k == "bool":
            items.append([True, False, np.True_, np.False_, np.array(True)][int(rng.integers(0, 5))])
        elif k == "weird":
            items.append(_WEIRD[int(rng.integers(0, len(_WEIRD)))])
        else:
            items.append([[], np.array([], dtype=np.int64), np.zeros(0, bool), [[]], ()][int(rng.integers(0, 5))])
        axis += kd
    if len(items) == 1 and rng.random() < 0.5:
        return items[0]
    return tuple(items)


def show(idx: Any) -> str:
    """A one-line, re-typeable repr of an index (arrays as ``np.array(list, dtype)``)."""
    if isinstance(idx, tuple):
        return "(" + "".join(show(i) + ", " for i in idx) + ")"
    if isinstance(idx, np.ndarray):
        return f"np.array({idx.tolist()!r}, {idx.dtype.name})"
    return repr(idx)


def _outcome(get: Callable[[Any], Any], idx: Any) -> tuple[bool, Any]:
    try:
        return True, get(idx)
    except Exception as e:
        return False, e


def mismatch(expected: tuple[bool, Any], got: tuple[bool, Any]) -> str | None:
    """Why `got` differs from numpy's `expected` outcome, or None."""
    ok_e, e = expected
    ok_g, g = got
    if not ok_e:
        if ok_g:
            return f"numpy raised {type(e).__name__}({e}), we returned shape {np.shape(g)}"
        if not isinstance(g, type(e)):
            return f"numpy raised {type(e).__name__}({e}), we raised {type(g).__name__}({g})"
        return None
    if not ok_g:
        return f"numpy returned shape {np.shape(e)}, we raised {type(g).__name__}({g})"
    if isinstance(e, np.ndarray) != isinstance(g, np.ndarray):
        return f"numpy returned {type(e).__name__}, we returned {type(g).__name__}"
    if np.shape(e) != np.shape(g):
        return f"numpy returned shape {np.shape(e)}, we returned {np.shape(g)}"
    if np.asarray(e).dtype != np.asarray(g).dtype:
        return f"numpy returned dtype {np.asarray(e).dtype}, we returned {np.asarray(g).dtype}"
    if not np.array_equal(e, g):
        return "values differ"
    return None


def fuzz(
    cases: list[tuple[np.ndarray, Callable[[Any], Any]]],
    n: int,
    seed: int,
    max_report: int = 10,
    float_bounds: bool = True,
) -> tuple[int, int, list[str]]:
    """Apply `n` random indexes spread over `cases`; (n. successes, n. numpy errors, failures)."""
    rng = np.random.default_rng(seed)
    failures: list[str] = []
    n_ok = n_err = 0
    for i in range(n):
        arr, get = cases[i % len(cases)]
        idx = random_index(rng, arr.shape, float_bounds)
        expected = _outcome(arr.__getitem__, idx)
        why = mismatch(expected, _outcome(get, idx))
        n_ok += expected[0]
        n_err += not expected[0]
        if why and len(failures) < max_report:
            failures.append(f"shape {arr.shape}, index {show(idx)}: {why}")
    return n_ok, n_err, failures


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[np.ndarray, Callable[[Any], Any]]]:
    root: Path = tmp_path_factory.mktemp("fuzz")
    out = []
    for i, (shape, block, dtype) in enumerate(SHAPES):
        arr = np.arange(int(np.prod(shape))).reshape(shape).astype(dtype)
        ds = save_fast(arr, root / f"ds{i}", block)
        out.append((arr, ds.__getitem__))
    return out


def _replay_cases(seed: int, n: int) -> list[tuple[np.ndarray, Callable[[Any], Any]]]:
    """In-memory cases: random shapes, block shapes and paddings, read through test_indexing.replay."""
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(n):
        ndim = int(rng.integers(1, 6))
        shape = tuple(int(s) for s in rng.integers(0, 6, ndim))
        block = tuple(int(rng.integers(1, s + 2)) for s in shape)
        padding = tuple(int(rng.choice([0, 0, 1])) for _ in shape)
        arr = np.arange(10**6, 10**6 + int(np.prod(shape)), dtype=np.int32).reshape(shape)  # never 123
        cases.append((arr, lambda idx, arr=arr, block=block, padding=padding: replay(arr, block, idx, padding)))
    return cases


def _assert_clean(n_ok: int, n_err: int, failures: list[str]) -> None:
    assert n_ok > n_err > 0  # the generator must exercise both
    assert not failures, "\n".join(failures)


# SplitDataset._get_in_one_block (dataset.py) calls slice.indices() on a step-1 slice before it
# knows the rest of the index, so a float bound raises TypeError where numpy first reports another
# error (test_indexing.test_precedence_through_the_dataset_fast_path); the file fuzzers give float
# bounds step 2, which that fast path passes on. The block-layout fuzzers keep step 1.
_FILES_FLOAT_BOUNDS = True


def test_fuzz_files(datasets) -> None:
    _assert_clean(*fuzz(datasets, 12_000, seed=20261130, float_bounds=_FILES_FLOAT_BOUNDS))


def test_fuzz_block_layouts() -> None:
    _assert_clean(*fuzz(_replay_cases(7, 40), 8_000, seed=11))


@pytest.mark.full
@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_fuzz_files_full(datasets, seed: int) -> None:
    _assert_clean(*fuzz(datasets, 24_000, seed=seed, float_bounds=_FILES_FLOAT_BOUNDS))


@pytest.mark.full
@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_fuzz_block_layouts_full(seed: int) -> None:
    _assert_clean(*fuzz(_replay_cases(100 + seed, 200), 16_000, seed=seed))
