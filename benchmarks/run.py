"""Benchmark split_dataset 1.x against its peers in one run and print time ratios.

    python benchmarks/run.py [--quick] [--out DIR] [--reps N] [--workdir DIR] [--keep]

Peers: the old ``split-dataset==0.4.4`` (in its own NumPy<2 env, see ``oldenv.py``), raw
h5py on the same block files, one chunked HDF5 file with the same codec, and zarr v3.
Every number is the median of several repetitions, each at a different position; the
ratio is (peer time) / (new package time), so above 1 means the new package is faster.
Results go to ``<out>/<timestamp>.json`` and a chart to ``<out>/<timestamp>.png``.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import math
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

FULL_SHAPE = (200, 10, 256, 256)
QUICK_SHAPE = (40, 10, 256, 256)  # blocks stay bigger than HDF5's 8 MiB default chunk cache
BLOCK_T = 20  # frames per block file, as the old save_to_split_dataset(block_size=(20, None, ...))
N_FRAMES = 100
TRACE = 8
NOISY = 1.5  # flag cells whose repetitions spread more than this factor

# (key, column label, meaning). "new" is the reference every ratio divides by.
SYSTEMS: list[tuple[str, str, str]] = [
    ("new", "new", "split_dataset 1.x on files written by its save() defaults"),
    ("new@old", "new@oldfiles", "split_dataset 1.x on the files written by 0.4.4"),
    ("new-nofsync", "new nofsync", "split_dataset 1.x save(..., fsync=False) (write only)"),
    ("old", "old 0.4.4", "split-dataset 0.4.4 (NumPy 1.26 env, subprocess) on its own files"),
    ("old@new", "old@newfiles", "split-dataset 0.4.4 on the files written by 1.x"),
    ("h5py", "h5py blocks", "raw h5py, all block files opened before the timing, read_direct per block (1.x files)"),
    ("h5py@old", "h5py@oldfiles", "raw h5py on the files written by 0.4.4"),
    ("h5py-1file", "h5py 1 file", "one chunked HDF5 dataset, same codec and chunks as 1.x"),
    ("zarr", "zarr v3", "zarr v3 array, same chunks, BloscCodec with the same settings"),
    ("zarr-shard", "zarr v3 sharded", "zarr v3, one shard per block (T=20), inner chunks and codec as 1.x"),
]
LABELS = {k: label for k, label, _ in SYSTEMS}


@dataclass
class Pattern:
    """One access pattern: per repetition a list of indices, timed together."""

    name: str
    code: str
    reps: list[list[Index]]  # reps[0] is the untimed warm-up
    nbytes: int  # bytes returned by one repetition


@dataclass
class Result:
    times: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.times and not self.error else None


# ---------------------------------------------------------------------------- inputs


def make_data(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
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


def make_patterns(shape: tuple[int, ...], reps: int, seed: int = 1) -> list[Pattern]:
    """Index lists per repetition; consecutive repetitions hit different blocks/planes."""
    rng = np.random.default_rng(seed)
    nt, nz, ny, nx = shape
    n = reps + 1  # + warm-up
    itemsize = 2
    n_tblocks = -(-nt // BLOCK_T)
    block_order = rng.permutation(n_tblocks)
    ts: list[int] = []  # timed volumes: one t-block after another
    for k in range(reps):
        b = int(block_order[k % n_tblocks])
        t = b * BLOCK_T + int(rng.integers(min(BLOCK_T, nt - b * BLOCK_T)))
        while t in ts and len(ts) < nt:
            t = int(rng.integers(nt))
        ts.append(t)
    # the volume warm-up reads one other frame in every block, so lazily opened files are open
    warm = [next(t for t in range(b * BLOCK_T, min(nt, (b + 1) * BLOCK_T)) if t not in ts) for b in range(n_tblocks)]
    volume: list[list[Index]] = [[(t,) for t in warm]]
    volume += [[(t,)] for t in ts]
    zs = [int(z) for z in np.resize(rng.permutation(nz), n)]
    zs_trace = [int(z) for z in np.resize(rng.permutation(nz), n)]
    ys = rng.integers(0, ny - TRACE + 1, n)
    xs = rng.integers(0, nx - TRACE + 1, n)
    frames = [rng.choice(nt * nz, N_FRAMES, replace=False) for _ in range(n)]
    all_ = (slice(None),)
    return [
        Pattern("volume", "ds[t]", volume, nz * ny * nx * itemsize),
        Pattern("plane", "ds[:, z]", [[(slice(None), z)] for z in zs], nt * ny * nx * itemsize),
        Pattern(
            "trace8x8",
            "ds[:, z, y:y+8, x:x+8]",
            [
                [(slice(None), z, slice(int(y), int(y) + TRACE), slice(int(x), int(x) + TRACE))]
                for z, y, x in zip(zs_trace, ys, xs)
            ],
            nt * TRACE * TRACE * itemsize,
        ),
        Pattern("whole", "ds[:]", [[all_] for _ in range(n)], nt * nz * ny * nx * itemsize),
        Pattern(
            "frames100",
            f"{N_FRAMES} x ds[t, z]",
            [[(int(i // nz), int(i % nz)) for i in f] for f in frames],
            N_FRAMES * ny * nx * itemsize,
        ),
    ]


def encode_index(index: Index) -> list[Any]:
    """JSON form for the old-package worker: int, [start, stop] or null per axis."""
    out: list[Any] = []
    for item in index:
        if isinstance(item, slice):
            out.append(None if item.start is None and item.stop is None else [item.start, item.stop])
        else:
            out.append(int(item))
    return out


# ---------------------------------------------------------------------------- timing


def read_session(opener: Callable[[], Any], pattern: Pattern, rep: int, source: np.ndarray, check: bool) -> float:
    """Open a fresh reader, run the untimed warm-up (checked against `source` if `check`),
    time repetition `rep` of `pattern`, close the reader."""
    reader = opener()
    try:
        warm = pattern.reps[0]
        for idx in warm:
            reader.read(idx)
        if check:
            for idx in warm[:3]:
                if not np.array_equal(np.asarray(reader.read(idx)), source[idx]):
                    raise AssertionError(f"values read differ from the source at {idx}")
        gc.collect()
        t0 = time.perf_counter()
        for idx in pattern.reps[rep]:
            reader.read(idx)
        return time.perf_counter() - t0
    finally:
        reader.close()


def write_once(write: Callable[[Path], Any], dest: Path) -> float:
    """Time `write(dest)` into a new folder or file, then remove it."""
    os.sync()
    gc.collect()
    t0 = time.perf_counter()
    written = write(dest)
    dt = time.perf_counter() - t0
    if hasattr(written, "close"):
        written.close()
    if dest.is_dir():
        shutil.rmtree(dest)
    elif dest.exists():
        dest.unlink()
    return dt


def rotated(keys: list[str], shift: int) -> list[str]:
    shift %= len(keys)
    return keys[shift:] + keys[:shift]


# ---------------------------------------------------------------------------- new package


class NewReader:
    """The new package: ``ds[index]`` (or ``ds.read(index, out=...)`` if the API offers it)."""

    def __init__(self, sd: Any, path: Path) -> None:
        self.ds = sd.SplitDataset(path)
        self.uses_out = self.supports_out(sd)
        self.buffers = peers.OutBuffers(np.dtype(self.ds.dtype))

    @staticmethod
    def supports_out(sd: Any) -> bool:
        read = getattr(sd.SplitDataset, "read", None)
        return read is not None and "out" in inspect.signature(read).parameters

    def read(self, index: Index) -> Any:
        if self.uses_out:
            out = self.buffers.get(peers.result_shape(index, tuple(self.ds.shape)))
            return self.ds.read(index, out=out)
        return self.ds[index]

    def close(self) -> None:
        self.ds.close()


def import_new(path: Path) -> Any:
    """Import ``split_dataset`` from `path` (the working tree by default), not an installed copy."""
    sys.path.insert(0, str(path))
    import split_dataset as sd

    missing = [name for name in ("save", "SplitDataset") if not hasattr(sd, name)]
    if missing:
        raise ImportError(f"{sd.__file__} does not expose {missing} yet")
    return sd


# ---------------------------------------------------------------------------- output


def fmt_time(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.0f} us"
    if s < 1:
        return f"{s * 1e3:.1f} ms"
    return f"{s:.2f} s"


def print_tables(results: dict[str, dict[str, Result]], patterns: dict[str, str], systems: list[str]) -> None:
    """Two tables, systems as rows and patterns as columns: median times, then ratios to "new"."""
    width = max(11, *(len(p) + 2 for p in patterns))
    label_w = max(len(LABELS[s]) for s in systems) + 2

    def table(title: str, cell: Callable[[str, str], str]) -> None:
        print(f"\n{title}")
        print("".ljust(label_w) + "".join(p.rjust(width) for p in patterns))
        for s in systems:
            print(LABELS[s].ljust(label_w) + "".join(cell(s, p).rjust(width) for p in patterns))

    def median(s: str, p: str) -> float | None:
        r = results.get(p, {}).get(s)
        return r.median if r else None

    def time_cell(s: str, p: str) -> str:
        r = results.get(p, {}).get(s)
        if r and r.error:
            return "ERROR"
        noisy = r is not None and len(r.times) > 1 and max(r.times) > NOISY * min(r.times)
        return fmt_time(median(s, p)) + ("~" if noisy else "")

    def ratio_cell(s: str, p: str) -> str:
        m, ref = median(s, p), median("new", p)
        return f"{m / ref:.2f}x" if m is not None and ref else "-"

    table(f"Median time per repetition (~: slowest repetition > {NOISY:g}x the fastest)", time_cell)
    table("Ratio = system time / new-package time (>1: new package faster)", ratio_cell)


def chart(results: dict[str, Any], path: Path) -> str:
    """Throughput bar chart, one panel per pattern; returns a message."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "chart skipped: matplotlib is not installed (pip install matplotlib)"
    pats = list(results["patterns"])
    ncols = 3
    nrows = -(-len(pats) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.4 * nrows), squeeze=False)
    for ax, p in zip(axes.flat, pats):
        rows = results["results"][p]
        names = [s for s, _, _ in SYSTEMS if s in rows and rows[s]["median_s"]]
        vals = [rows[s]["MBps"] for s in names]
        colors = [
            "tab:green" if s.startswith("new") else "tab:gray" if s.startswith("old") else "tab:blue" for s in names
        ]
        ax.barh([LABELS[s] for s in names], vals, color=colors)
        ax.invert_yaxis()
        ax.set_title(f"{p}: {results['patterns'][p]}", fontsize=10)
        ax.set_xlabel("MB/s (decoded bytes / median time)")
        ax.tick_params(labelsize=8)
        for y, v in enumerate(vals):
            ax.text(v, y, f" {v:.3g}", va="center", fontsize=7)
    for ax in axes.flat[len(pats) :]:
        ax.axis("off")
    shape = "x".join(map(str, results["meta"]["shape"]))
    fig.suptitle(f"split_dataset benchmark, uint16 {shape}, median of {results['meta']['reps']} (higher is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"chart: {path}"


def lib_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for dist in ("numpy", "h5py", "hdf5plugin", "zarr", "numcodecs"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


# ---------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    global BLOCK_T
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_SHAPE} array and 3 repetitions")
    parser.add_argument(
        "--out", type=Path, default=HERE / "results", help="results folder (default benchmarks/results)"
    )
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions per measurement (default 5, quick 3)")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where the data sets are written (default: a temp dir)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp workdir (a --workdir is always kept)")
    parser.add_argument("--no-malloc-tuning", action="store_true", help="leave glibc malloc at its defaults")
    parser.add_argument("--oldenv-dir", type=Path, default=oldenv.DEFAULT_ENV_DIR)
    parser.add_argument("--old-python", default=None, help="base interpreter for the old env (3.10-3.12)")
    parser.add_argument(
        "--new-path", type=Path, default=REPO, help="folder holding the split_dataset to test (default: repo)"
    )
    parser.add_argument("--skip-old", action="store_true", help="do not run the old 0.4.4 package")
    parser.add_argument("--shape", default=None, metavar="T,Z,Y,X",
                        help="array shape, e.g. 52,2,2048,2048 for the 2048x2048-frame case (T*Z >= 100)")
    parser.add_argument("--block-t", type=int, default=None, help=f"frames per block file (default {BLOCK_T})")
    args = parser.parse_args(argv)
    if args.block_t:
        BLOCK_T = args.block_t

    started = time.perf_counter()
    load_start = os.getloadavg()
    shape = QUICK_SHAPE if args.quick else FULL_SHAPE
    if args.shape:
        shape = tuple(int(v) for v in args.shape.split(","))
        if len(shape) != 4:
            parser.error(f"--shape takes 4 numbers T,Z,Y,X, got {args.shape!r}")
    reps = args.reps or (3 if args.quick else 5)
    tuned = False if args.no_malloc_tuning else hostinfo.tune_malloc()
    sd = import_new(args.new_path)
    old_python = None if args.skip_old else oldenv.ensure_env(args.oldenv_dir, args.old_python)

    timestamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    if args.workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="split-dataset-bench-"))
    else:  # a fresh subfolder: the writers refuse (1.x) or mix into (0.4.4) existing data sets
        workdir = args.workdir / f"run-{timestamp}"
        workdir.mkdir(parents=True)
    print(f"split_dataset under test: {Path(sd.__file__).parent} ({getattr(sd, '__version__', '?')})")
    print(
        f"data: uint16 {shape} = {np.prod(shape) * 2 / 1e6:.0f} MB, block (T={BLOCK_T}), {reps} timed reps + 1 warm-up"
    )
    print(f"workdir: {workdir}", flush=True)

    try:
        results, meta = run_all(sd, old_python, shape, reps, workdir, tuned)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    load_end = os.getloadavg()
    meta.update(timestamp=timestamp, argv=sys.argv, wall_s=round(time.perf_counter() - started, 1))
    meta["loadavg_1_5_15"] = {"start": load_start, "end": load_end}
    meta["notes"].append(
        f"Load: 1-min load average {load_start[0]:.2f} at the start, {load_end[0]:.2f} at the end, on "
        f"{os.cpu_count()} CPUs (this run itself keeps about one busy); anything else running adds noise."
    )

    patterns = dict(meta.pop("pattern_codes"))
    systems = [s for s, _, _ in SYSTEMS if any(s in row for row in results.values())]
    print_tables(results, patterns, systems)
    print("\nColumns:")
    label_w = max(len(LABELS[s]) for s in systems) + 2
    for s, label, meaning in SYSTEMS:
        if s in systems:
            print(f"  {label.ljust(label_w)}{meaning}")
    print("\nNotes:")
    for note in meta["notes"]:
        print(f"  - {note}")
    errors = [(p, s, r.error) for p, row in results.items() for s, r in row.items() if r.error]
    if errors:
        print("\nErrors:")
        for p, s, err in errors:
            print(f"  [{LABELS[s]} / {p}]\n    " + (err or "").strip().replace("\n", "\n    "))

    nbytes = meta.pop("nbytes")
    doc: dict[str, Any] = {"meta": meta, "patterns": patterns, "results": {}}
    for p, row in results.items():
        ref = row["new"].median if "new" in row else None
        doc["results"][p] = {
            s: {
                "times_s": r.times,
                "median_s": r.median,
                "min_s": min(r.times) if r.times else None,
                "MBps": nbytes[p] / r.median / 1e6 if r.median else None,
                "ratio_vs_new": r.median / ref if r.median and ref else None,
                "error": r.error,
            }
            for s, r in row.items()
        }
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / f"{timestamp}.json"
    json_path.write_text(json.dumps(doc, indent=1))
    print(f"\nresults: {json_path}")
    print(chart(doc, args.out / f"{timestamp}.png"))
    print(f"total wall time: {meta['wall_s']:.0f} s")
    return 1 if errors else 0


