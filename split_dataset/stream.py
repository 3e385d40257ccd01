"""``SplitDatasetWriter``: append frames during an acquisition, for hours, losing nothing.

The caller's thread only validates and copies frames into a block buffer; a
background thread compresses each full block, writes it under a temporary name,
renames it into place and then replaces ``stack_metadata.json`` (atomically) with
the number of frames that are on disk. After every block and every :meth:`flush`,
the folder is a valid split dataset holding every frame written so far.

What survives what (tested out of process, ``tests/test_writer_kill.py``): every frame
passed to :meth:`~SplitDatasetWriter.append` is on disk after ``close()``, after the
script ends without closing the writer, after an uncaught exception, Ctrl-C
(``KeyboardInterrupt``) or SIGTERM, the dataset then being marked ``complete: false``.
Only SIGKILL and power loss lose frames: those appended since the last block was
completed or the last :meth:`~SplitDatasetWriter.flush` returned.
"""

from __future__ import annotations

import atexit
import errno
import os
import queue
import shutil
import signal
import stat
import threading
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .dataset import SplitDataset
from .errors import DiskFullError, UnsafeDatasetError, WriteError, WriterLockedError
from .locks import LOCK_FILENAME, WriterLock
from .metadata import Metadata
from .storage import (
    CHECKSUM_FILENAME,
    METADATA_FILENAME,
    Codec,
    block_name,
    read_checksums,
    sha256_file,
    write_checksums,
)
from .writer import DEFAULT_COMPRESSION, BlockSink, _check_dtype, make_metadata, prepare_folder

__all__ = ["SplitDatasetWriter", "WriteError", "DiskFullError", "WriterLockedError"]

#: Writers not closed yet. A plain set: each writer is kept alive by its background thread
#: anyway (a forgotten writer is never garbage collected before the interpreter exits).
_OPEN_WRITERS: set[SplitDatasetWriter] = set()
_OPEN_LOCK = threading.Lock()
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _close_forgotten_writers() -> None:
    """Write out and stop every writer still open when the main thread ends (complete: false).

    Registered with ``threading._register_atexit``: those hooks run when the main thread
    has finished, *before* ``concurrent.futures`` refuses new work (its own hook, which
    registered earlier, runs after ours) and before non-daemon threads are joined. The
    plain ``atexit`` hook, which 1.x used alone, runs after that: the writer's thread then
    could not compress anything ("cannot schedule new futures after interpreter
    shutdown") and every frame not yet written was lost.

    Other non-daemon threads may still be appending (an acquisition thread the main one
    started and left running): they are joined first, as the interpreter would join them
    anyway, but while blocks can still be compressed. Pool threads of
    ``concurrent.futures`` are not joined (they only stop after this hook).
    """
    if not _OPEN_WRITERS:
        return
    try:
        from concurrent.futures import thread as _cf_thread

        pool_threads = set(getattr(_cf_thread, "_threads_queues", {}))
    except Exception:  # noqa: BLE001 - pragma: no cover
        pool_threads = set()
    main, me = threading.main_thread(), threading.current_thread()
    for t in threading.enumerate():
        if t is not main and t is not me and not t.daemon and t not in pool_threads:
            t.join()
    for w in list(_OPEN_WRITERS):
        try:
            w._shutdown(complete=False)
        except BaseException:  # noqa: BLE001 - nothing can be reported at exit; the others still get written
            pass


def _close_at_last_exit() -> None:  # pragma: no cover - runs at interpreter exit
    for w in list(_OPEN_WRITERS):
        try:
            w._shutdown(complete=False)
        except BaseException:  # noqa: BLE001
            pass


try:
    threading._register_atexit(_close_forgotten_writers)  # type: ignore[attr-defined]
except (AttributeError, RuntimeError):  # pragma: no cover - Python without the hook
    atexit.register(_close_forgotten_writers)
atexit.register(_close_at_last_exit)


def _forget_writers_in_child() -> None:
    """A forked child does not own its parent's writers (their threads did not survive the
    fork): it must never close them, which would rewrite the parent's metadata."""
    _OPEN_WRITERS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_writers_in_child)


def _on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM while a writer is open: exit like ``sys.exit(143)``, so every frame gets written."""
    raise SystemExit(128 + signum)


def _install_sigterm_handler() -> None:
    """Turn SIGTERM into ``SystemExit`` while writers are open, if nobody else handles it."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        return
    try:
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):  # pragma: no cover - not allowed here
        pass


