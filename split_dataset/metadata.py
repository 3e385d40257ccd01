"""The ``stack_metadata.json`` schema: parsing, validation and legacy migration.

Pure functions on dicts; no file I/O. Every dialect found in the wild is turned into
one frozen :class:`Metadata`; :meth:`Metadata.to_dict` writes the classic keys that
split_dataset 0.4 readers need plus the keys this version adds.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import MetadataError

__all__ = ["Metadata", "FORMAT_VERSION", "default_axis_order", "migrate_legacy"]

FORMAT_VERSION = 1
MAX_NDIM = 32
#: More block files than this is taken to be corrupt metadata, not a real dataset.
MAX_BLOCKS = 2**22
#: Arrays larger than this many elements are refused (an int64 index must address them).
MAX_SIZE = 2**62

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
)


def default_axis_order(ndim: int) -> str:
    """Axis letters for an array of `ndim` dimensions: ``tzyx`` for 4-D, ``yx`` for 2-D.

    Examples
    --------
    >>> default_axis_order(4), default_axis_order(2)
    ('tzyx', 'yx')
    """
    known = {1: "x", 2: "yx", 3: "zyx", 4: "tzyx", 5: "tczyx"}
    return known.get(ndim) or "".join(chr(ord("a") + i) for i in range(ndim))


def _parse_int(value: Any, what: str, *, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise MetadataError(f"{what} must be an integer, got {value!r}")
    if isinstance(value, numbers.Integral):
        out = int(value)
    elif isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer():
        out = int(float(value))
    else:
        raise MetadataError(f"{what} must be an integer, got {value!r}")
    if out < minimum:
        raise MetadataError(f"{what} must be >= {minimum}, got {out}")
    return out


def _parse_shape(value: Any, what: str, *, minimum: int, ndim: int | None = None) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise MetadataError(f"{what} must be a list of integers, got {value!r}")
    if len(value) > MAX_NDIM:
        raise MetadataError(f"{what} has {len(value)} dimensions; at most {MAX_NDIM} are supported")
    if ndim is not None and len(value) != ndim:
        raise MetadataError(f"{what} must have {ndim} entries, got {len(value)}: {list(value)!r}")
    return tuple(_parse_int(v, f"{what}[{i}]", minimum=minimum) for i, v in enumerate(value))


def _parse_floats(value: Any, what: str) -> tuple[float, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise MetadataError(f"{what} must be a list of numbers, got {value!r}")
    out = []
    for i, v in enumerate(value):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
            raise MetadataError(f"{what}[{i}] must be a number, got {v!r}")
        out.append(float(v))
    return tuple(out)


def _parse_padding(value: Any, ndim: int) -> tuple[int, ...]:
    if value is None:
        return (0,) * ndim
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return (_parse_int(value, "padding", minimum=0),) * ndim
    return _parse_shape(value, "padding", minimum=0, ndim=ndim)


def _fit_resolution(values: tuple[float, ...], ndim: int) -> tuple[float, ...]:
    """Left-pad (or keep the last `ndim` of) per-axis sizes; old writers wrote 3 for any rank."""
    if len(values) >= ndim:
        return values[len(values) - ndim :]
    return (1.0,) * (ndim - len(values)) + values


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
        if "units" not in d and isinstance(d["voxel_size"], (list, tuple)) and "shape_full" in d:
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
    crop_start: tuple[int, ...] = ()
    crop_end: tuple[int, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ndim = len(self.shape)
        if ndim == 0:
            raise MetadataError("shape_full must have at least one dimension, got []")
        shape = _parse_shape(self.shape, "shape_full", minimum=0)
        block = _parse_shape(self.shape_block, "shape_block", minimum=1, ndim=ndim)
        set_ = object.__setattr__
        set_(self, "shape", shape)
        set_(self, "shape_block", block)
        set_(self, "padding", _parse_padding(self.padding if self.padding != () else None, ndim))
        if math.prod(shape) > MAX_SIZE:
            raise MetadataError(f"shape_full {list(shape)} is impossibly large")
        for i, (p, b) in enumerate(zip(self.padding, block)):
            if p and p >= b * 2**20:
                raise MetadataError(f"padding[{i}]={p} is impossible for blocks of {b}")
        from .grid import grid_shape  # geometry is validated by the grid itself

        n_blocks = math.prod(grid_shape(shape, block, self.padding))
        if n_blocks > MAX_BLOCKS:
            raise MetadataError(
                f"shape_full {list(shape)} in blocks of {list(block)} makes {n_blocks} block files; "
                f"more than {MAX_BLOCKS} is taken to be corrupt metadata"
            )
        if self.dtype is not None:
            try:
                dt = np.dtype(self.dtype)
            except TypeError as e:
                raise MetadataError(f"dtype {self.dtype!r} is not a numpy dtype") from e
            if dt.hasobject:
                raise MetadataError(f"dtype {dt} holds Python objects; refused")
            set_(self, "dtype", dt)
        res = _parse_floats(self.resolution, "resolution") if self.resolution != () else ()
        set_(self, "resolution", _fit_resolution(res, ndim) if res else (1.0,) * ndim)
        order = self.axis_order if isinstance(self.axis_order, str) else ""
        set_(self, "axis_order", order if len(order) == ndim else default_axis_order(ndim))
        for name in ("crop_start", "crop_end"):
            val = getattr(self, name)
            try:
                parsed = _parse_shape(val, name, minimum=0, ndim=ndim) if val != () else (0,) * ndim
            except MetadataError:
                parsed = (0,) * ndim  # informative only: the array is stored already cropped
            set_(self, name, parsed)
        units = self.units
        if isinstance(units, str) or not isinstance(units, (tuple, list)):
            raise MetadataError(f"units must be a list of strings (one per axis), got {units!r}")
        if units and (len(units) != ndim or not all(isinstance(u, str) for u in units)):
            raise MetadataError(f"units must have {ndim} strings (one per axis), got {list(units)!r}")
        set_(self, "units", tuple(units) if units else ("",) * ndim)
        if self.frame_interval is not None and not (
            isinstance(self.frame_interval, numbers.Real) and math.isfinite(self.frame_interval) and self.frame_interval > 0
        ):
            raise MetadataError(f"frame_interval must be a positive number of seconds, got {self.frame_interval!r}")
        if self.chunks is not None:
            set_(self, "chunks", _parse_shape(self.chunks, "chunks", minimum=1, ndim=ndim))
        if self.data_key is not None and not isinstance(self.data_key, str):
            raise MetadataError(f"data_key must be a string, got {self.data_key!r}")
        if not isinstance(self.attrs, Mapping):
            raise MetadataError(f"attrs must be a JSON object, got {self.attrs!r}")

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Metadata:
        """Parse any dialect of ``stack_metadata.json`` (see FORMAT.md).

        Examples
        --------
        >>> m = Metadata.from_dict({"shape_full": [13, 2, 16, 16], "shape_block": [5, 2, 16, 16],
        ...                         "crop": [0, 0, 16, 16], "voxel_size": [5.0, 0.6, 0.6]})
        >>> m.resolution
        (1.0, 5.0, 0.6, 0.6)
        """
        if not isinstance(raw, Mapping):
            raise MetadataError(f"metadata must be a JSON object, got {type(raw).__name__}")
        d = migrate_legacy(raw)
        for key in ("shape_full", "shape_block"):
            if key not in d:
                raise MetadataError(f"metadata has no {key!r}; keys found: {sorted(d)}")
        complete = d.get("complete")
        interval = d.get("frame_interval")
        return cls(
            shape=d["shape_full"],
            shape_block=d["shape_block"],
            padding=d.get("padding", ()) if d.get("padding") is not None else (),
            dtype=d.get("dtype"),
            resolution=d.get("resolution") or (),
            axis_order=d.get("axis_order") or "",
            data_key=d.get("data_key"),
            compression=d.get("compression"),
            chunks=d.get("chunks"),
            attrs=dict(d.get("attrs") or {}),
            complete=bool(complete) if complete is not None else None,
            units=tuple(d.get("units") or ()),
            frame_interval=float(interval) if isinstance(interval, numbers.Real) else None,
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
        from .grid import grid_shape

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
        d["attrs"] = dict(self.attrs)
        return d

    def with_shape(self, shape: tuple[int, ...]) -> Metadata:
        """A copy describing `shape` (how a growing or truncated dataset is described)."""
        return replace(self, shape=tuple(shape))

    def replace(self, **changes: Any) -> Metadata:
        """A copy with `changes` applied."""
        return replace(self, **changes)
