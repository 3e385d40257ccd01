"""The ``stack_metadata.json`` schema: parsing, validation and legacy migration (``docs/format.md`` §5, §6).

Pure functions on dicts; no file I/O. Every dialect found in the wild is turned into
one frozen :class:`Metadata`; :meth:`Metadata.to_dict` writes the classic keys that
split_dataset 0.4 readers need plus the keys this version adds.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .errors import MetadataError
from .grid import grid_shape  # geometry is validated by the grid itself
from .metadata_values import (
    MAX_BLOCKS,
    MAX_SIZE,
    _fit_resolution,
    _given,
    _is_list,
    _parse_dtype,
    _parse_floats,
    _parse_interval,
    _parse_padding,
    _parse_shape,
    _show,
)

__all__ = ["Metadata", "FORMAT_VERSION", "default_axis_order", "migrate_legacy"]

FORMAT_VERSION = 1

_CLASSIC_KEYS = (
    "shape_full",
    "shape_block",
    "crop_start",
    "crop_end",
    "padding",
    "resolution",
    "axis_order",
)
_OWN_KEYS = (
    "format_version",
    "dtype",
    "data_key",
    "compression",
    "chunks",
    "attrs",
    "complete",
    "n_blocks",
    "units",
    "frame_interval",
    "display_range",
    "dropped_frames",
    "n_dropped_frames",
)


def _parse_range(value: Any) -> tuple[float, float] | None:
    """A display range ``[low, high]`` (finite, low <= high); anything else is ignored (None):
    it is a viewing hint, never a reason to refuse a dataset."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        return None
    if any(isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real) for v in value):
        return None
    try:
        lo, hi = float(value[0]), float(value[1])
    except (OverflowError, ValueError):
        return None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        return None
    return (lo, hi)


#: Most gap records kept in ``dropped_frames`` (a camera dropping every other frame for hours must
#: not make the metadata file huge; ``n_dropped_frames`` keeps the exact total).
MAX_GAPS = 10_000


def _parse_gaps(value: Any) -> tuple[tuple[int, int], ...]:
    """``dropped_frames``: ``[[first missing id, count], ...]``; anything malformed is ignored (empty)."""
    if not isinstance(value, (list, tuple)) or len(value) > MAX_GAPS:
        return ()
    out = []
    for item in value:
        if (not isinstance(item, (list, tuple)) or len(item) != 2
                or any(isinstance(v, bool) or not isinstance(v, int) for v in item) or item[1] < 1
                or abs(item[0]) >= 2**63 or item[1] >= 2**63):
            return ()
        out.append((int(item[0]), int(item[1])))
    return tuple(out)


def default_axis_order(ndim: int, time: bool = False) -> str:
    """Axis letters for an array of `ndim` dimensions: ``tzyx`` for 4-D, ``yx`` for 2-D.

    With ``time=True`` (axis 0 is time, as a ``frame_interval`` says) the letters start
    with ``t``: ``tyx`` for a stack of 2-D frames, ``tzyx`` for one of volumes.

    Examples
    --------
    >>> default_axis_order(4), default_axis_order(3), default_axis_order(2)
    ('tzyx', 'zyx', 'yx')
    >>> default_axis_order(3, time=True), default_axis_order(2, time=True)
    ('tyx', 'tx')
    """
    known = {1: "x", 2: "yx", 3: "zyx", 4: "tzyx", 5: "tczyx"}
    letters = known.get(ndim) or "".join(chr(ord("a") + i) for i in range(ndim))
    if not time or letters.startswith("t") or ndim < 1:
        return letters
    rest = known.get(ndim - 1) if ndim - 1 in known and ndim - 1 < 4 else None
    return "t" + (rest if rest is not None else "".join(chr(ord("a") + i) for i in range(ndim - 1)))


