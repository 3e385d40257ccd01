"""Peer systems the new package is compared with: raw h5py on block files, one chunked
HDF5 file, and zarr v3. All readers fill preallocated, pre-touched output buffers."""

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


def _normalize(index: Index, shape: tuple[int, ...]) -> list[tuple[int, int, bool]]:
    """(start, stop, is_int) per axis for int / step-1 slice indices."""
    out = []
    for ax, n in enumerate(shape):
        item = index[ax] if ax < len(index) else slice(None)
        if isinstance(item, slice):
            start, stop, step = item.indices(n)
            if step != 1:
                raise IndexError("only step-1 slices are supported")
            out.append((start, max(start, stop), False))
        else:
            i = int(item) + (n if int(item) < 0 else 0)
            out.append((i, i + 1, True))
    return out


def result_shape(index: Index, shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(e - s for s, e, is_int in _normalize(index, shape) if not is_int)


class OutBuffers:
    """Output arrays by shape, allocated and touched once so timing excludes page faults."""

    def __init__(self, dtype: np.dtype) -> None:
        self.dtype = dtype
        self._bufs: dict[tuple[int, ...], np.ndarray] = {}

    def get(self, shape: tuple[int, ...]) -> np.ndarray:
        buf = self._bufs.get(shape)
        if buf is None:
            buf = np.empty(shape, self.dtype)
            buf.fill(1)
            self._bufs[shape] = buf
        return buf


class H5Blocks:
    """Raw h5py on a split-dataset folder: every block file opened once, read_direct per block."""

    name = "h5py blocks"

    def __init__(self, folder: Path) -> None:
        meta = json.loads((folder / "stack_metadata.json").read_text())
        self.shape: tuple[int, ...] = tuple(meta["shape_full"])
        self.block: tuple[int, ...] = tuple(b if b is not None else s for b, s in zip(meta["shape_block"], self.shape))
        self.grid = tuple(-(-s // b) for s, b in zip(self.shape, self.block))
        paths = sorted(p for p in folder.glob("*.h5") if p.stem[-4:].isdigit())
        if len(paths) != int(np.prod(self.grid)):
            raise ValueError(f"{folder}: {len(paths)} block files for a grid of {self.grid}")
        self.files = [open_h5(p) for p in paths]
        self.dsets = [f[find_key(f)] for f in self.files]
        self.dtype = self.dsets[0].dtype
        self.buffers = OutBuffers(self.dtype)

    def read(self, index: Index) -> np.ndarray:
        norm = _normalize(index, self.shape)
        out = self.buffers.get(tuple(e - s for s, e, i in norm if not i))
        full = out.reshape(tuple(e - s for s, e, _ in norm))  # int axes as length 1, same memory
        ranges = [range(s // b, -(-e // b)) for (s, e, _), b in zip(norm, self.block)]
        for coords in itertools.product(*ranges):
            src, dst = [], []
            for c, (s, e, _), b in zip(coords, norm, self.block):
                lo, hi = max(s, c * b), min(e, (c + 1) * b)
                src.append(slice(lo - c * b, hi - c * b))
                dst.append(slice(lo - s, hi - s))
            flat = int(np.ravel_multi_index(coords, self.grid))
            self.dsets[flat].read_direct(full, tuple(src), tuple(dst))
        return out

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
        self.buffers = OutBuffers(self.dset.dtype)

    def read(self, index: Index) -> np.ndarray:
        # ints become length-1 slices: h5py's read_direct is ~100x slower with int selections
        norm = _normalize(index, self.shape)
        out = self.buffers.get(tuple(e - s for s, e, i in norm if not i))
        self.dset.read_direct(out.reshape(tuple(e - s for s, e, _ in norm)), tuple(slice(s, e) for s, e, _ in norm))
        return out

    def close(self) -> None:
        self.file.close()


def write_h5_single(data: np.ndarray, path: Path, codec: Codec) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=data, **codec.h5py_kwargs())


class Zarr3:
    """zarr v3 array (chunks as the new package's HDF5 chunks, blosc), read with out= buffers."""

    name = "zarr v3"

    def __init__(self, path: Path) -> None:
        import zarr
        from zarr.core.buffer import default_buffer_prototype

        self.array = zarr.open_array(path, mode="r")
        self.shape: tuple[int, ...] = self.array.shape
        self.buffers = OutBuffers(np.dtype(self.array.dtype))
        self._nd = default_buffer_prototype().nd_buffer
        self._wrapped: dict[int, Any] = {}

    def read(self, index: Index) -> np.ndarray:
        out = self.buffers.get(result_shape(index, self.shape))
        nd = self._wrapped.get(id(out))
        if nd is None:
            nd = self._wrapped[id(out)] = self._nd.from_numpy_array(out)
        self.array.get_basic_selection(index, out=nd)
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
