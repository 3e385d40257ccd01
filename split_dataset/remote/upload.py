"""Writing a split dataset to object storage: each file one object, the metadata last.

:func:`upload` copies a local dataset folder to a URL: block files, ``chunk_index.bin``
and ``SHA256SUMS`` first (several at once), ``stack_metadata.json`` last, so a reader
finds either no dataset or a whole one. Replacing a dataset removes the old metadata
first, then the old dataset's files that the new one does not have.
:func:`save_remote` writes an array to a URL through a local staging folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import RemoteError
from ..storage import CHECKSUM_FILENAME, CHUNK_INDEX_FILENAME, METADATA_FILENAME, is_temporary_name
from ..storage.layout import group_block_names
from .store import Store

__all__ = ["check_destination", "save_remote", "upload"]

Progress = Callable[[int, int], None]


def _dataset_files(root: Path) -> list[str]:
    """The files of the dataset in `root` that belong in the store (no lock, no temporary files)."""
    names = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if not entry.is_file(follow_symlinks=False) or is_temporary_name(entry.name):
            continue
        if entry.name in (METADATA_FILENAME, CHECKSUM_FILENAME, CHUNK_INDEX_FILENAME) or group_block_names(
                [entry.name]):
            names.append(entry.name)
    if METADATA_FILENAME not in names:
        raise FileNotFoundError(f"{str(root)!r} holds no {METADATA_FILENAME}: not a dataset this package can upload")
    return names


def upload(root: str | os.PathLike[str], url: str, storage_options: dict[str, Any] | None = None, *,
           overwrite: bool = False, progress: Progress | None = None) -> str:
    """Copy the dataset folder `root` to `url`, the metadata last (see the module docstring).

    Parameters
    ----------
    root
        A local split dataset folder.
    url
        Where to put it: ``s3://bucket/path/ds`` or any writable fsspec URL.
    storage_options
        Passed to fsspec.
    overwrite
        Replace a dataset already at `url`. Without it, one there raises ``FileExistsError``.
    progress
        Called as ``progress(done, total)`` with the number of files uploaded.

    Returns
    -------
    str
        The URL.

    Examples
    --------
    >>> import numpy as np, split_dataset, tempfile, os
    >>> local = split_dataset.save(np.ones((4, 3), "u1"), os.path.join(tempfile.mkdtemp(), "ds"), (2,))
    >>> upload(local.root, "memory://up/ds")
    'memory://up/ds'
    >>> split_dataset.open("memory://up/ds")[3].tolist()
    [1, 1, 1]
    """
    store = Store(url, storage_options)
    names = _dataset_files(Path(root))
    exists = check_destination(store, overwrite)
    fs = store.fs
    old: list[str] = []
    if exists:
        old = [n for n in store.listing() or [] if n in (CHECKSUM_FILENAME, CHUNK_INDEX_FILENAME)
               or group_block_names([n])]
        store._retry("removing", METADATA_FILENAME, lambda: fs.rm_file(store.path(METADATA_FILENAME)))
    total = len(names)
    if progress is not None:
        progress(0, total)

    def put(name: str) -> None:
        local = os.path.join(os.fspath(root), name)
        store._retry("uploading", name, lambda: fs.put_file(local, store.path(name)))

    from .dataset import _io_pool

    first = [n for n in names if n != METADATA_FILENAME]
    for done, future in enumerate([_io_pool().submit(put, n) for n in first], 1):
        future.result()
        if progress is not None:
            progress(done, total)
    for name in sorted(set(old) - set(names)):  # the replaced dataset's files the new one lacks
        store._retry("removing", name, lambda name=name: fs.rm_file(store.path(name)))  # type: ignore[misc]
    put(METADATA_FILENAME)
    if progress is not None:
        progress(total, total)
    return store.url


def check_destination(store: Store, overwrite: bool) -> bool:
    """Whether a dataset is at the store's URL already; raises unless `overwrite` allows replacing it,
    and for stores that cannot be written (HTTP servers)."""
    if store.http:
        raise RemoteError(store.url, "an HTTP server cannot be written to; upload to an object store (s3://, gs://, "
                          "...) or copy the folder to the server's disk")
    try:
        store.size(METADATA_FILENAME)
    except FileNotFoundError:
        return False
    if not overwrite:
        raise FileExistsError(f"{store.url!r} already holds a split dataset; pass overwrite=True (--overwrite) "
                              "to replace it")
    return True


def save_remote(write: Callable[[Path], Any], url: str, storage_options: dict[str, Any] | None, *,
                overwrite: bool = False, progress: Progress | None = None) -> str:
    """Write a dataset with ``write(folder)`` into a local staging folder, then :func:`upload` it.

    The staging folder (in ``$TMPDIR``; it needs room for the compressed dataset) is
    removed afterwards, whatever happens.
    """
    check_destination(Store(url, storage_options), overwrite)  # before any work
    staging = Path(tempfile.mkdtemp(prefix=".split_dataset-upload-"))
    try:
        write(staging / "ds")
        return upload(staging / "ds", url, storage_options, overwrite=overwrite, progress=progress)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
