"""Opening an array to convert: :class:`Source` and :func:`open_source`, one reader per kind.

HDF5 sources are read through the storage layer (:class:`~split_dataset.convert.h5source.HDF5Array`):
every blosc frame is validated before c-blosc sees it, as for the blocks of a split dataset.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..dataset import SplitDataset
from ..errors import SourceError
from ..storage.hdf5 import open_readonly
from .attributes import attrs_from
from .h5source import HDF5Array
from .omezarr import is_ome_group, open_ome_zarr
from .spec import Spec, parse_spec

__all__ = ["Source", "import_zarr", "open_source", "open_url_source"]


@dataclass
class Source:
    """An array opened for reading by :func:`open_source`, with the metadata found beside it.

    Indexing (``source[slices]``) returns a numpy array; ``shape``, ``dtype``, ``ndim``,
    ``nbytes`` are the array's, so a Source can be passed to :func:`split_dataset.save`.
    Close it (or use it as a context manager) to close the underlying file.

    Attributes
    ----------
    array
        The underlying array: a SplitDataset, an :class:`~split_dataset.convert.h5source.HDF5Array`
        (an h5py Dataset read with every blosc frame validated), a memory-mapped numpy array
        or a zarr Array.
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
        dtype: np.dtype = np.dtype(self.array.dtype)
        return dtype

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

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Source {self.kind} {str(self.spec)!r} shape={self.shape} dtype={self.dtype}>"


def _listing(names: Sequence[str], limit: int = 8) -> str:
    if not names:
        return "no datasets"
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _h5_datasets(f: h5py.File) -> list[str]:
    names: list[str] = []
    f.visititems(lambda name, obj: names.append("/" + name) if isinstance(obj, h5py.Dataset) else None)
    return names


def _open_hdf5(spec: Spec) -> Source:
    if not spec.path.exists():
        raise FileNotFoundError(f"no such file: {str(spec.path)!r}")
    try:
        f = open_readonly(spec.path)  # refuses FIFOs and devices, which would block the open
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
        physical, attrs, skipped = attrs_from(dict(obj.attrs.items()), obj.ndim, hdf5=True)
        array = HDF5Array(f, obj)
        return Source(array, Spec("hdf5", spec.path, obj.name), attrs=attrs, chunks=obj.chunks,
                      skipped_attrs=skipped, _closer=array.close, **physical)
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


def import_zarr() -> Any:
    """The ``zarr`` module, or an ImportError saying how to install it.

    Examples
    --------
    >>> import_zarr().__name__  # doctest: +SKIP
    'zarr'
    """
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
    zarr = import_zarr()
    if not spec.path.exists():
        raise FileNotFoundError(f"no such zarr store: {str(spec.path)!r}")
    try:
        node = zarr.open(store=str(spec.path), mode="r", path=(spec.inner or "").strip("/") or None)
    except (FileNotFoundError, KeyError, ValueError) as e:
        where = f"no array {spec.inner!r} in" if spec.inner else "cannot read"
        raise SourceError(f"{where} the zarr store {str(spec.path)!r}: {e}") from e
    except Exception as e:  # zarr's metadata parsing lets TypeError and others out of damaged zarr.json files
        raise SourceError(f"cannot read the zarr store {str(spec.path)!r}: damaged metadata "
                          f"({type(e).__name__}: {' '.join(str(e).split())[:300]})") from e
    if not hasattr(node, "shape") and is_ome_group(node.attrs):
        return open_ome_zarr(spec.path, node)
    if not hasattr(node, "shape"):
        names = _zarr_arrays(node)
        if spec.inner is not None or len(names) != 1:
            where = f"{spec.inner!r} in {str(spec.path)!r}" if spec.inner else repr(str(spec.path))
            what = f"{where} is a group"
            raise SourceError(f"{what} holding {len(names)} arrays; name one as {spec.path}:/path ({_listing(names)})")
        inner = names[0]
        node = zarr.open(store=str(spec.path), mode="r", path=inner.strip("/"))
        spec = Spec("zarr", spec.path, inner)
    if node.ndim == 0:
        raise SourceError(f"{str(spec)!r} is a scalar; there is no array to convert")
    physical, attrs, skipped = attrs_from(dict(node.attrs), node.ndim, hdf5=False)
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


def open_url_source(url: str, storage_options: dict[str, Any] | None = None) -> Source:
    """A split dataset read by URL (``s3://``, ``https://``...) as a :class:`Source`.

    Examples
    --------
    >>> src = open_url_source("s3://lab-archive/fish1/raw", {"anon": True})  # doctest: +SKIP
    """
    ds = SplitDataset(url, storage_options=storage_options)
    return Source(
        ds, Spec("split", Path(ds.root.name)), resolution=tuple(ds.resolution),
        units=tuple(ds.units) if any(ds.units) else None, axis_order=ds.axis_order,
        frame_interval=ds.frame_interval, attrs=dict(ds.attrs), chunks=ds.shape_block, _closer=ds.close,
    )


def open_source(spec: str | os.PathLike[str] | Spec) -> Source:
    """Open an array for reading, whatever it is stored in, with its metadata.

    Parameters
    ----------
    spec
        A split dataset folder, ``file.h5:/path/in/file`` (the path may be left out when
        the file holds one dataset), a ``.npy`` file or a zarr array (``x.zarr``,
        ``store.zarr:/group/array``) or an OME-Zarr image (``image.ome.zarr``: level 0, with the
        physical metadata of its axes).

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
    opener = {"split": _open_split, "hdf5": _open_hdf5, "npy": _open_npy, "zarr": _open_zarr,
              "omezarr": _open_zarr}[parsed.kind]
    return opener(parsed)

