"""Peer systems the new package is compared with: raw h5py on block files, one chunked
HDF5 file, and zarr v3. Every read returns a freshly allocated array, as ``dset[sel]`` does."""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin
import numpy as np

Index = tuple[int | slice, ...]

BLOSC_FILTER_ID = 32001
_BLOSC_CNAMES = {0: "blosclz", 1: "lz4", 2: "lz4hc", 3: "snappy", 4: "zlib", 5: "zstd"}
_SHUFFLE_NAMES = {0: "noshuffle", 1: "shuffle", 2: "bitshuffle"}
DATA_KEYS = ("stack_4D", "stack", "stack_3D")


@dataclass(frozen=True)
class Codec:
    """A blosc configuration and HDF5 chunk shape, as found in a block file."""

    cname: str
    clevel: int
    shuffle: int  # 0 none, 1 byte, 2 bit (hdf5plugin / c-blosc numbering)
    chunks: tuple[int, ...] | None

    def h5py_kwargs(self) -> dict[str, Any]:
        blosc = hdf5plugin.Blosc(cname=self.cname, clevel=self.clevel, shuffle=self.shuffle)  # type: ignore[arg-type]
        return {"chunks": self.chunks, **blosc}

    def zarr_codec(self, typesize: int) -> Any:
        from zarr.codecs import BloscCodec

        shuffle: Any = _SHUFFLE_NAMES[self.shuffle]
        cname: Any = self.cname
        return BloscCodec(cname=cname, clevel=self.clevel, shuffle=shuffle, typesize=typesize)

    def describe(self) -> dict[str, Any]:
        d = asdict(self)
        d["shuffle"] = _SHUFFLE_NAMES[self.shuffle]
        return d


def find_key(f: h5py.File) -> str:
    for key in DATA_KEYS:
        if key in f:
            return key
    raise KeyError(f"{f.filename}: none of {DATA_KEYS} found")


def open_h5(path: Path) -> h5py.File:
    """Open read-only without HDF5 file locking (as the new package does); if this process
    already holds the file with locking on, HDF5 insists on the same flags."""
    try:
        return h5py.File(path, "r", locking=False)
    except OSError as e:
        if "locking flag" not in str(e):
            raise
        return h5py.File(path, "r")


def detect_codec(block_file: Path) -> tuple[Codec, dict[str, Any]]:
    """Read the blosc settings (filter 32001) and chunk shape of one block file."""
    with open_h5(block_file) as f:
        dset = f[find_key(f)]
        filters = {str(k): list(v) for k, v in dset._filters.items()}
        chunks = dset.chunks
        cd = filters.get(str(BLOSC_FILTER_ID))
    if cd is None:
        raise ValueError(f"{block_file}: not blosc-compressed (filters {filters}); peers need a blosc reference")
    # cd_values: reserved, version, typesize, buffer size, clevel, shuffle[, compressor code]
    cname = _BLOSC_CNAMES[cd[6]] if len(cd) > 6 else "blosclz"
    codec = Codec(cname=cname, clevel=int(cd[4]), shuffle=int(cd[5]), chunks=chunks)
    return codec, {"filters": filters, "chunks": chunks}


# One axis of a selection, normalised: ("int", i), ("slice", start, stop, step > 0) or
# ("arr", sorted unique indices). Boolean masks become index arrays (np.flatnonzero).
Axis = tuple[Any, ...]


def plan(index: Index, shape: tuple[int, ...]) -> list[Axis]:
    """Normalise an orthogonal index (ints, slices with a positive step, at most one 1-D
    index list or boolean mask) to one entry per axis."""
    out: list[Axis] = []
    for ax, n in enumerate(shape):
        item = index[ax] if ax < len(index) else slice(None)
        if isinstance(item, slice):
            start, stop, step = item.indices(n)
            if step < 1:
                raise IndexError("only positive steps are supported")
            out.append(("slice", start, max(start, stop), step))
        elif isinstance(item, (list, np.ndarray)):
            arr = np.asarray(item)
            if arr.dtype == bool:
                arr = np.flatnonzero(arr)
            arr = np.unique(arr.astype(np.int64) % n)
            out.append(("arr", arr))
        else:
            i = int(item) + (n if int(item) < 0 else 0)
            out.append(("int", i))
    return out


def _length(a: Axis) -> int:
    if a[0] == "int":
        return 1
    if a[0] == "arr":
        return len(a[1])
    _, start, stop, step = a
    return len(range(start, stop, step))


