"""One value of ``stack_metadata.json`` at a time: parsed, range-checked, shown briefly in errors."""

from __future__ import annotations

import math
import numbers
import reprlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import MetadataError

#: More dimensions than this is taken to be corrupt metadata (numpy allows 64; images have 2 to 5).
MAX_NDIM = 32
#: More block files than this is taken to be corrupt metadata, not a real dataset.
MAX_BLOCKS = 2**22
#: Arrays larger than this many elements are refused (an int64 index must address them).
MAX_SIZE = 2**62


class _ShortRepr(reprlib.Repr):
    """``repr`` for error messages: bounded length and depth, safe on huge integers."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel, self.maxlist, self.maxdict, self.maxstring, self.maxother = 3, 8, 6, 60, 60

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 128:
            return f"<an integer of {int(x.bit_length() * math.log10(2)) + 1} digits>"
        return repr(x)

    def repr_float(self, x: float, level: int) -> str:
        return repr(x)


_SHORT = _ShortRepr()


def _show(value: Any) -> str:
    """A short, always printable description of a (possibly malformed) JSON value."""
    try:
        if isinstance(value, bool):
            return repr(value)
        if isinstance(value, numbers.Integral):
            return _SHORT.repr_int(int(value), 0)
        text = _SHORT.repr(value)
    except Exception:  # a value whose repr fails: name its type only
        return f"<{type(value).__name__}>"
    return text if len(text) <= 200 else text[:197] + "..."


#: Integers in the metadata beyond this are taken to be corrupt (no axis is this long).
_MAX_INT = 2**62


def _parse_int(value: Any, what: str, *, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise MetadataError(f"{what} must be an integer, got {value!r}")
    if isinstance(value, numbers.Integral):
        out = int(value)
    elif isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer():
        if abs(float(value)) > _MAX_INT:
            raise MetadataError(f"{what} is impossibly large: {_show(value)} (at most 2**62)")
        out = int(float(value))
    else:
        raise MetadataError(f"{what} must be an integer, got {_show(value)}")
    if abs(out) > _MAX_INT:
        raise MetadataError(f"{what} is impossibly large: {_show(out)} (at most 2**62)")
    if out < minimum:
        raise MetadataError(f"{what} must be >= {minimum}, got {out}")
    return out


def _is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes, bytearray))


def _parse_shape(value: Any, what: str, *, minimum: int, ndim: int | None = None) -> tuple[int, ...]:
    if not _is_list(value):
        raise MetadataError(f"{what} must be a list of integers, got {_show(value)}")
    if len(value) > MAX_NDIM:
        raise MetadataError(f"{what} has {len(value)} dimensions; at most {MAX_NDIM} are supported")
    if ndim is not None and len(value) != ndim:
        raise MetadataError(f"{what} must have {ndim} entries, got {len(value)}: {_show(list(value))}")
    return tuple(_parse_int(v, f"{what}[{i}]", minimum=minimum) for i, v in enumerate(value))


def _parse_floats(value: Any, what: str) -> tuple[float, ...]:
    if not _is_list(value):
        raise MetadataError(f"{what} must be a list of numbers, got {_show(value)}")
    if len(value) > MAX_NDIM:
        raise MetadataError(f"{what} has {len(value)} entries; at most {MAX_NDIM} are supported")
    out = []
    for i, v in enumerate(value):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
            raise MetadataError(f"{what}[{i}] must be a number, got {_show(v)}")
        try:
            f = float(v)
        except (OverflowError, ValueError):
            f = math.inf
        if not math.isfinite(f) or f < 0:
            raise MetadataError(f"{what}[{i}] must be a finite number >= 0, got {_show(v)}")
        out.append(f)
    return tuple(out)


def _parse_padding(value: Any, ndim: int) -> tuple[int, ...]:
    if value is None:
        return (0,) * ndim
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
        return (_parse_int(value, "padding", minimum=0),) * ndim
    return _parse_shape(value, "padding", minimum=0, ndim=ndim)


def _given(value: Any) -> bool:
    """Whether an optional per-axis field holds something (None and empty lists do not)."""
    if value is None:
        return False
    if _is_list(value):
        return len(value) > 0
    return True


def _parse_dtype(value: Any, size: int) -> np.dtype:
    if not isinstance(value, (str, np.dtype, type)):
        raise MetadataError(f"dtype must be a numpy type string like '<u2', got {_show(value)}")
    if isinstance(value, str) and len(value) > 200:
        raise MetadataError(f"dtype {_show(value)} is not a numpy dtype")
    try:
        dt = np.dtype(value)
    except Exception as e:  # numpy raises TypeError, ValueError, SyntaxError... on junk
        raise MetadataError(f"dtype {_show(value)} is not a numpy dtype") from e
    if dt.hasobject:
        raise MetadataError(f"dtype {dt} holds Python objects; refused")
    if dt.itemsize == 0 or dt.subdtype is not None:
        raise MetadataError(f"dtype {_show(value)} cannot be the element type of an array ({dt.itemsize} bytes"
                            f"{', a sub-array' if dt.subdtype is not None else ''})")
    if size * dt.itemsize > MAX_SIZE:
        raise MetadataError(f"dtype {dt}: {size} elements of {dt.itemsize} bytes is impossibly large")
    return dt


def _parse_interval(value: Any) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise MetadataError(f"frame_interval must be a positive number of seconds, got {_show(value)}")
    try:
        f = float(value)
    except (OverflowError, ValueError):
        f = math.inf
    if not (math.isfinite(f) and f > 0 and math.isfinite(1.0 / f)):
        raise MetadataError(f"frame_interval must be a positive number of seconds, got {_show(value)}")
    return f


def _fit_resolution(values: tuple[float, ...], ndim: int) -> tuple[float, ...]:
    """Left-pad (or keep the last `ndim` of) per-axis sizes; old writers wrote 3 for any rank."""
    if len(values) >= ndim:
        return values[len(values) - ndim :]
    return (1.0,) * (ndim - len(values)) + values
