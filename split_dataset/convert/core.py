""":func:`convert`: copy an array from one storage to another, block by block, with its metadata."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..remote.store import is_url
from ..storage import Codec
from ..write import check_dtype
from .sinks import write
from .sources import Source, open_source, open_url_source
from .spec import Progress, Spec, parse_spec
from .staging import same_or_inside

__all__ = ["Converted", "convert"]


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



def convert(
    src: str | os.PathLike[str] | Spec | Source,
    dst: str | os.PathLike[str] | Spec,
    shape_block: str | int | Sequence[int | None] | None = None,
    compression: Any = None,
    *,
    overwrite: bool = False,
    progress: Progress | None = None,
    ngff: str | None = None,
    bdv: bool = False,
    storage_options: dict[str, Any] | None = None,
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
    ngff
        Write a zarr destination as an OME-Zarr image of this OME-NGFF version: ``"0.5"``
        (zarr v3, sharded; the default for a name ending in ``.ome.zarr``) or ``"0.4"``
        (zarr v2). See :mod:`split_dataset.convert.omezarr` for what is written: axes
        with units, a 2x mean pyramid down to planes of 512 pixels, a display window.
    bdv
        Write OME-NGFF 0.4 as full 5-D (t, c, z, y, x), the form BigDataViewer reads.
    storage_options
        fsspec options for a source or destination given as a URL (``s3://``, ``https://``):
        a URL source is a split dataset read by range requests; a URL destination is a
        split dataset written to a local staging folder, then uploaded, each file as one
        object and ``stack_metadata.json`` last (:func:`split_dataset.remote.upload.upload`).

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
    >>> convert(os.path.join(d, "ds"), os.path.join(d, "x.ome.zarr")).destination.kind  # OME-NGFF 0.5
    'omezarr'
    """
    if is_url(dst):
        return _convert_to_url(src, str(dst), shape_block, compression, overwrite, progress, storage_options)
    target = dst if isinstance(dst, Spec) else parse_spec(dst, writing=True)
    if is_url(src):
        source = open_url_source(str(src), storage_options)
    else:
        source = src if isinstance(src, Source) else open_source(src)
    try:
        if same_or_inside(source.spec.path, target.path):  # the same file, or replacing what holds the source
            raise ValueError(f"the source {str(source.spec)!r} and the destination {str(target)!r} overlap")
        _check_dtype(source.dtype)
        block = _parse_block(shape_block, source.shape)
        if compression is not None:
            Codec.parse(compression)  # an unknown codec fails before anything is written
        write(source, target, block, compression, overwrite, progress, ngff=ngff, bdv=bdv)
        carried = tuple(source.metadata())
        dropped = carried if target.kind == "npy" else ()
        inner = target.inner or ("/stack" if target.kind == "hdf5" else None)
        kind = "omezarr" if target.kind == "zarr" and (ngff is not None or bdv) else target.kind
        return Converted(Spec(kind, target.path, inner), source.shape, source.dtype,
                         () if dropped else carried, dropped)
    finally:
        if not isinstance(src, Source):
            source.close()


def _convert_to_url(src: Any, url: str, shape_block: Any, compression: Any, overwrite: bool,
                    progress: Progress | None, storage_options: dict[str, Any] | None) -> Converted:
    """A split dataset written to a local staging folder by :func:`convert`, then uploaded to `url`."""
    from ..remote.upload import save_remote

    result: list[Converted] = []

    def write(folder: Path) -> None:
        result.append(convert(src, folder, shape_block, compression, progress=progress,
                              storage_options=storage_options))

    save_remote(write, url, storage_options, overwrite=overwrite)
    done = result[0]
    return Converted(Spec("split", Path(url), None), done.shape, done.dtype, done.carried, done.dropped)


def _check_dtype(dtype: np.dtype) -> None:
    try:
        check_dtype(dtype)  # the one rule for what can be stored
    except TypeError:
        raise TypeError(f"only numeric arrays can be converted; dtype {dtype} is not supported") from None


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