def _restore_sigterm_handler() -> None:
    if _OPEN_WRITERS or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        return
    try:
        if signal.getsignal(signal.SIGTERM) is _on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except (ValueError, OSError):  # pragma: no cover
        pass


def _append_line(root: Path, name: str, digest: str) -> None:
    """Add one line to ``SHA256SUMS``, never through a symbolic link."""
    path = root / CHECKSUM_FILENAME
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0)
                     | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        if e.errno == errno.ELOOP or os.path.islink(path):
            raise UnsafeDatasetError(
                f"{str(path)!r} is a symbolic link; this package never writes through one (remove it)"
            ) from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafeDatasetError(f"{str(path)!r} is not a regular file; refusing to append to it")
        os.write(fd, f"{digest}  {name}\n".encode())
    finally:
        os.close(fd)


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
    it adopts (see :meth:`_reconcile_checksums`).

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
        # before touching an existing folder: another writer may be using it
        self._lock: WriterLock | None = WriterLock.acquire(self._root)
        try:
            if not resuming:
                prepare_folder(self._root, overwrite, ignore=(LOCK_FILENAME,), locked=True)
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
            if existing is not None and os.path.lexists(self._root / CHECKSUM_FILENAME):
                checksums = True  # a SHA256SUMS left as it is would go stale as blocks are replaced
            self._sink = BlockSink(self._root, meta, self._codec, fsync=fsync, checksums=checksums)
            self._sums_on_disk: set[str] = set()
            self._pending_sums: list[str] = []
            self._buf = np.empty(block, self._dtype)
            self._fill = 0
            self._block = 0
            self._n_frames = 0
            if existing is not None:
                self._resume_from(existing)
            if checksums:
                sums = self._reconcile_checksums(existing) if existing is not None else {}
                self._sink.add_sums(sums)
                self._sums_on_disk.update(sums)
                if existing is None:
                    self._sink.write_checksums()
            if existing is not None:
                existing.close()
            self._frames_safe = self._n_frames
            self._sink.write_metadata(self._meta_for(self._n_frames, complete=False))
        except BaseException:
            self._release_lock()
            raise
        self._error: BaseException | None = None
        self._closed = False
        self._stopping = False
        self._free: queue.Queue[np.ndarray] = queue.Queue()
        for _ in range(queue_depth):
            self._free.put(np.empty(block, self._dtype))
        self._work: queue.Queue[Any] = queue.Queue()
        self._thread = threading.Thread(target=self._worker, name=f"split_dataset writer {self._root.name}", daemon=True)
        self._thread.start()
        with _OPEN_LOCK:
            _OPEN_WRITERS.add(self)
        _install_sigterm_handler()

    # ------------------------------------------------------------------ set-up

    def _release_lock(self) -> None:
        lock, self._lock = getattr(self, "_lock", None), None
        if lock is not None:
            lock.release()

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

    def _reconcile_checksums(self, ds: SplitDataset) -> dict[str, str]:
        """Make ``SHA256SUMS`` right for the blocks adopted by ``mode="a"``; returns its lines.

        A kill can leave ``SHA256SUMS`` behind the blocks: a block's line is written after
        the block is renamed into place (while the next block compresses), so the one or
        two newest blocks may have no line, or the line of the shorter partial block that a
        longer one replaced. So:

        - a block without a line gets one once it was decoded in full through the reader;
        - the last two adopted blocks are hashed, and a line that disagrees is replaced if
          the block decodes in full (a partial block replaced after a kill), else kept (so
          ``verify`` reports the damage);
        - lines of earlier blocks are kept as they are (checking them would read the whole
          dataset; ``verify`` does that);
        - lines of this dataset's block names beyond the adopted blocks are dropped (they
          are written again with those blocks).

        A block that does not decode gets no line, and a ``RuntimeWarning``: nothing that can
        be found damaged by decoding is ever blessed with a checksum.
        """
        root = self._root
        path = root / CHECKSUM_FILENAME
        if os.path.islink(path):
            raise UnsafeDatasetError(
                f"{str(path)!r} is a symbolic link; this package never writes through one (replace it "
                "with the dataset's own SHA256SUMS, or remove it to have the checksums recomputed)"
            )
        old = read_checksums(root) if os.path.lexists(path) else None
        sums = dict(old or {})
        n_blocks = -(-self._n_frames // self._fpf)
        for name in list(sums):
            stem = name[: -len(".h5")] if name.endswith(".h5") else ""
            if stem.isdigit() and len(stem) >= 4 and int(stem) >= n_blocks:
                del sums[name]
        for index in range(n_blocks):
            name = block_name(index)
            recorded = sums.get(name)
            if recorded is not None and index < n_blocks - 2:
                continue
            file = root / name
            try:
                regular = stat.S_ISREG(os.lstat(file).st_mode)
                actual = sha256_file(file) if regular else None
            except OSError:
                actual = None
            if actual is not None and actual == recorded:
                continue
            if actual is not None and self._decodes(ds, index):
                sums[name] = actual
                continue
            warnings.warn(
                f"{str(file)!r}: block {index} {'is not a regular file' if actual is None else 'does not decode'}"
                f"{'' if recorded is None else ' and differs from its line in SHA256SUMS'}; it gets no new "
                "checksum (split-dataset verify reports it)",
                RuntimeWarning, stacklevel=3,
            )
        if sums != old:
            write_checksums(root, sums, fsync=self._sink.fsync)  # atomic: replaces the file, never writes through it
        return sums

    def _decodes(self, ds: SplitDataset, index: int) -> bool:
        """Whether block `index` decodes in full through the reader (a frame at a time)."""
        lo, hi = index * self._fpf, min((index + 1) * self._fpf, ds.shape[0])
        try:
            for t in range(lo, hi):
                ds[t]
        except Exception:  # noqa: BLE001 - any failure to decode means: do not bless it
            return False
        return True

    def _meta_for(self, n_frames: int, complete: bool) -> Metadata:
        return self._meta.replace(shape=(n_frames,) + self._frame_shape, complete=complete)

    # ------------------------------------------------------------------ background worker

    def _worker(self) -> None:
        while True:
            item = self._work.get()
            if item is None:  # stop, whatever happens
                try:
                    if self._error is None:
                        self._record_checksums(everything=True)
                except BaseException as e:  # noqa: BLE001 - reported by close()
                    self._error = e
                finally:
                    self._work.task_done()
                return
            try:
                index, arr, n, _recycle = item
                if self._error is None:
                    self._write_block(index, arr, n)
                    # hash block k while block k+1 compresses; all of them before flush() returns
                    self._record_checksums(everything=self._work.empty())
            except BaseException as e:  # reported to the caller on its next call
                self._error = e
            finally:
                if item[3]:
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
                _append_line(self._root, name, sink.digest(name))
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
        if self._buf is None:  # a wait for a free buffer was interrupted
            self._buf = self._next_buffer()
        while pos < total:
            k = min(self._fpf - self._fill, total - pos)
            self._buf[self._fill : self._fill + k] = arr[pos : pos + k]
            self._fill += k
            self._n_frames += k
            pos += k
            if self._fill == self._fpf:
                self._submit_full()

    def _submit_full(self) -> None:
        # ordered so that an exception raised between two statements (Ctrl-C, SIGTERM) loses
        # nothing: the full block is queued first; until _fill is reset a shutdown would queue
        # the same block again (harmless), and a new buffer is taken last
        self._work.put((self._block, self._buf, self._fpf, True))
        self._fill = 0
        self._block += 1
        self._buf = None  # type: ignore[assignment]
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
        interrupted: BaseException | None = None
        try:
            if not self._stopping:  # queue the partial block and the stop marker (once)
                if self._fill and self._error is None and self._buf is not None:
                    self._work.put((self._block, self._buf, self._fill, False))
                self._work.put(None)
                self._stopping = True
            while self._thread.is_alive():
                try:
                    self._thread.join()
                except BaseException as e:  # noqa: BLE001 - Ctrl-C again: the frames still get written
                    interrupted = e
            if self._error is None:
                self._sink.write_metadata(self._meta_for(self._n_frames, complete=complete))
        finally:
            if not self._thread.is_alive():
                self._closed = True
                with _OPEN_LOCK:
                    _OPEN_WRITERS.discard(self)
                self._release_lock()
                _restore_sigterm_handler()
        if interrupted is not None:
            raise interrupted
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
