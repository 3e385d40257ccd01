"""How a growing writer starts (docs/format.md §10, step 1, and Resume): lock, folder, metadata."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..locks import LOCK_FILENAME, WriterLock
from ..metadata import Metadata
from ..storage import CHECKSUM_FILENAME, METADATA_FILENAME
from .folder import prepare_folder
from .options import WriteOptions
from .resume import open_for_append, resume
from .sink import BlockSink

__all__ = ["Started", "start"]


@dataclass
class Started:
    """A folder ready for a writer that grows along axis 0: locked, described, with its sink."""

    #: The writer lock, held (the writer releases it when it closes).
    lock: WriterLock
    #: Writes blocks, checksums and metadata.
    sink: BlockSink
    #: The metadata, with ``shape_full[0]`` still to be set.
    meta: Metadata
    #: Frames already on disk (resumed), 0 for a new dataset.
    n_frames: int = 0
    #: The frames of a resumed partial last block, or None.
    partial: np.ndarray[Any, Any] | None = None
    #: ``SHA256SUMS`` lines already on disk.
    sums: dict[str, str] = field(default_factory=dict)
    #: The per-frame records of a resumed partial last block, or None.
    partial_meta: np.ndarray[Any, Any] | None = None
    #: The last camera frame id on disk of a resumed dataset, or None.
    last_id: int | None = None


def start(root: Path, options: WriteOptions, frame_shape: tuple[int, ...], dtype: np.dtype[Any],
          frames_per_file: int, *, append: bool, overwrite: bool) -> Started:
    """Take `root`'s lock and start a new dataset there, or resume the one there (`append`).

    A new dataset follows :func:`~split_dataset.write.folder.prepare_folder` (refused if
    non-empty without `overwrite`); it gets an empty ``SHA256SUMS`` (with checksums). A
    resumed one keeps its frames, its metadata's unknown keys and crops, and a reconciled
    ``SHA256SUMS`` (kept up to date even with ``checksums=False``, else it would go stale as
    the partial block is replaced). Either way the metadata is written (``complete: false``).

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> s = start(pathlib.Path(tempfile.mkdtemp()) / "acq", WriteOptions(fsync=False), (2, 2),
    ...           np.dtype("u1"), 4, append=False, overwrite=False)
    >>> s.n_frames, s.meta.shape_block
    (0, (4, 2, 2))
    >>> s.lock.release()
    """
    resuming = append and (root / METADATA_FILENAME).is_file()
    if not root.exists():
        prepare_folder(root, overwrite)
    # before touching an existing folder: another writer may be using it
    lock = WriterLock.acquire(root)
    try:
        if resuming:
            existing = open_for_append(root, frame_shape, dtype, frames_per_file)
            try:
                keep_sums = options.checksums or os.path.lexists(root / CHECKSUM_FILENAME)
                state = resume(existing, options, frames_per_file, checksums=keep_sums)
            finally:
                existing.close()
            sink = BlockSink.for_options(root, state.meta, options, checksums=keep_sums)
            sink.add_sums(state.sums or {})
            started = Started(lock, sink, state.meta, state.n_frames, state.partial, state.sums or {},
                              state.partial_meta, state.last_id)
        else:
            prepare_folder(root, overwrite, ignore=(LOCK_FILENAME,), locked=True)
            meta = options.metadata((0,) + frame_shape, dtype, (frames_per_file,) + frame_shape, complete=False)
            sink = BlockSink.for_options(root, meta, options)
            sink.write_checksums()
            started = Started(lock, sink, meta)
        sink.write_metadata(started.meta.replace(shape=(started.n_frames,) + frame_shape, complete=False))
    except BaseException:
        lock.release()
        raise
    return started
