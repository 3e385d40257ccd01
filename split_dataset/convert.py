"""Converting between split datasets, HDF5 datasets, ``.npy`` files and zarr arrays.

A source or destination is named by a string (a *spec*):

- a split dataset folder: ``fish1/raw``
- an HDF5 dataset: ``file.h5:/path/in/file`` (``.h5``, ``.hdf5``, ``.hdf``, ``.he5``; other
  file names are recognised by their HDF5 signature). Without ``:/path``, a source file
  must hold exactly one dataset; a destination gets ``/stack``.
- a ``.npy`` file: ``stack.npy`` (read memory-mapped)
- a zarr array: ``stack.zarr`` or ``store.zarr:/group/array``

:func:`convert` streams: it reads and writes one destination block (a split dataset's
block file, or a chunk-aligned region of about 64 MiB for the other formats) at a
time, so memory stays bounded whatever the array size. It writes under a temporary
name beside the destination and renames it into place at the end, so a failure leaves
nothing under the destination name. Physical metadata (resolution, units, axis order,
frame interval) and user attributes are carried across where both sides can hold them:
``stack_metadata.json`` ↔ HDF5 dataset attributes ↔ zarr attributes. ``.npy`` holds none.

:func:`export_vds` writes an HDF5 file whose dataset is a virtual dataset over the block
files of a split dataset, so any HDF5 tool sees the whole array as one dataset.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import h5py
import hdf5plugin  # noqa: F401  (registers the blosc filter split dataset blocks use)
import numpy as np

from .dataset import SplitDataset
from .errors import BlockMismatchError, MissingBlockError
from .grid import BlockGrid
from .locks import refuse_if_written
from .storage import METADATA_FILENAME, Codec, default_chunks, scan_block_files
from .writer import DEFAULT_COMPRESSION, default_shape_block, make_metadata, save

__all__ = [
    "Spec",
    "Source",
    "SourceError",
    "Converted",
    "parse_spec",
    "open_source",
    "convert",
    "export_vds",
]

#: ``progress(done, total)``: called with ``done == 0`` first, then after each block or region.
Progress = Callable[[int, int], None]

_HDF5_RE = re.compile(r"^(?P<file>.+?\.(?:h5|hdf5|hdf|he5))(?::(?P<inner>.*))?$", re.IGNORECASE)
_ZARR_RE = re.compile(r"^(?P<file>.+?\.zarr)(?::(?P<inner>.*))?/?$", re.IGNORECASE)
_ZARR_MARKERS = ("zarr.json", ".zarray", ".zgroup")
#: Destination names that look like a format this package does not write.
_UNSUPPORTED_SUFFIXES = frozenset(
    ".tif .tiff .ome .n5 .zip .npz .mat .nii .gz .json .txt .csv .png .jpg .jpeg .czi .nd2 .lif .ims .klb".split()
)
#: HDF5 attributes that belong to the file format (PyTables, netCDF, dimension scales), not to the user.
_H5_INTERNAL_ATTRS = frozenset(
    {"CLASS", "TITLE", "VERSION", "DIMENSION_LIST", "REFERENCE_LIST", "NAME", "_Netcdf4Dimid",
     "_Netcdf4Coordinates", "_nc3_strict", "_FillValue"}
)
#: Attribute names that hold the physical metadata on the HDF5 and zarr side.
_RESERVED = ("resolution", "units", "axis_order", "frame_interval")
_REGION_BYTES = 64 << 20
_SKIP = object()


class SourceError(ValueError):
    """A source or destination that cannot be used: unknown type, missing inner path, unreadable file."""


# ----------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class Spec:
    """A parsed source or destination: its ``kind``, file or folder ``path`` and ``inner`` path.

    ``kind`` is ``"split"``, ``"hdf5"``, ``"npy"`` or ``"zarr"``; ``inner`` is the path of the
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
        return Spec("zarr", Path(m["file"]), _inner(m["inner"]))
    p = Path(s)
    if p.suffix.lower() == ".npy" and not p.is_dir():
        return Spec("npy", p)
    if p.is_dir():
        if any((p / n).exists() for n in _ZARR_MARKERS):
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


# ----------------------------------------------------------------------------- attributes


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
    if isinstance(interval, (int, float)) and not isinstance(interval, bool) and math.isfinite(interval) and interval > 0:
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


