"""Several cameras: one dataset per camera, read together as one array with a camera axis.

Each camera is written by its own :class:`~split_dataset.SplitDatasetWriter` (in its own
thread or process, at its own pace) into its own folder, ``acq/cam0``, ``acq/cam1``...:
each has its own lock, its own crash safety and resumes on its own. They share a clock:
the writers' default time stamps are ``time.time()`` (the same epoch in every process on a
machine), or pass the cameras' hardware time stamps converted to one clock.
:func:`open_cameras` reads them together, lazily, as an array of shape
``(T, C, *frame_shape)`` (axis 1: the camera), frames matched by index or by time.
"""

from __future__ import annotations

import operator
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .dataset import SplitDataset
from .errors import SplitDatasetError
from .live import FrameTimes, _Changes, _root_of
from .storage import METADATA_FILENAME, scan_block_files

__all__ = ["open_cameras", "CameraStack", "CameraMismatchError", "NoFrameTimesError"]

_ALIGNS = ("index", "time")


class CameraMismatchError(SplitDatasetError, ValueError):
    """The cameras' datasets cannot be stacked: their frame shapes or dtypes differ."""


class NoFrameTimesError(SplitDatasetError, ValueError):
    """``align="time"`` on a camera whose dataset has no per-frame time stamps."""


def _is_dataset(folder: Path) -> bool:
    try:
        return (folder / METADATA_FILENAME).is_file() or bool(scan_block_files(folder))
    except OSError:
        return False


def camera_folders(parent: str | os.PathLike[str]) -> list[Path]:
    """The immediate subfolders of `parent` that are split datasets, sorted by name (hidden ones
    left out).

    Examples
    --------
    >>> camera_folders("acq")  # doctest: +SKIP
    [PosixPath('acq/cam0'), PosixPath('acq/cam1')]
    """
    root = Path(parent)
    if not root.is_dir():
        raise FileNotFoundError(f"{str(root)!r} is not a folder")
    return sorted((p for p in root.iterdir() if not p.name.startswith(".") and p.is_dir() and _is_dataset(p)),
                  key=lambda p: p.name)


def _leading_true(mask: np.ndarray) -> int:
    """How many elements at the start of `mask` are True."""
    stop = np.flatnonzero(~mask)
    return int(stop[0]) if len(stop) else len(mask)


def _positions(item: Any, n: int, what: str) -> tuple[np.ndarray, bool]:
    """Positions along an axis of length `n` that `item` selects, and whether it was an integer."""
    if isinstance(item, slice):
        return np.arange(n)[item], False
    if not isinstance(item, (bool, np.bool_)):
        try:
            i = operator.index(item)
        except TypeError:
            pass
        else:
            try:
                return np.array([range(n)[i]]), True
            except IndexError:
                raise IndexError(f"{what} index {i} is out of range for {n} {what}s") from None
    arr = np.asarray(item)
    if arr.ndim != 1 or arr.dtype.kind not in "iub":
        raise IndexError(f"the {what} axis takes an integer, a slice, or a 1-D array of integers or booleans; "
                         f"got {item!r:.60}")
    return np.arange(n)[arr], False


def _as_reads(frames: np.ndarray) -> Any:
    """A camera's frame indices as the cheapest index that reads them: a slice when they are a run."""
    if len(frames) == 0:
        return slice(0, 0)
    if len(frames) == 1 or (np.diff(frames) == 1).all():
        return slice(int(frames[0]), int(frames[-1]) + 1)
    return frames