def result_shape(index: Index, shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(_length(a) for a in plan(index, shape) if a[0] != "int")


def _h5_sel(a: Axis) -> Any:
    """Source selection for a whole-dataset read: ints as length-1 slices (h5py's read_direct
    is ~100x slower with int selections); index arrays stay arrays (see ``_read_part``)."""
    if a[0] == "int":
        return slice(a[1], a[1] + 1)
    if a[0] == "arr":
        return a[1]
    return slice(a[1], a[2], a[3])


def _axis_pieces(a: Axis, b: int) -> list[tuple[int, Any, slice]]:
    """(block coordinate, local source selection, destination slice) for every block of
    size `b` that axis selection `a` touches."""
    if a[0] == "int":
        i = a[1]
        return [(i // b, slice(i % b, i % b + 1), slice(0, 1))]
    if a[0] == "arr":
        arr = a[1]
        if not len(arr):
            return []
        pieces = []
        for c in np.unique(arr // b):
            p0, p1 = np.searchsorted(arr, [c * b, (c + 1) * b])
            pieces.append((int(c), arr[p0:p1] - c * b, slice(int(p0), int(p1))))
        return pieces
    _, start, stop, step = a
    if stop <= start:
        return []
    last = start + (len(range(start, stop, step)) - 1) * step
    pieces = []
    for c in range(start // b, last // b + 1):
        lo, hi = max(start, c * b), min(stop, (c + 1) * b)
        k0, k1 = -(-(lo - start) // step), -(-(hi - start) // step)
        if k1 <= k0:
            continue
        first = start + k0 * step - c * b
        pieces.append((c, slice(first, first + (k1 - k0 - 1) * step + 1, step), slice(k0, k1)))
    return pieces


def new_output(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A fresh result array per read, as h5py's ``dset[sel]`` and zarr's ``arr[sel]`` allocate
    (and as ``SplitDataset.__getitem__`` does): the peers pay for the allocation too."""
    return np.empty(shape, dtype)


def _cover(src: tuple[Any, ...]) -> tuple[tuple[slice, ...], tuple[Any, ...] | None]:
    """The step-1 hyperslab covering a selection and the in-memory index that picks the
    selection out of it (None if the selection is a step-1 hyperslab already)."""
    if all(isinstance(s, slice) and s.step in (None, 1) for s in src):
        return src, None  # type: ignore[return-value]
    cover, rest = [], []
    for s in src:
        if isinstance(s, slice):
            cover.append(slice(s.start, s.stop))
            rest.append(slice(None, None, s.step))
        else:
            lo = int(s[0])
            cover.append(slice(lo, int(s[-1]) + 1))
            rest.append(s - lo)
    return tuple(cover), tuple(rest)


def _read_part(dset: Any, full: np.ndarray, src: tuple[Any, ...], dst: tuple[slice, ...]) -> None:
    """``full[dst] = dset[src]``: step-1 hyperslabs straight into `full` with ``read_direct``;
    steps and index lists as the covering step-1 hyperslab, then picked in memory (HDF5's own
    strided and point selections are ~20-40x slower on these patterns)."""
    cover, rest = _cover(src)
    if rest is None:
        dset.read_direct(full, cover, dst)
        return
    tmp = np.empty(tuple(s.stop - s.start for s in cover), full.dtype)
    dset.read_direct(tmp, cover)
    picked = tmp
    for ax, r in enumerate(rest):  # one axis at a time: orthogonal, like the split dataset
        if not (isinstance(r, slice) and r.step in (None, 1)):
            picked = picked[(slice(None),) * ax + (r,)]
    full[dst] = picked


def _read_blocks(dsets: Any, grid: tuple[int, ...], block: tuple[int, ...], index: Index,
                 shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    norm = plan(index, shape)
    out = new_output(tuple(_length(a) for a in norm if a[0] != "int"), dtype)
    full = out.reshape(tuple(_length(a) for a in norm))  # int axes as length 1, same memory
    for combo in itertools.product(*(_axis_pieces(a, b) for a, b in zip(norm, block))):
        coords = tuple(c for c, _, _ in combo)
        flat = int(np.ravel_multi_index(coords, grid))
        _read_part(dsets[flat], full, tuple(src for _, src, _ in combo), tuple(dst for _, _, dst in combo))
    return out


class H5Blocks:
    """Raw h5py on a split-dataset folder: per touched block ``read_direct`` of the block's part
    (steps and index lists: the covering step-1 hyperslab, picked in memory, see ``_read_part``).

    ``keep_open=True``: every block file is opened by the constructor and stays open (warm).
    ``keep_open=False``: each read opens the block files it needs, reads, closes them (cold).
    """

    name = "h5py blocks"

    def __init__(self, folder: Path, keep_open: bool = True) -> None:
        meta = json.loads((folder / "stack_metadata.json").read_text())
        self.shape: tuple[int, ...] = tuple(meta["shape_full"])
        self.block: tuple[int, ...] = tuple(b if b is not None else s for b, s in zip(meta["shape_block"], self.shape))
        self.grid = tuple(-(-s // b) for s, b in zip(self.shape, self.block))
        self.paths = sorted(p for p in folder.glob("*.h5") if p.stem[-4:].isdigit())
        if len(self.paths) != int(np.prod(self.grid)):
            raise ValueError(f"{folder}: {len(self.paths)} block files for a grid of {self.grid}")
        self.keep_open = keep_open
        self.files: list[h5py.File] = []
        self.dtype: np.dtype | None = None
        if keep_open:
            self.files = [open_h5(p) for p in self.paths]
            self.dsets = [f[find_key(f)] for f in self.files]
            self.dtype = self.dsets[0].dtype

    def read(self, index: Index) -> np.ndarray:
        if self.keep_open:
            return _read_blocks(self.dsets, self.grid, self.block, index, self.shape, self.dtype)  # type: ignore[arg-type]
        norm = plan(index, self.shape)
        combos = itertools.product(*(_axis_pieces(a, b) for a, b in zip(norm, self.block)))
        needed = sorted({int(np.ravel_multi_index(tuple(c for c, _, _ in combo), self.grid)) for combo in combos})
        files = {i: open_h5(self.paths[i]) for i in needed}
        try:
            dsets = {i: f[find_key(f)] for i, f in files.items()}
            dtype = next(iter(dsets.values())).dtype
            return _read_blocks(dsets, self.grid, self.block, index, self.shape, dtype)
        finally:
            for f in files.values():
                f.close()

    def close(self) -> None:
        for f in self.files:
            f.close()


def write_h5_blocks(data: np.ndarray, folder: Path, block: tuple[int, ...], codec: Codec) -> None:
    """Write `data` as a split dataset with plain h5py (key ``stack_4D``, same codec as the new package)."""
    folder.mkdir(parents=True)
    grid = tuple(-(-s // b) for s, b in zip(data.shape, block))
    for flat, coords in enumerate(itertools.product(*(range(g) for g in grid))):
        sel = tuple(slice(c * b, (c + 1) * b) for c, b in zip(coords, block))
        part = data[sel]
        kwargs = codec.h5py_kwargs()
        kwargs["chunks"] = tuple(min(c, s) for c, s in zip(codec.chunks, part.shape)) if codec.chunks else None
        with h5py.File(folder / f"{flat:04d}.h5", "w") as f:
            f.create_dataset(f"stack_{data.ndim}D", data=part, **kwargs)
    meta = {"shape_full": list(data.shape), "shape_block": list(block)}
    (folder / "stack_metadata.json").write_text(json.dumps(meta))


class H5Single:
    """One HDF5 file, one chunked dataset, same codec and chunks as the new package's blocks."""

    name = "h5py 1 file"

    def __init__(self, path: Path) -> None:
        self.file = open_h5(path)
        self.dset = self.file["data"]
        self.shape: tuple[int, ...] = self.dset.shape

    def read(self, index: Index) -> np.ndarray:
        norm = plan(index, self.shape)
        out = new_output(tuple(_length(a) for a in norm if a[0] != "int"), self.dset.dtype)
        full = out.reshape(tuple(_length(a) for a in norm))
        _read_part(self.dset, full, tuple(_h5_sel(a) for a in norm), tuple(slice(None) for _ in norm))
        return out

    def close(self) -> None:
        self.file.close()


def write_h5_single(data: np.ndarray, path: Path, codec: Codec) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=data, **codec.h5py_kwargs())


class Zarr3:
    """zarr v3 array (chunks as the new package's HDF5 chunks, blosc), read with out= into a fresh
    array; index lists and masks through ``get_orthogonal_selection``."""

    name = "zarr v3"

    def __init__(self, path: Path) -> None:
        import zarr
        from zarr.core.buffer import default_buffer_prototype

        self.array = zarr.open_array(path, mode="r")
        self.shape: tuple[int, ...] = self.array.shape
        self.dtype = np.dtype(self.array.dtype)
        self._nd = default_buffer_prototype().nd_buffer

    def read(self, index: Index) -> np.ndarray:
        norm = plan(index, self.shape)
        out = new_output(tuple(_length(a) for a in norm if a[0] != "int"), self.dtype)
        nd = self._nd.from_numpy_array(out)
        sel = tuple(a[1] if a[0] in ("int", "arr") else slice(a[1], a[2], a[3]) for a in norm)
        if any(a[0] == "arr" for a in norm):
            self.array.get_orthogonal_selection(sel, out=nd)
        else:
            self.array.get_basic_selection(sel, out=nd)
        return out

    def close(self) -> None:
        pass


def write_zarr(data: np.ndarray, path: Path, codec: Codec, shards: tuple[int, ...] | None = None) -> None:
    """zarr v3 array with the codec's chunks; with `shards`, one shard file per block."""
    import zarr

    chunks = codec.chunks or data.shape
    arr = zarr.create_array(
        store=str(path),
        shape=data.shape,
        dtype=data.dtype,
        chunks=chunks,
        shards=shards,
        compressors=[codec.zarr_codec(data.dtype.itemsize)],
        overwrite=True,
    )
    arr[...] = data


def default_chunk_cache_bytes() -> int:
    """HDF5's default chunk cache per open dataset (8 MiB in HDF5 2.0, 1 MiB before)."""
    return int(h5py.h5p.create(h5py.h5p.FILE_ACCESS).get_cache()[2])


def open_hdf5_files() -> int:
    """HDF5 files still open in this process (a reader that leaks handles shows up here)."""
    return len(h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE))


def zarr_info() -> dict[str, Any]:
    import numcodecs
    import zarr

    return {
        "zarr": zarr.__version__,
        "numcodecs": numcodecs.__version__,
        "threading.max_workers": zarr.config.get("threading.max_workers"),
        "async.concurrency": zarr.config.get("async.concurrency"),
    }
