"""Virtual zarr references (issue 14): a split dataset described as ONE zarr array whose chunks
are byte ranges inside the existing block files, nothing copied.

:func:`virtual_refs` writes a kerchunk-style reference set (version 1) that fsspec's
``ReferenceFileSystem`` serves as a zarr v3 store: a root group and one array ``data``
(the name this package's xarray backend uses) with ``dimension_names`` from
``axis_order`` and the physical metadata as attributes. zarr-python 3 and xarray read it
with no code of this package.

Why zarr v3 metadata (``zarr.json``) and not v2 (``.zarray``): the dimension names are part
of v3 array metadata, which zarr-python 3 and xarray both read; and xarray applies a v2
array's ``fill_value`` as a mask by default, so a v2 reference set would have xarray turn
every pixel equal to the fill value (0) into NaN and the array into floats. The byte order
is the ``bytes`` codec's ``endian``. The price: gzip blocks need the ``numcodecs.zlib`` and
``numcodecs.shuffle`` codecs, which zarr-python 3 registers but the v3 specification does
not list (zarr warns ``ZarrUserWarning`` when it meets them); blosc and uncompressed
blocks use codecs of the specification.

Each chunk reference is ``["{{u}}/0000.h5", offset, length]``: ``u`` is a template, so
the same JSON serves wherever the dataset lies (fsspec's ``template_overrides={"u": ...}``).
Its value is ``"."`` for paths relative to the dataset (the default: resolved against the
reader's working directory, so name the folder with ``template_overrides``), the dataset's
absolute path, or a URL prefix.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .dataset import SplitDataset
from .errors import (
    BlockMismatchError,
    BloscError,
    CorruptBlockError,
    SplitDatasetError,
    VirtualRefsError,
)
from .grid import BlockGrid
from .locks import refuse_if_written
from .opening import load_chunk_index
from .storage import METADATA_FILENAME, BlockRecord, IndexFile, block_name
from .storage.blosc import FrameCheck
from .storage.chunkindex import check_index, hdf5_index
from .storage.codecs import BLOSC_FILTER, COMPRESSOR_CODES
from .storage.indexfile import BlockEntries, blosc_codes

__all__ = ["virtual_refs", "refs_summary", "ARRAY", "TEMPLATE"]

#: the array's name in the reference set (the variable name of the xarray backend)
ARRAY = "data"
#: the template naming the dataset folder in every chunk reference
TEMPLATE = "u"
#: the largest chunk made of a contiguous (unchunked) block: zarr reads whole chunks
CONTIGUOUS_CHUNK_BYTES = 4 << 20
_DEFLATE, _SHUFFLE = 1, 2  # HDF5's own filter ids
#: filter pipelines (HDF5 filter ids, in order) with an exact zarr equivalent
_PIPELINES = {(): "none", (_SHUFFLE,): "shuffle", (_DEFLATE,): "gzip", (_SHUFFLE, _DEFLATE): "shuffle+gzip",
              (BLOSC_FILTER,): "blosc", (_SHUFFLE, BLOSC_FILTER): "shuffle+blosc"}
_BLOSC_SHUFFLE = {0: "noshuffle", 1: "shuffle", 2: "bitshuffle"}
#: errors h5py raises for a damaged file (reported as CorruptBlockError naming the file)
_H5_ERRORS = (OSError, RuntimeError, ValueError, KeyError, TypeError, IndexError, OverflowError)

Progress = Callable[[int, int], Any]


@dataclass
class _Block:
    """What one present block file holds, as the references need it."""

    index: int
    path: Path  #: the block file (in the dataset folder)
    shape: tuple[int, ...]
    dtype: np.dtype
    fill: bytes  #: the HDF5 fill value's bytes
    layout: str  #: "chunked" or "contiguous"
    chunks: tuple[int, ...] | None
    pipeline: tuple[int, ...] = ()
    cd: dict[int, tuple[int, ...]] = field(default_factory=dict)  #: filter id -> cd values (where known)
    #: chunked: (offset in the block, address, stored size) of every stored chunk; contiguous: at
    #: most one entry, the whole array at offset (0, ...), or none if HDF5 never allocated it
    entries: list[tuple[tuple[int, ...], int, int]] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The file's name."""
        return self.path.name

    @property
    def where(self) -> str:
        """The file, as error messages name it."""
        return repr(str(self.path))


