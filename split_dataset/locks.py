"""The writer lock: one live writer per dataset folder, and a way for others to ask.

A writer (``SplitDatasetWriter``) holds ``.split_dataset.writer.lock`` in the dataset
folder while it runs. Anything else that would replace or edit the folder (``save(...,
overwrite=True)``, ``convert --overwrite``, attribute edits) calls
:func:`refuse_if_written` first. The format of the lock file is in ``docs/format.md``.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from .errors import WriterLockedError

__all__ = ["LOCK_FILENAME", "live_writer", "refuse_if_written"]

LOCK_FILENAME = ".split_dataset.writer.lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def live_writer(root: str | os.PathLike[str]) -> str | None:
    """Who holds `root`'s writer lock ("process 123 on host"), or None when no live writer does.

    Examples
    --------
    >>> import tempfile
    >>> live_writer(tempfile.mkdtemp()) is None
    True
    """
    lock = Path(root) / LOCK_FILENAME
    try:
        host, pid = lock.read_text().split()
        alive = host != socket.gethostname() or _pid_alive(int(pid))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        host, pid, alive = "?", "?", True  # unreadable: assume a writer holds it
    return f"process {pid} on {host}" if alive else None


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
