"""The writer lock: one live writer per dataset folder, and a way for others to ask.

A writer (``SplitDatasetWriter``) holds ``.split_dataset.writer.lock`` in the dataset
folder while it runs. Anything else that would replace or edit the folder (``save(...,
overwrite=True)``, ``convert --overwrite``, attribute edits) calls
:func:`refuse_if_written` first.

How the lock works (POSIX): the lock file holds ``"<host> <pid> flock"`` and the writer
keeps an exclusive ``flock`` on it for its whole life. The kernel drops that lock when the
process dies however it dies (SIGKILL included), so a lock file left behind by a dead
writer is recognised by anyone who can take the ``flock``, and taken over atomically: the
new writer locks the very file it then rewrites, and checks that the file it locked is
still the one at that path. Lock files of split_dataset versions before the OS lock hold
``"<host> <pid>"`` only: they are honoured while that process is alive on this host (and
always when the host is another one). Without ``fcntl`` (Windows) only the file's content
is used, and a stale lock is refused with a message saying to delete it (no takeover without
an OS lock can be atomic).

The lock file is never written through a symbolic link (``O_NOFOLLOW``): a symbolic link
in its place counts as a lock held by an unknown writer.
"""

from __future__ import annotations

import errno
import os
import socket
import time
import uuid
import weakref
from pathlib import Path

from .errors import WriterLockedError
from .lockstate import (
    LOCK_FILENAME,
    OS_LOCKED,
    describe_holder,
    live_writer,
    old_style_live,
    parse_lock,
    pid_alive,
    read_lock_fd,
    refuse_if_written,
    writer_gone,
)

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_FILENAME", "WriterLock", "live_writer", "writer_gone", "refuse_if_written"]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NO_LOCKS = {getattr(errno, n) for n in ("ENOLCK", "EOPNOTSUPP", "ENOSYS", "ENOTSUP") if hasattr(errno, n)}


def _before_takeover() -> None:
    """Test hook: called between reading a stale lock and taking it over (a no-op)."""


_HELD: weakref.WeakSet[WriterLock] = weakref.WeakSet()


def _drop_inherited_locks() -> None:
    """In a forked child: close the inherited lock descriptors (the parent's lock stays held by
    the parent's own descriptor, and no longer outlives the parent in the child)."""
    for lock in list(_HELD):
        fd, lock._fd, lock._active = lock._fd, None, False
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_drop_inherited_locks)


