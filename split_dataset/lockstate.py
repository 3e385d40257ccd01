"""Who holds a dataset folder's writer lock (docs/format.md §8): the asking side of :mod:`split_dataset.locks`.

The lock file holds ``"<host> <pid> flock"``; its writer keeps an exclusive ``flock`` on it.
Anyone may ask whether that writer still runs (:func:`live_writer`) without taking the lock.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from pathlib import Path

from .errors import WriterLockedError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_FILENAME", "OS_LOCKED", "live_writer", "writer_gone", "refuse_if_written"]

LOCK_FILENAME = ".split_dataset.writer.lock"
#: Third word of a lock file whose writer holds an OS lock on it (absent in older versions).
OS_LOCKED = "flock"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def parse_lock(text: str) -> tuple[str, int, bool] | None:
    """``(host, pid, os_locked)`` from a lock file's text, None if it is not a lock file's."""
    words = text.split()
    if len(words) not in (2, 3) or (len(words) == 3 and words[2] != OS_LOCKED):
        return None
    try:
        return words[0], int(words[1]), len(words) == 3
    except ValueError:
        return None


def read_lock_fd(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 4096).decode(errors="replace")


def old_style_live(text: str) -> bool:
    """Whether a lock that holds no OS lock (older versions, or no fcntl) names a live writer."""
    parsed = parse_lock(text)
    if parsed is None:
        return bool(text.strip())  # garbage: someone's, not ours to judge; an empty file is a dead creator
    host, pid, _ = parsed
    return host != socket.gethostname() or (pid_alive(pid) and pid != os.getpid())


def describe_holder(text: str) -> str:
    parsed = parse_lock(text)
    if parsed is None:
        return "an unknown writer"
    host, pid, _ = parsed
    return f"process {pid} on {host}"


def live_writer(root: str | os.PathLike[str]) -> str | None:
    """Who holds `root`'s writer lock ("process 123 on host"), or None when no live writer does.

    Answered from the OS lock where there is one (a writer that died, even by SIGKILL,
    holds none); lock files of older versions name a process, which must be alive.

    Examples
    --------
    >>> import tempfile
    >>> live_writer(tempfile.mkdtemp()) is None
    True
    """
    lock = Path(root) / LOCK_FILENAME
    try:
        st = os.lstat(lock)
    except FileNotFoundError:
        return None
    except OSError:
        return "an unknown writer (the lock file cannot be examined)"
    if not stat.S_ISREG(st.st_mode):
        return "an unknown writer (the lock file is not a regular file)"
    try:
        fd = os.open(lock, os.O_RDONLY | _NOFOLLOW | _CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError:
        return "an unknown writer (the lock file cannot be read)"
    try:
        text = read_lock_fd(fd)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    return describe_holder(text)  # held: a live writer (its text may be being rewritten)
                # no OS locks here (some network file systems): judge from the text
            else:
                fcntl.flock(fd, fcntl.LOCK_UN)
                parsed = parse_lock(text)
                if parsed is not None and parsed[2]:
                    return None  # a writer of this version that is gone
        return describe_holder(text) if old_style_live(text) else None
    finally:
        os.close(fd)


def writer_gone(root: str | os.PathLike[str]) -> str | None:
    """If `root` holds a lock file left by a writer that no longer runs, who it was; else None.

    Examples
    --------
    >>> import tempfile
    >>> writer_gone(tempfile.mkdtemp()) is None
    True
    """
    lock = Path(root) / LOCK_FILENAME
    if not os.path.lexists(lock) or live_writer(root) is not None:
        return None
    try:
        fd = os.open(lock, os.O_RDONLY | _NOFOLLOW | _CLOEXEC)
    except OSError:
        return None
    try:
        return describe_holder(read_lock_fd(fd))
    finally:
        os.close(fd)


def refuse_if_written(root: str | os.PathLike[str], action: str) -> None:
    """Raise :class:`~split_dataset.errors.WriterLockedError` if a live writer holds `root`.

    Examples
    --------
    >>> import tempfile
    >>> refuse_if_written(tempfile.mkdtemp(), "replace it")
    """
    holder = live_writer(root)
    if holder is not None:
        raise WriterLockedError(
            f"{str(root)!r} is being written by {holder} (lock file {LOCK_FILENAME}); "
            f"refusing to {action} while that writer runs"
        )
