"""Translating metadata between split datasets, HDF5 attributes and zarr attributes.

Physical metadata (``resolution``, ``units``, ``axis_order``, ``frame_interval``) is
recognised where it is valid, also in other tools' conventions (Fiji's
``element_size_um``, ilastik's ``axistags``); other attributes become JSON values, those
without a JSON form (object references, binary data, NaN) are skipped and named.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .sources import Source

__all__ = ["RESERVED", "attrs_from", "h5_attrs", "reserved_attrs"]

#: HDF5 attributes that belong to the file format (PyTables, netCDF, dimension scales), not to the user.
_H5_INTERNAL_ATTRS = frozenset(
    {"CLASS", "TITLE", "VERSION", "DIMENSION_LIST", "REFERENCE_LIST", "NAME", "_Netcdf4Dimid",
     "_Netcdf4Coordinates", "_nc3_strict", "_FillValue"}
)
#: Attribute names that hold the physical metadata on the HDF5 and zarr side.
RESERVED = ("resolution", "units", "axis_order", "frame_interval")
_SKIP = object()


def _jsonable(v: Any) -> Any:
    """An HDF5/zarr attribute value as JSON, or ``_SKIP`` (references, non-UTF-8 bytes, NaN...)."""
    if isinstance(v, bytes):
        try:
            return v.decode()
        except UnicodeDecodeError:
            return _SKIP
    if isinstance(v, str):
        return v
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else _SKIP
    if isinstance(v, np.ndarray):
        if v.dtype.kind in "biu":
            return v.tolist()
        if v.dtype.kind == "f":
            return v.tolist() if np.isfinite(v).all() else _SKIP
        if v.dtype.kind in "SUO":
            items = [_jsonable(x) for x in v.ravel()]
            if any(x is _SKIP for x in items):
                return _SKIP
            out = np.empty(len(items), dtype=object)
            out[:] = items
            return out.reshape(v.shape).tolist()
        return _SKIP
    if isinstance(v, (list, tuple)):
        items = [_jsonable(x) for x in v]
        return _SKIP if any(x is _SKIP for x in items) else items
    if isinstance(v, Mapping):
        out_d = {str(k): _jsonable(x) for k, x in v.items()}
        return _SKIP if any(x is _SKIP for x in out_d.values()) else out_d
    if v is None:
        return None
    return _SKIP


def _to_h5_attr(v: Any) -> Any:
    """A JSON value as an HDF5 attribute: scalars and flat lists natively, anything else as a JSON string."""
    if v is None:
        return _SKIP
    if isinstance(v, (str, bool, float)) or (isinstance(v, int) and -(2**63) <= v < 2**63):
        return v
    if isinstance(v, (list, tuple)) and v:
        if all(isinstance(x, str) for x in v):
            return list(v)
        if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            try:
                return np.asarray(v)
            except OverflowError:
                pass
    return json.dumps(v)  # read back as JSON (see _from_h5_string)


def _from_h5_string(v: Any) -> Any:
    """Strings holding a JSON object or array (how dicts and nested lists are stored) are parsed back."""
    if isinstance(v, str) and v[:1] in ("{", "["):
        try:
            parsed = json.loads(v)
        except ValueError:
            return v
        if isinstance(parsed, (dict, list)):
            return parsed
    return v


def _is_numbers(v: Any, n: int) -> bool:
    return (isinstance(v, list) and len(v) == n
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 for x in v))


def _physical(attrs: dict[str, Any], ndim: int) -> dict[str, Any]:
    """Take resolution/units/axis_order/frame_interval out of `attrs` (in place) where they are valid.

    Also understands two conventions of other tools, left in `attrs` as they are:
    ``element_size_um`` (Fiji, vigra: spatial sizes of the last axes in µm) and
    ilastik's ``axistags`` (a JSON document naming the axes).
    """
    out: dict[str, Any] = {}
    if _is_numbers(attrs.get("resolution"), ndim):
        out["resolution"] = tuple(float(x) for x in attrs.pop("resolution"))
    units = attrs.get("units")
    if isinstance(units, list) and len(units) == ndim and all(isinstance(u, str) for u in units):
        out["units"] = tuple(attrs.pop("units"))
    order = attrs.get("axis_order")
    if isinstance(order, str) and len(order) == ndim:
        out["axis_order"] = attrs.pop("axis_order")
    interval = attrs.get("frame_interval")
    if (isinstance(interval, (int, float)) and not isinstance(interval, bool) and math.isfinite(interval)
            and interval > 0):
        out["frame_interval"] = float(attrs.pop("frame_interval"))
    size_um = attrs.get("element_size_um")
    if "resolution" not in out and isinstance(size_um, list) and 0 < len(size_um) <= ndim and _is_numbers(
        size_um, len(size_um)
    ):
        k = len(size_um)
        out["resolution"] = (1.0,) * (ndim - k) + tuple(float(x) for x in size_um)
        out.setdefault("units", ("",) * (ndim - k) + ("um",) * k)
    tags = attrs.get("axistags")
    if isinstance(tags, str):
        tags = _from_h5_string(tags)
    if isinstance(tags, dict) and isinstance(tags.get("axes"), list) and len(tags["axes"]) == ndim:
        axes = tags["axes"]
        keys = [a.get("key") if isinstance(a, dict) else None for a in axes]
        if "axis_order" not in out and all(isinstance(k, str) and len(k) == 1 for k in keys):
            out["axis_order"] = "".join(keys)  # type: ignore[arg-type]
        res = [a.get("resolution") if isinstance(a, dict) else None for a in axes]
        if "resolution" not in out and all(isinstance(r, (int, float)) and r >= 0 for r in res) and any(res):
            out["resolution"] = tuple(float(r) if r else 1.0 for r in res)  # ilastik writes 0 for unknown
    return out


def attrs_from(raw: Mapping[str, Any], ndim: int, *, hdf5: bool) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """(physical metadata, user attrs, names of attributes skipped) from HDF5 or zarr attributes.

    Examples
    --------
    >>> physical, attrs, skipped = attrs_from(
    ...     {"element_size_um": [2.0, 0.5, 0.5], "CLASS": b"CARRAY", "nested": '{"a": 1}', "bad": float("nan")},
    ...     3, hdf5=True)
    >>> physical
    {'resolution': (2.0, 0.5, 0.5), 'units': ('um', 'um', 'um')}
    >>> attrs, skipped
    ({'element_size_um': [2.0, 0.5, 0.5], 'nested': {'a': 1}}, ['bad'])
    """
    attrs: dict[str, Any] = {}
    skipped: list[str] = []
    for k, v in raw.items():
        if hdf5 and k in _H5_INTERNAL_ATTRS:
            continue
        try:
            j = _jsonable(v)
        except Exception:
            j = _SKIP
        if j is _SKIP:
            skipped.append(str(k))
            continue
        attrs[str(k)] = _from_h5_string(j) if hdf5 else j
    return _physical(attrs, ndim), attrs, skipped



def h5_attrs(source: Source) -> dict[str, Any]:
    """The HDF5 dataset attributes holding `source`'s attrs and physical metadata (nested values as JSON).

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> src = SimpleNamespace(attrs={"fish": "F0", "nested": {"a": 1}}, resolution=(2, 1), units=None,
    ...                       axis_order="yx", frame_interval=None)
    >>> a = h5_attrs(src)
    >>> a["fish"], a["nested"], a["axis_order"], a["resolution"].tolist()
    ('F0', '{"a": 1}', 'yx', [2.0, 1.0])
    """
    out: dict[str, Any] = {}
    for k, v in source.attrs.items():
        if k in RESERVED:
            continue  # the physical metadata below takes these names
        conv = _to_h5_attr(v)
        if conv is not _SKIP:
            out[str(k)] = conv
    out.update(reserved_attrs(source))
    if "resolution" in out:
        out["resolution"] = np.asarray(out["resolution"], dtype=float)
    return out


def reserved_attrs(source: Source) -> dict[str, Any]:
    """`source`'s physical metadata as JSON-able attributes (what it does not record is left out).

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> reserved_attrs(SimpleNamespace(resolution=(2, 1), units=("", ""), axis_order="yx",
    ...                                frame_interval=0.5))
    {'resolution': [2.0, 1.0], 'axis_order': 'yx', 'frame_interval': 0.5}
    """
    out: dict[str, Any] = {}
    if source.resolution is not None:
        out["resolution"] = [float(r) for r in source.resolution]
    if source.units is not None and any(source.units):
        out["units"] = list(source.units)
    if source.axis_order:
        out["axis_order"] = source.axis_order
    if source.frame_interval is not None:
        out["frame_interval"] = float(source.frame_interval)
    return out

