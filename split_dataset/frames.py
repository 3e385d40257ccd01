"""Per-frame records: when each frame was taken, the camera's frame counter, small numbers.

The acquisition writer stores them in each block file beside the frames (``frame_meta``,
docs/format.md §4.3), one record per frame along axis 0: ``time`` (float64 seconds),
``id`` (int64, -1 where unknown) and any extra fields (float64). :func:`join_records`
puts the blocks' records together for :attr:`split_dataset.SplitDataset.frame_meta`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["BASE_FIELDS", "frame_record_dtype", "join_records", "expand_gaps"]

#: Fields every record has: the time stamp (s) and the camera's frame counter (-1: unknown).
BASE_FIELDS = (("time", "<f8"), ("id", "<i8"))
#: Most dropped-frame ids :func:`expand_gaps` lists.
MAX_EXPANDED = 10_000_000


def frame_record_dtype(fields: Sequence[str] = ()) -> np.dtype:
    """The dtype of the per-frame records: ``time``, ``id``, then each extra field as float64.

    Examples
    --------
    >>> frame_record_dtype(("exposure_ms",)).names
    ('time', 'id', 'exposure_ms')
    """
    return np.dtype([*BASE_FIELDS, *((name, "<f8") for name in fields)])


def join_records(parts: Sequence[np.ndarray | None], lengths: Sequence[int]) -> np.ndarray | None:
    """One record array for consecutive blocks: `parts` (a block's records or None) of `lengths`
    frames; fields missing from a block read NaN (``id``: -1). None if no block has records.

    Examples
    --------
    >>> a = np.zeros(2, frame_record_dtype(("x",))); a["time"] = [1, 2]
    >>> r = join_records([a, None], [2, 3])
    >>> r["time"].tolist(), r["id"].tolist()[2:]
    ([1.0, 2.0, nan, nan, nan], [-1, -1, -1])
    """
    if all(p is None for p in parts):
        return None
    fields: list[str] = []
    for p in parts:
        for name in (p.dtype.names or ()) if p is not None else ():
            if name not in ("time", "id") and name not in fields:
                fields.append(name)
    out = np.empty(sum(lengths), frame_record_dtype(fields))
    out["id"] = -1
    for name in out.dtype.names or ():
        if name != "id":
            out[name] = np.nan
    pos = 0
    for p, n in zip(parts, lengths):
        if p is not None:
            for name in p.dtype.names or ():
                if name in (out.dtype.names or ()):
                    out[name][pos:pos + n] = p[name][:n]
        pos += n
    return out


def expand_gaps(gaps: Sequence[tuple[int, int]]) -> np.ndarray:
    """The frame ids that ``(first, count)`` gaps leave out, sorted (at most :data:`MAX_EXPANDED`).

    Examples
    --------
    >>> expand_gaps([(3, 2), (10, 1)]).tolist()
    [3, 4, 10]
    """
    if not gaps:
        return np.zeros(0, np.int64)
    total = min(sum(n for _, n in gaps), MAX_EXPANDED)
    out = np.empty(total, np.int64)
    pos = 0
    for first, n in gaps:
        k = min(n, total - pos)
        out[pos:pos + k] = np.arange(first, first + k)
        pos += k
        if pos >= total:
            break
    return np.sort(out)