class WriterLock:
    """The writer lock of one dataset folder, held by this process until :meth:`release`.

    Use :meth:`acquire`; a folder already held by a live writer raises
    :class:`~split_dataset.errors.WriterLockedError`, a lock left by a dead one is taken over.

    Examples
    --------
    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> lock = WriterLock.acquire(root)
    >>> live_writer(root) is not None
    True
    >>> lock.release()
    >>> live_writer(root) is None
    True
    """

    def __init__(self, path: Path, fd: int | None) -> None:
        self.path = path
        self._fd = fd
        self._active = True
        self._ident: tuple[int, int] | None = None
        if fd is not None:
            st = os.fstat(fd)
            self._ident = (st.st_dev, st.st_ino)
        _HELD.add(self)

    @property
    def held(self) -> bool:
        """Whether this object still holds the lock."""
        return self._active

    @staticmethod
    def _content() -> bytes:
        return f"{socket.gethostname()} {os.getpid()} {OS_LOCKED if fcntl is not None else ''}".strip().encode() + b"\n"

    @classmethod
    def acquire(cls, root: str | os.PathLike[str], attempts: int = 50) -> WriterLock:
        """Take the writer lock of `root` (an existing folder), or raise ``WriterLockedError``."""
        path = Path(root) / LOCK_FILENAME
        if fcntl is None:  # pragma: no cover - Windows
            return cls._acquire_by_content(path, attempts)
        try:
            return cls._acquire_os_locked(path, attempts)
        except OSError as e:
            if isinstance(e, WriterLockedError) or e.errno not in _NO_LOCKS:
                raise
            return cls._acquire_by_content(path, attempts)  # a file system without OS locks

    @classmethod
    def _acquire_os_locked(cls, path: Path, attempts: int) -> WriterLock:
        assert fcntl is not None
        busy = 0
        for _ in range(attempts):
            fd = cls._create_locked(path)
            if fd is not None:
                return cls(path, fd)
            try:  # a lock file exists: is its writer alive?
                fd = os.open(path, os.O_RDWR | _NOFOLLOW | _CLOEXEC)
            except FileNotFoundError:
                continue  # released meanwhile: try to create it again
            except OSError as e:
                if e.errno == errno.ELOOP or os.path.islink(path):
                    raise WriterLockedError(
                        f"{str(path)!r} is a symbolic link, not a lock file this package wrote; refusing to "
                        "write through it (remove it if no writer uses the folder)"
                    ) from None
                raise
            try:
                text = read_lock_fd(fd)
                _before_takeover()
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as e:
                    if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        raise
                    busy += 1
                    parsed = parse_lock(text)
                    live = parsed is not None and parsed[2] and (
                        parsed[0] != socket.gethostname() or pid_alive(parsed[1]))
                    if live or busy >= 5:  # a live holder, or one taking over a stale lock right now
                        raise WriterLockedError(
                            f"{str(path.parent)!r} is being written by {describe_holder(read_lock_fd(fd))} "
                            f"(lock file {LOCK_FILENAME}); one writer per dataset"
                        ) from None
                    time.sleep(0.02)  # someone is creating or taking over the lock: look again
                    continue
                # we hold the OS lock on this file: it is still the lock file only if nobody
                # released (unlinked) or replaced it since we opened it
                try:
                    now = os.stat(path, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                st = os.fstat(fd)
                if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                    continue
                text = read_lock_fd(fd)  # as it is now that nobody else can take it
                parsed = parse_lock(text)
                if parsed is not None and not parsed[2] and old_style_live(text):
                    raise WriterLockedError(
                        f"{str(path.parent)!r} is being written by {describe_holder(text)} (lock file "
                        f"{LOCK_FILENAME}, written by an older split_dataset); if that writer is gone, "
                        "delete the lock file"
                    )
                if parsed is None and text.strip():
                    raise WriterLockedError(
                        f"{str(path)!r} holds {text.strip()[:60]!r}, not a writer lock this package wrote; "
                        "if no writer uses the folder, delete it"
                    )
                os.ftruncate(fd, 0)  # a dead writer's lock: ours now
                os.lseek(fd, 0, os.SEEK_SET)
                os.write(fd, cls._content())
                lock = cls(path, fd)
                fd = -1
                return lock
            finally:
                if fd >= 0:
                    os.close(fd)
        raise WriterLockedError(f"{str(path)!r}: could not take the writer lock after {attempts} attempts")

    @classmethod
    def _create_locked(cls, path: Path) -> int | None:
        """Create the lock file already holding our name and our OS lock; None if one exists."""
        assert fcntl is not None
        tmp = path.with_name(f"{LOCK_FILENAME}.{uuid.uuid4().hex[:12]}.tmp")
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_RDWR | _NOFOLLOW | _CLOEXEC, 0o644)
        try:
            os.write(fd, cls._content())
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                os.link(tmp, path)  # atomic, fails if a lock file exists; never follows a link
            except FileExistsError:
                os.close(fd)
                return None
            except OSError:  # no hard links here: create the file itself (a short unlocked window)
                os.close(fd)
                fd = -1
                try:
                    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR | _NOFOLLOW | _CLOEXEC, 0o644)
                except FileExistsError:
                    return None
                fcntl.flock(fd, fcntl.LOCK_EX)
                os.write(fd, cls._content())
            return fd
        except BaseException:
            if fd >= 0:
                os.close(fd)
            raise
        finally:
            try:
                os.unlink(tmp)
            except OSError:
                pass

    @classmethod
    def _acquire_by_content(cls, path: Path, attempts: int) -> WriterLock:  # pragma: no cover - no fcntl
        for _ in range(attempts):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | _NOFOLLOW, 0o644)
            except FileExistsError:
                try:
                    text = path.read_text(errors="replace")
                except FileNotFoundError:
                    continue
                if old_style_live(text) or (parse_lock(text) is None and text.strip()):
                    raise WriterLockedError(
                        f"{str(path.parent)!r} is being written by {describe_holder(text)} "
                        f"(lock file {LOCK_FILENAME}); if that writer is gone, delete the lock file"
                    ) from None
                # Without an OS lock no takeover is atomic: a rename aside can move a lock another
                # process has just created, and no restore can be made atomic (a race test found
                # two winners). A stale lock is therefore left for a person to delete.
                raise WriterLockedError(
                    f"{str(path.parent)!r} holds a lock file left by {describe_holder(text)}, which no longer "
                    f"runs; without OS file locks (no fcntl here) it is not taken over automatically: "
                    f"delete {str(path)!r} if no writer runs, then start again"
                ) from None
            with os.fdopen(fd, "wb") as f:
                f.write(cls._content())
            return cls(path, None)
        raise WriterLockedError(f"{str(path)!r}: could not take the writer lock after {attempts} attempts")

    def release(self) -> None:
        """Remove the lock file (if it is still ours) and drop the OS lock. Idempotent."""
        if not self._active:
            return
        self._active = False
        try:
            if self._ident is not None:
                try:
                    now = os.stat(self.path, follow_symlinks=False)
                    if (now.st_dev, now.st_ino) == self._ident:
                        os.unlink(self.path)
                except FileNotFoundError:
                    pass
            else:  # pragma: no cover - Windows: no identity to compare, the content must be ours
                try:
                    if self.path.read_bytes() == self._content():
                        self.path.unlink()
                except FileNotFoundError:
                    pass
        finally:
            fd, self._fd, self._ident = self._fd, None, None
            if fd is not None:
                os.close(fd)

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:  # the OS lock only; the lock file stays, recognisably stale
            try:
                os.close(fd)
            except OSError:
                pass
