"""``SplitDatasetWriter``: append frames during an acquisition, for hours, losing nothing.

The caller's thread only validates and copies frames into a block buffer; a
background thread compresses each full block, writes it under a temporary name,
renames it into place and then replaces ``stack_metadata.json`` (atomically) with
the number of frames that are on disk. After every block and every :meth:`flush`,
the folder is a valid split dataset holding every frame written so far.

What survives what (tested out of process, ``tests/test_writer_kill.py``): every frame
passed to :meth:`~SplitDatasetWriter.append` is on disk after ``close()``, after the
script ends without closing the writer, after an uncaught exception, Ctrl-C
(``KeyboardInterrupt``) or SIGTERM, the dataset then being marked ``complete: false``
(:mod:`split_dataset.write.exits`). Only SIGKILL and power loss lose frames: those
appended since the last block was completed or the last
:meth:`~SplitDatasetWriter.flush` returned. Resuming (``mode="a"``) is
:mod:`split_dataset.write.resume`; the checksum lines, :mod:`split_dataset.write.sums`.
"""

from __future__ import annotations

import collections
import ctypes
import errno
import json
import keyword
import mmap
import os
import queue
import shutil
import sys
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .dataset import SplitDataset
from .errors import DiskFullError, DroppedFramesWarning, WriteError, WriterLockedError
from .frames import frame_record_dtype
from .locks import LOCK_FILENAME, WriterLock
from .metadata import MAX_GAPS, Metadata
from .storage import STATUS_FILENAME, block_name
from .storage.hdf5 import StagedBlock, discard_block
from .write import exits
from .write.options import DEFAULT_COMPRESSION, WriteOptions, check_dtype
from .write.start import start
from .write.sums import ChecksumLog

__all__ = ["SplitDatasetWriter", "WriterHealth", "WriteError", "DiskFullError", "WriterLockedError", "LOCK_FILENAME",
           "frame_record_dtype"]

_PREFAULT_STEP = 8 << 20
_MADV_POPULATE_WRITE = 23
_PAGE = mmap.PAGESIZE
_madvise: Any = None


#: Frames whose append-to-disk latency the writer keeps for :meth:`SplitDatasetWriter.health`.
_LATENCY_WINDOW = 4096
#: Seconds of committed blocks over which the write rate is measured.
_RATE_WINDOW = 10.0


def _field_name(name: Any) -> str:
    if (not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name) or name in ("time", "id")
            or len(name) > 64):
        raise ValueError(f"per-frame field names must be Python identifiers of at most 64 characters, other than "
                         f"'time' and 'id'; got {name!r}")
    return name


@dataclass(frozen=True)
class WriterHealth:
    """How a :class:`SplitDatasetWriter` keeps up (see :meth:`SplitDatasetWriter.health`).

    Attributes
    ----------
    n_frames, frames_safe
        Frames appended; frames on disk and described by the metadata.
    frames_behind
        ``n_frames - frames_safe``: what SIGKILL or power loss would lose now.
    queue_depth, queue_capacity
        Full blocks waiting to be written, and how many may wait before ``append`` blocks.
    mb_per_s
        Uncompressed MB committed per second over the last 10 s of commits (None before two).
    latency_p50, latency_p99
        Seconds from ``append`` to safely on disk, over the last 4096 frames committed (None before any).
    n_dropped
        Frames missing from the camera's frame ids.
    """

    n_frames: int
    frames_safe: int
    frames_behind: int
    queue_depth: int
    queue_capacity: int
    mb_per_s: float | None
    latency_p50: float | None
    latency_p99: float | None
    n_dropped: int


