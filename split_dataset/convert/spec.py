"""Naming what to convert: a *spec* string parsed into a :class:`Spec` (kind, path, inner path).

Forms: a split dataset folder (``fish1/raw``); an HDF5 dataset (``file.h5:/path/in/file``,
``.h5``, ``.hdf5``, ``.hdf``, ``.he5``, other names recognised by their HDF5 signature); a
``.npy`` file; a zarr array (``stack.zarr`` or ``store.zarr:/group/array``); an OME-Zarr
image (``image.ome.zarr``, or a zarr group holding OME-NGFF multiscales, read at level 0).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py

from ..errors import SourceError
from ..storage import METADATA_FILENAME

__all__ = ["Progress", "Spec", "parse_spec"]

#: ``progress(done, total)``: called with ``done == 0`` first, then after each block or region.
Progress = Callable[[int, int], None]

_HDF5_RE = re.compile(r"^(?P<file>.+?\.(?:h5|hdf5|hdf|he5))(?::(?P<inner>.*))?$", re.IGNORECASE)
_ZARR_RE = re.compile(r"^(?P<file>.+?\.zarr)(?::(?P<inner>.*))?/?$", re.IGNORECASE)
#: Files that mark a folder as a zarr store.
ZARR_MARKERS = ("zarr.json", ".zarray", ".zgroup")
#: Destination names that look like a format this package does not write.
_UNSUPPORTED_SUFFIXES = frozenset(
    [".tif", ".tiff", ".ome", ".n5", ".zip", ".npz", ".mat", ".nii", ".gz", ".json", ".txt", ".csv", ".png", ".jpg",
     ".jpeg", ".czi", ".nd2", ".lif", ".ims", ".klb"]
)

@dataclass(frozen=True)
class Spec:
    """A parsed source or destination: its ``kind``, file or folder ``path`` and ``inner`` path.

    ``kind`` is ``"split"``, ``"hdf5"``, ``"npy"``, ``"zarr"`` or ``"omezarr"`` (a name ending in
    ``.ome.zarr``: written as OME-NGFF, read at level 0); ``inner`` is the path of the
    dataset inside an HDF5 file or zarr group (None when not given).
    """

    kind: str
    path: Path
    inner: str | None = None

    def __str__(self) -> str:
        return f"{self.path}:{self.inner}" if self.inner else str(self.path)


def _inner(text: str | None) -> str | None:
    if text is None or not text.strip("/"):
        return None
    return "/" + text.strip("/")


def _sniff(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return None
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    try:
        if h5py.is_hdf5(path):
            return "hdf5"
    except (OSError, ValueError):
        pass
    return None


def parse_spec(spec: str | os.PathLike[str], *, writing: bool = False) -> Spec:
    """Tell what kind of array a path names (see the module docstring for the forms).

    Parameters
    ----------
    spec
        ``folder``, ``file.h5:/path``, ``file.npy``, ``store.zarr[:/path]``.
    writing
        Parse a destination: it need not exist; a name that is none of the above is
        a split dataset folder to create, unless its suffix is a format this package
        does not write (``.tif``, ``.n5``, ...).

    Raises
    ------
    FileNotFoundError
        A source that does not exist.
    SourceError
        A file of an unknown type (a ``ValueError``).

    Examples
    --------
    >>> parse_spec("out/exported.h5:/exported_data", writing=True)
    Spec(kind='hdf5', path=PosixPath('out/exported.h5'), inner='/exported_data')
    >>> parse_spec("stack.npy", writing=True).kind, parse_spec("fish1/raw", writing=True).kind
    ('npy', 'split')
    """
    s = os.fspath(spec)
    if not s:
        raise SourceError("an empty path names nothing")
    m = _HDF5_RE.match(s)
    if m and not Path(m["file"]).is_dir():
        return Spec("hdf5", Path(m["file"]), _inner(m["inner"]))
    m = _ZARR_RE.match(s)
    if m:
        zkind = "omezarr" if m["file"].lower().endswith(".ome.zarr") else "zarr"
        return Spec(zkind, Path(m["file"]), _inner(m["inner"]))
    p = Path(s)
    if p.suffix.lower() == ".npy" and not p.is_dir():
        return Spec("npy", p)
    if p.is_dir():
        if any((p / n).exists() for n in ZARR_MARKERS):
            return Spec("zarr", p)
        return Spec("split", p)
    if p.is_file():
        if p.name == METADATA_FILENAME:
            return Spec("split", p.parent)
        kind = _sniff(p)
        if kind is not None:
            return Spec(kind, p)
        what = "destination" if writing else "source"
        raise SourceError(
            f"{s!r}: unknown {what} type; expected a split dataset folder, an HDF5 dataset "
            "(file.h5:/path/in/file), a .npy file or a zarr array (.zarr)"
        )
    head, sep, tail = s.rpartition(":")
    if sep and head and Path(head).is_file() and _sniff(Path(head)) == "hdf5":
        return Spec("hdf5", Path(head), _inner(tail))
    if not writing:
        raise FileNotFoundError(f"no such file or folder: {s!r}")
    if p.suffix.lower() in _UNSUPPORTED_SUFFIXES:
        raise SourceError(
            f"{s!r}: unsupported destination type {p.suffix!r}; write a split dataset folder, "
            "an HDF5 dataset (file.h5:/path), a .npy file or a zarr array (.zarr)"
        )
    return Spec("split", p)