def _attrs_from(raw: Mapping[str, Any], ndim: int, *, hdf5: bool) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """(physical metadata, user attrs, names of attributes skipped) from HDF5 or zarr attributes."""
    attrs: dict[str, Any] = {}
    skipped: list[str] = []
    for k, v in raw.items():
        if hdf5 and k in _H5_INTERNAL_ATTRS:
            continue
        try:
            j = _jsonable(v)
        except Exception:  # noqa: BLE001 - an attribute h5py cannot even read is skipped, not fatal
            j = _SKIP
        if j is _SKIP:
            skipped.append(str(k))
            continue
        attrs[str(k)] = _from_h5_string(j) if hdf5 else j
    return _physical(attrs, ndim), attrs, skipped


# ----------------------------------------------------------------------------- sources


@dataclass
class Source:
    """An array opened for reading by :func:`open_source`, with the metadata found beside it.

    Indexing (``source[slices]``) returns a numpy array; ``shape``, ``dtype``, ``ndim``,
    ``nbytes`` are the array's, so a Source can be passed to :func:`split_dataset.save`.
    Close it (or use it as a context manager) to close the underlying file.

    Attributes
    ----------
    array
        The underlying array: a SplitDataset, an h5py Dataset, a memory-mapped numpy
        array or a zarr Array.
    spec
        What was opened (``spec.inner`` is the dataset actually chosen).
    resolution, units, axis_order, frame_interval
        Physical metadata where the source records it, else None.
    attrs
        User attributes (JSON values): ``attrs`` of a split dataset, HDF5 dataset attributes
        (PyTables' ``CLASS``/``TITLE``/``VERSION`` left out), zarr attributes.
    chunks
        The source's own block or chunk shape, if it has one.
    skipped_attrs
        Names of attributes that have no JSON form (object references, binary data).
    """

    array: Any
    spec: Spec
    resolution: tuple[float, ...] | None = None
    units: tuple[str, ...] | None = None
    axis_order: str | None = None
    frame_interval: float | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    chunks: tuple[int, ...] | None = None
    skipped_attrs: list[str] = field(default_factory=list)
    _closer: Callable[[], None] | None = field(default=None, repr=False)

    @property
    def kind(self) -> str:
        """``"split"``, ``"hdf5"``, ``"npy"`` or ``"zarr"``."""
        return self.spec.kind

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the array."""
        return tuple(int(s) for s in self.array.shape)

    @property
    def dtype(self) -> np.dtype:
        """Element type."""
        return np.dtype(self.array.dtype)

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of the uncompressed array."""
        return math.prod(self.shape) * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, selection: Any) -> np.ndarray:
        return np.asarray(self.array[selection])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[...]
        return out if dtype is None else out.astype(dtype, copy=False)

    def metadata(self) -> dict[str, Any]:
        """The keyword arguments of :func:`split_dataset.save` this source provides."""
        out: dict[str, Any] = {}
        for name in ("resolution", "units", "axis_order", "frame_interval"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.attrs:
            out["attrs"] = dict(self.attrs)
        return out

    def close(self) -> None:
        """Close the file the array lives in (for an h5py dataset or a split dataset)."""
        closer, self._closer = self._closer, None
        if closer is not None:
            closer()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Source {self.kind} {str(self.spec)!r} shape={self.shape} dtype={self.dtype}>"


def _listing(names: Sequence[str], limit: int = 8) -> str:
    if not names:
        return "no datasets"
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _h5_open(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError as e:
        if "lock" not in str(e).lower():
            raise
    return h5py.File(path, "r", locking=False)


def _h5_datasets(f: h5py.File) -> list[str]:
    names: list[str] = []
    f.visititems(lambda name, obj: names.append("/" + name) if isinstance(obj, h5py.Dataset) else None)
    return names


def _open_hdf5(spec: Spec) -> Source:
    if not spec.path.exists():
        raise FileNotFoundError(f"no such file: {str(spec.path)!r}")
    try:
        f = _h5_open(spec.path)
    except OSError as e:
        raise SourceError(f"cannot read {str(spec.path)!r} as an HDF5 file: {' '.join(str(e).split())}") from e
    try:
        inner = spec.inner
        if inner is None:
            names = _h5_datasets(f)
            if len(names) != 1:
                raise SourceError(
                    f"{str(spec.path)!r} holds {len(names)} datasets; name one as "
                    f"{spec.path}:/path/in/file ({_listing(names)})"
                )
            inner = names[0]
        obj = f.get(inner)
        if obj is None:
            raise SourceError(f"no dataset {inner!r} in {str(spec.path)!r}; it holds {_listing(_h5_datasets(f))}")
        if not isinstance(obj, h5py.Dataset):
            inside = [n for n in _h5_datasets(f) if n.startswith(obj.name.rstrip("/") + "/")]
            raise SourceError(f"{inner!r} in {str(spec.path)!r} is a group, not a dataset; it holds {_listing(inside)}")
        if obj.shape is None or obj.ndim == 0:
            raise SourceError(f"{inner!r} in {str(spec.path)!r} is a scalar; there is no array to convert")
        physical, attrs, skipped = _attrs_from(dict(obj.attrs.items()), obj.ndim, hdf5=True)
        return Source(obj, Spec("hdf5", spec.path, obj.name), attrs=attrs, chunks=obj.chunks,
                      skipped_attrs=skipped, _closer=f.close, **physical)
    except BaseException:
        f.close()
        raise


def _open_npy(spec: Spec) -> Source:
    if not spec.path.exists():
        raise FileNotFoundError(f"no such file: {str(spec.path)!r}")
    try:
        arr = np.load(spec.path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise SourceError(f"cannot read {str(spec.path)!r} as a .npy file: {e}") from e
    if not isinstance(arr, np.ndarray) or arr.ndim == 0:
        raise SourceError(f"{str(spec.path)!r} holds no array to convert")
    return Source(arr, spec)


def _import_zarr() -> Any:
    try:
        import zarr
    except ImportError as e:
        raise ImportError("zarr arrays need the zarr package: python -m pip install zarr") from e
    return zarr


def _zarr_arrays(group: Any) -> list[str]:
    if hasattr(group, "members"):  # zarr 3
        return ["/" + name for name, node in group.members(max_depth=None) if hasattr(node, "shape")]
    names: list[str] = []  # zarr 2
    group.visitvalues(lambda node: names.append("/" + node.path) if hasattr(node, "shape") else None)
    return names


def _open_zarr(spec: Spec) -> Source:
    zarr = _import_zarr()
    if not spec.path.exists():
        raise FileNotFoundError(f"no such zarr store: {str(spec.path)!r}")
    try:
        node = zarr.open(store=str(spec.path), mode="r", path=(spec.inner or "").strip("/") or None)
    except (FileNotFoundError, KeyError, ValueError) as e:
        where = f"no array {spec.inner!r} in" if spec.inner else "cannot read"
        raise SourceError(f"{where} the zarr store {str(spec.path)!r}: {e}") from e
    if not hasattr(node, "shape"):
        names = _zarr_arrays(node)
        if spec.inner is not None or len(names) != 1:
            what = f"{spec.inner!r} in {str(spec.path)!r} is a group" if spec.inner else f"{str(spec.path)!r} is a group"
            raise SourceError(f"{what} holding {len(names)} arrays; name one as {spec.path}:/path ({_listing(names)})")
        inner = names[0]
        node = zarr.open(store=str(spec.path), mode="r", path=inner.strip("/"))
        spec = Spec("zarr", spec.path, inner)
    if node.ndim == 0:
        raise SourceError(f"{str(spec)!r} is a scalar; there is no array to convert")
    physical, attrs, skipped = _attrs_from(dict(node.attrs), node.ndim, hdf5=False)
    names_ = getattr(getattr(node, "metadata", None), "dimension_names", None)
    if "axis_order" not in physical and names_ and len(names_) == node.ndim and all(
        isinstance(n, str) and len(n) == 1 for n in names_
    ):
        physical["axis_order"] = "".join(names_)
    chunks = tuple(int(c) for c in node.chunks) if getattr(node, "chunks", None) else None
    return Source(node, spec, attrs=attrs, chunks=chunks, skipped_attrs=skipped, **physical)


def _open_split(spec: Spec) -> Source:
    ds = SplitDataset(spec.path)
    return Source(
        ds, Spec("split", ds.root), resolution=tuple(ds.resolution), units=tuple(ds.units) if any(ds.units) else None,
        axis_order=ds.axis_order, frame_interval=ds.frame_interval, attrs=dict(ds.attrs), chunks=ds.shape_block,
        _closer=ds.close,
    )


def open_source(spec: str | os.PathLike[str] | Spec) -> Source:
    """Open an array for reading, whatever it is stored in, with its metadata.

    Parameters
    ----------
    spec
        A split dataset folder, ``file.h5:/path/in/file`` (the path may be left out when
        the file holds one dataset), a ``.npy`` file or a zarr array (``x.zarr``,
        ``store.zarr:/group/array``).

    Returns
    -------
    Source
        An array-like (``shape``, ``dtype``, numpy slicing) with ``resolution``,
        ``units``, ``axis_order``, ``frame_interval`` and ``attrs`` where known.
        Close it when done.

    Raises
    ------
    FileNotFoundError
        Nothing exists at that path.
    SourceError
        An unknown file type, or a path inside the file that names no array.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "x.npy")
    >>> np.save(path, np.arange(12).reshape(3, 4))
    >>> with open_source(path) as src:
    ...     src.kind, src.shape, src[1, ::2].tolist()
    ('npy', (3, 4), [4, 6])
    """
    parsed = spec if isinstance(spec, Spec) else parse_spec(spec)
    opener = {"split": _open_split, "hdf5": _open_hdf5, "npy": _open_npy, "zarr": _open_zarr}[parsed.kind]
    return opener(parsed)


# ----------------------------------------------------------------------------- writing safely


def _check_destination(dst: Path, overwrite: bool) -> None:
    if not os.path.lexists(dst):
        return
    if dst.is_dir() and not dst.is_symlink() and not any(dst.iterdir()):
        return  # an empty folder is as good as none (as for split_dataset.save)
    if not overwrite:
        raise FileExistsError(f"{str(dst)!r} already exists; pass overwrite=True (--overwrite) to replace it")
    if dst.is_dir():
        refuse_if_written(dst, "replace it")
    if dst.is_dir() and not dst.is_symlink():
        ours = (dst / METADATA_FILENAME).exists() or any((dst / m).exists() for m in _ZARR_MARKERS)
        if not ours and not scan_block_files(dst):
            raise FileExistsError(
                f"{str(dst)!r} is a folder that holds neither a split dataset nor a zarr store; "
                "it is not replaced, even with overwrite"
            )


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def _commit(tmp: Path, dst: Path, overwrite: bool) -> None:
    """Move the finished `tmp` to `dst`: atomically, never over something unless `overwrite`."""
    if os.path.lexists(dst):
        if dst.is_dir() and not dst.is_symlink() and not any(dst.iterdir()):
            dst.rmdir()
        elif not overwrite:
            raise FileExistsError(f"{str(dst)!r} appeared while it was being written; the result is not moved there")
        else:
            if dst.is_dir():  # a writer may have started in it since the destination was checked
                refuse_if_written(dst, "replace it")
            old = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:12]}.old")
            os.replace(dst, old)
            try:
                os.replace(tmp, dst)
            except BaseException:
                os.replace(old, dst)
                raise
            _remove(old)
            return
    if tmp.is_dir():
        os.rename(tmp, dst)  # fails rather than replace a folder that appeared meanwhile
        return
    try:
        os.link(tmp, dst)  # fails if dst appeared meanwhile, where os.replace would clobber it
    except FileExistsError:
        raise FileExistsError(f"{str(dst)!r} appeared while it was being written; the result is not moved there") from None
    except OSError:
        os.replace(tmp, dst)  # no hard links on this file system
    else:
        tmp.unlink()


@contextmanager
def _staged(dst: Path, overwrite: bool) -> Iterator[Path]:
    """A temporary path beside `dst` to write into; renamed to `dst` on success, removed on failure."""
    dst = Path(os.path.abspath(dst))
    _check_destination(dst, overwrite)
    created: list[Path] = []
    p = dst.parent
    while not p.exists():
        created.append(p)
        p = p.parent
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        yield tmp
        _commit(tmp, dst, overwrite)
    except BaseException:
        _remove(tmp)
        for d in created:  # deepest first: the folders this call created, if still empty
            try:
                d.rmdir()
            except OSError:
                break
        raise


def _check_dtype(dtype: np.dtype) -> None:
    if dtype.kind not in "biufc" or dtype.hasobject or dtype.names:
        raise TypeError(f"only numeric arrays can be converted; dtype {dtype} is not supported")


def _parse_block(shape_block: Any, shape: tuple[int, ...]) -> tuple[int | None, ...] | None:
    """``"10,64,64"``, an int or a sequence → one entry per axis (None: the whole axis)."""
    if shape_block is None:
        return None
    ndim = len(shape)
    if isinstance(shape_block, str):
        parts = [p.strip() for p in shape_block.split(",")]
        values: list[Any] = []
        for p in parts:
            if p in ("", "-1", ":"):
                values.append(None)
                continue
            try:
                values.append(int(p))
            except ValueError:
                raise ValueError(
                    f"block shape {shape_block!r}: expected integers separated by commas, e.g. 10,64,64 "
                    "(-1 for a whole axis)"
                ) from None
    elif isinstance(shape_block, (int, np.integer)) and not isinstance(shape_block, bool):
        values = [int(shape_block)]
    else:
        values = list(shape_block)
    if not values:
        raise ValueError("block shape is empty")
    if len(values) > ndim:
        raise ValueError(
            f"block shape {tuple(values)} has {len(values)} entries but the source has {ndim} axes {shape}"
        )
    out: list[int | None] = []
    for i, v in enumerate(values):
        if v is None or (isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v == -1):
            out.append(None)
        elif isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1:
            out.append(int(v))
        else:
            raise ValueError(f"block shape entry {i} must be a positive integer (-1 for the whole axis), got {v!r}")
    return tuple(out) + (None,) * (ndim - len(out))


def _full_block(block: tuple[int | None, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(max(1, min(b, s) if b is not None else s) for b, s in zip(block, shape))


def _copy_regions(source: Source, out: Any, align: tuple[int, ...] | None, progress: Progress | None) -> None:
    """Copy `source` into `out` a region of about 64 MiB at a time, aligned to `align` (out's chunks)."""
    shape = source.shape
    if 0 in shape:
        if progress is not None:
            progress(0, 0)
        return
    region = default_shape_block(shape, source.dtype.itemsize, _REGION_BYTES)
    if align:
        region = tuple(min(s, max(a, r // a * a)) for r, a, s in zip(region, align, shape))
    grid = BlockGrid(shape, region)
    total = grid.n_blocks
    if progress is not None:
        progress(0, total)
    for i, coords in enumerate(grid.iter_coords()):
        sl = grid.block_slices(coords)
        out[sl] = source[sl]
        if progress is not None:
            progress(i + 1, total)


class _Counted:
    """An array-like that reports each block :func:`save` reads from it."""

    def __init__(self, source: Source, total: int, progress: Progress | None) -> None:
        self._source = source
        self._total = total
        self._progress = progress
        self._reads = 0
        self.shape = source.shape
        self.dtype = source.dtype
        self.ndim = source.ndim

    def __getitem__(self, selection: Any) -> np.ndarray:
        if self._progress is not None:
            self._progress(self._reads, self._total)  # the blocks before this one are written
        self._reads += 1
        return self._source[selection]


# ----------------------------------------------------------------------------- convert


@dataclass(frozen=True)
class Converted:
    """What :func:`convert` wrote.

    Attributes
    ----------
    destination
        The destination written (``destination.inner``: the dataset's path inside the file).
    shape, dtype
        Of the array written.
    carried
        Metadata carried across: ``"resolution"``, ``"units"``, ``"axis_order"``,
        ``"frame_interval"``, ``"attrs"``.
    dropped
        Metadata the source has and the destination cannot hold (everything, for ``.npy``).
    """

    destination: Spec
    shape: tuple[int, ...]
    dtype: np.dtype
    carried: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()


def _zarr_compressors(zarr: Any, codec: Codec | None) -> Any:
    if codec is None:
        return "auto"
    if codec.name == "none":
        return None
    if codec.name == "gzip":
        return [zarr.codecs.GzipCodec(level=int(codec.clevel))]
    shuffle = {"none": "noshuffle", "byte": "shuffle", "bit": "bitshuffle"}[codec.shuffle]
    return [zarr.codecs.BloscCodec(cname=codec.cname, clevel=int(codec.clevel), shuffle=shuffle)]


def _numcodecs_compressor(codec: Codec | None) -> Any:  # pragma: no cover - zarr 2 only
    import numcodecs

    if codec is None:
        return "default"
    if codec.name == "none":
        return None
    if codec.name == "gzip":
        return numcodecs.GZip(level=int(codec.clevel))
    return numcodecs.Blosc(cname=codec.cname, clevel=int(codec.clevel),
                           shuffle={"none": 0, "byte": 1, "bit": 2}[codec.shuffle])


def _h5_attrs(source: Source) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in source.attrs.items():
        if k in _RESERVED:
            continue  # the physical metadata below takes these names
        conv = _to_h5_attr(v)
        if conv is not _SKIP:
            out[str(k)] = conv
    out.update(_reserved_attrs(source))
    if "resolution" in out:
        out["resolution"] = np.asarray(out["resolution"], dtype=float)
    return out


def _reserved_attrs(source: Source) -> dict[str, Any]:
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


def _write_split(source: Source, dst: Spec, block: tuple[int | None, ...] | None, compression: Any,
                 overwrite: bool, progress: Progress | None) -> None:
    if dst.inner:
        raise ValueError(f"a split dataset folder has no inner path; got {str(dst)!r}")
    codec = Codec.parse(DEFAULT_COMPRESSION if compression is None else compression)
    if block is None and source.kind == "split":
        block = source.chunks  # like zarr's copy: keep the source's blocking unless told otherwise
    kwargs = source.metadata()
    meta = make_metadata(source.shape, source.dtype, block, codec, **kwargs)  # validates before writing
    total = BlockGrid(meta.shape, meta.shape_block, meta.padding).n_blocks
    with _staged(dst.path, overwrite) as tmp:
        save(_Counted(source, total, progress), tmp, meta.shape_block, compression=codec, **kwargs).close()
    if progress is not None:
        progress(total, total)


def _write_hdf5(source: Source, dst: Spec, block: tuple[int | None, ...] | None, compression: Any,
                overwrite: bool, progress: Progress | None) -> None:
    codec = Codec.parse("gzip" if compression is None else compression)
    shape = source.shape
    chunks: tuple[int, ...] | None
    if block is not None:
        chunks = _full_block(block, shape)
    elif codec.name == "none":
        chunks = None  # contiguous, what every HDF5 reader handles fastest
    else:
        chunks = default_chunks(shape, source.dtype.itemsize)
    kwargs = codec.h5py_kwargs() if chunks is not None else {}
    if 0 in shape:
        chunks, kwargs = None, {}
    attrs = _h5_attrs(source)
    inner = dst.inner or "/stack"
    with _staged(dst.path, overwrite) as tmp:
        with h5py.File(tmp, "x") as f:
            d = f.create_dataset(inner, shape=shape, dtype=source.dtype, chunks=chunks, **kwargs)
            for k, v in attrs.items():
                d.attrs[k] = v
            _copy_regions(source, d, chunks, progress)


def _write_npy(source: Source, dst: Spec, block: tuple[int | None, ...] | None, compression: Any,
               overwrite: bool, progress: Progress | None) -> None:
    if block is not None:
        raise ValueError("a .npy file has no blocks; a block shape applies to split dataset, HDF5 and zarr destinations")
    if compression is not None and Codec.parse(compression).name != "none":
        raise ValueError(f"a .npy file cannot be compressed; got compression {compression!r}")
    with _staged(dst.path, overwrite) as tmp:
        if 0 in source.shape:
            with open(tmp, "xb") as f:
                np.save(f, np.empty(source.shape, source.dtype))
            return
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=source.dtype, shape=source.shape)
        try:
            _copy_regions(source, out, source.chunks, progress)
            out.flush()
        finally:
            del out


def _write_zarr(source: Source, dst: Spec, block: tuple[int | None, ...] | None, compression: Any,
                overwrite: bool, progress: Progress | None) -> None:
    zarr = _import_zarr()
    codec = Codec.parse(compression) if compression is not None else None
    shape = source.shape
    chunks: Any = _full_block(block, shape) if block is not None else "auto"
    attrs = {k: v for k, v in source.attrs.items() if k not in _RESERVED}
    attrs.update(_reserved_attrs(source))
    names = list(source.axis_order) if source.axis_order else None
    name = (dst.inner or "").strip("/")
    with _staged(dst.path, overwrite) as tmp:
        if hasattr(zarr, "create_array"):  # zarr 3
            kwargs = dict(shape=shape, dtype=source.dtype, chunks=chunks, compressors=_zarr_compressors(zarr, codec),
                          attributes=attrs, dimension_names=names)
            if name:
                out = zarr.open_group(str(tmp), mode="w").create_array(name, **kwargs)
            else:
                out = zarr.create_array(store=str(tmp), **kwargs)
        else:  # pragma: no cover - zarr 2
            kwargs2 = dict(shape=shape, dtype=source.dtype, chunks=True if chunks == "auto" else chunks)
            comp = _numcodecs_compressor(codec)
            if comp != "default":
                kwargs2["compressor"] = comp
            if name:
                out = zarr.open_group(str(tmp), mode="w").create_dataset(name, **kwargs2)
            else:
                out = zarr.open_array(str(tmp), mode="w", **kwargs2)
            out.attrs.update(attrs)
        _copy_regions(source, out, tuple(out.chunks), progress)


_WRITERS = {"split": _write_split, "hdf5": _write_hdf5, "npy": _write_npy, "zarr": _write_zarr}


def _same_or_inside(a: Path, b: Path) -> bool:
    a, b = a.resolve(), b.resolve()
    return a == b or b in a.parents


def convert(
    src: str | os.PathLike[str] | Spec | Source,
    dst: str | os.PathLike[str] | Spec,
    shape_block: str | int | Sequence[int | None] | None = None,
    compression: Any = None,
    *,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Converted:
    """Copy an array from one storage to another, block by block, with its metadata.

    Parameters
    ----------
    src
        A split dataset folder, ``file.h5:/path/in/file``, a ``.npy`` file, a zarr array
        (see :func:`open_source`), or an opened :class:`Source`.
    dst
        The same forms (a folder that does not exist yet becomes a split dataset; an
        HDF5 destination without ``:/path`` gets the dataset ``/stack``).
    shape_block
        Block shape of a split dataset destination, chunk shape of an HDF5 or zarr one:
        ``"10,64,64,1"`` or a sequence; missing trailing entries and ``-1`` mean the whole
        axis. Default: the source's blocks for a split dataset source, else about 64 MiB
        of whole frames per block (split datasets), one image plane per chunk (HDF5),
        zarr's own choice (zarr).
    compression
        ``"blosc-lz4"``, ``"blosc-zstd"``, ``"blosc"``, ``"gzip"``, ``"none"`` (see
        :class:`~split_dataset.Codec`). Default: ``blosc-lz4`` for split datasets,
        ``gzip`` for HDF5 (every HDF5 tool reads it without plugins), zarr's default for zarr.
        A ``.npy`` file cannot be compressed.
    overwrite
        Replace an existing destination (file, split dataset folder or zarr store) once
        the new one is complete. Without it an existing destination raises
        ``FileExistsError`` (an empty folder counts as absent).
    progress
        Called as ``progress(done, total)`` with the number of blocks or regions written.

    Returns
    -------
    Converted
        The destination, shape, dtype, and which metadata was carried or dropped.

    Raises
    ------
    FileNotFoundError
        The source does not exist.
    FileExistsError
        The destination exists and `overwrite` is False.
    WriterLockedError
        The destination is a split dataset that a live writer holds (a ``FileExistsError``).
    ValueError
        An unknown source or destination type (:class:`SourceError`), a path inside a file
        that names no array, a block shape that does not fit the array, an unknown codec.
    TypeError
        The source's dtype cannot be stored (strings, records).

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> np.save(os.path.join(d, "x.npy"), np.arange(24, dtype="uint16").reshape(6, 4))
    >>> out = convert(os.path.join(d, "x.npy"), os.path.join(d, "ds"), shape_block="4")
    >>> out.destination.kind, out.shape
    ('split', (6, 4))
    >>> out = convert(os.path.join(d, "ds"), os.path.join(d, "x.h5") + ":/exported_data")
    >>> import h5py
    >>> with h5py.File(os.path.join(d, "x.h5")) as f:
    ...     f["exported_data"][5].tolist(), f["exported_data"].attrs["axis_order"]
    ([20, 21, 22, 23], 'yx')
    """
    target = dst if isinstance(dst, Spec) else parse_spec(dst, writing=True)
    source = src if isinstance(src, Source) else open_source(src)
    try:
        if _same_or_inside(source.spec.path, target.path):  # the same file, or replacing what holds the source
            raise ValueError(f"the source {str(source.spec)!r} and the destination {str(target)!r} overlap")
        _check_dtype(source.dtype)
        block = _parse_block(shape_block, source.shape)
        if compression is not None:
            Codec.parse(compression)  # an unknown codec fails before anything is written
        _WRITERS[target.kind](source, target, block, compression, overwrite, progress)
        carried = tuple(source.metadata())
        dropped = carried if target.kind == "npy" else ()
        inner = target.inner or ("/stack" if target.kind == "hdf5" else None)
        return Converted(Spec(target.kind, target.path, inner), source.shape, source.dtype,
                         () if dropped else carried, dropped)
    finally:
        if not isinstance(src, Source):
            source.close()


# ----------------------------------------------------------------------------- export-vds


def _relative(path: Path, base: Path) -> str:
    try:
        rel = Path(os.path.relpath(path, base)).as_posix()
    except ValueError:  # another drive (Windows): only an absolute path can work
        return Path(path).as_posix()
    return rel if rel.startswith("../") else "./" + rel


def export_vds(
    path: str | os.PathLike[str] | SplitDataset,
    out: str | os.PathLike[str],
    *,
    fill_value: Any = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Path:
    """Write an HDF5 file whose dataset ``/stack`` is a virtual dataset over every block file.

    Any HDF5 tool (h5py, HDFView, MATLAB, Fiji) then reads the whole split dataset as
    one array. Block files are referenced by paths relative to `out`'s folder, so the
    dataset folder and the file can be moved together. Readers need the blosc filter
    for the blocks (``import hdf5plugin`` in Python; the HDF5 plugin path elsewhere).
    Each block contributes only the region it owns (overlap from ``padding`` is
    excluded). Resolution, units, axis order, frame interval and attrs become attributes
    of ``/stack``.

    Parameters
    ----------
    path
        The split dataset.
    out
        The HDF5 file to write; refused if it exists unless `overwrite`.
    fill_value
        None (default): a dataset with missing blocks is refused. A number: missing
        blocks read as that value.
    overwrite
        Replace an existing `out`.
    progress
        Called as ``progress(done, total)`` with the number of blocks mapped.

    Returns
    -------
    Path
        `out`.

    Raises
    ------
    MissingBlockError
        Block files are missing and no `fill_value` was given.
    FileExistsError
        `out` exists and `overwrite` is False.
    ValueError
        `out` is the dataset folder, lies inside it (a block file, the metadata) or holds it.

    Examples
    --------
    >>> import numpy as np, split_dataset, tempfile, os, h5py
    >>> d = tempfile.mkdtemp()
    >>> x = np.arange(60, dtype="uint16").reshape(6, 10)
    >>> _ = split_dataset.save(x, os.path.join(d, "ds"), (4,))
    >>> vds = export_vds(os.path.join(d, "ds"), os.path.join(d, "ds.h5"))
    >>> with h5py.File(vds) as f:
    ...     bool((f["stack"][:] == x).all()), f["stack"].is_virtual
    (True, True)
    """
    ds = path if isinstance(path, SplitDataset) else SplitDataset(path)
    try:
        out = Path(out)
        if _same_or_inside(out, ds.root) or _same_or_inside(ds.root, out):
            raise ValueError(
                f"the output {str(out)!r} and the dataset {str(ds.root)!r} overlap (the output would replace "
                "the dataset, one of its files, or what holds it); write it outside the dataset folder"
            )
        grid = ds.grid
        files = ds.files.ravel()
        missing = set(ds.missing_blocks)
        if missing and fill_value is None:
            first = min(missing)
            names = ", ".join(files[i].name for i in sorted(missing)[:5]) + (" ..." if len(missing) > 5 else "")
            raise MissingBlockError(
                files[first], grid.coords(first),
                f"{len(missing)} block file(s) missing ({names}); pass fill_value= (--fill VALUE) to export "
                "anyway, the missing regions reading as VALUE",
            )
        base = Path(os.path.abspath(out)).parent
        layout = h5py.VirtualLayout(shape=ds.shape, dtype=ds.dtype)
        total = grid.n_blocks
        if progress is not None:
            progress(0, total)
        for index, coords in enumerate(grid.iter_coords()):
            owned = tuple(slice(grid.block_start(a, c), grid.owned_stop(a, c)) for a, c in enumerate(coords))
            if index not in missing and all(s.stop > s.start for s in owned):
                handle = ds._handle(index)
                need = tuple(s.stop - s.start for s in owned)
                if handle.dtype != ds.dtype or len(handle.shape) != len(need) or any(
                    h < n for h, n in zip(handle.shape, need)
                ):
                    raise BlockMismatchError(
                        f"block {coords} ({files[index].name}): expected at least {need} {ds.dtype}, "
                        f"found {handle.shape} {handle.dtype}"
                    )
                source = h5py.VirtualSource(_relative(files[index], base), handle.dset.name,
                                            shape=handle.shape, dtype=handle.dtype)
                layout[owned] = source[tuple(slice(0, n) for n in need)]
            if progress is not None:
                progress(index + 1, total)
        meta = Source(ds, Spec("split", ds.root), resolution=tuple(ds.resolution),
                      units=tuple(ds.units) if any(ds.units) else None, axis_order=ds.axis_order,
                      frame_interval=ds.frame_interval, attrs=dict(ds.attrs))
        with _staged(out, overwrite) as tmp:
            with h5py.File(tmp, "x") as f:
                kwargs = {"fillvalue": fill_value} if fill_value is not None else {}
                d = f.create_virtual_dataset("stack", layout, **kwargs)
                for k, v in _h5_attrs(meta).items():
                    d.attrs[k] = v
        return out
    finally:
        if not isinstance(path, SplitDataset):
            ds.close()
