"""The display range writers record (``display_range`` in the metadata, docs/format.md §5):
robust percentiles of pixels sampled from the blocks as they are written, so that a viewer
sets its contrast without reading the data."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

__all__ = ["RangeSampler"]

#: values kept at most; beyond it every other one is dropped (a uniform thinning)
_KEEP = 1 << 16
#: values taken from one block at most
_PER_BLOCK = 1 << 14


class RangeSampler:
    """Pixels sampled from every block written; :meth:`range` gives their 0.5 and 99.5 percentiles.

    Thread-safe. From each block, up to 4 planes (evenly spread over the leading axes)
    are taken, thinned in y and x to about 16 K values; at most about 128 K values are kept.

    Examples
    --------
    >>> s = RangeSampler()
    >>> s.add(np.arange(1000, dtype="uint16").reshape(1, 10, 100))
    >>> [round(v, 3) for v in s.range()]
    [4.995, 994.005]
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parts: list[np.ndarray] = []
        self._n = 0

    def __getstate__(self) -> dict[str, Any]:  # sent to dask workers: the samples, not the lock
        return {"parts": self._parts, "n": self._n}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._lock = threading.Lock()
        self._parts, self._n = state["parts"], state["n"]

    def add(self, block: Any) -> None:
        """Sample `block` (numeric arrays only; others are ignored)."""
        arr = np.asarray(block)
        if arr.dtype.kind not in "iuf" or not arr.size:
            return
        planes = arr.reshape((-1,) + arr.shape[-2:]) if arr.ndim >= 2 else arr.reshape(1, 1, -1)
        pick = np.unique(np.linspace(0, len(planes) - 1, min(4, len(planes))).round().astype(int))
        area = int(np.prod(planes.shape[1:]))
        step = max(1, int(np.ceil(np.sqrt(area * len(pick) / _PER_BLOCK))))
        values = planes[pick, ::step, ::step].astype(np.float64).ravel()  # strided first: no copy of whole planes
        values = values[np.isfinite(values)]
        with self._lock:
            self._parts.append(values)
            self._n += len(values)
            if self._n > 2 * _KEEP:
                merged = np.concatenate(self._parts)[::2]
                self._parts, self._n = [merged], len(merged)

    def extend(self, values: np.ndarray) -> None:
        """Add values sampled elsewhere (:meth:`values` of another sampler)."""
        with self._lock:
            self._parts.append(np.asarray(values, np.float64))
            self._n += len(values)

    def values(self) -> np.ndarray:
        """The values sampled so far."""
        with self._lock:
            return np.concatenate(self._parts) if self._parts else np.zeros(0)

    def range(self) -> tuple[float, float] | None:
        """The 0.5 and 99.5 percentiles of the values sampled, None before any."""
        values = self.values()
        if not len(values):
            return None
        lo, hi = np.percentile(values, [0.5, 99.5])
        return (float(lo), float(hi))
