"""The metadata of split_dataset < 0.3: a flammkuchen group inside the last block file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import MetadataError
from .handles import BlockHandle
from .hdf5 import open_readonly

__all__ = ["read_legacy_metadata", "parse_legacy_group"]


#: at most this many groups and datasets are visited (hard links can make a small file a huge tree)
_MAX_NODES = 2000


def _parse_fl_node(node: h5py.Group | h5py.Dataset, depth: int = 0, budget: list[int] | None = None) -> Any:
    """A flammkuchen value as plain Python: dicts, tuples, lists, numbers. Never unpickles, never
    follows a soft or external link, visits at most ``_MAX_NODES`` nodes."""
    budget = [_MAX_NODES] if budget is None else budget
    budget[0] -= 1
    if depth > 8 or budget[0] < 0:
        raise MetadataError("legacy metadata nests too deeply or holds too many values")
    if isinstance(node, h5py.Dataset):
        if node.dtype.kind not in "biuf" or node.size > 1024 or node.is_virtual or node.external:
            return None  # pickled objects and anything unexpected are ignored, not loaded
        handle = BlockHandle(node.file, node)
        if handle.mode == "hdf5" or not node.size:
            value = node[()]
        else:  # blosc: decoded by the validating reader, never by HDF5's filter on trust
            value = np.empty(node.shape, node.dtype)
            try:
                handle.read(tuple(slice(0, n, 1) for n in node.shape), value, tuple(slice(0, n) for n in node.shape))
            except (OSError, ValueError, RuntimeError) as e:
                raise MetadataError(f"legacy metadata value {node.name!r} cannot be decoded: {e}") from e
        return value.tolist() if value.ndim else value.item()
    title = node.attrs.get("TITLE", b"")
    title = title.decode() if isinstance(title, bytes) else str(title)
    kind = title.split(":")[0]

    def attr(v: Any) -> Any:
        if isinstance(v, np.generic):
            return v.item()
        if isinstance(v, bytes):
            return v.decode(errors="replace")
        return v

    if kind in ("tuple", "list"):
        count = title.split(":")[1] if ":" in title else "0"
        if not count.isdigit():
            raise MetadataError(f"legacy metadata group {node.name!r} has the title {title!r}, not '{kind}:<length>'")
        items = []
        for i in range(min(int(count), 64)):
            key = f"i{i}"
            if key in node.attrs:
                items.append(attr(node.attrs[key]))
            elif isinstance(node.get(key, getlink=True), h5py.HardLink):
                items.append(_parse_fl_node(node[key], depth + 1, budget))
            else:
                items.append(None)
        return tuple(items) if kind == "tuple" else items
    out: dict[str, Any] = {}
    for k, v in node.attrs.items():
        if k not in ("CLASS", "TITLE", "VERSION"):
            out[k] = attr(v)
    for k in node:
        link = node.get(k, getlink=True)
        if isinstance(link, h5py.HardLink):
            out[k] = _parse_fl_node(node[k], depth + 1, budget)
    return out


def read_legacy_metadata(path: Path) -> dict[str, Any]:
    """The ``stack_metadata`` group that split_dataset < 0.3 stored inside the last block file."""
    try:
        with open_readonly(path) as f:
            link = f.get("stack_metadata", getlink=True)
            if not isinstance(link, h5py.HardLink) or not isinstance(f["stack_metadata"], h5py.Group):
                raise MetadataError(
                    f"{str(path.parent)!r} is not a split dataset: it has no stack_metadata.json, and its last "
                    f"block {path.name!r} has no legacy 'stack_metadata' group either (an interrupted write?)"
                )
            return parse_legacy_group(f["stack_metadata"], str(path))
    except OSError as e:
        raise MetadataError(
            f"{str(path.parent)!r} is not a split dataset: it has no stack_metadata.json, and its last "
            f"block {path.name!r} cannot be read: {e}"
        ) from e


def parse_legacy_group(group: h5py.Group, where: str) -> dict[str, Any]:
    """The metadata dict in a legacy ``stack_metadata`` group of the file at `where` (a path or URL)."""
    try:
        parsed = _parse_fl_node(group)
    except MetadataError as e:
        raise MetadataError(f"{where!r}: {e}") from e
    if not isinstance(parsed, dict):
        raise MetadataError(f"'stack_metadata' in {where!r} is not a dict")
    return parsed

