"""Writing a source to each kind of destination, a block or a region at a time.

One writer per kind (split dataset, HDF5, ``.npy``, zarr), each into a staged temporary
path (:func:`~split_dataset.convert.staging.staged`). Memory stays bounded: a split
dataset is written one block file at a time by :func:`split_dataset.save`, the other
kinds one chunk-aligned region of about ``REGION_BYTES`` at a time.
"""

from __future__ import annotations

from typing import Any

import h5py
import hdf5plugin  # noqa: F401  (registers the blosc filter, for blosc-compressed HDF5 destinations)
import numpy as np

from ..grid import BlockGrid
from ..storage import Codec, default_chunks
from ..writer import DEFAULT_COMPRESSION, default_shape_block, make_metadata, save
from .attributes import RESERVED, h5_attrs, reserved_attrs
from .omezarr import write_ome_zarr
from .sources import Source, import_zarr
from .spec import Progress, Spec
from .staging import staged

__all__ = ["REGION_BYTES", "write"]

#: Bytes copied at a time to HDF5, .npy and zarr destinations (rounded to their chunks).
REGION_BYTES = 64 << 20


def _full_block(block: tuple[int | None, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(max(1, min(b, s) if b is not None else s) for b, s in zip(block, shape))


def _copy_regions(source: Source, out: Any, align: tuple[int, ...] | None, progress: Progress | None) -> None:
    """Copy `source` into `out` a region of about 64 MiB at a time, aligned to `align` (out's chunks)."""
    shape = source.shape
    if 0 in shape:
        if progress is not None:
            progress(0, 0)
        return
    region = default_shape_block(shape, source.dtype.itemsize, REGION_BYTES)
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
    with staged(dst.path, overwrite) as tmp:
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
    attrs = h5_attrs(source)
    inner = dst.inner or "/stack"
    with staged(dst.path, overwrite) as tmp, h5py.File(tmp, "x") as f:
        d = f.create_dataset(inner, shape=shape, dtype=source.dtype, chunks=chunks, **kwargs)
        for k, v in attrs.items():
            d.attrs[k] = v
        _copy_regions(source, d, chunks, progress)


def _write_npy(source: Source, dst: Spec, block: tuple[int | None, ...] | None, compression: Any,
               overwrite: bool, progress: Progress | None) -> None:
    if block is not None:
        raise ValueError("a .npy file has no blocks; a block shape applies to split dataset, HDF5 and zarr "
                         "destinations")
    if compression is not None and Codec.parse(compression).name != "none":
        raise ValueError(f"a .npy file cannot be compressed; got compression {compression!r}")
    with staged(dst.path, overwrite) as tmp:
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
    zarr = import_zarr()
    codec = Codec.parse(compression) if compression is not None else None
    shape = source.shape
    chunks: Any = _full_block(block, shape) if block is not None else "auto"
    attrs = {k: v for k, v in source.attrs.items() if k not in RESERVED}
    attrs.update(reserved_attrs(source))
    names = list(source.axis_order) if source.axis_order else None
    name = (dst.inner or "").strip("/")
    with staged(dst.path, overwrite) as tmp:
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


def _write_ome(source: Source, dst: Spec, block: tuple[int | None, ...] | None, compression: Any,
               overwrite: bool, progress: Progress | None, ngff: str | None = None, bdv: bool = False) -> None:
    if block is not None:
        raise ValueError("an OME-Zarr image is chunked by planes, with shards following the source's blocks; "
                         "a block shape does not apply to it")
    write_ome_zarr(source, dst, compression, overwrite, progress, ngff=ngff or "0.5", bdv=bdv)


_WRITERS = {"split": _write_split, "hdf5": _write_hdf5, "npy": _write_npy, "zarr": _write_zarr,
            "omezarr": _write_ome}


def write(source: Source, dst: Spec, block: tuple[int | None, ...] | None, compression: Any, overwrite: bool,
          progress: Progress | None, *, ngff: str | None = None, bdv: bool = False) -> None:
    """Write `source` to `dst` with the writer of ``dst.kind`` (arguments checked by :func:`convert`).

    `block` holds one entry per axis (None: the whole axis), or is None for the default.
    `ngff` or `bdv` make a zarr destination an OME-Zarr image (the default for ``.ome.zarr``).

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from split_dataset.convert import Source, parse_spec
    >>> path = os.path.join(tempfile.mkdtemp(), "x.npy")
    >>> x = np.arange(6).reshape(2, 3)
    >>> write(Source(x, parse_spec(path, writing=True)), parse_spec(path, writing=True), None, None, False, None)
    >>> np.load(path).tolist()
    [[0, 1, 2], [3, 4, 5]]
    """
    if dst.kind in ("zarr", "omezarr") and (ngff is not None or bdv or dst.kind == "omezarr"):
        _write_ome(source, dst, block, compression, overwrite, progress, ngff, bdv)
        return
    if ngff is not None or bdv:
        raise ValueError(f"NGFF options apply to zarr destinations; {str(dst)!r} is a {dst.kind} destination")
    _WRITERS[dst.kind](source, dst, block, compression, overwrite, progress)
