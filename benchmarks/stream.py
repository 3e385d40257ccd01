"""Streaming-write benchmark: SplitDatasetWriter against raw h5py and the old way, same run.

    python benchmarks/stream.py [--frames N] [--reps R] [--sustain SECONDS] [--skip-old]

Cases: 2048x2048 uint16 camera frames (16 per file, 128 MiB blocks) and 30x512x512 uint16
volumes (4 per file, 60 MiB blocks), from synthetic light-sheet-like data (the frames
cycle through a few distinct images, compressing about 1.9x with blosc-lz4).

Systems, each in a fresh subprocess so its peak memory is its own:
- ``new``: SplitDatasetWriter defaults (fsync + SHA256SUMS); ``new nofsync`` (checksums,
  no fsync) and ``new bare`` (neither: what the peers do).
- ``h5py``: raw h5py appending frame by frame to one resizable chunked file, same codec
  (blosc lz4 level 5, byte shuffle) and chunks as the split dataset's files.
- ``old``: what acquisition programs do today: buffer a block, one ``flammkuchen.save`` per
  block (blosc, PyTables' chunking) in the NumPy 1.26 environment of ``oldenv.py``.
- ``bound``: copy each frame into a block buffer and blosc-compress its chunks on all cores,
  no file I/O: the copy + compress bound for the codec on this machine.

``--sustain S`` then simulates a 2048x2048 camera at 100 frames/s (839 MB/s) for S seconds,
appending on a fixed clock, and reports whether the writer kept up and lost nothing.
Files are written to a scratch folder on the same disk and deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
CASES = {
    "frames 2048x2048": {"frame": (2048, 2048), "per_file": 16},
    "volumes 30x512x512": {"frame": (30, 512, 512), "per_file": 4},
}


def synth_frames(frame: tuple[int, ...], n: int, seed: int = 0) -> np.ndarray:
    """`n` distinct uint16 frames: a smooth background, sparse bright cells, Poisson noise."""
    rng = np.random.default_rng(seed)
    y, x = frame[-2:]
    yy, xx = np.mgrid[0:y, 0:x].astype(np.float32)
    base = 90 + 30 * np.exp(-(((yy - y / 2) / (0.35 * y)) ** 2 + ((xx - x / 2) / (0.35 * x)) ** 2))
    out = np.empty((n,) + frame, np.uint16)
    planes = int(np.prod(frame[:-2])) if len(frame) > 2 else 1
    for i in range(n):
        cells = np.zeros((planes, y, x), np.float32)
        k = y * x // 400
        for p in range(planes):
            cells[p, rng.integers(0, y, k), rng.integers(0, x, k)] = rng.uniform(200, 1500, k)
        lam = base[None] + cells * 8
        out[i] = rng.poisson(lam).astype(np.uint16).reshape(frame)
    return out


# ----------------------------------------------------------------------------- one system per process


def _run_new(frames: np.ndarray, n: int, per_file: int, root: Path, **kw: Any) -> dict[str, Any]:
    from split_dataset import SplitDatasetWriter

    t0 = time.perf_counter()
    with SplitDatasetWriter(root, frames.shape[1:], frames.dtype, per_file, **kw) as w:
        for i in range(n):
            w.append(frames[i % len(frames)])
    dt = time.perf_counter() - t0
    ds = w.dataset
    assert ds.shape[0] == n and np.array_equal(ds[n - 1], frames[(n - 1) % len(frames)])
    return {"seconds": dt}


def _run_h5py(frames: np.ndarray, n: int, per_file: int, root: Path) -> dict[str, Any]:
    import h5py
    import hdf5plugin

    from split_dataset.storage import default_chunks

    frame = frames.shape[1:]
    chunks = default_chunks((per_file,) + frame, frames.itemsize)
    root.mkdir(parents=True)
    t0 = time.perf_counter()
    with h5py.File(root / "all.h5", "w") as f:
        d = f.create_dataset("stack", shape=(0,) + frame, maxshape=(None,) + frame, dtype=frames.dtype,
                             chunks=chunks, **hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=1))
        for i in range(n):
            d.resize(i + 1, axis=0)
            d[i] = frames[i % len(frames)]
    return {"seconds": time.perf_counter() - t0}


def _run_bound(frames: np.ndarray, n: int, per_file: int, root: Path) -> dict[str, Any]:
    from split_dataset.storage import blosc as _blosc
    from split_dataset.storage import Codec, default_chunks, pool
    from split_dataset.storage.hdf5 import _chunk_grid, _chunk_of

    frame = frames.shape[1:]
    block = np.empty((per_file,) + frame, frames.dtype)
    chunks = default_chunks(block.shape, frames.itemsize)
    offsets = _chunk_grid(block.shape, chunks)
    args = Codec.parse("blosc-lz4").blosc_args(chunks[-1] * frames.itemsize)  # the writer's codec, block size too
    assert args is not None
    t0 = time.perf_counter()
    for i in range(n):
        block[i % per_file] = frames[i % len(frames)]
        if i % per_file == per_file - 1 or i == n - 1:
            for _ in pool().map(lambda o: _blosc.compress(_chunk_of(block, o, chunks), *args), offsets):
                pass
    return {"seconds": time.perf_counter() - t0}


def peak_rss_kb() -> int:
    """VmHWM of this process; unlike ru_maxrss it does not inherit the parent's peak across exec."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def child_main(spec: dict[str, Any]) -> None:
    """Entry point of one measurement subprocess; prints a JSON line."""
    frames = np.load(spec["data"])  # the source frames, loaded before the peak is measured
    base_rss = peak_rss_kb()
    root = Path(spec["root"])
    system = spec["system"]
    if system == "new":
        out = _run_new(frames, spec["n"], spec["per_file"], root)
    elif system == "new nofsync":
        out = _run_new(frames, spec["n"], spec["per_file"], root, fsync=False)
    elif system == "new bare":
        out = _run_new(frames, spec["n"], spec["per_file"], root, fsync=False, checksums=False)
    elif system == "h5py":
        out = _run_h5py(frames, spec["n"], spec["per_file"], root)
    elif system == "bound":
        out = _run_bound(frames, spec["n"], spec["per_file"], root)
    else:
        raise ValueError(system)
    out["extra_peak_mb"] = (peak_rss_kb() - base_rss) / 1024
    print(json.dumps(out))


