"""Reading a dataset while it is written: :func:`follow`, and the figures of ``split-dataset watch``.

A :class:`~split_dataset.SplitDatasetWriter` makes frames readable a block at a time: the
block file is renamed into place, then ``stack_metadata.json`` is replaced (atomically)
with the new frame count and ``complete: false``; :meth:`~split_dataset.SplitDatasetWriter.flush`
does the same for a partial block; ``close()`` writes ``complete: true``. A reader in any
process therefore finds new frames by watching ``stack_metadata.json``: :func:`follow`
looks at its ``stat`` (inode, size, times) every `poll` seconds, and only when it changed
re-reads the dataset (:meth:`~split_dataset.SplitDataset.refresh`: the metadata, a folder
listing and one block header).

Latency
-------
A frame becomes readable when its block is committed or the writer flushes, so the time
from ``append`` to :func:`follow` yielding it is at most

    block fill time (``frames_per_file`` / frame rate, or the time between flushes)
    + commit time (compress, write, rename: ``writer.health().latency_p99`` minus the fill time)
    + `poll` + the time to read the frame.

To lower it, write smaller blocks (``frames_per_file``) or call ``writer.flush()``
periodically from the acquisition loop (every 0.5 s, say; ``flush`` is not to be called from
another thread than ``append``'s). Each flush rewrites the partial block so far (compressed,
renamed into place, with the metadata): flushing every ``f`` frames of blocks of ``n`` writes
about ``(n / f - 1) / 2`` times the data once more, and ``flush`` returns only when every
queued block is on disk, so the loop waits meanwhile. Keep flushes to a few per second for
large frames.

Polling costs one ``stat`` per `poll` seconds while nothing changes, plus a re-read of the
metadata, the folder listing and one block header per change; per-frame times are read
once per block (and again for a partial block that grew). Once a second the dataset is
re-read even if the ``stat`` looks unchanged: file times are coarse (a few milliseconds)
and inode numbers are reused, so two metadata writes in quick succession could otherwise
look identical.
"""

from __future__ import annotations

import collections
import json
import math
import os
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .dataset import SplitDataset
from .errors import NotASplitDatasetError, SplitDatasetError
from .locks import LOCK_FILENAME, live_writer
from .remote.store import is_url
from .storage import METADATA_FILENAME, STATUS_FILENAME, scan_block_files

__all__ = ["follow", "Follower", "DatasetReplacedError", "Watch", "WatchSample", "RECHECK"]

#: Seconds after which a follower re-reads the dataset even if the metadata's ``stat`` looks unchanged.
RECHECK = 1.0


class DatasetReplacedError(SplitDatasetError, RuntimeError):
    """The dataset being followed now holds fewer frames than were already read from it: it
    was replaced (``overwrite=True``) or cut short while it was followed."""


def _root_of(path: str | os.PathLike[str] | SplitDataset) -> Path:
    if isinstance(path, SplitDataset):
        return path.root
    if is_url(path):
        raise ValueError(f"{str(path)!r}: following a dataset being written works on local folders only")
    p = Path(path)
    return p.parent if p.name == METADATA_FILENAME else p


def _signature(root: Path) -> tuple[int, ...] | None:
    """What changes whenever the metadata is replaced: inode, size, modification and change times."""
    try:
        st = os.stat(root / METADATA_FILENAME)
    except (OSError, TypeError, ValueError):  # not there (yet), or a URL: re-read every RECHECK seconds
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class _Changes:
    """Tells when a dataset folder's metadata changed (or :data:`RECHECK` seconds passed)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._sig: tuple[int, ...] | None = None
        self._checked = -math.inf

    def seen(self) -> None:
        """The dataset was just read: remember the metadata's current state."""
        self._sig = _signature(self.root)
        self._checked = time.monotonic()

    def changed(self) -> bool:
        """Whether to re-read the dataset; if so, its current state counts as seen (taken before
        the re-read, so a change during it shows at the next look)."""
        sig = _signature(self.root)
        now = time.monotonic()
        if sig != self._sig or now - self._checked >= RECHECK:
            self._sig, self._checked = sig, now
            return True
        return False


def _open_when_there(root: Path, fill_value: Any) -> SplitDataset | None:
    """The dataset at `root`, or None while there is none yet (no metadata, no block file)."""
    if _signature(root) is None:
        try:
            if not scan_block_files(root):  # a legacy dataset without JSON is opened from its blocks
                return None
        except (FileNotFoundError, NotADirectoryError):
            return None
    try:
        return SplitDataset(root, fill_value=fill_value)
    except (FileNotFoundError, NotASplitDatasetError):
        if _signature(root) is None:  # removed, or not written yet, meanwhile
            return None
        raise


