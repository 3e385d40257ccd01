"""The napari reader: a split dataset as lazy image layers at their physical scale.

What opening reads: the metadata and one block's header (as :class:`~split_dataset.SplitDataset`
does), then, unless the dataset stores a display range (``attrs["display_range"]``, or the
``display_range`` writers record in the metadata), the
central window (at most 1024 x 1024 pixels) of at most 8 planes spread over the leading
axes, for contrast limits. The layer data is a dask array with one chunk per plane (never
straddling a block file), so showing a plane decodes only that plane's in-file chunks.

A dataset still being written (``complete: false``) opens with what is on disk;
:func:`refresh` then gives its layers the frames written since (call it from a timer).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..dataset import SplitDataset
from ..storage import METADATA_FILENAME, scan_block_files

__all__ = ["DISPLAY_RANGE_KEY", "get_reader", "is_split_dataset", "read", "layer_data", "contrast_limits",
           "pyramid", "refresh"]

#: Key in a dataset's ``attrs`` holding ``[low, high]`` (or one such pair per channel): the
#: contrast limits to show it with. When absent, the reader samples a few planes.
DISPLAY_RANGE_KEY = "display_range"

#: Planes at least this large on a side (a 2048 x 2048 camera frame) get a multiscale pyramid ...
MULTISCALE_FROM = 2048
#: ... of 2x means in y and x, down to a level at most this large on a side.
COARSEST = 512
#: Contrast limits from at most this many planes ...
SAMPLED_PLANES = 8
#: ... each contributing its central window of at most this many pixels on a side.
SAMPLED_WINDOW = 1024
#: Robust percentiles of the sampled pixels.
PERCENTILES = (0.5, 99.5)

_CHANNEL_COLORMAPS = {2: ("magenta", "green")}
_COLORMAPS = ("cyan", "yellow", "magenta", "red", "green", "blue")

LayerData = tuple[Any, dict[str, Any], str]


def is_split_dataset(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is a split dataset folder (or its ``stack_metadata.json``), told from
    names alone: a ``stack_metadata.json`` or block files named like ``0000.h5``.

    Examples
    --------
    >>> import tempfile
    >>> is_split_dataset(tempfile.mkdtemp())
    False
    """
    p = Path(path)
    try:
        if p.name == METADATA_FILENAME and p.is_file():
            return True
        if not p.is_dir():
            return False
        if (p / METADATA_FILENAME).is_file():
            return True
        return bool(scan_block_files(p))
    except OSError:
        return False


def get_reader(path: str | Sequence[str]) -> Callable[[Any], list[LayerData]] | None:
    """napari's reader hook: :func:`read` for a split dataset, None (at once) for anything else."""
    if not isinstance(path, (str, os.PathLike)):
        if len(path) != 1:
            return None
        path = path[0]
    return read if is_split_dataset(path) else None


def read(path: str | Sequence[str]) -> list[LayerData]:
    """Layer data tuples for the split dataset at `path`: one image layer, or one per channel."""
    if not isinstance(path, (str, os.PathLike)):
        (path,) = path
    # missing blocks (an acquisition that stopped early) show as zeros instead of failing a slider move
    return layer_data(SplitDataset(path, fill_value=0))


def _plane_chunks(ds: SplitDataset) -> tuple[tuple[int, ...], ...]:
    """Dask chunks: one plane per chunk on the leading axes; y and x whole within each block file."""
    chunks: list[tuple[int, ...]] = []
    for axis, (n, b) in enumerate(zip(ds.shape, ds.shape_block)):
        step = 1 if axis < ds.ndim - 2 else max(b, 1)
        chunks.append(tuple(min(step, n - s) for s in range(0, n, step)) or (0,))
    return tuple(chunks)


def _units(ds: SplitDataset) -> tuple[list[float], list[str]]:
    """Per-axis scale and unit: ``resolution`` and ``units``, axis 0 in seconds when the frame interval is known."""
    scale = [float(r) if r and math.isfinite(r) and r > 0 else 1.0 for r in ds.resolution]
    units = [u or "pixel" for u in ds.units]
    interval = ds.frame_interval
    if interval and ds.ndim > 2:
        scale[0], units[0] = float(interval), "s"
    return scale, units


