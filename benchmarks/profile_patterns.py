"""What limits each read pattern: cProfile of split_dataset 1.x reading a dataset written by 1.x.

    python benchmarks/profile_patterns.py [--shape T,Z,Y,X] [--reps N] [--top N] [--threads N]
                                          [--patterns volume,cold_t,...] [--workdir DIR]

Dark-camera noise (``run.make_noise``: Poisson(2) + 100, uint16) is written once with 1.x
``save(shape_block=(20, Z, Y, X), fsync=False)`` (everything else at its defaults, so a chunk index
too once the package writes one). Per pattern: the top functions by own time (tottime) and a
one-line split of the profiled time into blosc decode / pread / HDF5 (h5py) / os calls / numpy /
thread waits / Python. The numbers are printed, not interpreted.

Threads: cProfile sees only the thread that enables it, so the profiled process runs with
``SPLIT_DATASET_THREADS=1`` (``--threads`` to change) and all decoding happens in the profiled
thread. Unprofiled medians are printed next to it: in this process (same thread count) and in a
child process at the library's default thread count, so the profile's share of the real time is
visible. cProfile adds a cost per Python call: Python-heavy patterns look heavier profiled.

Patterns: warm (one reader, every block touched once untimed, then ``--reps`` repetitions at
changing positions): ``ds[t]``, ``ds[:, z]``, 8x8 trace, ``ds[:]``, 100 random frames,
``ds[::2]``; cold (a fresh reader per repetition, opened unprofiled, its first read of a block
profiled): ``cold ds[t]`` with ``chunk_index=False`` and, when the package has a chunk index,
with it.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_SHAPE = (100, 10, 256, 256)
BLOCK_T = 20
TRACE = 8
N_FRAMES = 100

# (name, code) in the printed order; cold_idx only when the package has build_chunk_index
PATTERNS: list[tuple[str, str]] = [
    ("volume", "ds[t]"),
    ("plane", "ds[:, z]"),
    ("trace8x8", "ds[:, z, y:y+8, x:x+8]"),
    ("whole", "ds[:]"),
    ("frames100", f"{N_FRAMES} random ds[t, z]"),
    ("step_t", "ds[::2]"),
    ("cold_t", "cold ds[t], chunk_index=False"),
    ("cold_t_idx", "cold ds[t], with the chunk index"),
]

# Split categories, first match wins: (label, test on (filename, function name))
CATEGORIES: list[tuple[str, Callable[[str, str], bool]]] = [
    ("blosc decode", lambda f, n: (f.endswith(os.path.join("storage", "blosc.py"))
                                   and n in ("decompress_ptr", "getitem_ptr")) or (f == "~" and "blosc" in n.lower())),
    ("pread", lambda f, n: f == "~" and any(k in n for k in ("posix.pread", "posix.preadv", "readinto"))),
    # hdf5_index's own time is HDF5's chunk_iter (a Cython call cProfile does not list) and its callback
    ("HDF5 chunk_iter", lambda f, n: f.endswith(os.path.join("storage", "chunkindex.py"))
     and n in ("hdf5_index", "<lambda>")),
    ("HDF5 other (h5py: open, metadata, reads)", lambda f, n: "h5py" in f or "h5py" in n),
    ("os open/close/stat", lambda f, n: f == "~" and any(k in n for k in (
        "posix.open", "posix.close", "posix.fstat", "posix.stat", "posix.lstat", "posix.scandir", "posix.dup",
        "io.open", "posix.listdir"))),
    ("numpy", lambda f, n: "numpy" in f or "numpy" in n or "ndarray" in n),
    ("thread waits/locks", lambda f, n: (f == "~" and ("acquire" in n or "wait" in n))
     or f.endswith("threading.py")),
    ("Python in split_dataset", lambda f, n: os.sep + "split_dataset" + os.sep in f),
]
OTHER = "other Python/builtins"


def patterns_available(has_index: bool) -> list[tuple[str, str]]:
    return [(n, c) for n, c in PATTERNS if n != "cold_t_idx" or has_index]


def make_indices(name: str, shape: tuple[int, ...], reps: int, rng: Any) -> list[list[Any]]:
    """Per repetition, the list of indices read together."""
    nt, nz, ny, nx = shape
    out: list[list[Any]] = []
    blocks = -(-nt // BLOCK_T)
    for r in range(reps):
        t = int(rng.integers(nt))
        z = int(rng.integers(nz))
        y, x = int(rng.integers(ny - TRACE + 1)), int(rng.integers(nx - TRACE + 1))
        if name == "volume":
            out.append([(t,)])
        elif name == "plane":
            out.append([(slice(None), z)])
        elif name == "trace8x8":
            out.append([(slice(None), z, slice(y, y + TRACE), slice(x, x + TRACE))])
        elif name == "whole":
            out.append([(slice(None),)])
        elif name == "frames100":
            flat = rng.choice(nt * nz, N_FRAMES, replace=False)
            out.append([(int(i // nz), int(i % nz)) for i in flat])
        elif name == "step_t":
            out.append([(slice(None, None, 2),)])
        else:  # cold: a block other than the last (a reader may open it for metadata)
            b = r % max(1, blocks - 1)
            out.append([(b * BLOCK_T + int(rng.integers(BLOCK_T)),)])
    return out


def touch(ds: Any, shape: tuple[int, ...]) -> None:
    """One pixel of every block: the reader is warm."""
    for b in range(-(-shape[0] // BLOCK_T)):
        ds[min(shape[0], (b + 1) * BLOCK_T) - 1, 0, 0:1, 0:1]


def run_pattern(sd: Any, path: Path, name: str, shape: tuple[int, ...], reps: int, seed: int,
                prof: cProfile.Profile | None) -> list[float]:
    """Times of each repetition (profiled if `prof`); positions from `seed`, the same in every process."""
    import numpy as np

    rng = np.random.default_rng(seed)
    indices = make_indices(name, shape, reps, rng)
    has_index = hasattr(sd, "build_chunk_index")
    kwargs: dict[str, Any] = {"chunk_index": False} if has_index and name == "cold_t" else {}
    times: list[float] = []
    if name.startswith("cold"):
        for rep in indices:
            ds = sd.SplitDataset(path, **kwargs)
            try:
                if prof is not None:
                    prof.enable()
                t0 = time.perf_counter()
                for idx in rep:
                    ds[idx]
                times.append(time.perf_counter() - t0)
                if prof is not None:
                    prof.disable()
            finally:
                ds.close()
        return times
    ds = sd.SplitDataset(path, **kwargs)
    try:
        touch(ds, shape)
        for rep in indices:
            if prof is not None:
                prof.enable()
            t0 = time.perf_counter()
            for idx in rep:
                ds[idx]
            times.append(time.perf_counter() - t0)
            if prof is not None:
                prof.disable()
    finally:
        ds.close()
    return times


def category(filename: str, func: str) -> str:
    for label, test in CATEGORIES:
        if test(filename, func):
            return label
    return OTHER


def describe(key: tuple[str, int, str]) -> str:
    filename, line, func = key
    if filename == "~":
        return func
    parts = Path(filename).parts
    short = "/".join(parts[parts.index("split_dataset"):]) if "split_dataset" in parts else "/".join(parts[-2:])
    return f"{short}:{line}({func})"


def summarize(prof: cProfile.Profile, top: int) -> tuple[float, list[tuple[str, int, float, float, str]], dict[str, float]]:
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in stats.values())
    rows = sorted(stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    table = [(describe(k), v[1], v[2], v[3], category(k[0], k[2])) for k, v in rows]
    split: dict[str, float] = {}
    for k, v in stats.items():
        cat = category(k[0], k[2])
        split[cat] = split.get(cat, 0.0) + v[2]
    return total, table, split


def fmt(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.0f}us"
    if s < 1:
        return f"{s * 1e3:.2f}ms"
    return f"{s:.2f}s"


def seed_of(name: str) -> int:
    """Positions per pattern: the same in the profiled run and in both unprofiled runs."""
    return 100 + [n for n, _ in PATTERNS].index(name)


def time_only(sd: Any, path: Path, shape: tuple[int, ...], reps: int, name: str) -> float:
    run_pattern(sd, path, name, shape, 1, 1000 + seed_of(name), None)  # warm-up, other positions
    return statistics.median(run_pattern(sd, path, name, shape, reps, seed_of(name), None))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default=",".join(map(str, DEFAULT_SHAPE)), metavar="T,Z,Y,X")
    parser.add_argument("--reps", type=int, default=5, help="repetitions per warm pattern (cold: 3x)")
    parser.add_argument("--top", type=int, default=12, help="functions listed per pattern")
    parser.add_argument("--threads", type=int, default=1,
                        help="SPLIT_DATASET_THREADS in the profiled process (default 1: cProfile sees one thread)")
    parser.add_argument("--patterns", default=None, help="comma-separated subset of " + ",".join(n for n, _ in PATTERNS))
    parser.add_argument("--workdir", type=Path, default=None, help="where the dataset goes (default: a temp dir)")
    parser.add_argument("--no-default-threads", action="store_true",
                        help="skip the unprofiled child process at the default thread count")
    parser.add_argument("--time-only", type=Path, default=None, help=argparse.SUPPRESS)  # child: dataset path
    args = parser.parse_args(argv)
    shape = tuple(int(v) for v in args.shape.split(","))
    if len(shape) != 4:
        parser.error("--shape takes T,Z,Y,X")

    if args.time_only is None and args.threads > 0:
        os.environ["SPLIT_DATASET_THREADS"] = str(args.threads)  # read when split_dataset is imported
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(HERE))
    import split_dataset as sd
    from split_dataset.storage import threads as sdthreads

    has_index = hasattr(sd, "build_chunk_index")
    names = [n for n, _ in patterns_available(has_index)]
    if args.patterns:
        wanted = [p.strip() for p in args.patterns.split(",") if p.strip()]
        unknown = [p for p in wanted if p not in dict(PATTERNS)]
        if unknown:
            parser.error(f"unknown patterns {unknown}")
        names = [n for n in names if n in wanted]
    reps_of = {n: (3 * args.reps if n.startswith("cold") else args.reps) for n in names}

    if args.time_only is not None:  # child: unprofiled medians at the default thread count
        res = {n: time_only(sd, args.time_only, shape, reps_of[n], n) for n in names}
        print(json.dumps({"threads": sdthreads.POOL_THREADS, "medians": res}))
        return 0

    from run import make_noise

    workdir = Path(tempfile.mkdtemp(prefix="split-dataset-prof-")) if args.workdir is None else args.workdir
    path = workdir / "noise-1x"
    load_start = os.getloadavg()
    try:
        data = make_noise(shape)
        sd.save(data, path, shape_block=(BLOCK_T, *shape[1:]), fsync=False).close()
        index_file = path / "chunk_index.bin"
        print(f"split_dataset {getattr(sd, '__version__', '?')} at {Path(sd.__file__).parent}")
        print(f"data: noise uint16 {shape} ({data.nbytes / 1e6:.0f} MB), blocks of T={BLOCK_T}, written by 1.x "
              f"save() defaults (fsync=False); chunk index: "
              + ("none in this package (cold_t_idx skipped)" if not has_index else
                 f"{'written by save' if index_file.exists() else 'NOT written by save'}"))
        if has_index and not index_file.exists():
            getattr(sd, "build_chunk_index")(path)  # noqa: B009 (absent before the index lands)
            print("  built it with build_chunk_index")
        del data
        threads = sdthreads.POOL_THREADS
        default_threads = threads
        default_medians: dict[str, float] = {}
        if not args.no_default_threads:
            env = {k: v for k, v in os.environ.items() if k != "SPLIT_DATASET_THREADS"}
            child = [sys.executable, __file__, "--time-only", str(path), "--shape", args.shape,
                     "--reps", str(args.reps), "--patterns", ",".join(names)]
            out = subprocess.run(child, env=env, capture_output=True, text=True, check=True)
            answer = json.loads(out.stdout.strip().splitlines()[-1])
            default_medians = answer["medians"]
            default_threads = answer["threads"]
        local = {n: time_only(sd, path, shape, reps_of[n], n) for n in names}
        print(f"profiled process: SPLIT_DATASET_THREADS={threads}; unprofiled medians also at "
              + (f"the default {default_threads} threads (child process)" if default_medians else "no other count"))
        print(f"reps: warm {args.reps} (one reader, every block touched first), cold {3 * args.reps} (fresh reader "
              "each, first read of a block); times per repetition")
        summary: list[tuple[str, float, float | None, dict[str, float]]] = []
        codes = dict(PATTERNS)
        if not has_index:
            codes["cold_t"] = "cold ds[t], reader defaults"
        for name in names:
            prof = cProfile.Profile()
            times = run_pattern(sd, path, name, shape, reps_of[name], seed_of(name), prof)
            total, table, split = summarize(prof, args.top)
            n = len(times)
            print(f"\n=== {codes[name]} ===")
            dm = default_medians.get(name)
            print(f"unprofiled median {fmt(local[name])} ({threads} thread)"
                  + (f", {fmt(dm)} ({default_threads} threads)" if dm is not None else "")
                  + f"; profiled median {fmt(statistics.median(times))}; profile total {fmt(total)} over {n} reps "
                  f"= {fmt(total / n)} per rep")
            print(f"  {'tottime/rep':>11} {'calls/rep':>9} {'cum/rep':>9}  function  [category]")
            for desc, ncalls, tt, ct, cat in table:
                print(f"  {fmt(tt / n):>11} {ncalls / n:>9.1f} {fmt(ct / n):>9}  {desc}  [{cat}]")
            order = [c for c, _ in CATEGORIES] + [OTHER]
            parts = [f"{c} {100 * split[c] / total:.0f}%" for c in order if split.get(c, 0) / max(total, 1e-12) >= 0.005]
            print("  split: " + ", ".join(parts))
            summary.append((codes[name], local[name], dm, split))
        print("\nSummary: per pattern, unprofiled median and the profiled split (share of profiled time)")
        for code, med, dm, split in summary:
            tot = sum(split.values()) or 1e-12
            top3 = sorted(split.items(), key=lambda kv: kv[1], reverse=True)[:3]
            print(f"  {code:<36} {fmt(med):>9} (1 thr)" + (f" {fmt(dm):>9} (default)" if dm is not None else "")
                  + "  " + ", ".join(f"{c} {100 * v / tot:.0f}%" for c, v in top3))
        load_end = os.getloadavg()
        print(f"\nload average (1 min): {load_start[0]:.2f} at the start, {load_end[0]:.2f} at the end, "
              f"{os.cpu_count()} CPUs; cProfile overhead inflates the Python share")
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