class CameraStack:
    """Several cameras' datasets read together as one lazy array ``(T, C, *frame_shape)``.

    Made by :func:`open_cameras`; see there for how frames are matched. Index it like numpy
    (integers, slices or 1-D integer arrays on the first two axes, integers and slices on the
    others): only the frames asked for are read, from each camera's dataset.

    Attributes
    ----------
    datasets
        The cameras' :class:`~split_dataset.SplitDataset`, in camera order.
    names
        Their folder names.
    align, tolerance
        As given to :func:`open_cameras`.
    """

    def __init__(self, datasets: Sequence[SplitDataset], align: str = "index", tolerance: float | None = None) -> None:
        if align not in _ALIGNS:
            raise ValueError(f"align must be 'index' or 'time', got {align!r}")
        if tolerance is not None:
            if align != "time":
                raise ValueError("tolerance applies to align='time'")
            if not tolerance >= 0:
                raise ValueError(f"tolerance must be None or seconds >= 0, got {tolerance!r}")
        if not datasets:
            raise ValueError("no camera dataset given (a parent folder needs subfolders that are split datasets)")
        self.datasets: tuple[SplitDataset, ...] = tuple(datasets)
        self.names: tuple[str, ...] = tuple(ds.root.name for ds in self.datasets)
        self.align = align
        self.tolerance = None if tolerance is None else float(tolerance)
        first = self.datasets[0]
        for ds in self.datasets[1:]:
            if ds.shape[1:] != first.shape[1:] or ds.dtype != first.dtype:
                raise CameraMismatchError(
                    f"cameras differ: {str(first.root)!r} holds frames {first.shape[1:]} {first.dtype}, "
                    f"{str(ds.root)!r} holds {ds.shape[1:]} {ds.dtype}; the frames of every camera must have the "
                    "same shape and dtype")
        self._times = [FrameTimes() for _ in self.datasets]
        self._changes = [_Changes(ds.root) for ds in self.datasets]
        for c in self._changes:
            c.seen()
        self._index = np.zeros((0, len(self.datasets)), np.int64)
        self._unmatched = np.zeros(0, np.int64)
        self._align()

    # ------------------------------------------------------------------ matching

    def _camera_times(self, c: int) -> np.ndarray:
        ds = self.datasets[c]
        return self._times[c].read(ds, 0, ds.shape[0])

    def _align(self) -> None:
        counts = [ds.shape[0] for ds in self.datasets]
        n_cameras = len(self.datasets)
        if self.align == "index":
            frames = min(counts)
            self._index = np.repeat(np.arange(frames, dtype=np.int64)[:, None], n_cameras, axis=1)
            return
        times = [self._camera_times(c) for c in range(n_cameras)]
        for c, ds in enumerate(self.datasets):
            if counts[c] and not self._times[c].has_records:
                raise NoFrameTimesError(
                    f"{str(ds.root)!r} has no per-frame time stamps (written without per-frame records): "
                    "align='time' needs them; use align='index'")
        t0 = times[0]
        index = np.zeros((len(t0), n_cameras), np.int64)
        index[:, 0] = np.arange(len(t0))
        matched = np.isfinite(t0)
        settled = np.ones(len(t0), bool)
        with np.errstate(invalid="ignore"):
            for c in range(1, n_cameras):
                tc = times[c]
                valid = np.flatnonzero(np.isfinite(tc))
                if self.datasets[c].complete is False:  # still growing: a later frame could be nearer
                    settled &= (t0 <= tc[valid].max()) if len(valid) else False
                if not len(valid):
                    matched[:] = False
                    continue
                order = valid[np.argsort(tc[valid], kind="stable")]
                sorted_t = tc[order]
                pos = np.searchsorted(sorted_t, t0)
                before = np.clip(pos - 1, 0, len(order) - 1)
                after = np.clip(pos, 0, len(order) - 1)
                pick = np.where(np.abs(sorted_t[after] - t0) < np.abs(sorted_t[before] - t0), after, before)
                index[:, c] = order[pick]
                if self.tolerance is not None:
                    matched &= np.abs(sorted_t[pick] - t0) <= self.tolerance
        final = _leading_true(settled)
        self._index = index[:final][matched[:final]]
        self._unmatched = np.flatnonzero(~matched[:final]).astype(np.int64)

    # ------------------------------------------------------------------ array protocol

    @property
    def shape(self) -> tuple[int, ...]:
        """``(T, C, *frame_shape)``."""
        return (len(self._index), len(self.datasets)) + self.frame_shape

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """The shape of one camera's frame."""
        return tuple(self.datasets[0].shape[1:])

    @property
    def dtype(self) -> np.dtype:
        """The element type (every camera's)."""
        return self.datasets[0].dtype

    @property
    def ndim(self) -> int:
        """``2 + len(frame_shape)``."""
        return 2 + len(self.frame_shape)

    @property
    def n_cameras(self) -> int:
        """C, the number of cameras."""
        return len(self.datasets)

    def __len__(self) -> int:
        return len(self._index)

    @property
    def index(self) -> np.ndarray:
        """``(T, C)`` int64: which frame of each camera makes each frame of the stack."""
        out: np.ndarray = self._index.copy()
        out.flags.writeable = False
        return out

    @property
    def unmatched(self) -> np.ndarray:
        """Frames of camera 0 left out of the stack (``align="time"``): those without a frame of every
        other camera within `tolerance`, or without a time stamp. Empty for ``align="index"``."""
        out: np.ndarray = self._unmatched.copy()
        out.flags.writeable = False
        return out

    @property
    def frame_times(self) -> np.ndarray:
        """``(T, C)`` float64: the time stamp of each camera's frame in each frame of the stack (NaN
        where unknown, e.g. a camera written without per-frame records)."""
        out: np.ndarray = np.full(self._index.shape, np.nan)
        for c in range(len(self.datasets)):
            times = self._camera_times(c)
            if len(times):
                out[:, c] = times[self._index[:, c]]
        return out

    @property
    def time_offsets(self) -> np.ndarray:
        """``(T, C)``: each camera's frame time minus camera 0's (0 in column 0; NaN where unknown):
        how far apart the matched frames were taken."""
        times = self.frame_times
        out: np.ndarray = times - times[:, :1]
        return out

    @property
    def complete(self) -> bool:
        """Whether every camera's writer has closed its dataset."""
        return all(ds.complete is True for ds in self.datasets)

    def __getitem__(self, key: Any) -> Any:
        """Read a selection (numpy semantics on the stack's axes; see the class)."""
        items = key if isinstance(key, tuple) else (key,)
        if sum(item is Ellipsis for item in items) > 1:
            raise IndexError("an index can only have a single ellipsis ('...')")
        if any(item is None for item in items):
            raise IndexError("np.newaxis is not supported by a camera stack: index the result")
        if any(item is Ellipsis for item in items):
            at = next(k for k, item in enumerate(items) if item is Ellipsis)
            fill = (slice(None),) * (self.ndim - len(items) + 1)
            items = items[:at] + fill + items[at + 1:]
        if len(items) > self.ndim:
            raise IndexError(f"too many indices for a camera stack: it is {self.ndim}-dimensional, but "
                             f"{len(items)} were indexed")
        items = items + (slice(None),) * (self.ndim - len(items))
        rest = items[2:]
        for item in rest:
            if not isinstance(item, slice):
                try:
                    operator.index(item)
                except TypeError:
                    raise IndexError(f"the frame axes of a camera stack take integers and slices; got {item!r:.60}: "
                                     "index the result further") from None
        rows, t_scalar = _positions(items[0], len(self._index), "frame")
        cams, c_scalar = _positions(items[1], len(self.datasets), "camera")
        parts = []
        for c in cams:
            frames = self._index[rows, c]
            ds = self.datasets[c]
            if t_scalar:
                parts.append(np.asarray(ds[(int(frames[0]),) + rest]))
            else:
                parts.append(np.asarray(ds[(_as_reads(frames),) + rest]))
        out: np.ndarray
        if c_scalar:
            out = parts[0]
        elif not parts:
            probe = np.broadcast_to(np.zeros((), self.dtype), (1,) + self.frame_shape)
            inner = probe[(0,) + rest].shape
            out = np.empty(((0,) if t_scalar else (len(rows), 0)) + inner, self.dtype)
        else:
            out = np.stack(parts, axis=0 if t_scalar else 1)
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out: np.ndarray = self[...]
        return out if dtype is None else out.astype(dtype, copy=False)

    def to_dask(self, chunks: Any = None) -> Any:
        """A lazy dask array ``(T, C, *frame_shape)``: each camera's ``to_dask(chunks)`` (one chunk per
        block file by default), its matched frames taken, stacked on axis 1. Needs the ``dask`` extra.

        Examples
        --------
        >>> stack.to_dask().mean(axis=0).compute()  # doctest: +SKIP
        """
        import dask.array as da

        stack: Callable[..., Any] = da.stack  # untyped in dask
        parts = []
        for c, ds in enumerate(self.datasets):
            x = ds.to_dask(chunks)
            parts.append(x[_as_reads(self._index[:, c])])
        return stack(parts, axis=1)

    # ------------------------------------------------------------------ live

    def refresh(self) -> CameraStack:
        """Re-read every camera's dataset (those still being written grow) and match the frames again.

        Frames already in the stack keep their place: by index trivially; by time because a frame
        of camera 0 enters the stack only once every camera still being written has a frame at
        least as late (a later frame could not be nearer).

        Examples
        --------
        >>> stack.refresh().shape  # doctest: +SKIP
        (120, 2, 512, 512)
        """
        for ds, changes in zip(self.datasets, self._changes):
            changes.seen()
            ds.refresh()
        self._align()
        return self

    def _refresh_changed(self) -> None:
        """Re-read the cameras whose metadata changed (or once a second), then match again."""
        grew = False
        for ds, changes in zip(self.datasets, self._changes):
            if changes.changed():
                ds.refresh()
                grew = True
        if grew:
            self._align()

    def follow(self, timeout: float | None = 10.0, poll: float = 0.05,
               start: int = 0) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Yield ``(t, frames, times)`` for every frame of the stack as it becomes readable in every
        camera: `frames` ``(C, *frame_shape)``, `times` ``(C,)`` (NaN where unknown).

        Like :func:`split_dataset.follow` for one dataset: in order, each once, ending when every
        camera's writer has closed (after everything) or after `timeout` seconds without a new
        frame of the stack (None: never).

        Examples
        --------
        >>> for t, frames, times in open_cameras("acq").follow(timeout=5):  # doctest: +SKIP
        ...     show(frames)
        """
        if timeout is not None and not timeout >= 0:
            raise ValueError(f"timeout must be None or a number of seconds >= 0, got {timeout!r}")
        if not poll > 0:
            raise ValueError(f"poll must be a positive number of seconds, got {poll!r}")
        nxt = int(start)
        waiting_since = time.monotonic()
        while True:
            self._refresh_changed()
            if len(self._index) > nxt:
                lo, hi = nxt, len(self._index)
                times = self.frame_times[lo:hi]
                for t in range(lo, hi):
                    nxt = t + 1
                    yield t, self[t], times[t - lo]
                waiting_since = time.monotonic()
                continue
            if self.complete:
                return
            now = time.monotonic()
            if timeout is not None and now - waiting_since >= timeout:
                return
            wait = poll if timeout is None else min(poll, waiting_since + timeout - now)
            time.sleep(max(wait, 0.0))

    def close(self) -> None:
        """Close every camera's open block files."""
        for ds in self.datasets:
            ds.close()

    def __enter__(self) -> CameraStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<CameraStack {list(self.names)} shape={self.shape} dtype={self.dtype} align={self.align!r}"
                + (f" tolerance={self.tolerance}" if self.tolerance is not None else "") + ">")