def _stored_range(ds: SplitDataset, n_channels: int) -> list[tuple[float, float]] | None:
    """The display range stored in ``attrs`` (a viewer's or the user's choice), one (low, high)
    per channel, else the one writers record in the metadata (``display_range``: percentiles of
    the frames they sampled; for one channel), or None."""
    value = ds.meta.attrs.get(DISPLAY_RANGE_KEY)
    if value is None and n_channels == 1 and ds.meta.display_range is not None:
        lo, hi = ds.meta.display_range
        return [(lo, hi if hi > lo else lo + 1.0)]
    try:
        pairs = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        return None
    if pairs.shape == (2,):
        pairs = np.tile(pairs, (n_channels, 1))
    if pairs.shape != (n_channels, 2) or not np.isfinite(pairs).all() or (pairs[:, 1] <= pairs[:, 0]).any():
        return None
    return [(float(lo), float(hi)) for lo, hi in pairs]


def contrast_limits(planes: Any, dtype: np.dtype) -> tuple[float, float]:
    """Robust (0.5 %, 99.5 %) limits of `planes` (an array of sampled pixels).

    Examples
    --------
    >>> contrast_limits(np.arange(1001), np.dtype("int64"))
    (5.0, 995.0)
    """
    values = np.asarray(planes, dtype=float).ravel()
    values = values[np.isfinite(values)]
    if not values.size:
        return (0.0, 1.0)
    lo, hi = (float(v) for v in np.percentile(values, PERCENTILES))
    if hi <= lo:
        lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        hi = lo + 1.0
    return (lo, hi)


def _sample(ds: SplitDataset, channel_axis: int | None, channel: int) -> np.ndarray:
    """Central windows of at most :data:`SAMPLED_PLANES` planes spread evenly over the leading axes."""
    lead = [n for axis, n in enumerate(ds.shape[:-2]) if axis != channel_axis]
    count = math.prod(lead)
    if count == 0 or 0 in ds.shape[-2:]:
        return np.empty(0, ds.dtype)
    window: list[Any] = []
    for n in ds.shape[-2:]:
        w = min(n, SAMPLED_WINDOW)
        start = (n - w) // 2
        window.append(slice(start, start + w))
    picked = np.unique(np.linspace(0, count - 1, min(SAMPLED_PLANES, count)).round().astype(int))
    out = []
    for flat in picked:
        index: list[Any] = [int(i) for i in np.unravel_index(int(flat), lead)] if lead else []
        if channel_axis is not None:
            index.insert(channel_axis, channel)
        out.append(np.asarray(ds[tuple(index + window)]))
    return np.stack(out)


