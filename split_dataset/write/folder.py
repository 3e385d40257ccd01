"""The one policy for the folder a new dataset is written into (docs/format.md §9, §10).

- A folder that holds anything is refused unless ``overwrite``; the writer lock file and
  temporary files of ours (``.<name>.<12 hex>.tmp``, left by a crash) do not count.
- Replacing removes only the old dataset's own files, in the order of docs/format.md §10:
  ``stack_metadata.json`` first (the folder stops claiming its blocks), then ``SHA256SUMS``,
  then the blocks of prefix ``""`` it claimed, then our temporary files; never through a
  symbolic link (a link is removed, not its target).
- A folder a live writer holds is refused (:func:`~split_dataset.locks.refuse_if_written`)
  before anything is deleted, even with ``overwrite``.

``EmptySplitDataset`` (the 0.4 API) keeps its own promise within this policy: a live
writer's folder is refused, and an existing folder is reused with a warning
(:func:`reuse_folder`).
"""

from __future__ import annotations

import os
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..grid import BlockGrid
from ..locks import LOCK_FILENAME, WriterLock, refuse_if_written
from ..metadata import Metadata
from ..storage import (
    CHECKSUM_FILENAME,
    CHUNK_INDEX_FILENAME,
    METADATA_FILENAME,
    STATUS_FILENAME,
    is_temporary_name,
    read_json,
    scan_block_files,
)

__all__ = ["is_temporary_name", "is_empty_folder", "prepare_folder", "claim_folder", "lock_folder", "reuse_folder"]

#: The lock's own temporary names belong to whoever is taking the lock right now: never removed.
_LOCK_TMP_PREFIX = LOCK_FILENAME + "."


def _is_our_temporary(root: Path, name: str) -> bool:
    """A temporary name of ours that is a file or a link (a folder by that name is someone's)."""
    if not is_temporary_name(name):
        return False
    try:
        return not stat.S_ISDIR(os.lstat(root / name).st_mode)
    except OSError:
        return True  # gone meanwhile


def _others(root: Path, ignore: tuple[str, ...]) -> list[str]:
    """Names in `root` that make it hold something: all but `ignore` and our temporary files."""
    with os.scandir(root) as it:
        return [e.name for e in it if e.name not in ignore and e.name != STATUS_FILENAME
                and not _is_our_temporary(root, e.name)]


def is_empty_folder(path: Path, ignore: tuple[str, ...] = (LOCK_FILENAME,)) -> bool:
    """Whether `path` is a folder holding nothing but `ignore` (the lock file) and our temporary files.

    The emptiness rule of every writer (``convert`` checks its destination with it too).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp()); _ = (root / ".0001.h5.3f2a9c0d1e7b.tmp").write_text("")
    >>> is_empty_folder(root)
    True
    """
    path = Path(path)
    return path.is_dir() and not path.is_symlink() and not _others(path, ignore)


def _n_blocks_claimed(meta_path: Path) -> int:
    m = Metadata.from_dict(read_json(meta_path))
    return BlockGrid(m.shape, m.shape_block, m.padding).n_blocks


def _remove_old_dataset(path: Path) -> None:
    """Delete the old dataset's own files, in crash-safe order; never follows a link."""
    meta = path / METADATA_FILENAME
    n_old: int | None = None
    if os.path.lexists(meta):
        if not meta.is_symlink():
            try:
                n_old = _n_blocks_claimed(meta)
            except (ValueError, OSError):
                n_old = None
        meta.unlink()  # first: the folder no longer claims the old blocks (a link: the link goes)
    (path / CHECKSUM_FILENAME).unlink(missing_ok=True)  # unlink never follows a link
    (path / CHUNK_INDEX_FILENAME).unlink(missing_ok=True)
    (path / STATUS_FILENAME).unlink(missing_ok=True)
    for index, name in scan_block_files(path).get("", {}).items():  # only our own names
        if n_old is None or index < n_old:
            (path / name).unlink(missing_ok=True)
    _remove_temporaries(path)


def _remove_temporaries(path: Path) -> None:
    """Remove temporary files a crashed write left (not the lock's: someone may be taking it)."""
    with os.scandir(path) as it:
        names = [e.name for e in it if not e.name.startswith(_LOCK_TMP_PREFIX) and _is_our_temporary(path, e.name)]
    for name in names:
        (path / name).unlink(missing_ok=True)


def prepare_folder(path: Path, overwrite: bool, ignore: tuple[str, ...] = (), *, locked: bool = False) -> None:
    """Create `path`, refusing a non-empty folder unless `overwrite` (then only our files go).

    Files named in `ignore` (the caller's own lock file) and our temporary files do not make
    the folder non-empty. Before deleting anything, a folder held by a live writer is refused
    (:class:`~split_dataset.errors.WriterLockedError`) unless `locked` (the caller holds
    that lock itself). Deleting never follows a symbolic link: a link among the old files
    is removed, not its target. Temporary files of ours are removed only by a caller
    holding the lock (`locked`).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "new"
    >>> prepare_folder(p, overwrite=False); p.is_dir()
    True
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{str(path)!r} exists and is a file, not a folder")
    if path.is_dir() and _others(path, ignore):
        if not overwrite:
            raise FileExistsError(
                f"{str(path)!r} exists and is not empty; pass overwrite=True to replace the dataset in it"
            )
        if not locked:
            refuse_if_written(path, "replace the dataset in it")
        _remove_old_dataset(path)
    elif path.is_dir() and locked:
        _remove_temporaries(path)  # an empty folder but for what a crash left
    path.mkdir(parents=True, exist_ok=True)


@contextmanager
def claim_folder(root: Path, overwrite: bool) -> Iterator[None]:
    """Create or empty `root` for a new dataset and hold its writer lock while the block runs.

    A folder held by a live writer raises :class:`~split_dataset.errors.WriterLockedError`
    before anything is deleted, and no writer can start in it until the block exits.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp()) / "ds"
    >>> with claim_folder(root, overwrite=False):
    ...     pass
    >>> sorted(p.name for p in root.iterdir())
    []
    """
    lock = lock_folder(root, overwrite)
    try:
        yield
    finally:
        lock.release()


def lock_folder(root: Path, overwrite: bool) -> WriterLock:
    """Create or empty `root` for a new dataset and take its writer lock (the caller releases it).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> lock = lock_folder(pathlib.Path(tempfile.mkdtemp()) / "ds", overwrite=False)
    >>> lock.held
    True
    >>> lock.release()
    """
    root = Path(root)
    if not overwrite:  # refused before a lock file is put in someone's folder
        prepare_folder(root, overwrite=False, ignore=(LOCK_FILENAME,))
    elif root.exists() and not root.is_dir():
        raise FileExistsError(f"{str(root)!r} exists and is a file, not a folder")
    root.mkdir(parents=True, exist_ok=True)
    lock = WriterLock.acquire(root)
    try:
        prepare_folder(root, overwrite, ignore=(LOCK_FILENAME,), locked=True)
    except BaseException:
        lock.release()
        raise
    return lock


def reuse_folder(root: Path, action: str) -> None:
    """The 0.4 API's folder: created if absent; an existing one is kept (with a warning), unless
    a live writer holds it (:class:`~split_dataset.errors.WriterLockedError`).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> reuse_folder(pathlib.Path(tempfile.mkdtemp()) / "out", "write blocks into it")
    """
    root = Path(root)
    if root.is_dir():
        refuse_if_written(root, action)
        warnings.warn(f"Existing directory {str(root)!r}: blocks written now replace its files", stacklevel=3)
    else:
        root.mkdir(parents=True)
