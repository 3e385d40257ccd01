"""What a split dataset holds: :func:`info` (for ``split-dataset info``) and :func:`block_codec`.

Plain data, never printed here; the command line formats it.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np

from .dataset import SplitDataset
from .errors import MetadataError
from .metadata import Metadata
from .remote.store import is_url
from .storage import BLOSC_FILTER, CHECKSUM_FILENAME, SHUFFLE_CODES, IndexFile
from .storage.codecs import COMPRESSOR_CODES

__all__ = ["block_codec", "describe", "info"]

_SHUFFLES = {code: name for name, code in SHUFFLE_CODES.items()}


def block_codec(dset: Any) -> dict[str, Any]:
    """The codec of an h5py dataset, described as :meth:`split_dataset.Codec.describe` does.

    Used for datasets whose metadata does not record the compression (old writers).

    Examples
    --------
    >>> import h5py, io
    >>> with h5py.File(io.BytesIO(), "w") as f:
    ...     block_codec(f.create_dataset("x", (4, 4), "u2", chunks=(2, 4), compression="gzip"))
    {'name': 'gzip', 'clevel': 4, 'shuffle': 'none'}
    """
    plist = dset.id.get_create_plist()
    filters = [plist.get_filter(i) for i in range(plist.get_nfilters())]
    codes = [f[0] for f in filters]
    for code, _flags, cd, _name in filters:
        if code == BLOSC_FILTER:
            cd = tuple(cd)
            return {
                "name": "blosc",
                "cname": COMPRESSOR_CODES.get(cd[6] if len(cd) > 6 else 0, "unknown"),
                "clevel": int(cd[4]) if len(cd) > 4 else 5,
                "shuffle": _SHUFFLES.get(int(cd[5]) if len(cd) > 5 else 1, "unknown"),
            }
        if code == 1:  # deflate
            return {"name": "gzip", "clevel": int(cd[0]) if cd else 6, "shuffle": "byte" if 2 in codes else "none"}
    if not filters:
        return {"name": "none"}
    return {"name": "other", "filters": [f[3].decode(errors="replace") if isinstance(f[3], bytes) else str(f[3])
                                         for f in filters]}


def info(path: str | os.PathLike[str], *, prefix: str | None = None,
         storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything ``split-dataset info`` shows, as a JSON-serialisable dict with stable keys.

    Keys: ``path``, ``shape``, ``shape_in_metadata``, ``dtype``, ``shape_block``,
    ``chunks``, ``padding``, ``n_blocks``, ``n_blocks_present``, ``missing_blocks``,
    ``codec``, ``nbytes`` (uncompressed), ``bytes_on_disk`` (sum of the block files),
    ``compression_ratio`` (nbytes / bytes_on_disk, None if nothing is on disk),
    ``axis_order``, ``resolution``, ``units``, ``frame_interval``, ``frame_rate``,
    ``attrs``, ``complete`` (True, False or None when the writer did not say),
    ``checksums`` (whether ``SHA256SUMS`` exists), ``chunk_index`` (None without a valid
    ``chunk_index.bin``, else ``{"blocks": indexed blocks, "current": those whose file is
    still the one indexed}``) and ``warnings`` (what opening said).

    `path` may be a URL (``s3://bucket/ds``, ``https://host/ds``, any fsspec URL; the
    ``remote`` extra), with `storage_options` for fsspec: the same keys, computed by
    :func:`split_dataset.remote.check.info_remote`, which says what it costs in requests.

    Examples
    --------
    >>> import numpy as np, split_dataset, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "ds")
    >>> _ = split_dataset.save(np.zeros((10, 4, 4), "uint16"), path, (5,), resolution=(2, 1, 1))
    >>> d = info(path)
    >>> d["shape"], d["dtype"], d["n_blocks"], d["codec"]["name"], d["resolution"], d["complete"]
    ([10, 4, 4], 'uint16', 2, 'blosc', [2.0, 1.0, 1.0], True)
    """
    if is_url(path):
        from .remote.check import info_remote

        return info_remote(str(path), prefix=prefix, storage_options=storage_options)
    if storage_options:
        raise TypeError(f"storage_options apply to datasets given by URL; {str(path)!r} is a local path")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = SplitDataset(path, prefix)
    with ds:
        root = ds.root
        missing = set(ds.missing_blocks)
        present = [i for i in range(ds.n_blocks) if i not in missing]
        files = ds.files.ravel()
        on_disk = 0
        for i in present:
            try:
                on_disk += files[i].stat().st_size
            except OSError:
                pass
        return describe(ds, present, [files[i].name for i in ds.missing_blocks], on_disk,
                        (root / CHECKSUM_FILENAME).is_file(), _index_state(ds._view[4], files, present),
                        [str(w.message) for w in caught])