def _downsample(block: np.ndarray, factor: int) -> np.ndarray:
    """Mean of `factor` x `factor` pixel squares over the last two axes (partial squares at the edges)."""
    *lead, ny, nx = block.shape
    py, px = -ny % factor, -nx % factor
    work = np.zeros((*lead, ny + py, nx + px), dtype=np.float64)
    work[..., :ny, :nx] = block
    sums = work.reshape(*lead, (ny + py) // factor, factor, (nx + px) // factor, factor).sum(axis=(-3, -1))
    rows = np.minimum(factor, ny - np.arange(0, ny, factor))
    cols = np.minimum(factor, nx - np.arange(0, nx, factor))
    mean = sums / np.multiply.outer(rows, cols)
    if np.issubdtype(block.dtype, np.integer) or block.dtype == np.bool_:
        mean = np.rint(mean)
    result: np.ndarray = mean.astype(block.dtype)
    return result


def pyramid(x: Any, coarsest: int = COARSEST) -> list[Any]:
    """`x` (a dask array) and lazy 2x-in-y-and-x means of it, until the last two axes are at
    most `coarsest` on a side. Every level is computed from `x` plane by plane (a mean over
    2^k x 2^k squares equals k successive 2x2 means), so showing a coarse plane reads one plane.

    Examples
    --------
    >>> import dask.array as da
    >>> [lvl.shape for lvl in pyramid(da.zeros((2, 1000, 700), chunks=(1, 1000, 700)))]
    [(2, 1000, 700), (2, 500, 350)]
    """
    levels = [x]
    factor = 1
    while max(levels[-1].shape[-2:]) > coarsest:
        factor *= 2
        f = factor
        chunks = (*x.chunks[:-2], *(tuple(-(-c // f) for c in cs) for cs in x.chunks[-2:]))
        levels.append(x.map_blocks(_downsample, f, chunks=chunks, dtype=x.dtype,
                                   name=f"split-dataset-level{f}-{x.name}"))
    return levels


def layer_data(ds: SplitDataset) -> list[LayerData]:
    """Layer data tuples for an open dataset: lazy data, scale, units, axis labels, contrast limits."""
    x = ds.to_dask(chunks=_plane_chunks(ds))
    scale, units = _units(ds)
    labels = list(ds.axis_order) if len(ds.axis_order) == ds.ndim else [str(i) for i in range(ds.ndim)]
    channel_axis = labels.index("c") if "c" in labels and ds.ndim > 2 and labels.index("c") < ds.ndim - 2 else None
    n_channels = ds.shape[channel_axis] if channel_axis is not None else 1
    stored = _stored_range(ds, n_channels)
    name = ds.root.name if ds.prefix == "" else f"{ds.root.name}/{ds.prefix}"
    big = ds.ndim >= 2 and max(ds.shape[-2:]) >= MULTISCALE_FROM
    out: list[LayerData] = []
    for channel in range(n_channels):
        data = _channel(x, channel_axis, channel)
        keep = list(range(ds.ndim))
        if channel_axis is not None:
            keep.remove(channel_axis)
        limits = stored[channel] if stored is not None else contrast_limits(
            _sample(ds, channel_axis, channel), ds.dtype)
        kwargs: dict[str, Any] = {
            "name": name if channel_axis is None else f"{name} [c={channel}]",
            "scale": [scale[a] for a in keep],
            "units": [units[a] for a in keep],
            "axis_labels": [labels[a] for a in keep],
            "contrast_limits": list(limits),
            "metadata": {"split_dataset": str(ds.root), "missing_blocks": ds.missing_blocks,
                         "attrs": dict(ds.meta.attrs), "prefix": ds.prefix, "complete": ds.complete,
                         "channel": None if channel_axis is None else [channel_axis, channel]},
        }
        if channel_axis is not None:
            maps = _CHANNEL_COLORMAPS.get(n_channels, _COLORMAPS)
            kwargs.update(colormap=maps[channel % len(maps)], blending="additive")
        if big:
            kwargs["multiscale"] = True
            out.append((pyramid(data), kwargs, "image"))
        else:
            out.append((data, kwargs, "image"))
    return out


def _channel(x: Any, channel_axis: int | None, channel: int) -> Any:
    """One channel of the dask array `x` (all of it without a channel axis)."""
    return x if channel_axis is None else x[(slice(None),) * channel_axis + (channel,)]


def refresh(layer: Any) -> bool:
    """Give an image layer opened by this reader the frames written since it was opened (or last
    refreshed): for a dataset still being written. Returns whether the layer's data changed.

    The dataset is reopened (its metadata, a folder listing, one block header) and the layer gets a
    new lazy array of the new shape, of the same channel, as a pyramid if it was one; its contrast
    limits stay. A layer whose ``metadata["complete"]`` is True is left alone (nothing more comes);
    any layer without ``metadata["split_dataset"]`` raises ``ValueError``.

    napari needs a timer to call it; with napari's Qt viewer:

    >>> from qtpy.QtCore import QTimer  # doctest: +SKIP
    >>> timer = QTimer()  # doctest: +SKIP
    >>> timer.timeout.connect(lambda: [refresh(layer) for layer in viewer.layers  # doctest: +SKIP
    ...                                if "split_dataset" in layer.metadata])
    >>> timer.start(1000)  # doctest: +SKIP

    or from a script, ``split_dataset.follow`` to wait for new frames and ``refresh`` to show them.
    """
    meta = layer.metadata
    path = meta.get("split_dataset") if hasattr(meta, "get") else None
    if path is None:
        raise ValueError(f"layer {getattr(layer, 'name', layer)!r} was not opened from a split dataset")
    if meta.get("complete") is True:
        return False
    ds = SplitDataset(path, meta.get("prefix") or None, fill_value=0)
    channel = meta.get("channel")
    multiscale = bool(getattr(layer, "multiscale", False))
    old = layer.data
    old_shape = tuple(old[0].shape if multiscale else old.shape)
    x = _channel(ds.to_dask(chunks=_plane_chunks(ds)), *(channel or (None, 0)))
    meta["complete"] = ds.complete
    meta["missing_blocks"] = ds.missing_blocks
    if tuple(x.shape) == old_shape:
        return False
    # as many levels as before: down to the size of the old coarsest level
    layer.data = pyramid(x, max(old[len(old) - 1].shape[-2:])) if multiscale else x
    return True