def virtual_refs(
    ds: SplitDataset | str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    paths: str = "relative",
    url_prefix: str | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """A kerchunk-style reference set (version 1) describing the whole dataset as one zarr array
    whose chunks are byte ranges inside the block files: no pixel is copied.

    fsspec's ``ReferenceFileSystem`` serves it as a zarr v3 store: a root group holding the
    array ``data``, chunked as the block files are inside (one zarr chunk per HDF5 chunk,
    at its place in the whole array), ``dimension_names`` from ``axis_order`` (the xarray
    backend's names), and as attributes (of the array and the group) the dataset's
    ``attrs`` with ``resolution``, ``units``, ``axis_order`` and ``frame_interval``. Codecs:
    blosc (HDF5 filter 32001) is zarr's ``blosc`` codec, which reads type size, shuffle and
    compressor from each frame's header (blocks may use different blosc settings); gzip is
    ``numcodecs.zlib`` (after ``numcodecs.shuffle`` when HDF5's shuffle filter precedes
    it); uncompressed arrays are plain bytes, a contiguous one referenced frame by frame.
    Chunks never written and blocks missing from the folder have no reference and read as
    the fill value (the blocks' HDF5 fill value, 0 unless a writer set another): a missing
    block is not an error here, as it is for this package's reader. Blocks that overlap
    (``padding``) give the chunks of the region each owns, as the reader reads them; where
    the chunks do not tile those regions (a chunk spanning the overlap) the dataset is refused.

    Blocks are located through ``chunk_index.bin`` where its record is valid for the file,
    else by walking the HDF5 file; every chunk reference is checked to lie inside its file,
    apart from the others, and (blosc) to hold a well-formed frame of the chunk's size.

    Parameters
    ----------
    ds
        The dataset, or its folder.
    out
        Also write the references there as JSON, atomically (a temporary file renamed into
        place). An existing file is refused unless `overwrite`; so is any file of the
        dataset itself (a name inside its folder must end in ``.json``).
    paths
        ``"relative"`` (default): each reference names its block file relative to the
        dataset folder through the template ``u`` = ``"."``, so open the references with
        ``template_overrides={"u": "<the dataset folder or its URL>"}`` (or from inside
        the folder). ``"absolute"``: ``u`` is the dataset's absolute path.
    url_prefix
        The URL of the dataset folder (``"s3://bucket/fish1/raw"``,
        ``"https://host/data/fish1/raw"``) to use for ``u`` instead. zarr reads through an
        asynchronous file system: give fsspec ``remote_options={"asynchronous": True}`` for
        such targets (else fsspec refuses: "target filesystem must have same value of
        asynchronous").
    overwrite
        Replace an existing `out`.
    progress
        Called as ``progress(done, total)`` with the number of blocks examined.

    Returns
    -------
    dict
        ``{"version": 1, "templates": {"u": ...}, "refs": {...}}``: ``zarr.json`` (the group),
        ``data/zarr.json`` (the array), and ``data/c/i/j/...`` ->
        ``["{{u}}/0000.h5", offset, length]`` per chunk.

    Raises
    ------
    VirtualRefsError
        The references could not be exact: blocks with different codecs, layouts or in-file
        chunk shapes; chunks that do not tile the blocks; a chunk stored with a filter
        skipped; a pipeline without a zarr codec (fletcher32, szip, plugins other than
        blosc); a compact array; a block file that is a symbolic link leading outside the
        dataset folder; different fill values where chunks are missing.
    CorruptBlockError, UnsafeDatasetError, BlockMismatchError
        A block file is damaged, is not a self-contained HDF5 array (virtual, external
        storage, reached through a link), or holds another shape or dtype.
    WriterLockedError
        A live writer holds the dataset (its blocks are still being replaced).
    FileExistsError
        `out` exists and `overwrite` is False.
    ValueError
        Bad `paths` / `url_prefix`, or `out` is one of the dataset's own files.

    Examples
    --------
    >>> import numpy as np, split_dataset, tempfile, os, fsspec, zarr
    >>> root = os.path.join(tempfile.mkdtemp(), "ds")
    >>> x = np.arange(6 * 4 * 5, dtype="uint16").reshape(6, 4, 5)
    >>> _ = split_dataset.save(x, root, (2,), resolution=(2.0, 0.5, 0.5), fsync=False)
    >>> refs = split_dataset.virtual_refs(root)
    >>> fs = fsspec.filesystem("reference", fo=refs, template_overrides={"u": root})
    >>> z = zarr.open_group(fs.get_mapper(), mode="r")["data"]
    >>> z.shape, z.metadata.dimension_names, z.attrs["resolution"]
    ((6, 4, 5), ('z', 'y', 'x'), [2.0, 0.5, 0.5])
    >>> bool((z[1:5, 2] == x[1:5, 2]).all())
    True
    """
    if paths not in ("relative", "absolute"):
        raise ValueError(f"paths must be 'relative' or 'absolute', got {paths!r}")
    if url_prefix is not None:
        if paths != "relative":
            raise ValueError("give paths='absolute' or url_prefix, not both")
        if not isinstance(url_prefix, str) or not url_prefix.strip("/"):
            raise ValueError(f"url_prefix must be the URL of the dataset folder, got {url_prefix!r}")
    dataset = ds if isinstance(ds, SplitDataset) else SplitDataset(ds)
    try:
        root = dataset.root
        if url_prefix is not None:
            base = url_prefix.rstrip("/")
        else:
            base = root.as_posix() if paths == "absolute" else "."
        if "{{" in base or "}}" in base:  # fsspec would render it as a jinja template
            raise ValueError(f"the dataset's location {base!r} contains '{{{{' or '}}}}', which fsspec's "
                             "reference templates cannot hold")
        target = _check_out(Path(out), root) if out is not None else None
        refuse_if_written(root, "describe it with references (its block files are still being replaced)")
        blocks = _scan(dataset, progress)
        doc = _document(dataset, blocks, base)
        if target is not None:
            _write(target, doc, overwrite)
        return doc
    finally:
        if dataset is not ds:
            dataset.close()


def refs_summary(refs: dict[str, Any]) -> dict[str, Any]:
    """``{"chunks", "blocks", "bytes"}``: the chunk references of a reference set, the block files
    they name, and the bytes they span.

    Examples
    --------
    >>> refs_summary({"version": 1, "refs": {"data/zarr.json": "{}", "data/c/0": ["{{u}}/0000.h5", 8, 100],
    ...                                      "data/c/1": ["{{u}}/0001.h5", 8, 90]}})
    {'chunks': 2, 'blocks': 2, 'bytes': 190}
    """
    chunks = [v for v in refs.get("refs", {}).values() if isinstance(v, list) and len(v) == 3]
    return {"chunks": len(chunks), "blocks": len({v[0] for v in chunks}), "bytes": sum(int(v[2]) for v in chunks)}


# ----------------------------------------------------------------------------- the output file


def _check_out(out: Path, root: Path) -> Path:
    """`out` as an absolute path, refused if it is a folder or a file the dataset owns."""
    target = Path(os.path.abspath(out))
    if target.is_dir():
        raise ValueError(f"the output {str(out)!r} is a folder; name the JSON file to write")
    for p in (target, target.resolve()):
        if (p == root or root in p.parents) and (not p.name.endswith(".json") or p.name == METADATA_FILENAME):
            raise ValueError(
                f"the output {str(out)!r} would replace a file of the dataset {str(root)!r}; inside the dataset "
                f"folder only a name ending in '.json' (other than {METADATA_FILENAME}) can be written"
            )
    return target


def _write(target: Path, doc: dict[str, Any], overwrite: bool) -> None:
    from .convert.staging import staged

    data = json.dumps(doc, separators=(",", ":")).encode()
    with staged(target, overwrite) as tmp, open(tmp, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


# ----------------------------------------------------------------------------- reading the blocks


def _scan(ds: SplitDataset, progress: Progress | None) -> list[_Block]:
    """Every present block file's layout, codec and chunk places."""
    grid = ds.grid
    missing = set(ds.missing_blocks)
    cindex = load_chunk_index(ds.root, ds.prefix, ds.data_key, ds.dtype) if len(missing) < grid.n_blocks else None
    out = []
    if progress is not None:
        progress(0, grid.n_blocks)
    for index, coords in enumerate(grid.iter_coords()):
        if index not in missing:
            out.append(_scan_block(ds, index, coords, cindex))
        if progress is not None:
            progress(index + 1, grid.n_blocks)
    return out


def _scan_block(ds: SplitDataset, index: int, coords: tuple[int, ...], cindex: IndexFile | None) -> _Block:
    path = ds.root / block_name(index, ds.prefix)
    _check_inside(path, ds.root)
    record = cindex.record(index) if cindex is not None else None
    if record is not None:
        try:
            valid = record.matches(os.stat(path))
        except OSError:
            valid = False  # opening it below says what is wrong
        if valid:
            block = _from_record(index, path, record)
            _check_shape(ds, block, coords)
            return block
    try:
        handle = ds.block(index)
    except SplitDatasetError:
        raise
    except _H5_ERRORS as e:  # h5py's errors for damaged metadata that opening does not translate
        raise CorruptBlockError(path, coords, f"it cannot be opened ({type(e).__name__}: {e})") from e
    try:
        block = _from_hdf5(index, path, coords, handle)
    except SplitDatasetError:
        raise
    except BloscError as e:
        raise CorruptBlockError(path, coords, str(e)) from None
    except _H5_ERRORS as e:
        raise CorruptBlockError(path, coords, f"its HDF5 structure cannot be read ({type(e).__name__}: {e})") from e
    finally:
        handle.close()
    _check_shape(ds, block, coords)
    return block


def _check_inside(path: Path, root: Path) -> None:
    """Refuse a block file that is a symbolic link leading outside the dataset folder: its
    references would name bytes of a file that is not part of the dataset (moved or served
    without it, they would break or read something else)."""
    if not os.path.islink(path):
        return
    real = Path(os.path.realpath(path))
    if root not in real.parents:
        raise VirtualRefsError(
            f"{str(path)!r} is a symbolic link to {str(real)!r}, outside the dataset folder {str(root)!r}; "
            "references to it would leave the dataset (copy the file into the folder instead)"
        )


def _check_shape(ds: SplitDataset, block: _Block, coords: tuple[int, ...]) -> None:
    """The block holds the region the grid gives it (as the reader checks), a growing last block
    of an unfinished acquisition possibly longer."""
    expected = ds.grid.block_shape(coords)
    shape = block.shape
    if block.dtype != ds.dtype:
        raise BlockMismatchError(f"block {coords} ({block.name}): expected {expected} {ds.dtype}, found {shape} "
                                 f"{block.dtype}")
    if shape == expected:
        return
    if (ds.complete is False and coords[0] == ds.grid.grid_shape[0] - 1 and len(shape) == len(expected)
            and shape[1:] == expected[1:] and shape[0] >= expected[0]):
        return
    raise BlockMismatchError(f"block {coords} ({block.name}): expected {expected} {ds.dtype}, found {shape}")


def _from_record(index: int, path: Path, record: BlockRecord) -> _Block:
    """A block from its ``chunk_index.bin`` record (blosc alone; frames validated when indexed)."""
    entries = []
    for offset, (addr, size, mask) in BlockEntries(record.entries, record.shape, record.chunks).items():
        if mask:
            raise _skipped(path, offset, mask)
        entries.append((offset, addr, size))
    itemsize = record.dtype.itemsize
    cd = (2, 2, itemsize, math.prod(record.chunks) * itemsize, -1,
          record.shuffle if record.shuffle >= 0 else 1, record.compressor if record.compressor >= 0 else 0)
    return _Block(index, path, record.shape, record.dtype, record.fill, "chunked", record.chunks, (BLOSC_FILTER,),
                  {BLOSC_FILTER: cd}, entries)


def _from_hdf5(index: int, path: Path, coords: tuple[int, ...], handle: Any) -> _Block:
    """A block from its HDF5 file (opened by the dataset: regular file, hard links, no VDS or external files)."""
    dset = handle.dset
    name = repr(str(path))
    shape = tuple(int(n) for n in dset.shape)
    dtype = dset.dtype
    fill = np.asarray(dset.fillvalue, dtype).tobytes()
    plist = dset.id.get_create_plist()
    layout = plist.get_layout()
    size_of_file = handle.source.size() if handle.source is not None else os.stat(path).st_size
    if layout == h5py.h5d.CONTIGUOUS:
        nbytes = math.prod(shape) * dtype.itemsize
        addr = dset.id.get_offset()
        stored = dset.id.get_storage_size()
        if addr is None:
            if stored:
                raise VirtualRefsError(f"{name}: its contiguous array has {stored} bytes stored but no address")
            return _Block(index, path, shape, dtype, fill, "contiguous", None)  # never written: all fill value
        if stored != nbytes or addr < 0 or addr + nbytes > size_of_file:
            raise CorruptBlockError(path, coords, f"its contiguous array of {nbytes} bytes is stored as {stored} bytes "
                                              f"at byte {addr} of a {size_of_file}-byte file")
        entries = [((0,) * len(shape), int(addr), int(nbytes))] if nbytes else []
        return _Block(index, path, shape, dtype, fill, "contiguous", None, entries=entries)
    if layout != h5py.h5d.CHUNKED:
        what = {h5py.h5d.COMPACT: "compact (stored inside the HDF5 object header)",
                h5py.h5d.VIRTUAL: "a virtual dataset"}.get(layout, f"of HDF5 layout {layout}")
        raise VirtualRefsError(f"{name}: its array is {what}; references can describe chunked or contiguous arrays "
                               "only")
    chunks = tuple(int(c) for c in dset.chunks)
    filters = [plist.get_filter(i) for i in range(plist.get_nfilters())]
    pipeline = tuple(int(f[0]) for f in filters)
    if pipeline not in _PIPELINES:
        raise VirtualRefsError(
            f"{name}: its HDF5 filters {list(pipeline)} have no exact zarr codec; references describe blosc "
            f"(32001), gzip (1), HDF5's shuffle (2) before either, or no filter (found {_filter_names(filters)})"
        )
    if handle.mode == "refused":  # chunks far larger than the array: the reader refuses it too
        raise CorruptBlockError(path, coords, f"{handle.refusal}; refused")
    cd = {int(f[0]): tuple(int(v) for v in f[2]) for f in filters}
    nbytes = math.prod(chunks) * dtype.itemsize
    index_ = hdf5_index(dset)
    for offset, (_, size, mask) in index_.items():
        if mask:
            raise _skipped(path, offset, mask)
        if size <= 0:
            raise CorruptBlockError(path, coords, f"the chunk at {offset} is stored in {size} bytes; a chunk of "
                                                  f"{nbytes} bytes cannot be empty")
        if len(offset) != len(shape) or any(o < 0 or o >= n or o % c for o, n, c in zip(offset, shape, chunks)):
            raise CorruptBlockError(path, coords, f"its chunk index lists a chunk at {offset}, not on the grid of "
                                                  f"{chunks} chunks of the array {shape}")
    compressor = pipeline[-1] if pipeline and pipeline[-1] != _SHUFFLE else None
    # address inside the file, sizes within what the codec can store, no shared bytes (zlib's
    # worst case grows by about 0.03 %: a deflate chunk may exceed the chunk's bytes by that)
    slack = nbytes // 1024 + 64 if compressor == _DEFLATE else 0
    check_index(index_, size_of_file, nbytes, slack)
    if compressor is None:
        for offset, (_, size, _) in index_.items():
            if size != nbytes:
                raise CorruptBlockError(path, coords, f"the unfiltered chunk at {offset} is stored in {size} bytes; "
                                                      f"it holds {nbytes}")
    elif compressor == BLOSC_FILTER:
        _check_frames(handle, index_, FrameCheck(nbytes, dtype.itemsize, *blosc_codes(cd[BLOSC_FILTER])))
    entries = [(tuple(int(o) for o in offset), int(addr), int(size))
               for offset, (addr, size, _) in sorted(index_.items())]
    return _Block(index, path, shape, dtype, fill, "chunked", chunks, pipeline, cd, entries)


def _filter_names(filters: list[Any]) -> str:
    names = []
    for f in filters:
        label = f[3].decode(errors="replace") if isinstance(f[3], bytes) else str(f[3])
        names.append(f"{f[0]} {label}".strip())
    return ", ".join(names) or "none"


def _skipped(path: Path, offset: tuple[int, ...], mask: int) -> VirtualRefsError:
    return VirtualRefsError(
        f"{str(path)!r}: the chunk at {offset} was stored with HDF5 filter mask {mask:#x} (a filter skipped for this "
        "chunk); a zarr array applies one codec pipeline to every chunk, so no reference can describe it "
        "(kerchunk#573 is this problem elsewhere)"
    )


def _check_frames(handle: Any, index: Any, check: FrameCheck) -> None:
    """Each stored chunk is a well-formed blosc frame of the chunk's size: its header and its
    block offsets validated (:class:`FrameCheck`), reading those bytes only."""
    source = handle.source
    assert source is not None  # blosc blocks are opened with their descriptor
    head = bytearray(16)
    for addr, size, _ in index.values():
        if size < 16:
            raise BloscError(f"a blosc frame has at least 16 bytes, the chunk at byte {addr} has {size}")
        source.read_exactly(memoryview(head), addr)
        nblocks = check.header(head, size)[2]
        if nblocks:
            table = bytearray(16 + 4 * nblocks)
            source.read_exactly(memoryview(table), addr)
            check.offsets(table, nblocks, size)


# ----------------------------------------------------------------------------- the reference set


def _document(ds: SplitDataset, blocks: list[_Block], base: str) -> dict[str, Any]:
    grid = ds.grid
    dtype = ds.dtype
    if dtype.kind not in "biufc" or dtype.hasobject or dtype.subdtype is not None:
        raise VirtualRefsError(f"{str(ds.root)!r}: dtype {dtype} has no zarr v3 data type (numbers and booleans only)")
    first = blocks[0] if blocks else None
    for b in blocks[1:]:
        assert first is not None
        if (b.layout, b.pipeline) != (first.layout, first.pipeline):
            raise VirtualRefsError(
                f"{b.where}: {_describe(b)}, expected {_describe(first)} as in {first.name}; one zarr array has one "
                "codec pipeline and one layout for every chunk (rewrite the dataset with `split-dataset convert`)"
            )
        if b.layout == "chunked" and b.chunks != first.chunks:
            raise VirtualRefsError(
                f"{b.where}: in-file chunks {b.chunks}, expected {first.chunks} as in {first.name}; a zarr array has "
                "one chunk shape (an edge block whose chunks were clipped to its shape cannot be described)"
            )
    if first is None or first.layout == "chunked":
        chunks = first.chunks if first is not None and first.chunks else tuple(max(1, n) for n in grid.shape_block)
        for axis, (c, step) in enumerate(zip(chunks, grid.shape_block)):
            if grid.grid_shape[axis] > 1 and step % c:
                where = first.where if first is not None else repr(str(ds.root))
                larger = " (chunks larger than the block, as PyTables chose for the old package)" if c > step else ""
                raise VirtualRefsError(
                    f"{where}: in-file chunks {chunks} do not tile the blocks {grid.shape_block}: along axis {axis} "
                    f"blocks start every {step} elements, not a multiple of the chunk's {c}{larger}; "
                    "`split-dataset convert` rewrites it with chunks that do"
                )
    else:
        chunks = _contiguous_chunks(grid, dtype.itemsize)
    refs: dict[str, Any] = {}
    fill = _fill(ds, blocks, grid, chunks)
    name_ok = all("{" not in b.name and "}" not in b.name for b in blocks)
    if not name_ok:
        raise VirtualRefsError(f"{str(ds.root)!r}: block file names with '{{' or '}}' cannot be templated references")
    attrs = _attributes(ds)
    array_meta = {
        "zarr_format": 3,
        "node_type": "array",
        "shape": list(grid.shape),
        "data_type": dtype.name,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunks)}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": _fill_json(fill, dtype),
        "codecs": _codecs(first, dtype, ds),
        "attributes": attrs,
        "dimension_names": _dims(ds.axis_order, grid.ndim),
        "storage_transformers": [],
    }
    # the array's metadata also consolidated into the group's (zarr-python 3's inline form, which
    # other readers may ignore): xarray opens it with one read and without a warning
    refs["zarr.json"] = json.dumps({"zarr_format": 3, "node_type": "group", "attributes": attrs,
                                    "consolidated_metadata": {"kind": "inline", "must_understand": False,
                                                              "metadata": {ARRAY: array_meta}}})
    refs[f"{ARRAY}/zarr.json"] = json.dumps(array_meta)
    for b in blocks:
        _chunk_refs(b, grid, chunks, dtype.itemsize, refs)
    return {"version": 1, "templates": {TEMPLATE: base}, "refs": refs}