def _populate(lo: int, hi: int) -> bool:
    """Map the whole pages of memory ``[lo, hi)`` for writing, contents unchanged; False where
    ``madvise(MADV_POPULATE_WRITE)`` is unavailable (not Linux, or a kernel before 5.14)."""
    global _madvise
    if _madvise is None:
        _madvise = False
        if sys.platform.startswith("linux"):
            try:
                fn = ctypes.CDLL(None, use_errno=True).madvise
                fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
                fn.restype = ctypes.c_int
                _madvise = fn
            except (OSError, AttributeError):
                pass
    if not _madvise:
        return False
    lo = -(-lo // _PAGE) * _PAGE
    hi = hi // _PAGE * _PAGE
    if hi <= lo:
        return True
    if _madvise(lo, hi - lo, _MADV_POPULATE_WRITE) != 0:
        _madvise = False  # EINVAL: unsupported here; do not try again
        return False
    return True


class SplitDatasetWriter:
    """Write a split dataset frame by frame, as an acquisition produces it.

    The dataset grows along axis 0: its shape is ``(n_frames, *frame_shape)``, stored in
    blocks of `frames_per_file` frames (the last block may be shorter).

    Parameters
    ----------
    path
        Dataset folder. A non-empty folder raises ``FileExistsError`` unless
        `overwrite` or ``mode="a"``.
    frame_shape
        Shape of one frame, e.g. ``(30, 2048, 2048)`` for volumes or ``(2048, 2048)``.
    dtype
        Element type; appended data must have exactly this dtype (nothing is cast).
    frames_per_file
        Frames per block file.
    compression, resolution, units, axis_order, frame_interval, attrs, chunks
        As for :func:`split_dataset.save`.
    mode
        ``"w"`` to start a dataset, ``"a"`` to continue one after a restart (its frame
        shape, dtype and blocking must match).
    overwrite
        With ``mode="w"``, replace an existing dataset in `path`.
    queue_depth
        Full blocks waiting to be written before :meth:`append` blocks (backpressure).
        Memory is about ``(queue_depth + 2) * frames_per_file`` frames.
    fsync
        Flush each file to the disk before it is renamed into place.
    frame_fields
        Names of extra per-frame fields (see :meth:`append`'s `meta`), declared up front.
    flush_interval
        Seconds: while a block fills, the first :meth:`append` after this long writes the
        block's frames so far in the background (never more than one such write pending;
        :meth:`append` does not wait), so live readers (:func:`split_dataset.follow`) see
        frames within about this long, and SIGKILL loses at most about this much (while
        frames keep coming: a pause in appends delays the next write until the next append).
        Each flush rewrites the partial block: flushing every ``f`` frames of ``n``-frame blocks writes about
        ``(n / f - 1) / 2`` times the data once more. None (default): only full blocks,
        :meth:`flush` and ``close``.
    checksums
        Record each block's SHA-256 in ``SHA256SUMS`` as it is written (in the background
        thread), for ``split-dataset verify`` and ``sha256sum -c``. With ``mode="a"`` on a
        dataset that has a ``SHA256SUMS``, it is kept up to date whatever this says (left as
        it is, it would go stale as the partial last block is replaced).

    Notes
    -----
    A writer that is never closed is not lost: its background thread keeps it alive until
    the interpreter exits, which writes every frame appended (``complete: false``). While a
    writer is open in the main thread and SIGTERM has its default action, SIGTERM raises
    ``SystemExit(143)`` in the main thread instead of killing the process, so ``with``
    blocks and this exit path run; the default action is restored when the last writer
    closes. Only SIGKILL and power loss lose frames: those appended since the last block
    was completed or the last :meth:`flush` returned.

    The folder is locked (``.split_dataset.writer.lock``, see :mod:`split_dataset.locks`)
    while the writer runs: a second writer, ``save(..., overwrite=True)`` or ``convert``
    onto it raise :class:`~split_dataset.errors.WriterLockedError`. A lock left by a
    writer that died is taken over. ``mode="a"`` reconciles ``SHA256SUMS`` with the blocks
    it adopts (see :func:`split_dataset.write.sums.reconcile_checksums`).

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "acq")
    >>> with SplitDatasetWriter(path, (4, 8, 8), "uint16", frames_per_file=10) as w:
    ...     for t in range(25):
    ...         w.append(np.full((4, 8, 8), t, "uint16"))
    >>> ds = w.dataset
    >>> ds.shape, ds.n_blocks, int(ds[24, 0, 0, 0]), ds.complete
    ((25, 4, 8, 8), 3, 24, True)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        frame_shape: Sequence[int],
        dtype: Any,
        frames_per_file: int,
        *,
        compression: Any = DEFAULT_COMPRESSION,
        resolution: Sequence[float] | None = None,
        axis_order: str | None = None,
        attrs: Mapping[str, Any] | None = None,
        chunks: Sequence[int] | None = None,
        units: Sequence[str] | None = None,
        frame_interval: float | None = None,
        mode: str = "w",
        overwrite: bool = False,
        queue_depth: int = 2,
        fsync: bool = True,
        checksums: bool = True,
        frame_fields: Sequence[str] = (),
        flush_interval: float | None = None,
    ) -> None:
        self._frame_shape = tuple(int(s) for s in frame_shape)
        if any(s < 1 for s in self._frame_shape):
            raise ValueError(f"frame_shape must be positive integers, got {tuple(frame_shape)}")
        self._dtype = check_dtype(dtype)
        if isinstance(frames_per_file, bool) or int(frames_per_file) != frames_per_file or frames_per_file < 1:
            raise ValueError(f"frames_per_file must be a positive integer, got {frames_per_file!r}")
        self._fpf = int(frames_per_file)
        if mode not in ("w", "a"):
            raise ValueError(f"mode must be 'w' or 'a', got {mode!r}")
        if queue_depth < 1:
            raise ValueError(f"queue_depth must be >= 1, got {queue_depth}")
        if flush_interval is not None and (isinstance(flush_interval, bool) or not isinstance(
                flush_interval, (int, float)) or not 0 < flush_interval < float("inf")):
            raise ValueError(f"flush_interval must be a positive number of seconds or None, got {flush_interval!r}")
        declared = tuple(_field_name(f) for f in frame_fields)  # checked before the folder is touched
        options = WriteOptions.from_keywords(
            compression=compression, chunks=chunks, checksums=checksums, fsync=fsync, resolution=resolution,
            units=units, axis_order=axis_order, frame_interval=frame_interval, attrs=attrs)
        self._root = Path(path)
        block = (self._fpf,) + self._frame_shape
        started = start(self._root, options, self._frame_shape, self._dtype, self._fpf, append=mode == "a",
                        overwrite=overwrite)
        self._lock: WriterLock | None = started.lock
        self._meta: Metadata = started.meta
        self._sink = started.sink
        self._sums = ChecksumLog(self._root, self._sink.digest, started.sums)
        self._n_frames = self._frames_safe = started.n_frames
        self._block, self._fill = divmod(self._n_frames, self._fpf)
        self._buf: np.ndarray[Any, Any] | None = np.empty(block, self._dtype)
        if started.partial is not None:  # its frames are kept; the next write replaces the file
            self._buf[: self._fill] = started.partial
        # per-frame records (time, id, extra fields) of the block being filled, and arrival times
        self._fields: tuple[str, ...] = declared
        partial_meta = started.partial_meta
        if partial_meta is not None:
            self._fields += tuple(n for n in (partial_meta.dtype.names or ())[2:] if n not in self._fields)
        self._rec = self._new_records()
        self._arrive = np.zeros(self._fpf)
        self._last_id: int | None = None
        if partial_meta is not None and self._fill:
            have = partial_meta.dtype.names or ()
            for name in have:
                if name in (self._rec.dtype.names or ()):
                    self._rec[name][: self._fill] = partial_meta[name][: self._fill]
            ids = partial_meta["id"][: self._fill] if "id" in have else np.zeros(0)
            self._last_id = int(ids[-1]) if len(ids) and ids[-1] >= 0 else None
        # dropped frames: gaps whose revealing frame is on disk (published in the metadata), and
        # those still in flight as (first id, count, index of the frame after the gap)
        self._gap_lock = threading.Lock()
        self._gaps: list[tuple[int, int]] = list(started.meta.dropped_frames)
        known_total = started.meta.n_dropped_frames
        self._dropped_safe = known_total if known_total is not None else sum(n for _, n in self._gaps)
        self._pending_gaps: collections.deque[tuple[int, int, int]] = collections.deque()
        self._n_dropped = self._dropped_safe
        if started.last_id is not None:
            self._last_id = started.last_id
        self._stats_lock = threading.Lock()
        self._latencies: collections.deque[np.ndarray] = collections.deque()
        self._n_latencies = 0
        self._rates: collections.deque[tuple[float, int]] = collections.deque()
        self._queue_capacity = queue_depth
        self._flush_interval = flush_interval
        self._last_flush = time.monotonic()
        self._error: BaseException | None = None
        self._committing: threading.Thread | None = None  # the block being renamed into place
        self._commit_error: BaseException | None = None
        self._closed = False
        self._stopping = False
        self._free: queue.Queue[np.ndarray[Any, Any]] = queue.Queue()
        for _ in range(queue_depth):
            self._free.put(np.empty(block, self._dtype))
        self._work: queue.Queue[Any] = queue.Queue()
        self._thread = threading.Thread(target=self._worker, name=f"split_dataset writer {self._root.name}",
                                        daemon=True)
        self._thread.start()
        exits.register(self)

    # ------------------------------------------------------------------ set-up

    def _release_lock(self) -> None:
        lock, self._lock = getattr(self, "_lock", None), None
        if lock is not None:
            lock.release()

    def _meta_for(self, n_frames: int, complete: bool) -> Metadata:
        """The metadata for `n_frames` on disk: the dropped frames revealed by frames among them only."""
        with self._gap_lock:
            while self._pending_gaps and self._pending_gaps[0][2] < n_frames:
                first, count, _ = self._pending_gaps.popleft()
                self._dropped_safe += count
                if len(self._gaps) < MAX_GAPS:
                    self._gaps.append((first, count))
            gaps, total = tuple(self._gaps), self._dropped_safe
        return self._meta.replace(shape=(n_frames,) + self._frame_shape, complete=complete,
                                  dropped_frames=gaps, n_dropped_frames=total or None)

    def _new_records(self) -> np.ndarray:
        rec = np.zeros(self._fpf, frame_record_dtype(self._fields))
        rec["time"] = np.nan
        rec["id"] = -1
        for name in self._fields:
            rec[name] = np.nan
        return rec

    # ------------------------------------------------------------------ background worker

    def _prefault(self) -> None:
        """Give the spare block buffers their memory while there is nothing to write.

        A fresh buffer's pages are mapped (zeroed, and on a VM first backed by the host)
        when first written: on a 2-core VM, about 0.1 s per 128 MiB that the caller's
        copies would otherwise pay while blocks compress. ``MADV_POPULATE_WRITE``
        (Linux 5.14+) maps them without changing a byte, so a buffer the caller is filling
        meanwhile is unaffected; it stops as soon as a block is queued. Elsewhere, no-op.
        """
        with self._free.mutex:
            spare = list(self._free.queue)
        first = self._buf  # the buffer the caller fills first: its pages too (contents are never changed)
        for buf in ([first] if first is not None else []) + spare:
            start, end = buf.ctypes.data, buf.ctypes.data + buf.nbytes
            for lo in range(start, end, _PREFAULT_STEP):
                if not self._work.empty() or not _populate(lo, min(lo + _PREFAULT_STEP, end)):
                    return

    def _worker(self) -> None:
        """Stage each block (compress, write under a temporary name) while the previous one is
        committed in its own thread (flushed, renamed into place, then the metadata and its
        checksum line): in block order, one commit at a time, so what docs/format.md §10
        promises holds; the queue drained means every block is committed."""
        self._prefault()
        while True:
            item = self._work.get()
            if item is None:  # stop, whatever happens
                try:
                    self._finish_commit()
                    if self._error is None:
                        self._sums.record(everything=True)
                except BaseException as e:
                    self._error = e
                finally:
                    self._work.task_done()
                return
            recycled = False
            try:
                index, arr, n, recycle, records, arrived = item
                if self._error is None:
                    staged = self._stage(index, arr, n, records)
                    if recycle:  # its frames are in the staged file now
                        self._free.put(arr)
                        recycled = True
                    self._finish_commit()
                    if self._error is None:
                        self._committing = threading.Thread(target=self._commit,
                                                            args=(index, staged, n, arrived, arr[:n].nbytes),
                                                            name="split_dataset commit", daemon=True)
                        self._committing.start()
                    else:
                        discard_block(staged)
                if self._work.empty():  # nothing more to overlap with: finish (flush() returns after this)
                    self._finish_commit()
                    if self._error is None:
                        self._sums.record(everything=True)
            except BaseException as e:  # reported to the caller on its next call
                self._error = e
            finally:
                if item[3] and not recycled:
                    self._free.put(item[1])
                self._work.task_done()

    def _finish_commit(self) -> None:
        """Wait for the block being committed; its error becomes the writer's."""
        thread, self._committing = self._committing, None
        if thread is not None:
            thread.join()
        if self._commit_error is not None and self._error is None:
            self._error = self._commit_error

    def _stage(self, index: int, arr: np.ndarray, n: int, records: np.ndarray) -> StagedBlock:
        try:
            free = shutil.disk_usage(self._root).free
            need = arr[:n].nbytes // 2 + (1 << 20)
            if free < need:
                raise DiskFullError(
                    f"{str(self._root)!r}: {free} bytes free, block {index} needs about {need}; "
                    f"{self._frames_safe} frames are safe on disk",
                    self._frames_safe, errno.ENOSPC,
                )
            return self._sink.stage(index, arr[:n], records[:n])
        except OSError as e:
            raise self._write_error(index, e) from e

    def _commit(self, index: int, staged: StagedBlock, n: int, arrived: np.ndarray, nbytes: int) -> None:
        """Block `index` into place, then the metadata claiming it, then its checksum line."""
        frames = index * self._fpf + n
        try:
            path = self._sink.commit(index, staged)
            self._sink.write_metadata(self._meta_for(frames, complete=False))
            if self._sink.checksums:
                self._sums.owe(path.name)
                self._sums.record(everything=False)  # hash block k while block k+1 compresses
            self._frames_safe = frames
        except BaseException as e:
            self._commit_error = self._write_error(index, e) if isinstance(e, OSError) else e
            return
        self._committed(arrived[:n], nbytes)

    def _committed(self, arrived: np.ndarray, nbytes: int) -> None:
        """Record a committed block's latencies and bytes, and publish the writer's figures."""
        now = time.time()
        known = arrived[arrived > 0]
        with self._stats_lock:
            if len(known):
                self._latencies.append(now - known)
                self._n_latencies += len(known)
                while self._n_latencies - len(self._latencies[0]) >= _LATENCY_WINDOW:
                    self._n_latencies -= len(self._latencies.popleft())
            self._rates.append((now, nbytes))
            while len(self._rates) > 2 and now - self._rates[0][0] > _RATE_WINDOW:
                self._rates.popleft()
        try:  # best effort: a failure here never touches the frames
            doc = {"pid": os.getpid(), "updated": now, **asdict(self.health())}
            tmp = self._root / f"{STATUS_FILENAME}.{os.getpid()}.tmp"
            tmp.write_text(json.dumps(doc))
            os.replace(tmp, self._root / STATUS_FILENAME)
        except OSError:
            pass

    def _write_error(self, index: int, e: OSError) -> WriteError:
        if isinstance(e, WriteError):
            return e
        cls = DiskFullError if e.errno == errno.ENOSPC else WriteError
        err = cls(f"writing {block_name(index)} in {str(self._root)!r} failed ({e}); "
                  f"{self._frames_safe} frames are safe on disk", self._frames_safe, e.errno)
        err.__cause__ = e
        return err

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            err = self._error
            if isinstance(err, WriteError):
                raise err
            raise WriteError(
                f"writing to {str(self._root)!r} failed: {err!r}; {self._frames_safe} frames are safe on disk",
                self._frames_safe,
            ) from err

    # ------------------------------------------------------------------ public API

    def append(self, frames: Any, timestamps: Any = None, frame_ids: Any = None,
               meta: Mapping[str, Any] | None = None) -> None:
        """Append one frame (shaped `frame_shape`) or a batch ``(n, *frame_shape)``, with its per-frame
        records.

        The data is copied before this returns, so the caller may reuse its buffer.
        Blocks while `queue_depth` full blocks wait to be written.

        Parameters
        ----------
        frames
            One frame or a batch.
        timestamps
            When each frame was taken, in seconds (float64; a number or one per frame).
            Default: the time of this call (``time.time()``, shared by writers in other
            processes, so cameras can be aligned).
        frame_ids
            The camera's frame counter, one int per frame. A jump (an id skipped) is a
            dropped frame: a :class:`~split_dataset.errors.DroppedFramesWarning`, counted in
            :attr:`n_dropped` and recorded in the metadata (``ds.dropped_frames``).
        meta
            Small per-frame numbers, ``{"exposure_ms": 5.0, "stage_z": z_array}`` (a number or
            one per frame, stored as float64; a field first seen later reads NaN before).

        The records are stored in each block file beside the frames (``frame_meta``), so a
        crash keeps them exactly with their frames; readers get ``ds.frame_times``,
        ``ds.frame_ids`` and ``ds.frame_meta``.

        Examples
        --------
        >>> w.append(np.zeros((5, 4, 8, 8), "uint16"))  # doctest: +SKIP
        >>> w.append(frame, timestamps=t, frame_ids=camera_counter, meta={"exposure_ms": 5.0})  # doctest: +SKIP
        """
        self._check_open()
        self._raise_if_failed()
        arr = frames if isinstance(frames, np.ndarray) else np.asarray(frames)
        if arr.dtype != self._dtype:
            raise TypeError(
                f"frame {self._n_frames}: expected dtype {self._dtype}, got {arr.dtype} (nothing is cast implicitly)"
            )
        if arr.shape == self._frame_shape:
            arr = arr[np.newaxis]
        elif arr.shape[1:] != self._frame_shape or arr.ndim != len(self._frame_shape) + 1:
            raise ValueError(
                f"frame {self._n_frames}: expected a frame {self._frame_shape} or a batch (n, "
                f"{', '.join(map(str, self._frame_shape))}), got {arr.shape}"
            )
        total = arr.shape[0]
        now = time.time()
        times = self._per_frame(timestamps, total, "timestamps", np.float64, now)
        ids = self._per_frame(frame_ids, total, "frame_ids", np.int64, -1)
        extra = {}
        for name, value in (meta or {}).items():
            extra[_field_name(name)] = self._per_frame(value, total, f"meta[{name!r}]", np.float64, np.nan)
        new_fields = tuple(n for n in extra if n not in self._fields)
        if new_fields:
            self._add_fields(new_fields)
        dropped, backwards = self._check_ids(ids) if frame_ids is not None else (0, False)
        pos = 0
        while pos < total:
            buf = self._buf if self._buf is not None else self._next_buffer()  # None: a wait was interrupted
            self._buf = buf
            k = min(self._fpf - self._fill, total - pos)
            lo, hi = self._fill, self._fill + k
            rec = self._rec
            rec["time"][lo:hi] = times[pos : pos + k]
            rec["id"][lo:hi] = ids[pos : pos + k]
            for name, values in extra.items():
                rec[name][lo:hi] = values[pos : pos + k]
            self._arrive[lo:hi] = now
            buf[lo:hi] = arr[pos : pos + k]
            self._fill += k
            self._n_frames += k
            pos += k
            if self._fill == self._fpf:
                self._submit_full()
                self._last_flush = time.monotonic()
        if dropped:  # one warning per append (constant text: the warnings registry stays small)
            warnings.warn("camera frame ids skipped some: frames were dropped before they reached the writer "
                          "(writer.n_dropped counts them, ds.dropped_frames lists their ids)",
                          DroppedFramesWarning, stacklevel=2)
        if backwards:
            warnings.warn("camera frame ids did not increase (a counter reset, or frames out of order)",
                          DroppedFramesWarning, stacklevel=2)
        if (self._flush_interval is not None and self._fill and self._buf is not None
                and time.monotonic() - self._last_flush >= self._flush_interval and self._work.empty()):
            # the partial block, written in the background (append does not wait): readers and
            # SIGKILL see it within about flush_interval; never more than one such write queued
            self._work.put((self._block, self._buf[: self._fill].copy(), self._fill, False,
                            self._rec[: self._fill].copy(), self._arrive[: self._fill].copy()))
            self._last_flush = time.monotonic()

    def _per_frame(self, value: Any, n: int, what: str, dtype: Any, default: Any) -> np.ndarray:
        """`value` (None, a number, or one per frame) as `n` values of `dtype`."""
        if value is None:
            return np.full(n, default, dtype)
        try:
            out = np.asarray(value, dtype=dtype)
        except (TypeError, ValueError, OverflowError):
            raise TypeError(f"frame {self._n_frames}: {what} must be numbers, got {value!r:.80}") from None
        if out.ndim == 0:
            out = np.full(n, out, dtype)
        if out.shape != (n,):
            raise ValueError(f"frame {self._n_frames}: {what} holds {out.shape} values for {n} frame(s)")
        if dtype is np.float64 and what == "timestamps" and not np.isfinite(out).all():
            raise ValueError(f"frame {self._n_frames}: timestamps must be finite, got {out}")
        return out

    def _add_fields(self, names: tuple[str, ...]) -> None:
        """New per-frame fields: the block being filled gets them, NaN for its earlier frames."""
        self._fields += names
        rec = self._new_records()
        for name in self._rec.dtype.names or ():
            rec[name] = self._rec[name]
        self._rec = rec

    def _check_ids(self, ids: np.ndarray) -> tuple[int, bool]:
        """Gaps in the camera's frame ids (dropped frames): counted and queued for the metadata, to
        be published once the frame after each gap is on disk. Returns (frames dropped, whether the
        ids went backwards)."""
        where = np.flatnonzero(ids >= 0)
        if not len(where):
            return 0, False
        known = ids[where]
        prev = np.concatenate([[self._last_id if self._last_id is not None else known[0] - 1], known[:-1]])
        steps = known - prev
        dropped = 0
        with self._gap_lock:
            for j in np.flatnonzero(steps > 1):
                count = int(steps[j]) - 1
                self._pending_gaps.append((int(prev[j]) + 1, count, self._n_frames + int(where[j])))
                dropped += count
            self._n_dropped += dropped
        self._last_id = int(known[-1])
        return dropped, bool((steps < 1).any())

    def _submit_full(self) -> None:
        # ordered so that an exception raised between two statements (Ctrl-C, SIGTERM) loses
        # nothing: the full block is queued first; until _fill is reset a shutdown would queue
        # the same block again (harmless), and a new buffer is taken last
        self._work.put((self._block, self._buf, self._fpf, True, self._rec, self._arrive))
        self._rec, self._arrive = self._new_records(), np.zeros(self._fpf)
        self._fill = 0
        self._block += 1
        self._buf = None
        self._buf = self._next_buffer()

    def _next_buffer(self) -> np.ndarray:
        while True:  # backpressure: wait for the worker to return a buffer
            try:
                return self._free.get(timeout=0.5)
            except queue.Empty:
                if not self._thread.is_alive():  # pragma: no cover - the worker never dies silently
                    raise WriteError("the writer thread stopped", self._frames_safe) from self._error
                continue

    def flush(self) -> None:
        """Write every frame appended so far and make it visible to readers.

        A partial block is written as a shorter file, replaced atomically as it fills.
        """
        self._check_open()
        if self._fill and self._buf is not None:
            self._work.put((self._block, self._buf[: self._fill].copy(), self._fill, False,
                            self._rec[: self._fill].copy(), self._arrive[: self._fill].copy()))
        self._work.join()
        self._raise_if_failed()

    def close(self) -> None:
        """Flush, mark the dataset complete and stop the background thread."""
        if self._closed:
            return
        self._shutdown(complete=True)

    def _shutdown(self, complete: bool) -> None:
        if self._closed:
            return
        interrupted: BaseException | None = None
        try:
            if not self._stopping:  # queue the partial block and the stop marker (once)
                if self._fill and self._error is None and self._buf is not None:
                    self._work.put((self._block, self._buf, self._fill, False, self._rec[: self._fill].copy(),
                                    self._arrive[: self._fill].copy()))
                self._work.put(None)
                self._stopping = True
            while self._thread.is_alive():
                try:
                    self._thread.join()
                except BaseException as e:
                    interrupted = e
            if self._error is None:
                self._sink.write_metadata(self._meta_for(self._n_frames, complete=complete))
                self._write_chunk_index()
        finally:
            if not self._thread.is_alive():
                self._closed = True
                try:
                    (self._root / STATUS_FILENAME).unlink(missing_ok=True)
                except OSError:
                    pass
                exits.unregister(self)
                self._release_lock()
        if interrupted is not None:
            raise interrupted
        self._raise_if_failed()

    def _write_chunk_index(self) -> None:
        """``chunk_index.bin`` for every block, after the final metadata: it only speeds reads up,
        so failing to write it leaves a correct dataset (and a warning)."""
        try:
            self._sink.write_chunk_index(-(-self._n_frames // self._fpf))
        except OSError as e:
            warnings.warn(f"{str(self._root)!r}: chunk_index.bin could not be written ({e}); the dataset is "
                          "complete and reads without it (`split-dataset index` builds it)", stacklevel=3)

    def abort(self) -> None:
        """Stop without marking the dataset complete (frames appended so far are still written)."""
        self._shutdown(complete=False)

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"the writer of {str(self._root)!r} is closed")

    def __enter__(self) -> SplitDatasetWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:  # keep what was written, do not mask the original exception
            try:
                self._shutdown(complete=False)
            except Exception:
                pass

    # ------------------------------------------------------------------ attributes

    @property
    def n_frames(self) -> int:
        """Frames appended so far (written or still queued)."""
        return self._n_frames

    @property
    def n_dropped(self) -> int:
        """Frames missing from the camera's frame ids (see :meth:`append`)."""
        return self._n_dropped

    def health(self) -> WriterHealth:
        """How the writer keeps up: queue, frames not yet safe, MB/s, append-to-disk latency.

        Cheap (no I/O): poll it from the acquisition loop and warn before frames are at risk,
        e.g. when ``frames_behind`` grows or ``queue_depth`` reaches ``queue_capacity``. The
        same figures are written to ``.split_dataset.writer.status.json`` after each block,
        which ``split-dataset watch PATH`` shows from another process.

        Examples
        --------
        >>> h = w.health()  # doctest: +SKIP
        >>> if h.queue_depth >= h.queue_capacity: print("the disk is falling behind")  # doctest: +SKIP
        """
        with self._stats_lock:
            lat = np.concatenate(list(self._latencies)) if self._latencies else np.zeros(0)
            rates = list(self._rates)
        p50, p99 = (float(v) for v in np.percentile(lat, [50, 99])) if len(lat) else (None, None)
        mbps = None
        if len(rates) >= 2 and rates[-1][0] > rates[0][0]:
            mbps = sum(b for _, b in rates[1:]) / (rates[-1][0] - rates[0][0]) / 1e6
        return WriterHealth(
            n_frames=self._n_frames, frames_safe=self._frames_safe, frames_behind=self._n_frames - self._frames_safe,
            queue_depth=self._work.qsize(), queue_capacity=self._queue_capacity, mb_per_s=mbps,
            latency_p50=p50, latency_p99=p99, n_dropped=self._n_dropped)

    @property
    def frames_safe(self) -> int:
        """Frames on disk and described by the metadata."""
        return self._frames_safe

    @property
    def path(self) -> Path:
        """The dataset folder."""
        return self._root

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """Shape of one frame."""
        return self._frame_shape

    @property
    def dtype(self) -> np.dtype:
        """Element type."""
        return self._dtype

    @property
    def shape(self) -> tuple[int, ...]:
        """``(n_frames, *frame_shape)``."""
        return (self._n_frames,) + self._frame_shape

    @property
    def dataset(self) -> SplitDataset:
        """A reader on what is on disk now (call :meth:`flush` first to include everything)."""
        return SplitDataset(self._root)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<SplitDatasetWriter {str(self._root)!r} {self.shape} {self._dtype} ({state})>"