class FrameTimes:
    """The per-frame times of a growing dataset, read from each block file once (again only for a
    partial last block that grew): the incremental version of ``ds.frame_times``.

    Examples
    --------
    >>> times = FrameTimes()
    >>> times.read(ds, 0, ds.shape[0])  # doctest: +SKIP
    array([1.7e9, 1.7e9, ...])
    """

    def __init__(self) -> None:
        self._blocks: dict[int, tuple[int, np.ndarray | None]] = {}
        #: Whether any block read so far holds per-frame records.
        self.has_records = False

    def read(self, ds: SplitDataset, lo: int, hi: int) -> np.ndarray:
        """Times (float64 s, NaN where unknown) of frames ``lo:hi`` of `ds` as it is now."""
        out = np.full(max(hi - lo, 0), np.nan)
        grid = ds._grid
        if hi <= lo or not grid.ndim or any(grid.padding):
            return out
        per_block = grid.shape_block[0]
        for k in range(lo // per_block, (hi - 1) // per_block + 1):
            coords = (k,) + (0,) * (grid.ndim - 1)
            index = grid.linear(coords)
            n = grid.block_shape(coords)[0]
            cached = self._blocks.get(k)
            if cached is None or cached[0] < n:
                if index not in ds._present:
                    continue
                records = ds._read_frame_meta(index, n)
                cached = (n, None if records is None else np.array(records["time"], np.float64))
                self._blocks[k] = cached
                self.has_records = self.has_records or records is not None
            times = cached[1]
            if times is None:
                continue
            start = k * per_block
            a, b = max(lo, start), min(hi, start + n)
            out[a - lo : b - lo] = times[a - start : b - start]
        return out

    def forget(self) -> None:
        """Drop what was read (the dataset was replaced)."""
        self._blocks.clear()
        self.has_records = False


class Follower(Iterator[tuple[int, np.ndarray, float]]):
    """The iterator :func:`follow` returns: ``(index, frame, time)`` for every new frame, in order.

    Attributes
    ----------
    next_index
        The index of the next frame to yield (the frames yielded so far, plus `start`).
    ended
        Why iteration stopped: ``"complete"`` (the writer closed the dataset), ``"timeout"``
        (no new frame for `timeout` seconds) or ``"closed"`` (:meth:`close`); None while it runs.
    dataset
        The :class:`~split_dataset.SplitDataset` being followed (None until it exists).
    """

    def __init__(self, path: str | os.PathLike[str] | SplitDataset, timeout: float | None = 10.0,
                 poll: float = 0.05, start: int = 0, fill_value: Any = None) -> None:
        if timeout is not None and not timeout >= 0:
            raise ValueError(f"timeout must be None or a number of seconds >= 0, got {timeout!r}")
        if not poll > 0:
            raise ValueError(f"poll must be a positive number of seconds, got {poll!r}")
        if isinstance(start, bool) or int(start) != start or start < 0:
            raise ValueError(f"start must be a frame index >= 0, got {start!r}")
        self.root = _root_of(path)
        self.timeout = timeout
        self.poll = float(poll)
        self.next_index = self._start = int(start)
        self.ended: str | None = None
        self.dataset: SplitDataset | None = None
        self._fill_value = fill_value
        self._changes = _Changes(self.root)
        self._times = FrameTimes()
        self._gen = self._run()

    def __iter__(self) -> Follower:
        return self

    def __next__(self) -> tuple[int, np.ndarray, float]:
        return next(self._gen)

    def close(self) -> None:
        """Stop following (the iterator then ends) and close the dataset's open files."""
        self._gen.close()
        if self.ended is None:
            self.ended = "closed"
        if self.dataset is not None:
            self.dataset.close()

    def __enter__(self) -> Follower:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _available(self) -> int:
        """Frames readable now (re-reading the dataset if its metadata changed)."""
        ds = self.dataset
        if ds is None:
            ds = _open_when_there(self.root, self._fill_value)
            if ds is None:
                return 0
            self.dataset = ds
            self._changes.seen()
        elif self._changes.changed():
            ds.refresh()
        n = ds.shape[0]
        if n < self.next_index and self.next_index > self._start:  # a frame yielded is gone
            raise DatasetReplacedError(
                f"{str(self.root)!r} now holds {n} frames, fewer than the {self.next_index} already followed: "
                "it was replaced or cut short while it was followed")
        return n

    def _run(self) -> Generator[tuple[int, np.ndarray, float], None, None]:
        waiting_since = time.monotonic()
        while True:
            n = self._available()
            ds = self.dataset
            if ds is not None and n > self.next_index:
                lo = self.next_index
                times = self._times.read(ds, lo, n)
                for i in range(lo, n):
                    frame = np.asarray(ds[i])
                    self.next_index = i + 1
                    yield i, frame, float(times[i - lo])
                waiting_since = time.monotonic()
                continue  # look again at once: more may have come while the caller worked
            if ds is not None and ds.complete is True:
                self.ended = "complete"
                return
            now = time.monotonic()
            if self.timeout is not None and now - waiting_since >= self.timeout:
                self.ended = "timeout"
                return
            wait = self.poll if self.timeout is None else min(self.poll, waiting_since + self.timeout - now)
            time.sleep(max(wait, 0.0))


def follow(path: str | os.PathLike[str] | SplitDataset, timeout: float | None = 10.0, poll: float = 0.05,
           start: int = 0, fill_value: Any = None) -> Follower:
    """Yield ``(index, frame, time)`` for every frame of a dataset being written, in order, as each
    becomes readable: from another thread or another process than the writer's.

    Every frame from `start` on is yielded exactly once, in index order, including the frames
    already on disk. The iteration ends when the writer closes the dataset (its metadata says
    ``complete: true``), after everything was yielded; or when no new frame came for `timeout`
    seconds. A dataset that does not exist yet is waited for (for `timeout` seconds too); a
    writer that stops and another that resumes (``mode="a"``) are followed through.

    Parameters
    ----------
    path
        The dataset folder (local; or an open :class:`~split_dataset.SplitDataset`, whose folder
        is followed).
    timeout
        Seconds without a new frame after which the iteration ends (counted from when every
        readable frame had been yielded); None: wait forever.
    poll
        Seconds between two looks at ``stack_metadata.json`` (one ``stat`` each).
    start
        The first frame index to yield (frames before it are skipped; a `start` beyond the
        frames on disk waits for them).
    fill_value
        As for :class:`~split_dataset.SplitDataset` (frames of a missing block read as this
        instead of raising).

    Returns
    -------
    Follower
        An iterator of ``(index, frame, time)``: `frame` a numpy array of the frame shape,
        `time` the frame's time stamp (``ds.frame_times[index]``, seconds) or NaN for datasets
        without per-frame records. Its ``ended`` says why it stopped; ``close()`` stops it.

    Raises
    ------
    DatasetReplacedError
        The dataset shrank below the frames already yielded (replaced while followed).

    Notes
    -----
    Latency: a frame is readable once its block is committed or the writer flushed, so it is
    yielded at most a block's fill time (or the time between flushes) + the commit time +
    `poll` after ``append``. Smaller ``frames_per_file`` or a periodic ``writer.flush()`` in
    the acquisition loop lower it (see :mod:`split_dataset.live`). While nothing changes a
    follower costs one ``stat`` per `poll` and one re-read of the metadata per second.

    Examples
    --------
    >>> import numpy as np, os, tempfile, threading, split_dataset
    >>> path = os.path.join(tempfile.mkdtemp(), "cam0")
    >>> def acquire():
    ...     with split_dataset.SplitDatasetWriter(path, (4, 4), "uint16", frames_per_file=5, fsync=False) as w:
    ...         for t in range(12):
    ...             w.append(np.full((4, 4), t, "uint16"), timestamps=100.0 + t)
    >>> writer = threading.Thread(target=acquire); writer.start()
    >>> got = [(i, int(frame[0, 0]), t) for i, frame, t in split_dataset.follow(path, timeout=10)]
    >>> writer.join()
    >>> got[:2], len(got)
    ([(0, 0, 100.0), (1, 1, 101.0)], 12)
    """
    return Follower(path, timeout=timeout, poll=poll, start=start, fill_value=fill_value)


# ---------------------------------------------------------------------------------------------- watch


@dataclass(frozen=True)
class WatchSample:
    """What ``split-dataset watch`` shows at one moment (see :class:`Watch`).

    Attributes
    ----------
    state
        ``"writing"`` (a live writer holds the folder), ``"complete"`` or ``"no writer"``
        (incomplete, and nobody writes it: stopped, crashed, or a writer without a lock).
    writer
        Who holds the writer lock ("process 123 on host"), or None.
    n_frames
        Frames on disk (readable).
    frames_per_s
        From the frames' time stamps over the last 10 s of them when the dataset has
        per-frame records, else (while a writer runs) from the growth of the frame count
        between samples; None before it can be told.
    mb_per_s, queue_depth, queue_capacity, frames_behind, latency_p50, latency_p99
        The writer's own figures (:class:`~split_dataset.stream.WriterHealth`, from
        ``.split_dataset.writer.status.json``, written after each block); None without a live
        writer or before its first block.
    n_dropped
        Frames the camera dropped (the writer's count, else the metadata's).
    status_age
        Seconds since the writer last wrote its figures, or None.
    """

    state: str
    writer: str | None
    n_frames: int
    frames_per_s: float | None
    mb_per_s: float | None
    queue_depth: int | None
    queue_capacity: int | None
    frames_behind: int | None
    latency_p50: float | None
    latency_p99: float | None
    n_dropped: int
    status_age: float | None


def _read_status(root: Path) -> dict[str, Any] | None:
    """The live writer's figures, if they are the current writer's (not left by an earlier one)."""
    try:
        doc = json.loads((root / STATUS_FILENAME).read_text())
        lock_time = os.stat(root / LOCK_FILENAME).st_mtime
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("updated"), (int, float)):
        return None
    if doc["updated"] < lock_time - 1.0:  # written before the current writer took the lock
        return None
    return doc


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _float_or_none(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class Watch:
    """Figures of a dataset being written, sampled from outside the writer's process.

    Parameters
    ----------
    path
        The dataset folder.
    window
        Seconds over which frames per second are measured.

    Examples
    --------
    >>> w = Watch("fish1/raw")  # doctest: +SKIP
    >>> s = w.sample(); s.state, s.n_frames, s.frames_per_s  # doctest: +SKIP
    ('writing', 1200, 20.0)
    """

    def __init__(self, path: str | os.PathLike[str], window: float = 10.0) -> None:
        self.root = _root_of(path)
        self.dataset = SplitDataset(self.root)
        self.window = window
        self._changes = _Changes(self.root)
        self._changes.seen()
        self._times = FrameTimes()
        self._history: collections.deque[tuple[float, int]] = collections.deque()

    def _fps(self, n: int, growing: bool) -> float | None:
        now = time.monotonic()
        self._history.append((now, n))
        while len(self._history) > 2 and now - self._history[1][0] >= self.window:
            self._history.popleft()
        tail = min(n, 100_000)
        if tail >= 2:
            times = self._times.read(self.dataset, n - tail, n)
            times = times[np.isfinite(times)]
            if len(times) >= 2:
                recent = times[times >= times[-1] - self.window]
                span = float(recent[-1] - recent[0]) if len(recent) >= 2 else 0.0
                if span > 0:
                    return (len(recent) - 1) / span
        (t0, n0), (t1, n1) = self._history[0], self._history[-1]
        return (n1 - n0) / (t1 - t0) if growing and t1 > t0 else None

    def sample(self) -> WatchSample:
        """The figures now (re-reading the dataset if its metadata changed)."""
        if self._changes.changed():
            self.dataset.refresh()
        ds = self.dataset
        n = ds.shape[0]
        holder = live_writer(self.root)
        fps = self._fps(n, growing=ds.complete is not True and holder is not None)
        dropped = sum(count for _, count in ds.meta.dropped_frames)
        none: dict[str, Any] = dict(mb_per_s=None, queue_depth=None, queue_capacity=None, frames_behind=None,
                                    latency_p50=None, latency_p99=None, status_age=None)
        if ds.complete is True or holder is None:
            return WatchSample(state="complete" if ds.complete is True else "no writer", writer=None, n_frames=n,
                               frames_per_s=fps, n_dropped=dropped, **none)
        status = _read_status(self.root)
        if status is None:
            return WatchSample(state="writing", writer=holder, n_frames=n, frames_per_s=fps, n_dropped=dropped,
                               **none)
        return WatchSample(
            state="writing", writer=holder, n_frames=n, frames_per_s=fps,
            mb_per_s=_float_or_none(status.get("mb_per_s")),
            queue_depth=_int_or_none(status.get("queue_depth")),
            queue_capacity=_int_or_none(status.get("queue_capacity")),
            frames_behind=_int_or_none(status.get("frames_behind")),
            latency_p50=_float_or_none(status.get("latency_p50")),
            latency_p99=_float_or_none(status.get("latency_p99")),
            n_dropped=max(dropped, _int_or_none(status.get("n_dropped")) or 0),
            status_age=max(0.0, time.time() - float(status["updated"])),
        )

    def close(self) -> None:
        """Close the dataset's open files."""
        self.dataset.close()