def _describe(b: _Block) -> str:
    if b.layout == "contiguous":
        return "contiguous (unchunked, no filter)"
    return f"chunked, filters {list(b.pipeline)} ({_PIPELINES[b.pipeline]})"


def _contiguous_chunks(grid: BlockGrid, itemsize: int) -> tuple[int, ...]:
    """The chunk shape of contiguous blocks: whole along the trailing axes that no block splits;
    along the axis before them, the largest step that every block's owned extent is a multiple
    of (the whole axis if no axis is split), cut down to a divisor of it that keeps a chunk
    within :data:`CONTIGUOUS_CHUNK_BYTES`; 1 on the others. Each such chunk is one byte range
    of its block, whatever the block's (padding included) extent along the split axes."""
    ndim = grid.ndim
    k = ndim
    while k > 0 and grid.grid_shape[k - 1] == 1:
        k -= 1
    chunks = [1] * ndim
    for a in range(k, ndim):
        chunks[a] = max(1, grid.shape[a])
    a = max(k - 1, 0)
    step = 0
    for i in range(grid.grid_shape[a]):
        step = math.gcd(step, grid.owned_stop(a, i) - grid.block_start(a, i))
    limit = max(1, CONTIGUOUS_CHUNK_BYTES // (math.prod(chunks[a + 1:]) * itemsize))
    chunks[a] = _largest_divisor(max(1, step), limit)
    return tuple(chunks)


def _largest_divisor(n: int, limit: int) -> int:
    """The largest divisor of `n` that is at most `limit` (>= 1).

    Examples
    --------
    >>> _largest_divisor(100, 30), _largest_divisor(7, 5), _largest_divisor(12, 12)
    (25, 1, 12)
    """
    if n <= limit:
        return n
    best, i = 1, 1
    while i * i <= n:
        if n % i == 0:
            best = max([best] + [d for d in (i, n // i) if d <= limit])
        i += 1
    return best


def _chunk_refs(b: _Block, grid: BlockGrid, chunks: tuple[int, ...], itemsize: int, refs: dict[str, Any]) -> None:
    """The references of block `b`'s chunks that lie in the region it owns (padding overlaps are
    read from the next block, as the reader does)."""
    coords = grid.coords(b.index)
    start = tuple(grid.block_start(a, c) for a, c in enumerate(coords))
    stop = tuple(grid.owned_stop(a, c) for a, c in enumerate(coords))
    url = f"{{{{{TEMPLATE}}}}}/{b.name}"
    prefix = f"{ARRAY}/c/"
    if b.layout == "chunked":
        for offset, addr, size in b.entries:
            where = [s + o for s, o in zip(start, offset)]
            if all(w < e for w, e in zip(where, stop)):
                refs[prefix + "/".join(str(w // c) for w, c in zip(where, chunks))] = [url, addr, size]
        return
    if not b.entries:
        return
    addr0 = b.entries[0][1]
    strides = [math.prod(b.shape[a + 1:]) * itemsize for a in range(len(b.shape))]
    length = math.prod(chunks) * itemsize
    ranges = [range(0, min(e - s, n), c) for s, e, n, c in zip(start, stop, b.shape, chunks)]
    for offset in itertools.product(*ranges):
        addr = addr0 + sum(o * st for o, st in zip(offset, strides))
        refs[prefix + "/".join(str((s + o) // c) for s, o, c in zip(start, offset, chunks))] = [url, addr, length]


def _fill(ds: SplitDataset, blocks: list[_Block], grid: BlockGrid, chunks: tuple[int, ...]) -> bytes:
    """The zarr fill value: the HDF5 fill value of the blocks whose owned chunks are not all stored
    (these must agree), else that of the first block; zeros without blocks."""
    wanted: dict[bytes, str] = {}
    for b in blocks:
        coords = grid.coords(b.index)
        owned = [grid.owned_stop(a, c) - grid.block_start(a, c) for a, c in enumerate(coords)]
        if b.layout == "contiguous":
            complete = bool(b.entries)
        else:
            assert b.chunks is not None
            need = math.prod(-(-n // c) for n, c in zip(owned, b.chunks))
            have = sum(all(o < n for o, n in zip(offset, owned)) for offset, _, _ in b.entries)
            complete = have >= need
        if not complete:
            wanted.setdefault(b.fill, b.where)
    if len(wanted) > 1:
        (f1, n1), (f2, n2) = list(wanted.items())[:2]
        raise VirtualRefsError(
            f"{n2}: its unwritten chunks read as fill value {np.frombuffer(f2, ds.dtype)[0].item()!r}, those of "
            f"{n1} as {np.frombuffer(f1, ds.dtype)[0].item()!r}; a zarr array has one fill value"
        )
    if wanted:
        return next(iter(wanted))
    return blocks[0].fill if blocks else bytes(ds.dtype.itemsize)


def _fill_json(fill: bytes, dtype: np.dtype) -> Any:
    value = np.frombuffer(fill, dtype)[0]
    if dtype.kind == "b":
        return bool(value)
    if dtype.kind in "iu":
        return int(value)
    if dtype.kind == "c":
        return [_float_json(value.real), _float_json(value.imag)]
    return _float_json(value)


def _float_json(v: Any) -> Any:
    v = float(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    return v


def _codecs(first: _Block | None, dtype: np.dtype, ds: SplitDataset) -> list[dict[str, Any]]:
    """zarr v3 codecs decoding the blocks' HDF5 filter pipeline."""
    if dtype.itemsize == 1:
        out: list[dict[str, Any]] = [{"name": "bytes"}]
    else:
        order = dtype.byteorder if dtype.byteorder in "<>" else ("<" if sys.byteorder == "little" else ">")
        out = [{"name": "bytes", "configuration": {"endian": "little" if order == "<" else "big"}}]
    if first is None:
        return out
    for fid in first.pipeline:
        cd = first.cd.get(fid, ())
        if fid == _SHUFFLE:
            size = cd[0] if cd and cd[0] > 0 else dtype.itemsize  # HDF5 sets it to the item size
            out.append({"name": "numcodecs.shuffle", "configuration": {"elementsize": int(size)}})
        elif fid == _DEFLATE:
            out.append({"name": "numcodecs.zlib", "configuration": {"level": int(cd[0]) if cd else 4}})
        else:  # blosc: decoding takes every parameter from each frame's header; these describe the first block
            shuffle, compressor = blosc_codes(cd)
            clevel = cd[4] if len(cd) > 4 and 0 <= cd[4] <= 9 else _metadata_clevel(ds)
            typesize = cd[2] if len(cd) > 2 and 0 < cd[2] <= 255 else min(dtype.itemsize, 255)
            out.append({"name": "blosc", "configuration": {
                "cname": COMPRESSOR_CODES.get(compressor, "blosclz"), "clevel": int(clevel),
                "shuffle": _BLOSC_SHUFFLE.get(shuffle, "shuffle"), "typesize": int(typesize), "blocksize": 0}})
    return out


def _metadata_clevel(ds: SplitDataset) -> int:
    """The blosc level ``stack_metadata.json`` records (a block's record in ``chunk_index.bin``
    does not keep it; it does not matter for decoding), else 5."""
    comp = ds.metadata.get("compression")
    level = comp.get("clevel") if isinstance(comp, dict) else None
    return level if type(level) is int and 0 <= level <= 9 else 5


def _dims(axis_order: str, ndim: int) -> list[str]:
    """The dimension names of the xarray backend: the letters of `axis_order`, a repeated letter
    with its axis number appended, ``dim_<i>`` where the order does not fit."""
    letters = list(axis_order) if len(axis_order) == ndim else [f"dim_{i}" for i in range(ndim)]
    return [c if letters.count(c) == 1 else f"{c}{i}" for i, c in enumerate(letters)]


def _attributes(ds: SplitDataset) -> dict[str, Any]:
    """The dataset's attrs, then its physical metadata (these win), as ``convert`` writes attributes."""
    from .convert.attributes import RESERVED, reserved_attrs
    from .convert.sources import Source
    from .convert.spec import Spec

    meta = Source(ds, Spec("split", ds.root), resolution=tuple(ds.resolution),
                  units=tuple(ds.units) if any(ds.units) else None, axis_order=ds.axis_order,
                  frame_interval=ds.frame_interval)
    attrs = {str(k): v for k, v in dict(ds.attrs).items() if k not in RESERVED}
    attrs.update(reserved_attrs(meta))
    return attrs
