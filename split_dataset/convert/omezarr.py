"""OME-Zarr (OME-NGFF 0.4 and 0.5) out and in: a multiscale pyramid with physical axes.

Writing (:func:`write_ome_zarr`, reached through :func:`split_dataset.convert`):

- Axes in NGFF order (time, channel, then space ``z y x``), each with its ``type`` and a
  UDUNITS ``unit`` where the source's unit is known; the arrays carry ``dimension_names``
  (0.5) and the chunk key separator ``/`` (0.4).
- Levels: 2x in y and x by windowed mean (and in z where z is isotropic with y and x and
  its unit is known), each level from the one before, until the planes are 512 pixels
  or less on their longer side. Level sizes follow the floor rule (``n // 2``); integer
  dtypes keep their dtype (the mean rounded half to even). Each level's
  ``coordinateTransformations`` hold its ``scale`` and, for the downsampled levels, the
  ``translation`` of its voxel centres: ``(2**k - 1) / 2`` level-0 voxels.
- One streaming pass: the source is read a slab at a time along the first output axis
  (a source block's extent, at most :data:`SLAB_BYTES`), every level of that slab is
  computed and written, and the display range is sampled from it. Memory is bounded by
  a slab and its levels, whatever the size of the array.
- Chunks are planes (sides over 2048 pixels are split into 1024-pixel tiles); on 0.5
  shards hold one slab, so each slab becomes one file per level. Compression is blosc
  with its own byte shuffle (``blosc-zstd`` level 5 unless told otherwise).
- Metadata: ``multiscales`` (``type: "mean"``), ``omero`` channels with a display window
  (0.5 and 99.5 percentiles of the sampled pixels), and a ``split_dataset`` attribute that
  keeps the source's physical metadata and ``attrs`` exactly, for the way back.
- ``bdv=True`` writes NGFF 0.4 as full 5-D (t, c, z, y, x), the only form BigDataViewer reads.

Reading (:func:`open_ome_zarr`): level 0 of the first multiscale image, with its physical
metadata; the axes a ``bdv`` export added are left out again.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import SourceError
from ..storage import Codec
from ..write.display import RangeSampler
from .attributes import RESERVED
from .spec import Progress, Spec
from .staging import staged

if TYPE_CHECKING:
    from .sources import Source

__all__ = ["NGFF_VERSIONS", "OmeLayout", "SLAB_BYTES", "TARGET_PLANE", "mean2x", "open_ome_zarr", "plan_layout",
           "udunits", "write_ome_zarr"]

#: NGFF versions written: 0.5 (zarr v3, the default) and 0.4 (zarr v2).
NGFF_VERSIONS = ("0.5", "0.4")
#: Levels are added until the planes' longer side is at most this many pixels.
TARGET_PLANE = 512
#: Most bytes of level 0 read and written at a time (one slab of the streaming pass).
SLAB_BYTES = 256 << 20
#: Plane sides up to this are one chunk; longer sides are split into tiles of :data:`_TILE`.
_WHOLE_SIDE = 2048
_TILE = 1024
#: The codec written unless told otherwise (what ome-zarr-py writes: zstd, level 5, byte shuffle).
DEFAULT_OME_COMPRESSION = "blosc-zstd"
#: The key of the group attribute that keeps the source's own metadata.
OWN_KEY = "split_dataset"

_AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
_NGFF_ORDER = "tczyx"
#: Units as this package's users write them → UDUNITS-2 names (the ones NGFF lists).
_UDUNITS = {
    "um": "micrometer", "µm": "micrometer", "μm": "micrometer", "micron": "micrometer", "microns": "micrometer",
    "micrometer": "micrometer", "micrometre": "micrometer", "nm": "nanometer", "nanometer": "nanometer",
    "mm": "millimeter", "millimeter": "millimeter", "cm": "centimeter", "m": "meter", "meter": "meter",
    "pm": "picometer", "a": "angstrom", "å": "angstrom", "angstrom": "angstrom",
    "s": "second", "sec": "second", "second": "second", "seconds": "second", "ms": "millisecond",
    "millisecond": "millisecond", "us": "microsecond", "µs": "microsecond", "μs": "microsecond",
    "microsecond": "microsecond", "ns": "nanosecond", "nanosecond": "nanosecond", "min": "minute",
    "minute": "minute", "h": "hour", "hour": "hour",
}
#: UDUNITS names → the short forms this package records.
_SHORT = {"micrometer": "um", "nanometer": "nm", "millimeter": "mm", "centimeter": "cm", "meter": "m",
          "picometer": "pm", "angstrom": "Å", "second": "s", "millisecond": "ms", "microsecond": "us",
          "nanosecond": "ns", "minute": "min", "hour": "h"}
_SECONDS = {"second": 1.0, "millisecond": 1e-3, "microsecond": 1e-6, "nanosecond": 1e-9, "minute": 60.0,
            "hour": 3600.0}


def udunits(unit: str | None) -> str | None:
    """The UDUNITS-2 name NGFF uses for a unit as written in a split dataset, or None if unknown.

    Examples
    --------
    >>> udunits("um"), udunits("s"), udunits("furlong")
    ('micrometer', 'second', None)
    """
    if not unit:
        return None
    return _UDUNITS.get(unit.strip().lower()) or _UDUNITS.get(unit.strip())


@dataclass(frozen=True)
class OmeLayout:
    """How a source is laid out as OME-Zarr: axis order, levels and their chunking.

    Attributes
    ----------
    letters
        Output axis names in NGFF order, e.g. ``"tzyx"``.
    perm
        Source axis of each output axis (None: an axis of length 1 added for ``bdv``).
    shapes
        Shape of each level.
    factors
        Downsampling factor of each level along each output axis (powers of 2).
    scale
        Level-0 scale per output axis.
    slab
        Level-0 extent along output axis 0 read at a time (a multiple of the deepest
        level's factor along that axis, unless it is the whole axis).
    chunks, shards
        Per level; ``shards`` is None for NGFF 0.4.
    halved
        Output axes halved from one level to the next (y and x, and z where isotropic).
    """

    letters: str
    perm: tuple[int | None, ...]
    shapes: tuple[tuple[int, ...], ...]
    factors: tuple[tuple[int, ...], ...]
    scale: tuple[float, ...]
    slab: int
    chunks: tuple[tuple[int, ...], ...]
    shards: tuple[tuple[int, ...], ...] | None
    halved: tuple[int, ...] = ()

    @property
    def levels(self) -> int:
        """Number of levels, level 0 included."""
        return len(self.shapes)

    def translation(self, level: int) -> list[float]:
        """Where the level's first voxel centre lies, in level-0 units (0 for level 0)."""
        return [round(s * (f - 1) / 2, 12) for s, f in zip(self.scale, self.factors[level])]


def _axes_of(source: Source, bdv: bool) -> tuple[str, tuple[int | None, ...]]:
    """(output letters in NGFF order, source axis of each output axis)."""
    order = source.axis_order or _default_order(source.ndim, source.frame_interval is not None)
    where = f"{str(source.spec)!r} has axis_order {order!r}"
    unknown = [a for a in order if a not in _AXIS_TYPES]
    if unknown or len(set(order)) != len(order):
        raise ValueError(
            f"{where}: OME-Zarr axes are time (t), channel (c) and space (z, y, x), each at most once; "
            f"found {', '.join(sorted(set(unknown))) or 'a repeated letter'}. Record the axis order with "
            "the letters t, c, z, y, x (axis_order=...) to export it"
        )
    if "y" not in order or "x" not in order:
        raise ValueError(f"{where}: OME-Zarr images need y and x axes (2 or 3 space axes)")
    letters = "".join(a for a in _NGFF_ORDER if a in order or bdv)
    perm = tuple(order.index(a) if a in order else None for a in letters)
    return letters, perm


def _default_order(ndim: int, timed: bool) -> str:
    from ..metadata import default_axis_order

    return default_axis_order(ndim, time=timed)


def _scale(source: Source, letters: str, perm: Sequence[int | None]) -> tuple[list[float], list[str | None]]:
    """Level-0 scale and UDUNITS unit per output axis."""
    res = list(source.resolution) if source.resolution else [1.0] * source.ndim
    units = list(source.units) if source.units else [""] * source.ndim
    scale: list[float] = []
    names: list[str | None] = []
    for letter, axis in zip(letters, perm):
        if axis is None:
            scale.append(1.0)
            names.append(None)
            continue
        step = float(res[axis]) if axis < len(res) and math.isfinite(float(res[axis])) and res[axis] > 0 else 1.0
        unit = udunits(units[axis] if axis < len(units) else "")
        if letter == "t" and axis == 0 and source.frame_interval:
            step, unit = float(source.frame_interval), "second"
        if letter == "c":
            step, unit = 1.0, None
        scale.append(step)
        names.append(unit)
    return scale, names


def _downsampled_axes(letters: str, scale: Sequence[float], units: Sequence[str | None]) -> tuple[int, ...]:
    """Axes halved at each level: y and x, and z where it is isotropic with them (units known)."""
    axes = [letters.index("y"), letters.index("x")]
    if "z" in letters:
        z, y, x = (letters.index(a) for a in "zyx")
        known = units[z] is not None and units[z] == units[y] == units[x]
        if known and math.isclose(scale[z], scale[y], rel_tol=0.01) and math.isclose(scale[y], scale[x], rel_tol=0.01):
            axes.insert(0, z)
    return tuple(sorted(axes))


def _plane_chunks(shape: Sequence[int], letters: str) -> tuple[int, ...]:
    """One chunk per image plane (1 along every other axis); long sides split into tiles."""
    y, x = letters.index("y"), letters.index("x")
    out = [1] * len(shape)
    for axis in (y, x):
        n = max(1, shape[axis])
        out[axis] = n if n <= _WHOLE_SIDE else _TILE
    return tuple(out)


def plan_layout(source: Source, *, ngff: str = "0.5", bdv: bool = False) -> OmeLayout:
    """Plan the OME-Zarr export of `source`: axes, levels, slab, chunks and shards.

    Examples
    --------
    >>> import numpy as np
    >>> from split_dataset.convert import Source, parse_spec
    >>> src = Source(np.zeros((4, 3, 1500, 1100), "uint16"), parse_spec("x.npy", writing=True))
    >>> lay = plan_layout(src)
    >>> lay.letters, lay.shapes
    ('tzyx', ((4, 3, 1500, 1100), (4, 3, 750, 550), (4, 3, 375, 275)))
    >>> lay.chunks[0], lay.shards[0]
    ((1, 1, 1500, 1100), (4, 3, 1500, 1100))
    """
    letters, perm = _axes_of(source, bdv)
    shape0 = tuple(source.shape[a] if a is not None else 1 for a in perm)
    scale, units = _scale(source, letters, perm)
    halved = _downsampled_axes(letters, scale, units)
    y, x = letters.index("y"), letters.index("x")
    shapes = [shape0]
    factors = [(1,) * len(shape0)]
    while max(shapes[-1][y], shapes[-1][x]) > TARGET_PLANE and min(shapes[-1][a] for a in halved) >= 2:
        shapes.append(tuple(n // 2 if a in halved else n for a, n in enumerate(shapes[-1])))
        factors.append(tuple(f * 2 if a in halved else f for a, f in enumerate(factors[-1])))
    # the slab: along output axis 0, a source block's extent, at most SLAB_BYTES of level 0
    n0 = shape0[0]
    per_step = math.prod(shape0[1:]) * source.dtype.itemsize
    block = n0
    if source.chunks and perm[0] is not None and perm[0] < len(source.chunks):
        block = max(1, int(source.chunks[perm[0]]))
    slab = max(1, min(n0, block, SLAB_BYTES // max(1, per_step)))
    step = factors[-1][0]
    if step > 1:  # axis 0 is halved: a slab holds whole windows of the deepest level
        slab = max(step, slab // step * step)
    if letters[0] in "yx":  # a single plane (2-D image): read it whole
        slab = n0
    slab = min(slab, max(1, n0))
    chunks = tuple(_plane_chunks(s, letters) for s in shapes)
    shards: tuple[tuple[int, ...], ...] | None = None
    if ngff == "0.5" and not bdv:
        shard_list = []
        for s, f, c in zip(shapes, factors, chunks):
            lead = max(1, min(s[0], slab // f[0])) if len(s) > 0 else 1
            shard = [lead, *s[1:]]
            shard = [max(1, -(-n // ch) * ch) if a > 0 else n for a, (n, ch) in enumerate(zip(shard, c))]
            shard_list.append(tuple(shard))
        shards = tuple(shard_list)
    return OmeLayout(letters, perm, tuple(shapes), tuple(factors), tuple(scale), slab, chunks, shards, halved)


def mean2x(block: np.ndarray, axes: Sequence[int]) -> np.ndarray:
    """Mean of 2-wide windows along `axes` (floor rule: a trailing odd row is dropped).

    Integer dtypes keep their dtype, the mean rounded half to even; floats keep theirs.

    Examples
    --------
    >>> mean2x(np.array([[1, 2, 9], [3, 5, 9]], "uint16"), axes=(0, 1)).tolist()
    [[3]]
    >>> mean2x(np.arange(6.0).reshape(1, 6), axes=(1,)).tolist()
    [[0.5, 2.5, 4.5]]
    """
    arr = np.asarray(block)
    halved = sorted(set(axes))
    if arr.dtype.kind in "iub" and arr.dtype.itemsize <= 2:
        acc: Any = np.int32 if arr.dtype.kind == "i" else np.uint32  # sums of up to 8 values fit
    elif arr.dtype.kind == "f" and arr.dtype.itemsize >= 4:
        acc = arr.dtype.type
    else:
        acc = np.float64
    total: Any = arr
    for a in halved:  # pairwise sums along each halved axis (strided views: no reshape, no reduction)
        n = total.shape[a] // 2 * 2
        even = [slice(None)] * total.ndim
        odd = [slice(None)] * total.ndim
        even[a], odd[a] = slice(0, n, 2), slice(1, n, 2)
        total = np.add(total[tuple(even)], total[tuple(odd)], dtype=acc)
    count = 1 << len(halved)
    if arr.dtype.kind == "f":
        out = total / np.asarray(count, acc)
    elif np.issubdtype(np.dtype(acc), np.integer):  # exact: round half to even in integers
        q, r = np.divmod(total, count)
        half = count // 2
        out = q + (r > half) + ((r == half) & (q & 1).astype(bool))
    else:
        out = np.rint(total / count)
        if arr.dtype.kind in "iu":
            info = np.iinfo(arr.dtype)
            np.clip(out, info.min, info.max, out=out)
    result: np.ndarray = np.asarray(out).astype(arr.dtype, copy=False)
    return result


def _compressors(zarr: Any, codec: Codec, ngff: str, itemsize: int) -> Any:
    if codec.name == "none":
        return None
    if ngff == "0.4":
        import numcodecs

        if codec.name == "gzip":
            return numcodecs.GZip(level=int(codec.clevel))
        return numcodecs.Blosc(cname=codec.cname, clevel=int(codec.clevel),
                               shuffle={"none": 0, "byte": 1, "bit": 2}[codec.shuffle])
    if codec.name == "gzip":
        return [zarr.codecs.GzipCodec(level=int(codec.clevel))]
    shuffle = {"none": "noshuffle", "byte": "shuffle", "bit": "bitshuffle"}[codec.shuffle]
    return [zarr.codecs.BloscCodec(cname=codec.cname, clevel=int(codec.clevel), shuffle=shuffle, typesize=itemsize)]


def _axes_json(letters: str, units: Sequence[str | None]) -> list[dict[str, str]]:
    out = []
    for letter, unit in zip(letters, units):
        axis = {"name": letter, "type": _AXIS_TYPES[letter]}
        if unit is not None and _AXIS_TYPES[letter] != "channel":
            axis["unit"] = unit
        out.append(axis)
    return out


def _window(sampler: RangeSampler, dtype: np.dtype) -> dict[str, float]:
    lo, hi = sampler.range() or (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1.0
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        vmin, vmax = float(info.min), float(info.max)
    else:
        vmin, vmax = min(lo, 0.0), hi
    return {"min": vmin, "max": vmax, "start": float(lo), "end": float(hi)}


def _own_metadata(source: Source) -> dict[str, Any]:
    """The source's metadata as this package records it (for an exact way back)."""
    order = source.axis_order or _default_order(source.ndim, source.frame_interval is not None)
    own: dict[str, Any] = {"axis_order": order, "shape": list(source.shape)}
    for name in RESERVED[:2]:
        value = getattr(source, name)
        if value is not None:
            own[name] = list(value)
    if source.frame_interval is not None:
        own["frame_interval"] = source.frame_interval
    if source.attrs:
        own["attrs"] = dict(source.attrs)
    return own


def write_ome_zarr(source: Source, dst: Spec, compression: Any, overwrite: bool, progress: Progress | None, *,
                   ngff: str = "0.5", bdv: bool = False) -> OmeLayout:
    """Write `source` as an OME-Zarr multiscale image at ``dst.path`` (see the module docstring).

    Parameters
    ----------
    source
        The array and its metadata.
    dst
        The destination (kind ``"omezarr"`` or ``"zarr"``; no inner path).
    compression
        A codec name (:class:`~split_dataset.Codec`); None: ``blosc-zstd``.
    overwrite
        Replace an existing destination once the new one is complete.
    progress
        Called as ``progress(done, total)`` with the number of slabs written.
    ngff
        ``"0.5"`` (zarr v3, sharded) or ``"0.4"`` (zarr v2).
    bdv
        Write NGFF 0.4 as 5-D (t, c, z, y, x) for BigDataViewer.

    Returns
    -------
    OmeLayout
        The layout written.

    Examples
    --------
    >>> import numpy as np, tempfile, os, zarr
    >>> from split_dataset.convert import Source, parse_spec
    >>> src = Source(np.arange(2 * 600 * 600, dtype="uint16").reshape(2, 600, 600),
    ...              parse_spec("x.npy", writing=True), axis_order="tyx")
    >>> out = os.path.join(tempfile.mkdtemp(), "x.ome.zarr")
    >>> lay = write_ome_zarr(src, parse_spec(out, writing=True), None, False, None)
    >>> g = zarr.open_group(out, mode="r")
    >>> [a["name"] for a in g.attrs["ome"]["multiscales"][0]["axes"]], g["1"].shape
    (['t', 'y', 'x'], (2, 300, 300))
    """
    from .sources import import_zarr

    zarr = import_zarr()
    if bdv:
        ngff = "0.4"
    if ngff not in NGFF_VERSIONS:
        raise ValueError(f"NGFF version {ngff!r} is not written; choose one of {', '.join(NGFF_VERSIONS)}")
    if dst.inner:
        raise ValueError(f"an OME-Zarr image is written at the root of its store; got the inner path {dst.inner!r}")
    if source.ndim < 2 or 0 in source.shape:
        raise ValueError(f"{str(source.spec)!r} has shape {source.shape}; an OME-Zarr image needs y and x axes "
                         "with at least one pixel")
    codec = Codec.parse(DEFAULT_OME_COMPRESSION if compression is None else compression)
    lay = plan_layout(source, ngff=ngff, bdv=bdv)
    _, units = _scale(source, lay.letters, lay.perm)
    halved = lay.halved
    channel = lay.letters.index("c") if "c" in lay.letters else None
    n_channels = lay.shapes[0][channel] if channel is not None else 1
    samplers = [RangeSampler() for _ in range(n_channels)]
    fmt = 3 if ngff == "0.5" else 2
    name = Path(os.fspath(source.spec.path)).name or "image"
    with staged(dst.path, overwrite) as tmp:
        root = zarr.open_group(str(tmp), mode="w-", zarr_format=fmt)
        arrays = []
        for k, shape in enumerate(lay.shapes):
            kwargs: dict[str, Any] = dict(name=str(k), shape=shape, dtype=source.dtype, chunks=lay.chunks[k],
                                          compressors=_compressors(zarr, codec, ngff, source.dtype.itemsize),
                                          fill_value=0, zarr_format=fmt)
            if fmt == 3:
                kwargs.update(shards=lay.shards[k] if lay.shards else None, dimension_names=list(lay.letters))
            else:
                kwargs.update(chunk_key_encoding={"name": "v2", "separator": "/"})
            arrays.append(zarr.create_array(store=root.store, **kwargs))
        n0 = lay.shapes[0][0]
        total = -(-n0 // lay.slab)
        if progress is not None:
            progress(0, total)
        for i, start in enumerate(range(0, n0, lay.slab)):
            stop = min(n0, start + lay.slab)
            level = _read_slab(source, lay, start, stop)
            for c in range(n_channels):
                samplers[c].add(level if channel is None else np.take(level, c, axis=channel))
            for k in range(lay.levels):
                if k:
                    level = mean2x(level, halved)
                f0 = lay.factors[k][0]
                lo = start // f0
                hi = lo + level.shape[0]
                if level.shape[0]:
                    arrays[k][lo:hi] = level
            if progress is not None:
                progress(i + 1, total)
        multiscale: dict[str, Any] = {
            "name": name,
            "axes": _axes_json(lay.letters, units),
            "datasets": [],
            "type": "mean",
            "metadata": {"description": "2x windowed mean in " + " and ".join(lay.letters[a] for a in halved)
                         + ", each level from the one before; integers rounded half to even",
                         "method": "split_dataset.convert.omezarr.mean2x"},
        }
        for k in range(lay.levels):
            transforms: list[dict[str, Any]] = [
                {"type": "scale", "scale": [round(s * f, 12) for s, f in zip(lay.scale, lay.factors[k])]}]
            if k:
                transforms.append({"type": "translation", "translation": lay.translation(k)})
            multiscale["datasets"].append({"path": str(k), "coordinateTransformations": transforms})
        labels = [f"channel {c}" for c in range(n_channels)] if channel is not None else [name]
        omero = {"name": name, "rdefs": {"model": "greyscale"},
                 "channels": [{"label": labels[c], "color": "FFFFFF", "active": True, "coefficient": 1.0,
                               "family": "linear", "inverted": False,
                               "window": _window(samplers[c], source.dtype)} for c in range(n_channels)]}
        own = _own_metadata(source)
        if ngff == "0.5":
            root.attrs.update({"ome": {"version": "0.5", "multiscales": [multiscale], "omero": omero}, OWN_KEY: own})
        else:
            multiscale = {"version": "0.4", **multiscale}
            root.attrs.update({"multiscales": [multiscale], "omero": omero, OWN_KEY: own})
    return lay


def _read_slab(source: Source, lay: OmeLayout, start: int, stop: int) -> np.ndarray:
    """Level 0 of output rows [start, stop) along output axis 0, in output axis order."""
    index: list[Any] = [slice(None)] * source.ndim
    if lay.perm[0] is not None:
        index[lay.perm[0]] = slice(start, stop)
    data = np.asarray(source[tuple(index)])
    present = [a for a in lay.perm if a is not None]
    data = np.transpose(data, present) if present != sorted(present) else data
    for out_axis, axis in enumerate(lay.perm):
        if axis is None:
            data = np.expand_dims(data, out_axis)
    if lay.perm[0] is None:  # a bdv axis of length 1 leads
        data = data[start:stop]
    return np.ascontiguousarray(data)


def is_ome_group(attrs: Any) -> bool:
    """Whether zarr group attributes describe an OME-Zarr multiscale image (0.4 or 0.5)."""
    ome = attrs.get("ome") if hasattr(attrs, "get") else None
    if isinstance(ome, dict) and isinstance(ome.get("multiscales"), list):
        return True
    return hasattr(attrs, "get") and isinstance(attrs.get("multiscales"), list)


def open_ome_zarr(path: Path, group: Any) -> Source:
    """Level 0 of the first multiscale image in an OME-Zarr `group`, with its physical metadata.

    Examples
    --------
    >>> import numpy as np, tempfile, os, zarr
    >>> from split_dataset.convert import Source, parse_spec, open_source
    >>> src = Source(np.ones((3, 40, 50), "uint16"), parse_spec("x.npy", writing=True), axis_order="zyx",
    ...              resolution=(2.0, 0.5, 0.5), units=("um", "um", "um"))
    >>> out = os.path.join(tempfile.mkdtemp(), "x.ome.zarr")
    >>> _ = write_ome_zarr(src, parse_spec(out, writing=True), None, False, None)
    >>> with open_source(out) as back:
    ...     back.shape, back.axis_order, back.resolution, back.units
    ((3, 40, 50), 'zyx', (2.0, 0.5, 0.5), ('um', 'um', 'um'))
    """
    from .sources import Source

    attrs = dict(group.attrs)
    ome: dict[str, Any] = attrs["ome"] if isinstance(attrs.get("ome"), dict) else attrs
    try:
        ms = ome["multiscales"][0]
        level0 = ms["datasets"][0]
        level_path = str(level0["path"])
        axes = ms.get("axes") or []
        names = [a["name"] if isinstance(a, dict) else str(a) for a in axes]
    except (KeyError, IndexError, TypeError) as e:
        raise SourceError(f"{str(path)!r}: malformed OME-Zarr multiscales metadata ({type(e).__name__}: {e})") from e
    parts = level_path.split("/")
    if not level_path or any(p in ("", ".", "..") for p in parts) or "\\" in level_path:
        raise SourceError(f"{str(path)!r}: level 0's path {level_path!r} in the multiscales metadata is not a "
                          "path inside the image group")
    try:
        array = group[level_path]
    except Exception:  # absent, or damaged metadata (zarr lets TypeError and others out)
        array = None
    if array is None or not hasattr(array, "ndim"):
        raise SourceError(f"{str(path)!r}: the multiscales metadata names level 0 {level_path!r}, "
                          "which is missing or damaged in the store")
    if names and len(names) != array.ndim:
        raise SourceError(f"{str(path)!r}: {len(names)} axes in the metadata but level 0 has {array.ndim} dimensions")
    scale = _level_scale(ms, level0, array.ndim)
    own = attrs.get(OWN_KEY) if isinstance(attrs.get(OWN_KEY), dict) else None
    inner = "/" + level_path.strip("/")
    if own is not None:
        return _with_own(path, array, inner, own, names)
    units_u = [a.get("unit") if isinstance(a, dict) else None for a in axes] or [None] * array.ndim
    letters = "".join(n for n in names) if names and all(len(n) == 1 for n in names) else None
    resolution = [float(s) for s in scale]
    units = [_SHORT.get(u or "", u or "") for u in units_u]
    frame_interval = None
    if letters and letters[0] == "t" and units_u[0] in _SECONDS:
        frame_interval = resolution[0] * _SECONDS[units_u[0] or "second"]
        resolution[0], units[0] = frame_interval, "s"
    return Source(array, Spec("zarr", path, inner), resolution=tuple(resolution),
                  units=tuple(units) if any(units) else None, axis_order=letters, frame_interval=frame_interval,
                  chunks=tuple(int(c) for c in array.chunks))


def _level_scale(ms: dict[str, Any], level: dict[str, Any], ndim: int) -> list[float]:
    """The product of the multiscale's and level 0's ``scale`` transforms (1 where none is valid)."""
    scale = [1.0] * ndim
    for transforms in (ms.get("coordinateTransformations"), level.get("coordinateTransformations")):
        for t in transforms if isinstance(transforms, list) else []:
            values = t.get("scale") if isinstance(t, dict) and t.get("type") == "scale" else None
            if not isinstance(values, list) or len(values) != ndim:
                continue
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
                   for v in values):
                scale = [a * float(b) for a, b in zip(scale, values)]
    return scale


def _with_own(path: Path, array: Any, inner: str, own: dict[str, Any], names: Sequence[str]) -> Source:
    """A source restored from the ``split_dataset`` attribute this package writes."""
    from .sources import Source

    order = own.get("axis_order") if isinstance(own.get("axis_order"), str) else None
    shape = own.get("shape")
    data: Any = array
    if order and names and sorted(set(order)) == sorted(order) and all(n in names for n in order) and (
            len(order) < array.ndim or list(order) != [n for n in names if n in order]):
        # the export added length-1 axes (bdv) or moved axes into NGFF order: the source's axes again
        data = _LevelView(array, [names.index(a) for a in order])
    if isinstance(shape, list) and tuple(shape) != tuple(data.shape):
        raise SourceError(f"{str(path)!r}: level 0 has shape {tuple(data.shape)} but the recorded source shape "
                          f"is {tuple(shape)}")

    def floats(key: str) -> tuple[Any, ...] | None:
        v = own.get(key)
        return tuple(v) if isinstance(v, list) and len(v) == data.ndim else None

    interval = own.get("frame_interval")
    return Source(data, Spec("zarr", path, inner), resolution=floats("resolution"), units=floats("units"),
                  axis_order=order if order and len(order) == data.ndim else None,
                  frame_interval=float(interval) if isinstance(interval, (int, float)) else None,
                  attrs=dict(own["attrs"]) if isinstance(own.get("attrs"), dict) else {},
                  chunks=tuple(int(c) for c in data.chunks))


class _LevelView:
    """Level 0 of an export read back in the source's own axes: output axis i is the stored axis
    ``axes[i]`` (the export may have moved axes into NGFF order); stored axes not in `axes` are
    the length-1 axes a ``bdv`` export added, read at index 0."""

    def __init__(self, array: Any, axes: Sequence[int]) -> None:
        self._array = array
        self._axes = list(axes)
        stored = sorted(self._axes)
        self._perm = [stored.index(a) for a in self._axes]  # result axes (stored order) -> output order
        self.shape = tuple(int(array.shape[a]) for a in self._axes)
        self.dtype = array.dtype
        self.chunks = tuple(int(array.chunks[a]) for a in self._axes)
        self.ndim = len(self.shape)

    def __getitem__(self, selection: Any) -> np.ndarray:
        sel = _full_selection(selection, self.ndim)
        full: list[Any] = [0] * self._array.ndim
        if self._perm == sorted(self._perm):  # same order: any selection the array takes
            for a, s in zip(self._axes, sel):
                full[a] = s
            return np.asarray(self._array[tuple(full)])
        if not all(isinstance(s, (slice, int, np.integer)) for s in sel):
            raise TypeError("slices and integers select from a reordered OME-Zarr level")
        for a, s in zip(self._axes, sel):
            full[a] = s if isinstance(s, slice) else slice(int(s), int(s) + 1 if int(s) != -1 else None)
        data = np.transpose(np.asarray(self._array[tuple(full)]), self._perm)
        return data[tuple(0 if not isinstance(s, slice) else slice(None) for s in sel)]


def _full_selection(selection: Any, ndim: int) -> tuple[Any, ...]:
    """`selection` as one entry per axis (``...`` expanded, missing trailing axes whole)."""
    sel = selection if isinstance(selection, tuple) else (selection,)
    if any(s is Ellipsis for s in sel):
        i = next(j for j, s in enumerate(sel) if s is Ellipsis)
        sel = sel[:i] + (slice(None),) * (ndim - len(sel) + 1) + sel[i + 1:]
    return sel + (slice(None),) * (ndim - len(sel))
