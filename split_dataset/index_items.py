"""Index items as numpy sees them: conversion and validation of one item at a time, in numpy's order."""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

from .errors import IndexOverflowError, InvalidIndexError
from .selection import ARRAY, SLICE, DimSelection

__all__ = ["convert", "used_axes", "check_int", "check_array", "dim_from_slice", "dim_from_array", "full_dim",
           "MAXDIMS", "NEW", "ELL", "SLC", "IDX", "ARR", "MASK", "BOOL"]

#: numpy's limit on the number of dimensions (of the result, too); items in one index: twice that
MAXDIMS = 64 if int(np.__version__.split(".")[0]) >= 2 else 32
_INTP = np.iinfo(np.intp)

# kinds of converted index items
NEW = "new"  # None
ELL = "ell"  # Ellipsis (explicit, or appended when the index is shorter than the array)
SLC = "slice"
IDX = "int"  # an integer (Python, NumPy, 0-d integer array)
ARR = "array"  # an integer array of at least one dimension
MASK = "mask"  # a boolean array of at least one dimension
BOOL = "bool"  # a scalar boolean (Python, NumPy or 0-d array)


def _type_error(item: Any) -> InvalidIndexError:
    return InvalidIndexError(
        "only integers, slices (`:`), ellipsis (`...`), numpy.newaxis (`None`) and "
        f"integer or boolean arrays are valid indices; got {item!r:.80} of type {type(item).__name__}"
    )


def _overflow(value: int) -> IndexOverflowError:
    return IndexOverflowError(f"index {value} does not fit the platform's index type (intp)")


def convert(item: Any) -> tuple[str, Any]:
    """One index item as (kind, payload), the way numpy's ``prepare_index`` sees it.

    Raises numpy's exception for this item alone (type, ragged list, integer overflow).
    """
    if item is None:
        return (NEW, None)
    if item is Ellipsis:
        return (ELL, None)
    if isinstance(item, slice):
        return (SLC, item)
    if not isinstance(item, (np.ndarray, bool, np.bool_)) and hasattr(type(item), "__index__"):
        # numpy tries the integer route first and falls back to the array route on any error
        try:
            i = operator.index(item)
        except Exception:
            pass
        else:
            if _INTP.min <= i <= _INTP.max:
                return (IDX, i)
    if isinstance(item, np.ndarray):
        arr = item
    else:
        arr = np.asarray(item)  # a ragged nested list raises numpy's ValueError, as numpy does
        if arr.size == 0:  # an empty list is an (empty) integer index, whatever its dtype
            try:
                arr = arr.astype(np.intp)
            except (TypeError, ValueError):
                raise _type_error(item) from None
    if arr.dtype == np.bool_:
        if arr.ndim == 0:
            return (BOOL, bool(arr))
        return (MASK, arr)
    if arr.dtype.kind in "iu":
        if arr.ndim == 0:
            i = int(arr)
            if not _INTP.min <= i <= _INTP.max:
                raise _overflow(i)
            return (IDX, i)
        return (ARR, arr.astype(np.intp, copy=False))  # wraps uint64 like numpy's cast
    if isinstance(item, np.ndarray):
        raise InvalidIndexError(
            f"arrays used as indices must be of integer or boolean type, got dtype {arr.dtype}"
        )
    raise _type_error(item)


def used_axes(kind: str, payload: Any) -> int:
    """How many array axes one converted item consumes (an ellipsis: counted separately)."""
    if kind in (IDX, SLC, ARR):
        return 1
    if kind == MASK:
        return int(payload.ndim)
    return 0


def check_int(i: int, n: int, axis: int) -> int:
    if not -n <= i < n:
        raise IndexError(f"index {i} is out of bounds for axis {axis} with size {n}")
    return i + n if i < 0 else i


def check_array(arr: np.ndarray, n: int, axis: int) -> np.ndarray:
    """`arr` with negative indices wrapped; IndexError if any is out of range."""
    if arr.size == 0:
        return arr
    lo, hi = int(arr.min()), int(arr.max())
    if lo < -n or hi >= n:
        bad = lo if lo < -n else hi
        raise IndexError(f"index {bad} is out of bounds for axis {axis} with size {n}")
    if lo < 0:
        arr = np.where(arr < 0, arr + n, arr)
    return arr


def dim_from_slice(s: slice, n: int) -> DimSelection:
    start, stop, step = s.indices(n)  # raises TypeError / ValueError like numpy
    count = len(range(start, stop, step))
    if step > 0:
        return DimSelection(SLICE, start, step, count)
    if count == 0:
        return DimSelection(SLICE, 0, 1, 0, flip=True)
    first = start + (count - 1) * step
    return DimSelection(SLICE, first, -step, count, flip=True)


def dim_from_array(arr: np.ndarray) -> DimSelection:
    """In-range, non-negative indices as sorted unique values and the way back (``take``).

    ``take`` is None when `arr` is 1-D and strictly increasing (it is its own values).
    """
    flat = arr.reshape(-1)
    if arr.ndim == 1 and (flat.size < 2 or bool(np.all(flat[1:] > flat[:-1]))):
        return DimSelection(ARRAY, count=len(flat), values=flat, take=None)
    values, inverse = np.unique(flat, return_inverse=True)
    return DimSelection(ARRAY, count=len(values), values=values, take=inverse.reshape(arr.shape))


def full_dim(n: int) -> DimSelection:
    return DimSelection(SLICE, 0, 1, n)
