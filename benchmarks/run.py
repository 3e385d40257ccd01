"""Benchmark split_dataset 1.x against its peers in one run: warm and cold reads, writes.

    python benchmarks/run.py [--quick] [--out DIR] [--reps N] [--workdir DIR] [--keep]
                             [--data struct,noise] [--skip-old] [--no-zarr]

Peers, all timed in the same run with the same positions: the old ``split-dataset==0.4.4``
(in its own NumPy 1.26 env, see ``oldenv.py``), raw h5py on the same block files, one chunked
HDF5 file with the same codec, and zarr v3 (plain and one shard per block).

Two kinds of data, each written by 1.x ``save()`` defaults and by 0.4.4: ``struct`` (smooth
blobs + drift + shot noise) and ``noise`` (a dark camera: Poisson(2) counts on an offset of
100). Warm = every block touched once by the reader before the timing; cold = the first read
of a block the reader has not touched (see README.md). glibc malloc runs at its defaults: no
mallopt, and the MALLOC_* / GLIBC_TUNABLES variables are removed before anything is measured.

Every number is a median over repetitions at different positions; ratios are
``1.x time / peer time`` (below 1: 1.x is faster). Results go to ``<out>/<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

import hostinfo
import oldenv
import peers
from peers import Index

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

FULL_SHAPE = (100, 10, 256, 256)  # 131 MB per data kind; --shape 200,10,256,256 for the 262 MB case
QUICK_SHAPE = (40, 10, 256, 256)
BLOCK_T = 20  # frames per block file, as the old save_to_split_dataset(block_size=(20, None, ...))
MANY_SHAPE = (1000, 128, 128)  # the many-blocks dataset: 500 blocks of 2 frames, 33 MB raw
MANY_BLOCK_T = 2
N_FRAMES = 100
TRACE = 8
NOISY = 1.5  # flag cells whose repetitions spread more than this factor

# (key, short column label, meaning)
SYSTEMS: list[tuple[str, str, str]] = [
    ("new", "1.x", "split_dataset 1.x on files written by 1.x save() defaults (chunk_index=False once the "
     "package has a chunk index)"),
    ("new-idx", "1.x idx", "split_dataset 1.x, SplitDataset(path) defaults, on the same files with their "
     "chunk_index.bin (written by save)"),
    ("new@old", "1.x@old", "split_dataset 1.x on the files written by 0.4.4 (blosclz level 9; no chunk index, "
     "chunk_index=False)"),
    ("new@old-idx", "1.x@old idx", "split_dataset 1.x, defaults, on a copy of the 0.4.4 files with a chunk index "
     "from build_chunk_index"),
    ("old", "0.4.4", "split-dataset 0.4.4 (NumPy 1.26 env, subprocess) on its own files"),
    ("old@new", "0.4.4@new", "split-dataset 0.4.4 on the files written by 1.x"),
    ("h5py", "h5py", "raw h5py on the 1.x files (warm: all block files open; cold: open+read+close)"),
    ("h5py@old", "h5py@old", "raw h5py on the 0.4.4 files (same)"),
    ("h5py-1file", "h5py 1f", "one chunked HDF5 dataset, codec and chunks as the 1.x files"),
    ("zarr", "zarr", "zarr v3 array, same chunks, BloscCodec with the 1.x settings"),
    ("zarr-shard", "zarr shd", "zarr v3, one shard per block, inner chunks and codec as 1.x"),
]
LABELS = {k: label for k, label, _ in SYSTEMS}
# (column label, numerator, denominator): 1.x time / peer time
RATIOS: list[tuple[str, str, str, str]] = [
    ("1.x/h5py", "new", "h5py", "1.x / raw h5py, both on the 1.x files"),
    ("1.x/h5py@old", "new@old", "h5py@old", "1.x / raw h5py, both on the 0.4.4 files"),
    ("1.x/0.4.4", "new", "old", "1.x on its files / 0.4.4 on its files (what upgrading changes)"),
    ("1.x/0.4.4 same", "new@old", "old", "1.x / 0.4.4, both on the 0.4.4 files"),
    ("idx/h5py", "new-idx", "h5py", "1.x idx / raw h5py, both on the 1.x files"),
    ("idx/h5py@old", "new@old-idx", "h5py@old", "1.x@old idx (0.4.4 files + built index) / raw h5py on the 0.4.4 files"),
    ("idx/0.4.4", "new-idx", "old", "1.x idx on its files / 0.4.4 on its files"),
    ("idx/0.4.4 same", "new@old-idx", "old", "1.x@old idx / 0.4.4 on the same 0.4.4 files (theirs without the index)"),
]
# The 1.x columns of the targets table, and the raw-h5py column on the same files.
TARGET_SYSTEMS: list[tuple[str, str]] = [("new", "h5py"), ("new-idx", "h5py"), ("new@old", "h5py@old"),
                                         ("new@old-idx", "h5py@old")]
INDEX_SYSTEMS = ("new-idx", "new@old-idx")
INDEX_FILE = "chunk_index.bin"
# Stepped / index-array reads relative to the full read of the same reader: (pattern, reference, limit)
SELF_RATIOS: list[tuple[str, str, float]] = [
    ("vol_step", "volume", 1.0), ("step_t", "whole", 0.6), ("step_z", "whole", 0.6), ("step_yx", "whole", 1.1),
    ("mask_t", "whole", 0.7), ("list_t", "whole", 0.7), ("mask_z", "whole", 0.7), ("list_z", "whole", 0.7),
]
WARM_TARGETS = ("volume", "plane", "trace8x8", "whole", "frames100")  # <= 1.1x raw h5py with open handles
COLD_TARGETS = ("cold_t", "cold_open_t", "cold_500")  # <= 1.0x h5py open+read+close, <= 0.33x 0.4.4

WRITERS: list[tuple[str, str]] = [
    ("new", "1.x save() defaults (fsync=True)"),
    ("new-nofsync", "1.x save(..., fsync=False)"),
    ("old", "0.4.4 save_to_split_dataset(block_size=(20, None, ...))"),
    ("h5py", "raw h5py, one file per block, 1.x codec and chunks"),
    ("h5py-1file", "one chunked HDF5 file, 1.x codec"),
    ("zarr", "zarr v3, 1.x codec and chunks"),
    ("zarr-shard", "zarr v3, one shard per block"),
]


@dataclass
class Pattern:
    """One access pattern. mode: "warm" (fresh reader, every block touched, then the timed
    indices together), "fresh" (fresh reader, untimed open, first read timed), "open" (open +
    first read + close timed), "one" (one reader for all repetitions, each first read timed).
    reps[0] is the untimed, checked warm-up."""

    name: str
    code: str
    mode: str
    reps: list[list[Index]]
    nbytes: int
    layout: str = "main"  # "main" or "many" (the 500-block dataset)


@dataclass
class Result:
    times: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.times and not self.error else None


# ---------------------------------------------------------------------------- inputs


def make_struct(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Microscopy-like uint16 stack: smooth blobs on an offset, slow drift, shot noise."""
    rng = np.random.default_rng(seed)
    nt, nz, ny, nx = shape
    yy, xx = np.meshgrid(np.linspace(0, 1, ny), np.linspace(0, 1, nx), indexing="ij")
    background = np.empty((nz, ny, nx), np.float32)
    for z in range(nz):
        field_ = np.full((ny, nx), 100.0)
        for _ in range(8):
            cy, cx = rng.uniform(0.1, 0.9, 2)
            sigma, amp = rng.uniform(0.03, 0.3), rng.uniform(50, 600)
            field_ += amp * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
        background[z] = field_
    drift = 1 + 0.1 * np.sin(np.linspace(0, 6 * np.pi, nt, dtype=np.float32))
    out = np.empty(shape, np.uint16)
    noise = np.empty((nz, ny, nx), np.float32)
    for t in range(nt):
        lam = background * drift[t]
        rng.standard_normal(dtype=np.float32, out=noise)  # Poisson ~ N(lam, lam) at these counts
        out[t] = np.clip(np.rint(lam + np.sqrt(lam) * noise), 0, 65535)
    return out


