"""Opening a split dataset: finding its folder, its block files and its metadata (docs/format.md)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .errors import MetadataError, NotASplitDatasetError
from .metadata import Metadata
from .storage import METADATA_FILENAME, read_json, read_legacy_metadata

__all__ = ["resolve_root", "choose_prefix", "read_metadata"]


def resolve_root(path: str | os.PathLike[str]) -> Path:
    """The dataset folder for `path` (the folder or its metadata file); raises if there is none."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"no split dataset at {str(p)!r}: the path does not exist")
    if p.is_file() and p.name == METADATA_FILENAME:
        p = p.parent
    if not p.is_dir():
        raise NotASplitDatasetError(f"{str(p)!r} is a file; a split dataset is a folder of block files")
    return p.resolve()


def choose_prefix(root: Path, groups: dict[str, dict[int, str]], prefix: str | None) -> str:
    """The block-name prefix: `prefix` (with or without its ``_``), else ``""``, else the only one found."""
    if prefix is not None:
        if prefix in groups or not prefix or prefix.endswith("_"):
            return prefix
        return prefix + "_" if prefix + "_" in groups else prefix
    if "" in groups or not groups:
        return ""
    if len(groups) == 1:
        return next(iter(groups))
    raise NotASplitDatasetError(
        f"{str(root)!r} holds block files with several name prefixes {sorted(groups)}; pass prefix= to choose one"
    )


def read_metadata(root: Path, present: dict[int, str]) -> tuple[Path, dict[str, Any], Metadata]:
    """(file it came from, raw dict, parsed metadata): the JSON, else the group inside the last block."""
    json_path = root / METADATA_FILENAME
    if os.path.lexists(json_path):  # whatever it is: read_json refuses anything but a regular file
        source, raw = json_path, read_json(json_path)
    elif present:
        source = root / present[max(present)]
        raw = read_legacy_metadata(source)
    else:
        raise NotASplitDatasetError(
            f"{str(root)!r} is not a split dataset: no {METADATA_FILENAME} and no block files named like '0000.h5'"
        )
    try:
        return source, raw, Metadata.from_dict(raw)
    except MetadataError as e:
        raise MetadataError(f"{str(source)!r}: {e}") from e