def describe(ds: SplitDataset, present: list[int], missing: list[str], on_disk: int, checksums: bool,
             chunk_index: dict[str, int] | None, warned: list[str]) -> dict[str, Any]:
    """The dict of :func:`info` for an open dataset, given what only the storage can tell: the blocks
    `present` (file numbers) and `missing` (names), the bytes their files take, whether
    ``SHA256SUMS`` exists, the chunk index's state and the warnings opening gave.

    The codec and chunk shape come from the metadata, else from the first present block.

    Examples
    --------
    >>> import numpy as np, split_dataset, tempfile, os
    >>> ds = split_dataset.save(np.zeros((4, 4), "uint8"), os.path.join(tempfile.mkdtemp(), "ds"), (2,))
    >>> d = describe(ds, [0, 1], [], 1000, True, None, [])
    >>> d["n_blocks_present"], d["bytes_on_disk"], d["compression_ratio"], d["checksums"]
    (2, 1000, 0.016, True)
    """
    meta = ds.meta
    codec = meta.compression if isinstance(meta.compression, dict) else None
    chunks = list(meta.chunks) if meta.chunks is not None else None
    if (codec is None or chunks is None) and present:
        with ds.block(present[0]) as handle:
            if codec is None:
                codec = block_codec(handle.dset)
            if chunks is None and handle.chunks is not None:
                chunks = list(handle.chunks)
    try:
        claimed = list(Metadata.from_dict(ds.metadata).shape)
    except MetadataError:  # pragma: no cover - the dataset opened, so the metadata parses
        claimed = list(ds.shape)
    return {
        "path": str(ds.root),
        "shape": list(ds.shape),
        "shape_in_metadata": claimed,
        "dtype": str(ds.dtype),
        "shape_block": list(ds.shape_block),
        "chunks": chunks,
        "padding": list(ds.padding),
        "n_blocks": ds.n_blocks,
        "n_blocks_present": len(present),
        "missing_blocks": list(missing),
        "codec": codec,
        "nbytes": int(ds.nbytes),
        "bytes_on_disk": int(on_disk),
        "compression_ratio": round(ds.nbytes / on_disk, 3) if on_disk else None,
        "axis_order": ds.axis_order,
        "resolution": [float(r) for r in ds.resolution],
        "units": list(ds.units),
        "frame_interval": ds.frame_interval,
        "frame_rate": ds.frame_rate,
        "attrs": dict(ds.attrs),
        "complete": ds.complete,
        "checksums": checksums,
        "chunk_index": chunk_index,
        "frames": None if is_url(ds.root) else frame_stats(ds),  # by URL: a request per block; not for info
        "warnings": list(warned),
    }


def frame_stats(ds: SplitDataset) -> dict[str, Any] | None:
    """Timing of an acquisition from its per-frame records: frames with a time stamp, the measured
    frame rate (1 / median interval), the jitter (standard deviation of the intervals, ms), the
    longest interval, and the dropped frames (count and the first 20 ids); None without records.

    Reads each block's small ``frame_meta`` array (one file open per block along axis 0).

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from split_dataset import SplitDatasetWriter
    >>> with SplitDatasetWriter(os.path.join(tempfile.mkdtemp(), "a"), (2,), "u1", 4, fsync=False) as w:
    ...     w.append(np.zeros((5, 2), "u1"), timestamps=[0, .1, .2, .3, .4], frame_ids=[0, 1, 2, 4, 5])
    >>> s = frame_stats(w.dataset)
    >>> s["timed"], round(s["measured_rate"], 3), s["n_dropped"], s["dropped"]
    (5, 10.0, 1, [3])
    """
    meta = ds.frame_meta
    dropped = ds.dropped_frames
    if meta is None and not len(dropped):
        return None
    out: dict[str, Any] = {"timed": 0, "measured_rate": None, "jitter_ms": None, "longest_interval": None,
                           "n_dropped": int(ds.meta.n_dropped_frames or len(dropped)),
                           "dropped": [int(i) for i in dropped[:20]]}
    if meta is not None:
        times = np.asarray(meta["time"], float)
        times = times[np.isfinite(times)]
        out["timed"] = len(times)
        if len(times) >= 2:
            steps = np.diff(times)
            median = float(np.median(steps))
            out["measured_rate"] = 1.0 / median if median > 0 else None
            out["jitter_ms"] = float(np.std(steps) * 1e3)
            out["longest_interval"] = float(steps.max())
    return out


def _index_state(index: IndexFile | None, files: Any, present: list[int]) -> dict[str, int] | None:
    """How much of the dataset ``chunk_index.bin`` describes: blocks in it, and those still current."""
    if index is None:
        return None
    current = 0
    for i in present:
        record = index.record(i)
        try:
            current += record is not None and record.matches(os.stat(files[i]))
        except OSError:
            pass
    return {"blocks": index.n_blocks, "current": current}