def open_cameras(paths_or_parent: str | os.PathLike[str] | Sequence[str | os.PathLike[str] | SplitDataset],
                 align: str = "index", tolerance: float | None = None, *,
                 fill_value: Any = None) -> CameraStack:
    """Open several cameras' datasets (one per camera, sharing a clock) as one lazy array
    ``(T, C, *frame_shape)``, the camera on axis 1.

    Parameters
    ----------
    paths_or_parent
        The cameras' dataset folders (or open datasets), in camera order; or one parent folder,
        meaning its immediate subfolders that are split datasets, sorted by name
        (``acq/cam0``, ``acq/cam1``...).
    align
        ``"index"``: frame t of the stack is frame t of every camera; T is the number of frames
        every camera has (the fewest). ``"time"``: frame t of camera 0 is matched with the frame
        of each other camera nearest to it in time (``frame_times``; the earlier on a tie); T
        counts camera 0's frames matched in every camera. Needs per-frame time stamps
        (:class:`NoFrameTimesError` otherwise). While a camera is still being written, a frame
        of camera 0 later than that camera's latest frame waits (a nearer one may come).
    tolerance
        With ``align="time"``: seconds; a frame of camera 0 with no frame of every other camera
        within `tolerance` is left out of the stack (a dropped frame in one camera drops that
        moment from the stack, nothing is shifted) and listed in ``stack.unmatched``. None:
        every frame of camera 0 is matched with the nearest, however far (check
        ``stack.time_offsets``).
    fill_value
        Passed to each :class:`~split_dataset.SplitDataset`.

    Returns
    -------
    CameraStack
        With ``shape``, ``dtype``, numpy indexing, ``frame_times`` ``(T, C)``, ``index``
        (each camera's frame number) ``(T, C)``, ``time_offsets``, ``unmatched``,
        ``refresh()``, ``follow()``, ``to_dask()`` and ``datasets``.

    Raises
    ------
    CameraMismatchError
        The cameras' frame shapes or dtypes differ.
    NoFrameTimesError
        ``align="time"`` and a camera has frames but no time stamps.

    Examples
    --------
    >>> import numpy as np, os, tempfile, split_dataset
    >>> acq = tempfile.mkdtemp()
    >>> for c in range(2):
    ...     with split_dataset.SplitDatasetWriter(os.path.join(acq, f"cam{c}"), (4, 4), "uint8", 5,
    ...                                           fsync=False) as w:
    ...         for t in range(7 + c):
    ...             w.append(np.full((4, 4), 10 * c + t, "uint8"), timestamps=t + 0.01 * c)
    >>> stack = split_dataset.open_cameras(acq)
    >>> stack.shape, stack[6, :, 0, 0].tolist()
    ((7, 2, 4, 4), [6, 16])
    >>> split_dataset.open_cameras(acq, align="time", tolerance=0.005).shape
    (0, 2, 4, 4)
    >>> split_dataset.open_cameras(acq, align="time", tolerance=0.02).frame_times[1].tolist()
    [1.0, 1.01]
    """
    if isinstance(paths_or_parent, (str, os.PathLike)):
        parent = Path(paths_or_parent)
        if _is_dataset(parent):
            raise ValueError(f"{str(parent)!r} is itself a split dataset: give a list of the cameras' datasets, or "
                             "the folder holding them")
        items: list[Any] = list(camera_folders(parent))
        if not items:
            raise ValueError(f"{str(parent)!r} holds no split dataset folder (one per camera expected)")
    else:
        items = list(paths_or_parent)
    datasets = [item if isinstance(item, SplitDataset) else SplitDataset(_root_of(item), fill_value=fill_value)
                for item in items]
    return CameraStack(datasets, align=align, tolerance=tolerance)