def make_notes(
    cached_before: float | None, cached_after: float | None, tuned: bool, uses_out: bool, block: tuple[int, ...]
) -> list[str]:
    """What the numbers include and exclude, printed under the tables and saved in the JSON."""
    if cached_before is None:
        pct = "unknown"
    else:
        pct = f"{100 * cached_before:.0f}% before / {100 * (cached_after or 0):.0f}% after the reads"
    if tuned:
        malloc = "glibc malloc is tuned in both processes (M_MMAP_MAX=0, M_TRIM_THRESHOLD=64 GiB) to reuse freed arrays"
    else:
        malloc = "glibc malloc is NOT tuned (--no-malloc-tuning): fresh result arrays pay page faults"
    new_out = "reads with out= too" if uses_out else "and 0.4.4 allocate their result (ds[...])"
    block_mib = math.prod(block) * 2 / 2**20
    cache_mib = peers.default_chunk_cache_bytes() / 2**20
    return [
        f"Page cache: every data set was written just before it was read and stays in the page cache "
        f"(mincore: {pct}), so reads time decoding and copying, not the disk.",
        f"Memory: the VM hands freed memory back to the hypervisor and faulting it in again is slow, so {malloc}; "
        f"h5py and zarr read into preallocated, pre-touched buffers (read_direct / out=); the new package {new_out}.",
        "Sessions: every timed repetition runs in a fresh reader right after an untimed warm-up at other "
        "positions (checked against the source array in round 1; for ds[t] one frame in every block, so lazily "
        "opened files are open); repetitions are interleaved across systems in a rotating order, so drifting "
        "machine load hits all of them alike.",
        "Caches: positions change every repetition (t-block, z, y/x, frame set) and no reader outlives its "
        f"repetition, so no decoded-chunk cache answers twice; ds[:] repeats, but a block ({block_mib:.1f} MiB) "
        f"is bigger than a chunk cache (HDF5 default {cache_mib:g} MiB per open dataset, used by the h5py peers).",
        f"Threads: library defaults on {os.cpu_count()} CPUs (zarr decodes chunks concurrently in a thread pool; "
        "HDF5 decodes in the calling thread).",
        "Codec: the peers use 1.x's blosc compressor, level, shuffle and chunk shape, but blosc's automatic "
        "block size (64 KiB or more, split by byte): HDF5's blosc filter takes no block size, and zarr's "
        "c-blosc uses small blocks only unsplit, which is a process-wide switch; 1.x writes 8 KiB blocks, "
        "which only its partial-chunk reads (traces) use.",
        "Write: the whole array to a new folder/file, into the page cache (os.sync() before each repetition, outside "
        "the timing), interleaved like the reads with an untimed first round; 1.x save() defaults to fsync=True, "
        "the peers do not fsync ('new nofsync' is 1.x without it). 0.4.4 runs its reads and writes in its own "
        "subprocess phase (same positions, fresh SplitDataset per pattern).",
    ]