OLD_CHILD = r"""
import json, sys, time, numpy as np, flammkuchen as fl
from pathlib import Path
def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
spec = json.loads(sys.argv[1])
frames = np.load(spec["data"])
base = peak()
root = Path(spec["root"]); root.mkdir(parents=True)
n, per = spec["n"], spec["per_file"]
key = "stack_%dD" % (frames.ndim)
t0 = time.perf_counter()
buf = np.empty((per,) + frames.shape[1:], frames.dtype)
k = 0
for i in range(n):
    buf[i % per] = frames[i % len(frames)]
    if i % per == per - 1 or i == n - 1:
        fl.save(str(root / ("%04d.h5" % k)), {key: buf[: i % per + 1]}, compression="blosc")
        k += 1
dt = time.perf_counter() - t0
print(json.dumps({"seconds": dt, "extra_peak_mb": (peak() - base) / 1024}))
"""


def run_child(spec: dict[str, Any], python: str | None = None, code: str | None = None) -> dict[str, Any]:
    if code is None:
        cmd = [sys.executable, str(Path(__file__)), "--child", json.dumps(spec)]
        env = dict(os.environ, PYTHONPATH=str(HERE.parent) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    else:
        cmd = [python or sys.executable, "-I", "-c", code, json.dumps(spec)]
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    shutil.rmtree(spec["root"], ignore_errors=True)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- sustained camera


def sustain(seconds: float, root: Path, fps: float = 100.0) -> dict[str, Any]:
    """Append 2048x2048 frames on a fixed 100 Hz clock; report lateness and completeness."""
    from split_dataset import SplitDatasetWriter
    from split_dataset.storage import read_checksums, sha256_file

    frames = synth_frames((2048, 2048), 8)
    n = int(seconds * fps)
    late = []
    t0 = time.perf_counter()
    with SplitDatasetWriter(root, (2048, 2048), np.uint16, 16) as w:
        for i in range(n):
            due = t0 + i / fps
            now = time.perf_counter()
            if now < due:
                time.sleep(due - now)
            late.append(max(0.0, time.perf_counter() - due))
            w.append(frames[i % 8])
        t_append = time.perf_counter() - t0
    t_close = time.perf_counter() - t0
    ds = w.dataset
    sums = read_checksums(root) or {}
    intact = len(sums) == ds.n_blocks and all(sha256_file(root / k) == v for k, v in sums.items())
    sample = [0, n // 2, n - 1]
    values_ok = all(np.array_equal(ds[i], frames[i % 8]) for i in sample)
    return {
        "frames": n, "frames_on_disk": ds.shape[0], "append_seconds": t_append, "close_seconds": t_close,
        "mean_rate_fps": n / t_append, "max_lateness_ms": 1e3 * max(late), "p99_lateness_ms": 1e3 * float(np.percentile(late, 99)),
        "checksums_ok": intact, "values_ok": values_ok,
    }


# ----------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=0, help="frames per run (default: 2 GiB of data per run)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--sustain", type=float, default=0, help="seconds of 100 fps 2048x2048 camera simulation")
    ap.add_argument("--skip-old", action="store_true")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_main(json.loads(args.child))
        return
    work = Path(tempfile.mkdtemp(prefix="sd-stream-", dir=args.workdir))
    old_python = None
    if not args.skip_old:
        sys.path.insert(0, str(HERE))
        import oldenv

        old_python = str(oldenv.ensure_env(quiet=True))
    results: dict[str, Any] = {}
    systems = ["new", "new nofsync", "new bare", "h5py", "bound"] + ([] if args.skip_old else ["old"])
    try:
        for case, cfg in CASES.items():
            frame, per_file = tuple(cfg["frame"]), int(cfg["per_file"])
            frame_bytes = int(np.prod(frame)) * 2
            n = args.frames or max(per_file, (2 << 30) // frame_bytes // per_file * per_file)
            data = work / "frames.npy"
            np.save(data, synth_frames(frame, 8))
            times: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
            for rep in range(args.reps):
                for k in range(len(systems)):  # rotate the order each repetition
                    system = systems[(rep + k) % len(systems)]
                    spec = {"system": system, "frame": frame, "per_file": per_file, "n": n, "distinct": 8,
                            "root": str(work / f"out-{rep}-{k}"), "data": str(data)}
                    os.sync()
                    r = run_child(spec, old_python, OLD_CHILD) if system == "old" else run_child(spec)
                    times[system].append(r)
            table = {}
            for system, runs in times.items():
                ok = [r for r in runs if "error" not in r]
                if not ok:
                    table[system] = {"error": runs[0].get("error")}
                    continue
                sec = statistics.median(r["seconds"] for r in ok)
                table[system] = {"seconds": sec, "fps": n / sec, "MBps": n * frame_bytes / sec / 1e6,
                                 "extra_peak_mb": max(r["extra_peak_mb"] for r in ok)}
            results[case] = {"frames": n, "frame_bytes": frame_bytes, "systems": table}
            print(f"\n{case}: {n} frames ({n * frame_bytes / 1e9:.1f} GB) per run, median of {args.reps}")
            print(f"{'system':<14}{'MB/s':>8}{'frames/s':>10}{'vs new':>8}{'peak MB':>9}")
            ref = table["new"].get("seconds")
            for system, row in table.items():
                if "error" in row:
                    print(f"{system:<14} error: {row['error']}")
                    continue
                ratio = f"{row['seconds'] / ref:.2f}x" if ref else "-"
                print(f"{system:<14}{row['MBps']:>8.0f}{row['fps']:>10.1f}{ratio:>8}{row['extra_peak_mb']:>9.0f}")
        if args.sustain:
            root = work / "sustain"
            r = sustain(args.sustain, root)
            shutil.rmtree(root, ignore_errors=True)
            results["sustain_100fps_2048x2048"] = r
            print(f"\nsustained camera, 100 frames/s of 2048x2048 uint16 (839 MB/s) for {args.sustain:.0f} s:")
            print(json.dumps(r, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\nratio 'vs new' = system time / new writer time (>1: the new writer is faster). 'peak MB': growth "
          "of the process's peak RSS while writing (8 distinct source frames are held before it starts).")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / time.strftime("stream-%Y%m%d-%H%M%S.json")
    path.write_text(json.dumps(results, indent=1))
    print(f"results: {path}")


if __name__ == "__main__":
    main()
