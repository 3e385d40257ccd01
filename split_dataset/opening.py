"""Opening a split dataset: finding its folder, its block files and its metadata (docs/format.md)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ChunkIndexError, ChunkIndexWarning, MetadataError, NotASplitDatasetError
from .metadata import Metadata
from .storage import METADATA_FILENAME, IndexFile, read_index, read_json, read_legacy_metadata

__all__ = ["resolve_root", "choose_prefix", "read_metadata", "load_chunk_index", "usable_index"]


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


def load_chunk_index(root: Path, prefix: str, key: str | None, dtype: np.dtype | None) -> IndexFile | None:
    """The dataset's ``chunk_index.bin`` if it has a valid one for these blocks, else None.

    An index that fails a check is ignored with a :class:`~split_dataset.errors.ChunkIndexWarning`;
    one describing other blocks (another prefix, array or dtype: the files were renamed or
    rewritten since) is ignored silently, as a stale block record is. Either way reads go
    through HDF5 as without one.
    """
    try:
        index = read_index(root)
    except ChunkIndexError as e:
        warnings.warn(f"{e}; the chunk index is ignored (`split-dataset index` rebuilds it)", ChunkIndexWarning,
                      stacklevel=4)
        return None
    return usable_index(index, prefix, key, dtype)


def usable_index(index: IndexFile | None, prefix: str, key: str | None, dtype: np.dtype | None) -> IndexFile | None:
    """`index` if it describes these blocks (their prefix, array name and dtype), else None."""
    if index is None or not index.n_blocks or index.prefix != prefix:
        return None
    if (key is not None and index.data_key != key) or (dtype is not None and index.dtype != dtype):
        return None
    return index