def migrate_legacy(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Map the old key sets onto the classic ones (pure; returns a new dict).

    - ``block_size``/``full_size`` (metadata stored inside the last block, split_dataset < 0.3)
      become ``shape_block``/``shape_full``.
    - The acquisition dialect's ``voxel_size`` (µm) becomes the spatial part of ``resolution``;
      its 4-number ``crop`` (a camera ROI, not an array crop) is kept as ``camera_roi``.

    Examples
    --------
    >>> migrate_legacy({"full_size": (8, 5), "block_size": (4, 5)})["shape_full"]
    (8, 5)
    """
    d = dict(raw)
    if "shape_full" not in d and "full_size" in d:
        d["shape_full"] = d.pop("full_size")
    if "shape_block" not in d and "block_size" in d:
        d["shape_block"] = d.pop("block_size")
    if "resolution" not in d and "voxel_size" in d:
        d["resolution"] = d["voxel_size"]
        if "units" not in d and _is_list(d["voxel_size"]) and _is_list(d.get("shape_full")):
            n, k = len(d["shape_full"]), len(d["voxel_size"])
            d["units"] = [""] * (n - k) + ["um"] * k if 0 < k <= n else []  # sashimi's voxel_size is in µm
    if "crop" in d and "crop_start" not in d:
        d.setdefault("camera_roi", d["crop"])
    return d


@dataclass(frozen=True)
class Metadata:
    """Everything ``stack_metadata.json`` says about a split dataset.

    Parameters
    ----------
    shape
        Shape of the whole array (``shape_full``).
    shape_block
        Shape of one block; blocks at the upper edge of an axis are shorter.
    padding
        Overlap between neighbouring blocks, per axis (almost always zeros).
    dtype
        Element type, or None when the metadata does not record it (old writers).
    resolution
        Physical size of one step along each axis (1.0 where unknown).
    units
        Unit of each axis' resolution (``"um"``, ``"s"``; ``""`` where unknown).
    frame_interval
        Seconds between frames along axis 0 (1 / frame rate), or None.
    display_range
        ``(low, high)`` for display (a viewer's contrast limits): the 0.5 and 99.5
        percentiles of frames sampled by the writer, or None. A malformed value is ignored.
    dropped_frames
        Gaps the acquisition writer saw in the camera's frame ids: ``((first missing id,
        count), ...)``, empty when none (or unknown); at most the first 10 000 gaps. A
        malformed value is ignored.
    n_dropped_frames
        All the frames those gaps miss, beyond the 10 000 recorded gaps too; None when unknown.
    axis_order
        One letter per axis, e.g. ``"tzyx"``.
    data_key
        Name of the array inside each block file, or None to look for ``stack*``.
    compression
        Codec description recorded by the writer (informative).
    chunks
        HDF5 chunk shape inside block files, as recorded by the writer.
    attrs
        User metadata (JSON values).
    complete
        False while an acquisition is still being written or after it stopped early;
        None when the writer did not say.
    extra
        Keys this version does not interpret, written back unchanged.

    Examples
    --------
    >>> m = Metadata.from_dict({"shape_full": [23, 3], "shape_block": [5, 3]})
    >>> m.shape, m.axis_order
    ((23, 3), 'yx')
    """

    shape: tuple[int, ...]
    shape_block: tuple[int, ...]
    padding: tuple[int, ...] = ()
    dtype: np.dtype | None = None
    resolution: tuple[float, ...] = ()
    axis_order: str = ""
    data_key: str | None = None
    compression: Any = None
    chunks: tuple[int, ...] | None = None
    attrs: Mapping[str, Any] = field(default_factory=dict)
    complete: bool | None = None
    units: tuple[str, ...] = ()
    frame_interval: float | None = None
    display_range: tuple[float, float] | None = None
    dropped_frames: tuple[tuple[int, int], ...] = ()
    n_dropped_frames: int | None = None
    crop_start: tuple[int, ...] = ()
    crop_end: tuple[int, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        shape = _parse_shape(self.shape, "shape_full", minimum=0)
        ndim = len(shape)
        if ndim == 0:
            raise MetadataError("shape_full must have at least one dimension, got []")
        block = _parse_shape(self.shape_block, "shape_block", minimum=1, ndim=ndim)
        set_ = object.__setattr__
        set_(self, "shape", shape)
        set_(self, "shape_block", block)
        set_(self, "padding", _parse_padding(self.padding if _given(self.padding) else None, ndim))
        if math.prod(shape) > MAX_SIZE:
            raise MetadataError(f"shape_full {_show(list(shape))} is impossibly large")
        for i, (p, b) in enumerate(zip(self.padding, block)):
            if p and p >= b * 2**20:
                raise MetadataError(f"padding[{i}]={p} is impossible for blocks of {b}")

        n_blocks = math.prod(grid_shape(shape, block, self.padding))
        if n_blocks > MAX_BLOCKS:
            raise MetadataError(
                f"shape_full {_show(list(shape))} in blocks of {_show(list(block))} makes {n_blocks} block "
                f"files; more than {MAX_BLOCKS} is taken to be corrupt metadata"
            )
        if self.dtype is not None:
            set_(self, "dtype", _parse_dtype(self.dtype, math.prod(shape)))
        res = _parse_floats(self.resolution, "resolution") if _given(self.resolution) else ()
        set_(self, "resolution", _fit_resolution(res, ndim) if res else (1.0,) * ndim)
        interval = self.frame_interval
        if interval is not None:
            set_(self, "frame_interval", _parse_interval(interval))
        set_(self, "display_range", _parse_range(self.display_range))
        set_(self, "dropped_frames", _parse_gaps(self.dropped_frames))
        total = self.n_dropped_frames
        if isinstance(total, bool) or not isinstance(total, int) or not 0 <= total < 2**63:
            total = None  # a hint, never a reason to refuse a dataset
        set_(self, "n_dropped_frames", total)
        order = self.axis_order
        if order is None:
            order = ""
        if not isinstance(order, str):
            raise MetadataError(f"axis_order must be a string of one letter per axis, got {_show(order)}")
        timed = self.frame_interval is not None
        if len(order) != ndim or (timed and order == default_axis_order(ndim) != default_axis_order(ndim, True)):
            # old writers wrote "zyx" for every rank but 4, and the first 1.x writers labelled
            # stacks of 2-D frames "zyx" even with a frame interval (which says axis 0 is time)
            order = default_axis_order(ndim, time=timed)
        set_(self, "axis_order", order)
        for name in ("crop_start", "crop_end"):
            val = getattr(self, name)
            try:
                parsed = _parse_shape(val, name, minimum=0, ndim=ndim) if _given(val) else (0,) * ndim
            except MetadataError:
                parsed = (0,) * ndim  # informative only: the array is stored already cropped
            set_(self, name, parsed)
        units = self.units if self.units is not None else ()
        if not _is_list(units):
            raise MetadataError(f"units must be a list of strings (one per axis), got {_show(units)}")
        if units and (len(units) != ndim or not all(isinstance(u, str) for u in units)):
            raise MetadataError(f"units must have {ndim} strings (one per axis), got {_show(list(units))}")
        set_(self, "units", tuple(units) if units else ("",) * ndim)
        if self.chunks is not None:
            set_(self, "chunks", _parse_shape(self.chunks, "chunks", minimum=1, ndim=ndim))
        if self.data_key is not None and not (isinstance(self.data_key, str) and self.data_key.strip("/")):
            raise MetadataError(f"data_key must be the name of a dataset, got {_show(self.data_key)}")
        if self.compression is not None and not isinstance(self.compression, (str, Mapping)):
            raise MetadataError(
                f"compression must be a JSON object describing the codec, got {_show(self.compression)}"
            )
        if not isinstance(self.attrs, Mapping):
            raise MetadataError(f"attrs must be a JSON object, got {_show(self.attrs)}")
        if self.complete is not None and not isinstance(self.complete, (bool, np.bool_)):
            raise MetadataError(f"complete must be true, false or null, got {_show(self.complete)}")
        if not isinstance(self.extra, Mapping):
            raise MetadataError(f"extra must be a mapping, got {_show(self.extra)}")

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Metadata:
        """Parse any dialect of ``stack_metadata.json`` (see ``docs/format.md`` §5, §6).

        A ``format_version`` newer than :data:`FORMAT_VERSION` is refused: such a dataset
        may store what this reader would misread.

        Examples
        --------
        >>> m = Metadata.from_dict({"shape_full": [13, 2, 16, 16], "shape_block": [5, 2, 16, 16],
        ...                         "crop": [0, 0, 16, 16], "voxel_size": [5.0, 0.6, 0.6]})
        >>> m.resolution
        (1.0, 5.0, 0.6, 0.6)
        """
        if not isinstance(raw, Mapping):
            raise MetadataError(f"metadata must be a JSON object, got {type(raw).__name__}")
        version = raw.get("format_version")
        if version is not None and not (type(version) is int and 0 <= version <= FORMAT_VERSION):
            raise MetadataError(
                f"format_version {_show(version)}: this split_dataset reads format versions up to "
                f"{FORMAT_VERSION} (written by a newer split_dataset? upgrade it)"
            )
        d = migrate_legacy(raw)
        for key in ("shape_full", "shape_block"):
            if key not in d:
                raise MetadataError(f"metadata has no {key!r}; keys found: {_show(sorted(map(str, d)))}")
        def get(key: str, absent: Any = None) -> Any:  # a JSON value, validated by __post_init__
            value = d.get(key)
            return absent if value is None else value

        complete = get("complete")
        if isinstance(complete, int) and not isinstance(complete, bool) and complete in (0, 1):
            complete = bool(complete)  # written by tools without a boolean type
        attrs, units = get("attrs", {}), get("units", ())
        return cls(
            shape=d["shape_full"],
            shape_block=d["shape_block"],
            padding=get("padding", ()),
            dtype=get("dtype"),
            resolution=get("resolution", ()),
            axis_order=get("axis_order", ""),
            data_key=get("data_key"),
            compression=get("compression"),
            chunks=get("chunks"),
            attrs=dict(attrs) if isinstance(attrs, Mapping) else attrs,
            complete=complete,
            units=tuple(units) if _is_list(units) else units,
            frame_interval=get("frame_interval"),
            display_range=get("display_range"),
            dropped_frames=get("dropped_frames", ()),
            n_dropped_frames=get("n_dropped_frames"),
            crop_start=d.get("crop_start") or (),
            crop_end=d.get("crop_end") or (),
            extra={k: v for k, v in raw.items() if k not in _CLASSIC_KEYS + _OWN_KEYS},
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON document: classic keys first (old readers need them), then ours.

        Examples
        --------
        >>> Metadata((4, 3), (2, 3), dtype=np.dtype("uint8")).to_dict()["shape_block"]
        [2, 3]
        """

        d: dict[str, Any] = dict(self.extra)
        d.update(
            shape_full=list(self.shape),
            shape_block=list(self.shape_block),
            crop_start=list(self.crop_start),
            crop_end=list(self.crop_end),
            padding=list(self.padding),
            resolution=[int(r) if float(r).is_integer() else r for r in self.resolution],
            axis_order=self.axis_order,
            format_version=FORMAT_VERSION,
            n_blocks=math.prod(grid_shape(self.shape, self.shape_block, self.padding)),
        )
        if self.dtype is not None:
            d["dtype"] = self.dtype.str
        if self.data_key is not None:
            d["data_key"] = self.data_key
        if self.compression is not None:
            d["compression"] = self.compression
        if self.chunks is not None:
            d["chunks"] = list(self.chunks)
        if self.complete is not None:
            d["complete"] = self.complete
        if any(self.units):
            d["units"] = list(self.units)
        if self.frame_interval is not None:
            d["frame_interval"] = self.frame_interval
        if self.display_range is not None:
            d["display_range"] = list(self.display_range)
        if self.dropped_frames:
            d["dropped_frames"] = [list(g) for g in self.dropped_frames]
        if self.n_dropped_frames:
            d["n_dropped_frames"] = self.n_dropped_frames
        d["attrs"] = dict(self.attrs)
        return d

    def with_shape(self, shape: tuple[int, ...]) -> Metadata:
        """A copy describing `shape` (how a growing or truncated dataset is described)."""
        return replace(self, shape=tuple(shape))

    def replace(self, **changes: Any) -> Metadata:
        """A copy with `changes` applied."""
        return replace(self, **changes)