def run_all(
    sd: Any, old_python: Path | None, shape: tuple[int, ...], reps: int, workdir: Path, tuned: bool
) -> tuple[dict[str, dict[str, Result]], dict[str, Any]]:
    """Prepare every layout, then time reads and writes for every system."""
    t0 = time.perf_counter()
    data = make_data(shape)
    print(f"generated data in {time.perf_counter() - t0:.1f} s", flush=True)
    npy = workdir / "data.npy"
    np.save(npy, data)
    block = (BLOCK_T, *shape[1:])
    patterns = make_patterns(shape, reps)
    results: dict[str, dict[str, Result]] = {p.name: {} for p in patterns}
    results["write"] = {}

    # -- layouts (untimed)
    new_dir, old_dir = workdir / "new", workdir / "old" / "ds"
    sd.save(data, new_dir, shape_block=block).close()
    codec, codec_raw = peers.detect_codec(sorted(new_dir.glob("*.h5"))[0])
    single, zdir, zshard = workdir / "single.h5", workdir / "data.zarr", workdir / "sharded.zarr"
    peers.write_h5_single(data, single, codec)
    peers.write_zarr(data, zdir, codec)
    peers.write_zarr(data, zshard, codec, shards=block)
    old_info: dict[str, Any] = {}
    if old_python is not None:
        job = {
            "data": str(npy),
            "tune_malloc": tuned,
            "tasks": [{"kind": "save", "root": str(old_dir.parent), "prefix": old_dir.name, "block_t": BLOCK_T}],
        }
        old_info = oldenv.run_worker(old_python, job, workdir / "job-save.json")
    layouts = {"new": new_dir, "single": single, "zarr": zdir, "zarr-shard": zshard}
    if old_python is not None:
        layouts["old"] = old_dir
    os.sync()  # no writeback of the fresh files running behind the first measurements
    sizes = {k: hostinfo.disk_bytes(v) for k, v in layouts.items()}
    cached_before = hostinfo.page_cache_fraction(layouts.values())
    print(
        "layouts written: "
        + ", ".join(f"{k} {v / 1e6:.0f} MB" for k, v in sizes.items())
        + f" (raw {data.nbytes / 1e6:.0f} MB); codec {codec.describe()}",
        flush=True,
    )

    # -- reads in this process
    openers: dict[str, Callable[[], Any]] = {
        "new": lambda: NewReader(sd, new_dir),
        "h5py": lambda: peers.H5Blocks(new_dir),
        "h5py-1file": lambda: peers.H5Single(single),
        "zarr": lambda: peers.Zarr3(zdir),
        "zarr-shard": lambda: peers.Zarr3(zshard),
    }
    if old_python is not None:
        openers["new@old"] = lambda: NewReader(sd, old_dir)
        openers["h5py@old"] = lambda: peers.H5Blocks(old_dir)
    leaks: dict[str, str] = {}
    keys = list(openers)
    for i, p in enumerate(patterns):
        print(f"reading: {p.name} ({p.code}) ...", flush=True)
        # Interleaved: round r times repetition r of every system, in a rotated order, so drifting
        # machine load spreads over all systems. Each session opens a fresh reader and warms it up,
        # so no chunk cache carries over between systems, patterns or repetitions.
        for r in range(1, reps + 1):
            for key in rotated(keys, i + r):
                res = results[p.name].setdefault(key, Result())
                if res.error:
                    continue
                try:
                    res.times.append(read_session(openers[key], p, r, data, check=r == 1))
                except Exception:
                    res.error = traceback.format_exc(limit=4)
                gc.collect()
                still_open = peers.open_hdf5_files()
                if still_open and key not in leaks:  # HDF5 would share their chunk caches with the next reader
                    leaks[key] = f"{still_open} HDF5 file(s) still open after {LABELS[key]}.close() ({p.name})"

    # -- old package: reads on both layouts, then writes (one subprocess)
    old_versions: dict[str, Any] = {}
    if old_python is not None:
        print("old package (subprocess): reads and writes ...", flush=True)
        enc = {p.name: [[encode_index(i) for i in rep] for rep in p.reps] for p in patterns}
        job = {
            "data": str(npy),
            "tune_malloc": tuned,
            "tasks": [
                {"kind": "read", "path": str(old_dir), "patterns": enc},
                {"kind": "read", "path": str(new_dir), "patterns": enc},
                {"kind": "write", "root": str(workdir / "write-old"), "block_t": BLOCK_T, "reps": reps + 1},
            ],
        }
        answer = oldenv.run_worker(old_python, job, workdir / "job-bench.json")
        old_versions = answer["versions"]
        for key, task_res in zip(("old", "old@new"), answer["results"][:2]):
            for name, r in task_res.items():
                results[name][key] = Result(r["times"], r["error"])
        results["write"]["old"] = Result(answer["results"][2]["times"], answer["results"][2]["error"])

    # -- writes in this process
    writers: dict[str, Callable[[Path], Any]] = {
        "new": lambda d: sd.save(data, d, shape_block=block),
        "h5py": lambda d: peers.write_h5_blocks(data, d, block, codec),
        "h5py-1file": lambda d: peers.write_h5_single(data, d, codec),
        "zarr": lambda d: peers.write_zarr(data, d, codec),
        "zarr-shard": lambda d: peers.write_zarr(data, d, codec, shards=block),
    }
    if "fsync" in inspect.signature(sd.save).parameters:
        writers["new-nofsync"] = lambda d: sd.save(data, d, shape_block=block, fsync=False)
    print(f"writing: {', '.join(LABELS[k] for k in writers)} (interleaved) ...", flush=True)
    wkeys = list(writers)
    for r in range(reps + 1):  # round 0 is the untimed warm-up
        for key in rotated(wkeys, r):
            res = results["write"].setdefault(key, Result())
            if res.error:
                continue
            try:
                dt = write_once(writers[key], workdir / f"write-{key}-{r}")
            except Exception:
                res.error = traceback.format_exc(limit=4)
            else:
                if r:
                    res.times.append(dt)

    cached_after = hostinfo.page_cache_fraction(layouts.values())
    uses_out = NewReader.supports_out(sd)
    notes = make_notes(cached_before, cached_after, tuned, uses_out, block) + list(leaks.values())
    meta: dict[str, Any] = {
        "shape": list(shape),
        "dtype": "uint16",
        "shape_block": list(block),
        "reps": reps,
        "codec_new_default": codec.describe(),
        "codec_raw_filters": codec_raw,
        "disk_bytes": sizes,
        "raw_bytes": int(data.nbytes),
        "page_cache_fraction": {"before": cached_before, "after": cached_after},
        "malloc_tuned": tuned,
        "new_reads_with_out": uses_out,
        "machine": hostinfo.machine(),
        "versions": {
            "split_dataset_new": getattr(sd, "__version__", None),
            "split_dataset_file": sd.__file__,
            **lib_versions(),
            "zarr_config": peers.zarr_info(),
            "old_env": old_versions or old_info.get("versions"),
        },
        "notes": notes,
        "pattern_codes": [(p.name, p.code) for p in patterns] + [("write", "save whole array")],
        "nbytes": {p.name: p.nbytes for p in patterns} | {"write": int(data.nbytes)},
    }
    return results, meta


if __name__ == "__main__":
    sys.exit(main())
