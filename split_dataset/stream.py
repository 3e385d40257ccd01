"""``SplitDatasetWriter``: append frames during an acquisition, for hours, losing nothing.

The caller's thread only validates and copies frames into a block buffer; a
background thread compresses each full block, writes it under a temporary name,
renames it into place and then replaces ``stack_metadata.json`` (atomically) with
the number of frames that are on disk. After every block and every :meth:`flush`,
the folder is a valid split dataset holding every frame written so far.
"""

from __future__ import annotations

import atexit
import errno
import os
import queue
import shutil
import socket
import threading
import weakref
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .dataset import SplitDataset
from .errors import DiskFullError, WriteError, WriterLockedError
from .locks import LOCK_FILENAME
from .metadata import Metadata
from .storage import METADATA_FILENAME, Codec, append_checksum, block_name, read_checksums, write_checksums
from .writer import DEFAULT_COMPRESSION, BlockSink, _check_dtype, make_metadata, prepare_folder

__all__ = ["SplitDatasetWriter", "WriteError", "DiskFullError", "WriterLockedError"]



_OPEN_WRITERS: weakref.WeakSet[SplitDatasetWriter] = weakref.WeakSet()


@atexit.register
def _close_forgotten_writers() -> None:  # pragma: no cover - runs at interpreter exit
    for w in list(_OPEN_WRITERS):
        try:
            w._shutdown(complete=False)
        except Exception:
            pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
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
    checksums
        Record each block's SHA-256 in ``SHA256SUMS`` as it is written (in the background
        thread), for ``split-dataset verify`` and ``sha256sum -c``.

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
    ) -> None:
        self._frame_shape = tuple(int(s) for s in frame_shape)
        if any(s < 1 for s in self._frame_shape):
            raise ValueError(f"frame_shape must be positive integers, got {tuple(frame_shape)}")
        self._dtype = _check_dtype(np.dtype(dtype))
        if isinstance(frames_per_file, bool) or int(frames_per_file) != frames_per_file or frames_per_file < 1:
            raise ValueError(f"frames_per_file must be a positive integer, got {frames_per_file!r}")
        self._fpf = int(frames_per_file)
        if mode not in ("w", "a"):
            raise ValueError(f"mode must be 'w' or 'a', got {mode!r}")
        if queue_depth < 1:
            raise ValueError(f"queue_depth must be >= 1, got {queue_depth}")
        self._root = Path(path)
        self._codec = Codec.parse(compression)
        block = (self._fpf,) + self._frame_shape
        resuming = mode == "a" and (self._root / METADATA_FILENAME).is_file()
        if not self._root.exists():
            prepare_folder(self._root, overwrite)
        self._take_lock()  # before touching an existing folder: another writer may be using it
        try:
            if not resuming:
                prepare_folder(self._root, overwrite, ignore=(LOCK_FILENAME,))
            existing = self._open_existing() if resuming else None
            base_attrs = dict(existing.attrs) if existing is not None else {}
            base_attrs.update(attrs or {})
            meta = make_metadata(
                (0,) + self._frame_shape, self._dtype, block, self._codec,
                resolution=resolution if resolution is not None else (existing.resolution if existing else None),
                axis_order=axis_order or (existing.axis_order if existing else None),
                attrs=base_attrs, chunks=chunks, complete=False,
                units=units if units is not None else (existing.units if existing else None),
                frame_interval=frame_interval if frame_interval is not None else (
                    existing.frame_interval if existing else None),
            )
            self._meta: Metadata = meta
            self._sink = BlockSink(self._root, meta, self._codec, fsync=fsync, checksums=checksums)
            self._sums_on_disk: set[str] = set()
            self._pending_sums: list[str] = []
            if checksums:
                old = read_checksums(self._root) if resuming else None
                self._sink.add_sums(old or {})
                self._sums_on_disk.update(old or {})
                if old is None:
                    self._sink.write_checksums()
            self._buf = np.empty(block, self._dtype)
            self._fill = 0
            self._block = 0
            self._n_frames = 0
            if existing is not None:
                self._resume_from(existing)
            self._frames_safe = self._n_frames
            self._sink.write_metadata(self._meta_for(self._n_frames, complete=False))
        except BaseException:
            self._release_lock()
            raise
        self._error: BaseException | None = None
        self._closed = False
        self._free: queue.Queue[np.ndarray] = queue.Queue()
        for _ in range(queue_depth):
            self._free.put(np.empty(block, self._dtype))
        self._work: queue.Queue[Any] = queue.Queue()
        self._thread = threading.Thread(target=self._worker, name=f"split_dataset writer {self._root.name}", daemon=True)
        self._thread.start()
        _OPEN_WRITERS.add(self)

    # ------------------------------------------------------------------ set-up

    def _take_lock(self) -> None:
        lock = self._root / LOCK_FILENAME
        me = f"{socket.gethostname()} {os.getpid()}"
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    host, pid = lock.read_text().split()
                except (OSError, ValueError):
                    host, pid = "", "0"
                if host == socket.gethostname() and not _pid_alive(int(pid)):
                    lock.unlink(missing_ok=True)  # left by a writer that died
                    continue
                raise WriterLockedError(
                    f"{str(self._root)!r} is being written by process {pid} on {host or '?'} "
                    f"(lock file {LOCK_FILENAME}); if that writer is gone, delete the lock file"
                ) from None
            with os.fdopen(fd, "w") as f:
                f.write(me)
            self._lock_path: Path | None = lock
            return

    def _release_lock(self) -> None:
        lock = getattr(self, "_lock_path", None)
        if lock is not None:
            lock.unlink(missing_ok=True)
            self._lock_path = None

    def _open_existing(self) -> SplitDataset:
        ds = SplitDataset(self._root)
        expected = (self._fpf,) + self._frame_shape
        if ds.shape[1:] != self._frame_shape or ds.dtype != self._dtype or ds.shape_block != expected:
            raise ValueError(
                f"cannot append to {str(self._root)!r}: it holds frames {ds.shape[1:]} {ds.dtype} in blocks "
                f"of {ds.shape_block[0]}; this writer has frames {self._frame_shape} {self._dtype} in blocks "
                f"of {self._fpf}"
            )
        return ds

    def _resume_from(self, ds: SplitDataset) -> None:
        n = ds.shape[0]
        self._n_frames = n
        self._block, self._fill = divmod(n, self._fpf)
        if self._fill:  # a partial last block: keep its frames, the next write replaces the file
            self._buf[: self._fill] = ds[self._block * self._fpf : n]
        ds.close()

    def _meta_for(self, n_frames: int, complete: bool) -> Metadata:
        return self._meta.replace(shape=(n_frames,) + self._frame_shape, complete=complete)

    # ------------------------------------------------------------------ background worker

    def _worker(self) -> None:
        while True:
            item = self._work.get()
            try:
                if item is None:
                    if self._error is None:
                        self._record_checksums(everything=True)
                    return
                index, arr, n, recycle = item
                if self._error is None:
                    self._write_block(index, arr, n)
                    # hash block k while block k+1 compresses; all of them before flush() returns
                    self._record_checksums(everything=self._work.empty())
            except BaseException as e:  # reported to the caller on its next call
                self._error = e
            finally:
                if item is not None and item[3]:
                    self._free.put(item[1])
                self._work.task_done()

    def _write_block(self, index: int, arr: np.ndarray, n: int) -> None:
        frames = index * self._fpf + n
        try:
            free = shutil.disk_usage(self._root).free
            need = arr[:n].nbytes // 2 + (1 << 20)
            if free < need:
                raise DiskFullError(
                    f"{str(self._root)!r}: {free} bytes free, block {index} needs about {need}; "
                    f"{self._frames_safe} frames are safe on disk",
                    self._frames_safe, errno.ENOSPC,
                )
            path = self._sink.write_unchecked(index, arr[:n])
            self._sink.write_metadata(self._meta_for(frames, complete=False))
            if self._sink.checksums and path.name not in self._pending_sums:
                self._pending_sums.append(path.name)
        except WriteError:
            raise
        except OSError as e:
            cls = DiskFullError if e.errno == errno.ENOSPC else WriteError
            raise cls(
                f"writing {block_name(index)} in {str(self._root)!r} failed ({e}); "
                f"{self._frames_safe} frames are safe on disk",
                self._frames_safe, e.errno,
            ) from e
        self._frames_safe = frames

    def _record_checksums(self, everything: bool) -> None:
        """Add the pending blocks' SHA-256 to SHA256SUMS (all, or all but the newest)."""
        sink, pending = self._sink, self._pending_sums
        names = pending if everything else pending[:-1]
        if not names:
            return
        if any(n in self._sums_on_disk for n in names):  # a partial block was replaced: rewrite
            listed = self._sums_on_disk | set(names)
            write_checksums(self._root, {n: sink.digest(n) for n in listed}, fsync=False)
        else:
            for name in names:
                append_checksum(self._root, name, sink.digest(name), fsync=False)
        self._sums_on_disk.update(names)
        self._pending_sums = [] if everything else pending[-1:]

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

    def append(self, frames: Any) -> None:
        """Append one frame (shaped `frame_shape`) or a batch ``(n, *frame_shape)``.

        The data is copied before this returns, so the caller may reuse its buffer.
        Blocks while `queue_depth` full blocks wait to be written.

        Examples
        --------
        >>> w.append(np.zeros((5, 4, 8, 8), "uint16"))  # doctest: +SKIP
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
        pos, total = 0, arr.shape[0]
        while pos < total:
            k = min(self._fpf - self._fill, total - pos)
            self._buf[self._fill : self._fill + k] = arr[pos : pos + k]
            self._fill += k
            self._n_frames += k
            pos += k
            if self._fill == self._fpf:
                self._submit_full()

    def _submit_full(self) -> None:
        full = self._buf
        self._buf = self._next_buffer()
        self._work.put((self._block, full, self._fpf, True))
        self._block += 1
        self._fill = 0

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
        if self._fill:
            self._work.put((self._block, self._buf[: self._fill].copy(), self._fill, False))
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
        try:
            if self._fill and self._error is None:
                self._work.put((self._block, self._buf, self._fill, False))
            self._work.put(None)
            self._thread.join()
            if self._error is None:
                self._sink.write_metadata(self._meta_for(self._n_frames, complete=complete))
        finally:
            self._closed = True
            _OPEN_WRITERS.discard(self)
            self._release_lock()
        self._raise_if_failed()

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
