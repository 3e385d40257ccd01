"""The napari writer: an image layer saved as a split dataset, with its scale, units and axis letters."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ._reader import DISPLAY_RANGE_KEY

__all__ = ["write_image"]

_SECONDS = {"s": 1.0, "second": 1.0, "ms": 1e-3, "millisecond": 1e-3, "us": 1e-6, "microsecond": 1e-6,
            "min": 60.0, "minute": 60.0, "h": 3600.0, "hour": 3600.0}


def _unit(unit: Any) -> str:
    """A unit as this package stores it: pint's short form, ``"um"`` for µm, ``""`` for pixels."""
    if unit is None:
        return ""
    try:
        text = format(unit, "~")
    except (TypeError, ValueError):
        text = str(unit)
    text = text.replace("µ", "u").replace("μ", "u").strip()
    return "" if text in ("pixel", "px", "pix", "dimensionless", "") else text


def write_image(path: str, data: Any, attributes: Mapping[str, Any]) -> list[str]:
    """napari's single-layer writer hook: save `data` (the highest resolution of a multiscale
    layer) as a split dataset at `path` (a new folder), with ``resolution`` from the layer's
    scale, ``units``, ``axis_order`` from single-letter axis labels, ``frame_interval`` from a
    first axis labelled ``t`` in a time unit, and the contrast limits as ``attrs["display_range"]``.
    Returns ``[path]``.
    """
    import split_dataset

    if attributes.get("multiscale") or isinstance(data, list):
        data = data[0]
    ndim = len(data.shape)
    scale = [float(s) for s in attributes.get("scale") or [1.0] * ndim][-ndim:]
    units = [_unit(u) for u in attributes.get("units") or [None] * ndim][-ndim:]
    labels = [str(a) for a in attributes.get("axis_labels") or ()][-ndim:]
    axis_order = "".join(labels) if (len(labels) == ndim and all(len(a) == 1 and a.isalpha() for a in labels)
                                     and len(set(labels)) == ndim) else None
    frame_interval = None
    if axis_order is not None and axis_order.startswith("t") and units[0] in _SECONDS and ndim > 2:
        frame_interval = scale[0] * _SECONDS[units[0]]
    attrs: dict[str, Any] = {}
    limits = attributes.get("contrast_limits")
    if limits is not None and len(limits) == 2 and all(math.isfinite(float(v)) for v in limits):
        attrs[DISPLAY_RANGE_KEY] = [float(limits[0]), float(limits[1])]
    split_dataset.save(data, path, resolution=scale, units=units, axis_order=axis_order,
                       frame_interval=frame_interval, attrs=attrs)
    return [str(path)]