def make_noise(shape: tuple[int, ...], seed: int = 2) -> np.ndarray:
    """A dark camera: ``rng.poisson(2.0) + 100`` per pixel (offset 100, a few counts of dark
    current / read noise), independent pixels, so blosc finds little to compress (~3 bits of
    entropy per 16-bit pixel)."""
    rng = np.random.default_rng(seed)
    out = np.empty(shape, np.uint16)
    for t in range(shape[0]):
        out[t] = rng.poisson(2.0, shape[1:]) + 100
    return out


MAKERS = {"struct": make_struct, "noise": make_noise}


def _half(rng: np.random.Generator, n: int) -> np.ndarray:
    """Sorted random half of range(n)."""
    return np.sort(rng.choice(n, n // 2, replace=False))


def _mask(rng: np.random.Generator, n: int) -> np.ndarray:
    m = np.zeros(n, bool)
    m[_half(rng, n)] = True
    return m


def touch_indices(shape: tuple[int, ...], block_t: int) -> list[Index]:
    """One tiny read in every block (its last frame, first pixel): makes a reader warm."""
    nt = shape[0]
    corner = tuple(slice(0, 1) for _ in shape[2:])
    return [(min(nt, (b + 1) * block_t) - 1, 0, *corner) for b in range(-(-nt // block_t))]


def cold_frames(nt: int, block_t: int, n: int, rng: np.random.Generator) -> list[int]:
    """`n` frames, each in a different block (cycling if there are fewer), never in the last
    block (a reader may open the last block to read metadata)."""
    nblocks = max(1, -(-nt // block_t) - 1)
    order = [int(b) for b in rng.permutation(nblocks)]
    blocks = [order[k % nblocks] for k in range(n)]
    return [b * block_t + int(rng.integers(block_t)) for b in blocks]


def make_patterns(shape: tuple[int, ...], reps: int, cold_reps: int, many_n: int, seed: int = 1) -> list[Pattern]:
    """Index lists per repetition; rep 0 is the warm-up. Positions change every repetition."""
    rng = np.random.default_rng(seed)
    nt, nz, ny, nx = shape
    n = reps + 1
    item = 2

    def nbytes(index: Index, shp: tuple[int, ...] = shape) -> int:
        return int(np.prod(peers.result_shape(index, shp))) * item

    ts = [int(t) for t in rng.integers(0, nt, n)]
    zs = [int(z) for z in np.resize(rng.permutation(nz), n)]
    ys = rng.integers(0, ny - TRACE + 1, n)
    xs = rng.integers(0, nx - TRACE + 1, n)
    frames = [rng.choice(nt * nz, N_FRAMES, replace=False) for _ in range(n)]
    A = slice(None)
    S2 = slice(None, None, 2)
    warm: list[tuple[str, str, list[list[Index]]]] = [
        ("volume", "ds[t]", [[(t,)] for t in ts]),
        ("vol_step", "ds[t, ::2]", [[(t, S2)] for t in ts]),
        ("plane", "ds[:, z]", [[(A, z)] for z in zs]),
        ("trace8x8", "ds[:, z, y:y+8, x:x+8]",
         [[(A, z, slice(int(y), int(y) + TRACE), slice(int(x), int(x) + TRACE))] for z, y, x in zip(zs, ys, xs)]),
        ("whole", "ds[:]", [[(A,)] for _ in range(n)]),
        ("frames100", f"{N_FRAMES} random ds[t, z]", [[(int(i // nz), int(i % nz)) for i in f] for f in frames]),
        ("step_t", "ds[::2]", [[(S2,)] for _ in range(n)]),
        ("step_z", "ds[:, ::2]", [[(A, S2)] for _ in range(n)]),
        ("step_yx", "ds[:, :, ::2, ::2]", [[(A, A, S2, S2)] for _ in range(n)]),
        ("mask_t", "ds[mask] (50% of t)", [[(_mask(rng, nt),)] for _ in range(n)]),
        ("list_t", "ds[list] (50% of t)", [[([int(v) for v in _half(rng, nt)],)] for _ in range(n)]),
        ("mask_z", "ds[:, mask] (50% of z)", [[(A, _mask(rng, nz))] for _ in range(n)]),
        ("list_z", "ds[:, list] (50% of z)", [[(A, [int(v) for v in _half(rng, nz)])] for _ in range(n)]),
    ]
    out = [Pattern(name, code, "warm", r, sum(nbytes(i) for i in r[1])) for name, code, r in warm]
    cold_ts = cold_frames(nt, BLOCK_T, cold_reps + 1, rng)
    vol = nbytes((0,))
    out.append(Pattern("cold_t", "cold ds[t]", "fresh", [[(t,)] for t in cold_ts], vol))
    out.append(Pattern("cold_open_t", "cold open+ds[t]+close", "open", [[(t,)] for t in cold_ts], vol))
    many_ts = cold_frames(MANY_SHAPE[0], MANY_BLOCK_T, many_n + 1, rng)
    out.append(Pattern("cold_500", "cold ds[t], 500 blocks", "one", [[(t,)] for t in many_ts],
                       nbytes((0,), MANY_SHAPE), layout="many"))
    return out


def encode_index(index: Index) -> list[Any]:
    """JSON form for the old-package worker (see old_worker.py)."""
    out: list[Any] = []
    for item in index:
        if isinstance(item, slice):
            if item.step in (None, 1) and item.start is None and item.stop is None:
                out.append(None)
            else:
                out.append({"s": [item.start, item.stop, item.step]})
        elif isinstance(item, np.ndarray) and item.dtype == bool:
            out.append({"m": [bool(v) for v in item]})
        elif isinstance(item, (list, np.ndarray)):
            out.append({"i": [int(v) for v in item]})
        else:
            out.append(int(item))
    return out


# ---------------------------------------------------------------------------- readers


class NewReader:
    """The new package: ``ds[index]`` (allocates its result, like every peer). ``chunk_index``
    None: the constructor's default; False: ``SplitDataset(path, chunk_index=False)``."""

    def __init__(self, sd: Any, path: Path, chunk_index: bool | None = None) -> None:
        kwargs = {} if chunk_index is None else {"chunk_index": chunk_index}
        self.ds = sd.SplitDataset(path, **kwargs)

    def read(self, index: Index) -> Any:
        return self.ds[index]

    def close(self) -> None:
        self.ds.close()


def has_chunk_index(sd: Any) -> bool:
    """Whether this split_dataset has the dataset-wide chunk index (``build_chunk_index``)."""
    return hasattr(sd, "build_chunk_index")


def ensure_index(sd: Any, folder: Path, written_by: str, layout: str) -> dict[str, Any]:
    """Make sure `folder` has a chunk index: 1.x save() should have written one; for a copy of
    the 0.4.4 files it is built here. Returns what happened (for the printout and the JSON)."""
    found = (folder / INDEX_FILE).exists()
    info: dict[str, Any] = {"folder": layout, "written_by": written_by, "present_after_write": found}
    if not found:
        t0 = time.perf_counter()
        summary = sd.build_chunk_index(folder, fsync=False)  # untimed layout step, like the writes
        info["build_s"] = round(time.perf_counter() - t0, 4)
        for attr in ("n_blocks", "indexed", "n_chunks", "skipped"):
            if hasattr(summary, attr):
                info[attr] = getattr(summary, attr)
        if info.get("skipped"):
            print(f"  WARNING: build_chunk_index left {len(info['skipped'])} block(s) of {folder} out: "
                  f"{dict(list(info['skipped'].items())[:3])}", flush=True)
        if written_by == "1.x":
            print(f"  WARNING: 1.x save() wrote no {INDEX_FILE} in {folder}; built one with build_chunk_index",
                  flush=True)
    info["index_bytes"] = (folder / INDEX_FILE).stat().st_size if (folder / INDEX_FILE).exists() else None
    return info


def import_new(path: Path) -> Any:
    """Import ``split_dataset`` from `path` (the working tree by default), not an installed copy."""
    sys.path.insert(0, str(path))
    import split_dataset as sd

    missing = [name for name in ("save", "SplitDataset") if not hasattr(sd, name)]
    if missing:
        raise ImportError(f"{sd.__file__} does not expose {missing} yet")
    return sd


def check(result: Any, source: np.ndarray, index: Index) -> None:
    if not np.array_equal(np.asarray(result), source[index]):
        raise AssertionError(f"values read differ from the source at {index}")


def warm_session(opener: Callable[[], Any], touch: list[Index], indices: list[Index],
                 source: np.ndarray | None) -> float:
    """Fresh reader, touch every block (untimed), time `indices`; check against `source`."""
    reader = opener()
    try:
        for idx in touch:
            reader.read(idx)
        gc.collect()
        t0 = time.perf_counter()
        got = [reader.read(idx) for idx in indices]
        dt = time.perf_counter() - t0
        if source is not None:
            for idx, res in list(zip(indices, got))[:3]:
                check(res, source, idx)
        return dt
    finally:
        reader.close()


def cold_read(mode: str, opener: Callable[[], Any], reader: Any, idx: Index, source: np.ndarray | None) -> float:
    """One first read of a block: "fresh" (new reader, untimed open), "open" (open + read +
    close timed) or "one" (the given long-lived reader)."""
    gc.collect()
    if mode == "open":
        t0 = time.perf_counter()
        r = opener()
        res = r.read(idx)
        r.close()
        dt = time.perf_counter() - t0
    else:
        r = reader if mode == "one" else opener()
        t0 = time.perf_counter()
        res = r.read(idx)
        dt = time.perf_counter() - t0
        if mode == "fresh":
            r.close()
    if source is not None:
        check(res, source, idx)
    return dt


def rotated(keys: list[str], shift: int) -> list[str]:
    shift %= len(keys)
    return keys[shift:] + keys[:shift]


def write_once(write: Callable[[Path], Any], dest: Path) -> tuple[float, int]:
    """Time `write(dest)` into a new folder or file; return (seconds, bytes on disk); remove it."""
    os.sync()
    gc.collect()
    t0 = time.perf_counter()
    written = write(dest)
    dt = time.perf_counter() - t0
    if hasattr(written, "close"):
        written.close()
    size = hostinfo.disk_bytes(dest)
    if dest.is_dir():
        shutil.rmtree(dest)
    elif dest.exists():
        dest.unlink()
    return dt, size


# ---------------------------------------------------------------------------- one data kind


def run_kind(sd: Any, kind: str, old_python: Path | None, shape: tuple[int, ...], reps: int,
             patterns: list[Pattern], workdir: Path, use_zarr: bool) -> dict[str, Any]:
    with_index = has_chunk_index(sd)
    no_index = False if with_index else None  # the "1.x" columns: the index ignored
    """Write every layout of one data kind, then time reads (warm, cold) and writes."""
    wd = workdir / kind
    wd.mkdir()
    t0 = time.perf_counter()
    data = MAKERS[kind](shape)
    many = make_noise(MANY_SHAPE, seed=3) if kind == "noise" else None
    print(f"[{kind}] generated data in {time.perf_counter() - t0:.1f} s", flush=True)
    npy, many_npy = wd / "data.npy", wd / "many.npy"
    np.save(npy, data)
    block = (BLOCK_T, *shape[1:])
    nofsync = {"fsync": False}  # layouts only: fsync changes no byte of the files

    # -- layouts (untimed)
    L: dict[str, Path] = {"new": wd / "new", "old": wd / "old" / "ds", "single": wd / "single.h5",
                          "zarr": wd / "data.zarr", "zarr-shard": wd / "sharded.zarr"}
    sd.save(data, L["new"], shape_block=block, **nofsync).close()
    codec, codec_raw = peers.detect_codec(sorted(L["new"].glob("*.h5"))[0])
    peers.write_h5_single(data, L["single"], codec)
    if use_zarr:
        peers.write_zarr(data, L["zarr"], codec)
        peers.write_zarr(data, L["zarr-shard"], codec, shards=block)
    tasks: list[dict[str, Any]] = [{"kind": "save", "data": str(npy), "root": str(L["old"].parent),
                                    "prefix": "ds", "block_t": BLOCK_T}]
    if many is not None:
        np.save(many_npy, many)
        L["many-new"], L["many-old"] = wd / "many-new", wd / "many-old" / "ds"
        sd.save(many, L["many-new"], shape_block=(MANY_BLOCK_T, *MANY_SHAPE[1:]), **nofsync).close()
        tasks.append({"kind": "save", "data": str(many_npy), "root": str(L["many-old"].parent),
                      "prefix": "ds", "block_t": MANY_BLOCK_T})
    if old_python is not None:
        oldenv.run_worker(old_python, {"tasks": tasks}, wd / "job-save.json")
    else:
        L.pop("old")
        L.pop("many-old", None)
    index_info: list[dict[str, Any]] = []
    if with_index:  # 1.x's own folders carry an index; 0.4.4's get one on a copy (originals untouched)
        for pre in ("", "many-"):
            if pre + "new" in L:
                index_info.append(ensure_index(sd, L[pre + "new"], "1.x", pre + "new"))
            if pre + "old" in L:
                copy = wd / f"{pre}old-idx" / L[pre + "old"].name
                shutil.copytree(L[pre + "old"], copy)
                L[pre + "old-idx"] = copy
                index_info.append(ensure_index(sd, copy, "0.4.4 (copy)", pre + "old-idx"))
        print(f"[{kind}] chunk index: " + "; ".join(
            f"{i['written_by']} {i['folder']}: " + ("written by save" if i["present_after_write"] else
                                                    f"built in {i.get('build_s', 0) * 1e3:.0f} ms "
                                                    f"({i.get('indexed', '?')}/{i.get('n_blocks', '?')} blocks)")
            + f", {(i['index_bytes'] or 0) / 1e3:.1f} kB" for i in index_info), flush=True)
    if not use_zarr:
        L.pop("zarr")
        L.pop("zarr-shard")
    os.sync()  # no writeback of the fresh files running behind the first measurements
    sizes = {k: hostinfo.disk_bytes(v) for k, v in L.items()}
    cached_before = hostinfo.page_cache_fraction(L.values())
    print(f"[{kind}] layouts: " + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in sizes.items())
          + f" (raw {data.nbytes / 1e6:.0f} MB); 1.x codec {codec.describe()}", flush=True)

    # -- reads in this process
    def openers(layout: str, cold: bool) -> dict[str, Callable[[], Any]]:
        pre = "many-" if layout == "many" else ""
        o: dict[str, Callable[[], Any]] = {
            "new": lambda: NewReader(sd, L[pre + "new"], no_index),
            "h5py": lambda: peers.H5Blocks(L[pre + "new"], keep_open=not cold),
        }
        if with_index:
            o["new-idx"] = lambda: NewReader(sd, L[pre + "new"])
        if pre + "old" in L:
            o["new@old"] = lambda: NewReader(sd, L[pre + "old"], no_index)
            o["h5py@old"] = lambda: peers.H5Blocks(L[pre + "old"], keep_open=not cold)
        if pre + "old-idx" in L:
            o["new@old-idx"] = lambda: NewReader(sd, L[pre + "old-idx"])
        if layout == "main":
            o["h5py-1file"] = lambda: peers.H5Single(L["single"])
            if use_zarr:
                o["zarr"] = lambda: peers.Zarr3(L["zarr"])
                o["zarr-shard"] = lambda: peers.Zarr3(L["zarr-shard"])
        return o

    touch = touch_indices(shape, BLOCK_T)
    results: dict[str, dict[str, Result]] = {p.name: {} for p in patterns}
    for i, p in enumerate(patterns):
        print(f"[{kind}] reading: {p.code} ...", flush=True)
        if p.layout == "many" and many is None:
            continue
        source = data if p.layout == "main" else many
        assert source is not None
        ops = openers(p.layout, cold=p.mode != "warm")
        keys = list(ops)
        long_lived = {k: ops[k]() for k in keys} if p.mode == "one" else {}
        try:
            for r in range(len(p.reps)):  # round 0: untimed, checked warm-up
                for key in rotated(keys, i + r):
                    res = results[p.name].setdefault(key, Result())
                    if res.error:
                        continue
                    try:
                        if p.mode == "warm":
                            dt = warm_session(ops[key], touch, p.reps[r], source if r == 0 else None)
                        else:
                            dt = cold_read(p.mode, ops[key], long_lived.get(key), p.reps[r][0],
                                           source if r == 0 else None)
                    except Exception:
                        res.error = traceback.format_exc(limit=4)
                        continue
                    if r:
                        res.times.append(dt)
        finally:
            for reader in long_lived.values():
                reader.close()

    # -- old package: reads on both layouts, then writes (one subprocess)
    old_versions: dict[str, Any] = {}
    if old_python is not None:
        print(f"[{kind}] 0.4.4 (subprocess): reads and writes ...", flush=True)
        tasks, slots = [], []
        for key, lay in (("old", "old"), ("old@new", "new")):
            warm = {p.name: [[encode_index(i) for i in rep] for rep in p.reps] for p in patterns if p.mode == "warm"}
            tasks.append({"kind": "read", "data": str(npy), "path": str(L[lay]),
                          "touch": [encode_index(i) for i in touch], "patterns": warm})
            slots.append(key)
            for mode in ("fresh", "open", "one"):
                pats = [p for p in patterns if p.mode == mode and (p.layout == "main" or many is not None)]
                if not pats:
                    continue
                path = L[lay] if mode != "one" else L["many-" + lay]
                src = npy if mode != "one" else many_npy
                tasks.append({"kind": "cold", "mode": mode, "data": str(src), "path": str(path),
                              "patterns": {p.name: [[encode_index(i) for i in rep] for rep in p.reps] for p in pats}})
                slots.append(key)
        tasks.append({"kind": "write", "data": str(npy), "root": str(wd / "write-old"), "block_t": BLOCK_T,
                      "reps": reps + 1})
        answer = oldenv.run_worker(old_python, {"tasks": tasks}, wd / "job-bench.json")
        old_versions = answer["versions"]
        for key, task_res in zip(slots, answer["results"]):
            for name, r in task_res.items():
                results[name][key] = Result(r["times"], r["error"])
        old_write = answer["results"][-1]

    # -- writes in this process
    writes: dict[str, Result] = {}
    wbytes: dict[str, int] = {}
    writers: dict[str, Callable[[Path], Any]] = {
        "new": lambda d: sd.save(data, d, shape_block=block),
        "new-nofsync": lambda d: sd.save(data, d, shape_block=block, fsync=False),
        "h5py": lambda d: peers.write_h5_blocks(data, d, block, codec),
        "h5py-1file": lambda d: peers.write_h5_single(data, d, codec),
    }
    if use_zarr:
        writers["zarr"] = lambda d: peers.write_zarr(data, d, codec)
        writers["zarr-shard"] = lambda d: peers.write_zarr(data, d, codec, shards=block)
    print(f"[{kind}] writing: {', '.join(writers)} (interleaved) ...", flush=True)
    wkeys = list(writers)
    for r in range(reps + 1):  # round 0 is the untimed warm-up
        for key in rotated(wkeys, r):
            res = writes.setdefault(key, Result())
            if res.error:
                continue
            try:
                dt, size = write_once(writers[key], wd / f"write-{key}-{r}")
            except Exception:
                res.error = traceback.format_exc(limit=4)
            else:
                wbytes[key] = size
                if r:
                    res.times.append(dt)
    if old_python is not None:
        writes["old"] = Result(old_write["times"], old_write["error"])
        wbytes["old"] = sizes["old"]

    cached_after = hostinfo.page_cache_fraction(L.values())
    return {
        "results": results,
        "writes": writes,
        "write_bytes": wbytes,
        "layout_bytes": sizes,
        "raw_bytes": int(np.prod(shape)) * 2,
        "codec_new_default": codec.describe(),
        "codec_raw_filters": codec_raw,
        "page_cache_fraction": {"before": cached_before, "after": cached_after},
        "old_versions": old_versions,
        "chunk_index": index_info,
    }


# ---------------------------------------------------------------------------- output


def fmt_time(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.0f}us"
    if s < 1:
        return f"{s * 1e3:.1f}ms"
    return f"{s:.2f}s"


def ratio_values(row: dict[str, Result]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for label, num, den, _ in RATIOS:
        a = row[num].median if num in row else None
        b = row[den].median if den in row else None
        out[label] = a / b if a and b else None
    return out


def _median(results: dict[str, dict[str, Result]], pattern: str, system: str) -> float | None:
    r = results.get(pattern, {}).get(system)
    return r.median if r is not None else None


def _div(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def self_ratios(results: dict[str, dict[str, Result]]) -> dict[str, dict[str, float | None]]:
    """Stepped and index-array reads / the full read (``ds[:]``, or ``ds[t]`` for ``ds[t, ::2]``)
    of the same system: what a step or an index array costs beyond the chunks it touches."""
    return {f"{pat}/{ref}": {s: _div(_median(results, pat, s), _median(results, ref, s))
                             for s, _, _ in SYSTEMS if s in results.get(pat, {})}
            for pat, ref, _ in SELF_RATIOS}


def targets(results: dict[str, dict[str, Result]], codes: dict[str, str]) -> list[dict[str, Any]]:
    """The issue's targets, one row each: the measured ratio per 1.x column (on 1.x's files, with
    and without the index; on 0.4.4's files, without and with a built index) and whether it is met."""
    rows: list[dict[str, Any]] = []

    def add(name: str, limit: float, values: dict[str, float | None]) -> None:
        rows.append({"target": name, "limit": limit, "ratios": values,
                     "met": {s: (v <= limit if v is not None else None) for s, v in values.items()}})

    cols = [s for s, _ in TARGET_SYSTEMS]
    for pat in WARM_TARGETS:
        add(f"{codes[pat]} / h5py open handles", 1.1,
            {s: _div(_median(results, pat, s), _median(results, pat, h)) for s, h in TARGET_SYSTEMS})
    for pat in COLD_TARGETS:
        add(f"{codes[pat]} / h5py open+read+close", 1.0,
            {s: _div(_median(results, pat, s), _median(results, pat, h)) for s, h in TARGET_SYSTEMS})
        add(f"{codes[pat]} / 0.4.4 (own files)", 0.33,
            {s: _div(_median(results, pat, s), _median(results, pat, "old")) for s in cols})
        add(f"{codes[pat]} / h5py o+r+c (stretch, idx)", 0.5,
            {s: _div(_median(results, pat, s), _median(results, pat, h)) if s in INDEX_SYSTEMS else None
             for s, h in TARGET_SYSTEMS})
    for pat, ref, limit in SELF_RATIOS:
        add(f"{codes[pat]} / {codes[ref]}", limit,
            {s: _div(_median(results, pat, s), _median(results, ref, s)) for s in cols})
    return rows


def print_targets(kind: str, rows: list[dict[str, Any]]) -> None:
    cols = [s for s, _ in TARGET_SYSTEMS if any(r["ratios"].get(s) is not None for r in rows)]
    tw = max(len(r["target"]) for r in rows) + 2
    w = 15
    print(f"\nTargets [{kind}]: ratio and met / NOT (1.x, 1.x@old: chunk_index=False; idx: with the index; "
          "denominators: raw h5py and 0.4.4 as in the ratio table, ds[:] of the same reader)")
    print("target".ljust(tw) + "limit".rjust(7) + "".join(LABELS[s].rjust(w) for s in cols))
    for r in rows:
        if not any(r["ratios"].get(s) is not None for s in cols):
            continue  # e.g. the 500-block row for a data kind without that dataset
        cells = []
        for s in cols:
            v = r["ratios"].get(s)
            cells.append("-" if v is None else f"{v:.2f} {'met' if r['met'][s] else 'NOT'}")
        print(r["target"].ljust(tw) + f"<={r['limit']:g}".rjust(7) + "".join(c.rjust(w) for c in cells))
    n = [m for r in rows for m in r["met"].values() if m is not None]
    print(f"{sum(n)} of {len(n)} cells met")


def print_kind(kind: str, run: dict[str, Any], codes: dict[str, str]) -> None:
    results: dict[str, dict[str, Result]] = run["results"]
    systems = [s for s, _, _ in SYSTEMS if any(s in row for row in results.values())]
    pw = max(len(c) for c in codes.values()) + 2
    w = 12
    print(f"\n=== data: {kind} ({DATA_DOC[kind]}) ===")
    print(f"Median time per repetition (~: slowest repetition > {NOISY:g}x the fastest; ERR: see Errors)")
    print("".ljust(pw) + "".join(LABELS[s].rjust(w) for s in systems))
    for name, row in results.items():
        if not row:
            continue
        cells = []
        for s in systems:
            r = row.get(s)
            if r is None:
                cells.append("")
            elif r.error:
                cells.append("ERR")
            else:
                noisy = len(r.times) > 1 and max(r.times) > NOISY * min(r.times)
                cells.append(fmt_time(r.median) + ("~" if noisy else ""))
        print(codes[name].ljust(pw) + "".join(c.rjust(w) for c in cells))
    print("\nRatio = 1.x time / peer time (below 1: 1.x faster)")
    all_vals = {name: ratio_values(row) for name, row in results.items() if row}
    shown = [r[0] for r in RATIOS if any(v[r[0]] for v in all_vals.values())]
    rw = max(len(r) for r in shown) + 2
    print("".ljust(pw) + "".join(r.rjust(rw) for r in shown))
    for name, vals in all_vals.items():
        print(codes[name].ljust(pw) + "".join((f"{vals[r]:.2f}" if vals[r] else "-").rjust(rw) for r in shown))
    print("\nStepped and index reads / the full read of the same system (ds[:]; ds[t] for ds[t, ::2])")
    print("".ljust(pw) + "limit".rjust(7) + "".join(LABELS[s].rjust(w) for s in systems))
    for key, vals2 in self_ratios(results).items():
        pat, ref = key.split("/")
        if not any(vals2.values()):
            continue
        limit = next(lim for p_, r_, lim in SELF_RATIOS if p_ == pat and r_ == ref)
        print(codes[pat].ljust(pw) + f"<={limit:g}".rjust(7)
              + "".join((f"{vals2[s]:.2f}" if vals2.get(s) else "-").rjust(w) for s in systems))
    print_targets(kind, targets(results, codes))
    for info in run.get("chunk_index", []):
        made = "written by save" if info["present_after_write"] else f"built in {info.get('build_s', 0) * 1e3:.0f} ms"
        print(f"  chunk index, {info['written_by']} files ({info['folder']}): {made}, "
              f"{(info['index_bytes'] or 0) / 1e3:.1f} kB")
    print(f"\nWrite the whole array ({run['raw_bytes'] / 1e6:.0f} MB raw)")
    for key, meaning in WRITERS:
        r = run["writes"].get(key)
        if r is None:
            continue
        size = run["write_bytes"].get(key)
        t = "ERR" if r.error else fmt_time(r.median)
        mbps = f"{run['raw_bytes'] / r.median / 1e6:.0f} MB/s" if r.median else "-"
        on_disk = f"{size / 1e6:.1f} MB on disk ({run['raw_bytes'] / size:.2f}x)" if size else ""
        print(f"  {meaning.ljust(58)}{t.rjust(9)}{mbps.rjust(11)}   {on_disk}")


DATA_DOC = {
    "struct": "smooth blobs on an offset of 100, slow drift, shot noise",
    "noise": "dark camera: Poisson(2.0) + 100 per pixel",
}


# The chart: (system, raw-h5py system on the same files, colour)
CHART_SERIES: list[tuple[str, str, str]] = [
    ("new", "h5py", "#1f4e9c"), ("new-idx", "h5py", "#7fa8e0"), ("new@old", "h5py@old", "#c0571b"),
    ("new@old-idx", "h5py@old", "#f0a868"), ("old", "h5py@old", "#7a7a7a"), ("zarr", "h5py", "#3a9a4a"),
]


def draw_chart(runs: dict[str, Any], codes: dict[str, str], path: Path, title: str) -> Path | None:
    """Per data kind, grouped bars of time / raw h5py (log scale) per pattern; None (with a
    message) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FixedLocator, NullFormatter
    except ImportError:
        print("chart skipped: matplotlib is not installed (pip install matplotlib, or the bench extra)")
        return None
    kinds = list(runs)
    fig, axes = plt.subplots(len(kinds), 1, figsize=(17, 5.2 * len(kinds)), squeeze=False)
    for ax, kind in zip(axes[:, 0], kinds):
        results: dict[str, dict[str, Result]] = runs[kind]["results"]
        pats = [p for p, row in results.items() if row]
        series = [(s, h, c) for s, h, c in CHART_SERIES if any(s in results[p] for p in pats)]
        width = 0.8 / max(1, len(series))
        for k, (s, h, colour) in enumerate(series):
            xs, ys = [], []
            for i, p in enumerate(pats):
                v = _div(_median(results, p, s), _median(results, p, h))
                if v is not None:
                    xs.append(i - 0.4 + (k + 0.5) * width)
                    ys.append(v)
            ref = "h5py@old" if h == "h5py@old" else "h5py"
            ax.bar(xs, ys, width, color=colour, label=f"{LABELS[s]} / {ref}")
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        lo, hi = ax.get_ylim()
        ticks = [v for v in (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1, 1.5, 2, 3, 5, 10, 20, 50) if lo <= v <= hi]
        ax.yaxis.set_major_locator(FixedLocator(ticks))
        ax.set_yticklabels([f"{v:g}" for v in ticks])
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks(range(len(pats)))
        ax.set_xticklabels([codes[p] for p in pats], rotation=30, ha="right", fontsize=8)
        ax.set_xlim(-0.6, len(pats) - 0.4)
        ax.set_ylabel("time / raw h5py (log; below 1: faster)")
        ax.set_title(f"{kind}: {DATA_DOC[kind]}", fontsize=10, loc="left")
        ax.grid(axis="y", which="both", alpha=0.3)
        ax.legend(fontsize=8, ncol=len(series), loc="lower right", bbox_to_anchor=(1.0, 1.0), frameon=False)
        cold = [i for i, p in enumerate(pats) if p.startswith("cold")]
        if cold:
            ax.axvspan(min(cold) - 0.5, max(cold) + 0.5, color="0.92", zorder=0)
    fig.suptitle(f"split_dataset 1.x and peers, median time / raw h5py on the same files ({title}); warm rows: "
                 "h5py with open handles, cold rows (shaded): h5py open+read+close", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def lib_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for dist in ("numpy", "h5py", "hdf5plugin", "zarr", "numcodecs"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def notes(runs: dict[str, Any], reps: int, cold_reps: int, many_n: int) -> list[str]:
    cache = ", ".join(
        f"{k}: {100 * (v['page_cache_fraction']['before'] or 0):.0f}% before / "
        f"{100 * (v['page_cache_fraction']['after'] or 0):.0f}% after"
        for k, v in runs.items()
    )
    return [
        f"Page cache: the files were written just before they were read and stay cached (mincore {cache}); "
        "no number here includes a disk read. 'Cold' means a cold reader, not a cold disk.",
        "Warm: every repetition opens a fresh reader, reads one pixel in every block (untimed), then times the "
        f"pattern; {reps} timed repetitions at different positions after an untimed, checked round.",
        f"Cold: 'cold ds[t]' = a fresh reader (opened untimed) reads a frame of a block it has not touched "
        f"({cold_reps} reps, never the last block, which a reader may open for metadata); 'cold open+ds[t]+close' "
        f"also times opening and closing; 'cold ds[t], 500 blocks' = one reader reads {many_n} frames, each in a "
        f"block it has not touched, each timed alone, on {MANY_SHAPE} noise in blocks of {MANY_BLOCK_T} frames. "
        "Raw h5py cold = h5py.File(block) + read_direct + close. 0.4.4 reopens block files on every read.",
        "Memory: glibc malloc at its defaults in every measured process (no mallopt; MALLOC_*/GLIBC_TUNABLES "
        "removed); every system, peers included, returns a freshly allocated array per read.",
        "0.4.4 reads only ints and step-1 slices (it silently ignores a step), so its stepped, list and mask "
        "patterns are emulated as a user must: read the covering step-1 slices, index in memory.",
        "Raw h5py and 'h5py 1f': step-1 hyperslabs with read_direct; steps, lists and masks as the covering "
        "step-1 hyperslab per block, picked in memory (HDF5's strided and point selections were ~20-40x slower). "
        "zarr: get_basic_selection / get_orthogonal_selection with out=.",
        "Order: repetitions interleave across systems in a rotating order; 0.4.4 runs in its own subprocess "
        "phase after the in-process systems (same positions).",
        f"Threads: library defaults on {os.cpu_count()} CPUs (zarr decodes chunks in a thread pool; HDF5 in the "
        "calling thread). Write: into the page cache (os.sync() before each rep, untimed); 1.x save() fsyncs by "
        "default, the peers do not.",
    ]


# ---------------------------------------------------------------------------- main


def strip_malloc_env() -> None:
    """Re-run this script without malloc-tuning variables: glibc reads them only at start-up."""
    found = hostinfo.malloc_env()
    if found:
        print(f"removing {sorted(found)} from the environment and restarting (malloc at defaults)", flush=True)
        env = {k: v for k, v in os.environ.items() if k not in found}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"small data {QUICK_SHAPE}, 3 reps (~2 min)")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="results folder")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions per warm pattern (5, quick 3)")
    parser.add_argument("--workdir", type=Path, default=None, help="where the data sets go (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the temp workdir (a --workdir is always kept)")
    parser.add_argument("--data", default="struct,noise", help="data kinds, comma-separated: struct, noise")
    parser.add_argument("--no-zarr", action="store_true", help="leave out the zarr peers (saves time)")
    parser.add_argument("--oldenv-dir", type=Path, default=oldenv.DEFAULT_ENV_DIR)
    parser.add_argument("--old-python", default=None, help="base interpreter for the old env (3.10-3.12)")
    parser.add_argument("--new-path", type=Path, default=REPO, help="folder holding the split_dataset to test")
    parser.add_argument("--skip-old", action="store_true", help="do not run the old 0.4.4 package")
    parser.add_argument("--shape", default=None, metavar="T,Z,Y,X", help="array shape (T*Z >= 100)")
    parser.add_argument("--patterns", default=None, metavar="NAMES",
                        help="read patterns to run, comma-separated (e.g. cold_t,cold_open_t,cold_500); default all")
    args = parser.parse_args(argv)
    strip_malloc_env()

    started = time.perf_counter()
    load_start = os.getloadavg()
    shape = QUICK_SHAPE if args.quick else FULL_SHAPE
    if args.shape:
        shape = tuple(int(v) for v in args.shape.split(","))
        if len(shape) != 4:
            parser.error(f"--shape takes 4 numbers T,Z,Y,X, got {args.shape!r}")
    kinds = [k.strip() for k in args.data.split(",") if k.strip()]
    if not kinds or any(k not in MAKERS for k in kinds):
        parser.error(f"--data takes a comma-separated subset of {list(MAKERS)}")
    reps = args.reps or (3 if args.quick else 5)
    cold_reps = 3 * reps
    many_n = 30 if args.quick else 60
    sd = import_new(args.new_path)
    old_python = None if args.skip_old else oldenv.ensure_env(args.oldenv_dir, args.old_python)
    patterns = make_patterns(shape, reps, cold_reps, many_n)
    codes = {p.name: p.code for p in patterns}
    if args.patterns:
        wanted = {n.strip() for n in args.patterns.split(",") if n.strip()}
        unknown = wanted - {p.name for p in patterns}
        if unknown:
            parser.error(f"unknown patterns {sorted(unknown)}; known: {[p.name for p in patterns]}")
        patterns = [p for p in patterns if p.name in wanted]

    timestamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    if has_chunk_index(sd):
        print("chunk index: present (build_chunk_index); columns 1.x idx / 1.x@old idx measured, 1.x / 1.x@old "
              "with chunk_index=False")
    else:
        print("chunk index: this split_dataset has no build_chunk_index yet; the index columns are skipped")
    if args.workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="split-dataset-bench-"))
    else:  # a fresh subfolder: the writers refuse (1.x) or mix into (0.4.4) existing data sets
        workdir = args.workdir / f"run-{timestamp}"
        workdir.mkdir(parents=True)
    print(f"split_dataset under test: {Path(sd.__file__).parent} ({getattr(sd, '__version__', '?')})")
    print(f"data: uint16 {shape} = {np.prod(shape) * 2 / 1e6:.0f} MB per kind ({', '.join(kinds)}), blocks of "
          f"T={BLOCK_T}; {reps} timed reps (cold: {cold_reps}, 500 blocks: {many_n}) + 1 untimed round")
    print(f"workdir: {workdir}", flush=True)
    runs: dict[str, Any] = {}
    try:
        for kind in kinds:
            runs[kind] = run_kind(sd, kind, old_python, shape, reps, patterns, workdir, not args.no_zarr)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    load_end = os.getloadavg()
    wall = time.perf_counter() - started

    for kind, run in runs.items():
        print_kind(kind, run, codes)
    print("\nColumns:")
    for _s, label, meaning in SYSTEMS:
        print(f"  {label.ljust(13)}{meaning}")
    for label, _, _, meaning in RATIOS:
        print(f"  {label.ljust(15)}{meaning}")
    note_list = notes(runs, reps, cold_reps, many_n)
    if has_chunk_index(sd):
        note_list.append(
            "Chunk index: '1.x idx' reads the chunk_index.bin that save() wrote (SplitDataset(path) defaults); "
            "'1.x@old idx' reads a copy of the 0.4.4 folder indexed by build_chunk_index (untimed, fsync=False), so "
            "'1.x@old', 'h5py@old' and 0.4.4 read the folder as 0.4.4 wrote it; '1.x' and '1.x@old' pass "
            "chunk_index=False. '0.4.4@new' and 'h5py' read the 1.x folder with its chunk_index.bin beside the blocks.")
    else:
        note_list.append("Chunk index: this split_dataset has no build_chunk_index; the index columns are left out.")
    note_list.append(f"Load: 1-min load average {load_start[0]:.2f} at the start, {load_end[0]:.2f} at the end, on "
                     f"{os.cpu_count()} CPUs; anything else running adds noise.")
    print("\nNotes:")
    for note in note_list:
        print(f"  - {note}")
    errors = [(k, p, s, r.error) for k, run in runs.items() for p, row in run["results"].items()
              for s, r in row.items() if r.error]
    errors += [(k, "write", s, r.error) for k, run in runs.items() for s, r in run["writes"].items() if r.error]
    if errors:
        print("\nErrors:")
        for k, p, s, err in errors:
            print(f"  [{k} / {p} / {s}]\n    " + (err or "").strip().replace("\n", "\n    "))

    nbytes = {p.name: p.nbytes for p in patterns}
    doc: dict[str, Any] = {
        "meta": {
            "timestamp": timestamp, "argv": sys.argv, "wall_s": round(wall, 1), "shape": list(shape),
            "dtype": "uint16", "block_t": BLOCK_T, "many_shape": list(MANY_SHAPE), "many_block_t": MANY_BLOCK_T,
            "reps": reps, "cold_reps": cold_reps, "many_n": many_n, "data": {k: DATA_DOC[k] for k in kinds},
            "malloc": "glibc defaults (no mallopt, no MALLOC_* / GLIBC_TUNABLES)",
            "loadavg_1_5_15": {"start": load_start, "end": load_end}, "machine": hostinfo.machine(),
            "versions": {"split_dataset_new": getattr(sd, "__version__", None), "split_dataset_file": sd.__file__,
                         **lib_versions(), "zarr_config": peers.zarr_info(),
                         "old_env": next((r["old_versions"] for r in runs.values() if r["old_versions"]), None)},
            "systems": {s: meaning for s, _, meaning in SYSTEMS},
            "chunk_index_available": has_chunk_index(sd),
            "ratios": {label: meaning for label, _, _, meaning in RATIOS},
            "notes": note_list,
        },
        "patterns": {p.name: {"code": p.code, "mode": p.mode, "layout": p.layout, "bytes_per_rep": p.nbytes}
                     for p in patterns},
        "results": {},
    }
    for kind, run in runs.items():
        doc["results"][kind] = {
            "reads": {
                p: {s: {"times_s": r.times, "median_s": r.median, "min_s": min(r.times) if r.times else None,
                        "MBps": nbytes[p] / r.median / 1e6 if r.median else None, "error": r.error}
                    for s, r in row.items()} | {"ratios": ratio_values(row)}
                for p, row in run["results"].items() if row
            },
            "write": {s: {"times_s": r.times, "median_s": r.median, "bytes_on_disk": run["write_bytes"].get(s),
                          "error": r.error} for s, r in run["writes"].items()},
            "layout_bytes": run["layout_bytes"], "raw_bytes": run["raw_bytes"],
            "codec_new_default": run["codec_new_default"], "codec_raw_filters": run["codec_raw_filters"],
            "page_cache_fraction": run["page_cache_fraction"],
            "self_ratios": self_ratios(run["results"]),
            "targets": targets(run["results"], codes),
            "chunk_index": run["chunk_index"],
        }
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / f"{timestamp}.json"
    json_path.write_text(json.dumps(doc, indent=1, default=str))
    print(f"\nresults: {json_path}")
    chart = draw_chart(runs, codes, json_path.with_suffix(".png"),
                       f"{shape} uint16, {timestamp}, load {load_start[0]:.1f}->{load_end[0]:.1f} on {os.cpu_count()} CPUs")
    if chart is not None:
        print(f"chart: {chart}")
    print(f"total wall time: {wall:.0f} s")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
