"""Continuing a dataset after a restart (``SplitDatasetWriter(..., mode="a")``, docs/format.md §10).

The existing dataset is opened as a reader does; its frame shape, dtype and blocking
must match the writer's. The new metadata keeps what the writer does not own: unknown keys
(``"operator"``, the acquisition dialect's ``crop``…), ``crop_start``/``crop_end``, and,
unless the writer is given new values, the physical metadata; attrs are merged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..dataset import SplitDataset
from ..metadata import Metadata
from ..storage.hdf5 import read_frame_meta
from .options import WriteOptions
from .sums import reconcile_checksums

__all__ = ["Resumed", "open_for_append", "resume"]


@dataclass
class Resumed:
    """What a resumed writer starts from."""

    #: Frames on disk.
    n_frames: int
    #: The frames of the partial last block (kept in the writer's buffer), or None.
    partial: np.ndarray[Any, Any] | None
    #: The metadata to write from now on (``shape_full[0] == 0``; the writer sets it).
    meta: Metadata
    #: ``SHA256SUMS`` as reconciled, or None when checksums are not kept.
    sums: dict[str, str] | None
    #: The per-frame records of the partial last block (``frame_meta``), or None.
    partial_meta: np.ndarray[Any, Any] | None = None
    #: The last camera frame id on disk (for dropped-frame detection across the restart), or None.
    last_id: int | None = None


def open_for_append(root: Path, frame_shape: tuple[int, ...], dtype: np.dtype[Any],
                    frames_per_file: int) -> SplitDataset:
    """Open the dataset in `root`, refusing (``ValueError``) one of another layout.

    Examples
    --------
    >>> import numpy as np, split_dataset, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "d")
    >>> open_for_append(split_dataset.save(np.zeros((6, 2), "u1"), p, (4,)).root, (2,), np.dtype("u1"), 4).shape
    (6, 2)
    """
    ds = SplitDataset(root)
    expected = (frames_per_file,) + frame_shape
    if ds.shape[1:] != frame_shape or ds.dtype != dtype or ds.shape_block != expected:
        ds.close()
        raise ValueError(
            f"cannot append to {str(root)!r}: it holds frames {ds.shape[1:]} {ds.dtype} in blocks "
            f"of {ds.shape_block[0]}; this writer has frames {frame_shape} {dtype} in blocks "
            f"of {frames_per_file}"
        )
    return ds


def resume(ds: SplitDataset, options: WriteOptions, frames_per_file: int, *, checksums: bool) -> Resumed:
    """Adopt the dataset `ds` (opened by :func:`open_for_append`): its frames, metadata, checksums.

    Examples
    --------
    >>> import numpy as np, split_dataset, tempfile, os
    >>> ds = split_dataset.save(np.zeros((6, 2), "u1"), os.path.join(tempfile.mkdtemp(), "d"), (4,),
    ...                         attrs={"fish": 1})
    >>> r = resume(ds, WriteOptions(attrs={"part": 2}), 4, checksums=True)
    >>> r.n_frames, r.partial.shape, r.meta.attrs, sorted(r.sums)
    (6, (2, 2), {'fish': 1, 'part': 2}, ['0000.h5', '0001.h5'])
    """
    old = ds.meta
    attrs = dict(ds.attrs)
    attrs.update(options.attrs)
    opts = options.replace(
        resolution=options.resolution if options.resolution is not None else ds.resolution,
        axis_order=options.axis_order or ds.axis_order,
        units=options.units if options.units is not None else ds.units,
        frame_interval=options.frame_interval if options.frame_interval is not None else ds.frame_interval,
        attrs=attrs,
    )
    frame_shape = ds.shape[1:]
    meta = opts.metadata((0,) + frame_shape, ds.dtype, (frames_per_file,) + frame_shape, complete=False,
                         extra=old.extra, crop_start=old.crop_start, crop_end=old.crop_end)
    n = ds.shape[0]
    full, fill = divmod(n, frames_per_file)
    partial = np.asarray(ds[full * frames_per_file : n]) if fill else None
    partial_meta = read_frame_meta(ds.files.ravel()[full], fill) if fill else None
    last = partial_meta if fill else (read_frame_meta(ds.files.ravel()[full - 1], frames_per_file) if full else None)
    ids: np.ndarray[Any, Any] = (last["id"][last["id"] >= 0] if last is not None and "id" in (last.dtype.names or ())
                                 else np.zeros(0, np.int64))
    meta = meta.replace(dropped_frames=old.dropped_frames, n_dropped_frames=old.n_dropped_frames)
    sums = reconcile_checksums(ds, frames_per_file, fsync=options.fsync) if checksums else None
    return Resumed(n_frames=n, partial=partial, meta=meta, sums=sums, partial_meta=partial_meta,
                   last_id=int(ids[-1]) if len(ids) else None)
