"""Streaming-write benchmark: SplitDatasetWriter against raw h5py and the old way, same run.

    python benchmarks/stream.py [--quick] [--frames N] [--reps R] [--data struct,noise]
                                [--case frames,volumes] [--sustain SECONDS] [--skip-old]

Cases: 2048x2048 uint16 camera frames (16 per file, 128 MiB blocks) and 30x512x512 uint16
volumes (4 per file, 60 MiB blocks). Data kinds (8 distinct frames, cycled):

- ``struct``: synthetic light-sheet-like frames (smooth background, sparse bright cells,
  Poisson noise; about 1.9x with blosc-lz4);
- ``noise``: a dark camera, ``rng.poisson(2.0, shape) + 100`` as uint16, independent pixels.

Systems, each in a fresh subprocess (glibc malloc at its defaults: no mallopt, and this script
restarts itself without MALLOC_* / GLIBC_TUNABLES) so its peak memory is its own:

- ``new``: SplitDatasetWriter defaults (fsync + SHA256SUMS); ``new nofsync`` (checksums,
  no fsync) and ``new bare`` (``fsync=False, checksums=False``).
- ``h5py+fsync``: naive h5py: ``resize`` + ``d[i] = frame`` frame by frame into one resizable
  chunked file, same codec (blosc lz4 level 5, byte shuffle; HDF5's filter, blosc's own block
  size, one thread) and chunks as the split dataset's files, then the file closed and ONE
  ``os.fsync`` of it, timed. ``h5py``: the same without the fsync.
- ``old``: what acquisition programs do today: buffer a block, one ``flammkuchen.save`` per
  block (blosc, PyTables' chunking) in the NumPy 1.26 environment of ``oldenv.py``; no fsync.
- ``bound``: copy each frame into a block buffer and blosc-compress its chunks on all cores
  with the writer's codec, no file I/O: the copy + compress bound on this machine.

Ratios are of medians over the repetitions: ``new/h5py+fsync`` (target <= 1.0) and
``bare/h5py`` (target <= 1/1.3 = 0.77). ``os.sync()`` runs (untimed) before every run.

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
sys.path.insert(0, str(HERE))
import hostinfo  # noqa: E402

CASES = {
    "frames": {"label": "frames 2048x2048", "frame": (2048, 2048), "per_file": 16},
    "volumes": {"label": "volumes 30x512x512", "frame": (30, 512, 512), "per_file": 4},
}
SYSTEMS = ["new", "new nofsync", "new bare", "h5py+fsync", "h5py", "bound", "old"]


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


def noise_frames(frame: tuple[int, ...], n: int, seed: int = 0) -> np.ndarray:
    """`n` dark-camera frames: ``poisson(2.0) + 100`` per pixel, independent pixels, uint16."""
    rng = np.random.default_rng(seed)
    return (rng.poisson(2.0, (n,) + frame) + 100).astype(np.uint16)


MAKERS = {"struct": synth_frames, "noise": noise_frames}


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


def _run_h5py(frames: np.ndarray, n: int, per_file: int, root: Path, fsync: bool) -> dict[str, Any]:
    """Naive h5py: frame-by-frame ``resize`` + write into one chunked file; with `fsync`, one
    ``os.fsync`` of the closed file (what makes it durable), timed."""
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
    if fsync:
        fd = os.open(root / "all.h5", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return {"seconds": time.perf_counter() - t0}


def _run_bound(frames: np.ndarray, n: int, per_file: int, root: Path) -> dict[str, Any]:
    from split_dataset.storage import Codec, default_chunks, pool
    from split_dataset.storage import blosc as _blosc
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
    elif system == "h5py+fsync":
        out = _run_h5py(frames, spec["n"], spec["per_file"], root, fsync=True)
    elif system == "h5py":
        out = _run_h5py(frames, spec["n"], spec["per_file"], root, fsync=False)
    elif system == "bound":
        out = _run_bound(frames, spec["n"], spec["per_file"], root)
    else:
        raise ValueError(system)
    out["extra_peak_mb"] = (peak_rss_kb() - base_rss) / 1024
    out["disk_bytes"] = hostinfo.disk_bytes(root) if root.exists() else 0
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
size = sum(p.stat().st_size for p in root.iterdir())
print(json.dumps({"seconds": dt, "extra_peak_mb": (peak() - base) / 1024, "disk_bytes": size}))
"""


def run_child(spec: dict[str, Any], python: str | None = None, code: str | None = None) -> dict[str, Any]:
    if code is None:
        cmd = [sys.executable, str(Path(__file__)), "--child", json.dumps(spec)]
        new_path = spec.get("new_path") or str(HERE.parent)
        env = dict(os.environ, PYTHONPATH=new_path + os.pathsep + os.environ.get("PYTHONPATH", ""))
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


def strip_malloc_env() -> None:
    """Re-run this script without malloc-tuning variables (glibc reads them only at start-up)."""
    found = hostinfo.malloc_env()
    if found:
        print(f"removing {sorted(found)} from the environment and restarting (malloc at defaults)", flush=True)
        env = {k: v for k, v in os.environ.items() if k not in found}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)


def summarize(runs: list[dict[str, Any]], n: int, frame_bytes: int) -> dict[str, Any]:
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {"error": runs[0].get("error") if runs else "not run"}
    secs = [r["seconds"] for r in ok]
    sec = statistics.median(secs)
    return {"seconds": sec, "all_seconds": secs, "spread": max(secs) / min(secs), "fps": n / sec,
            "MBps": n * frame_bytes / sec / 1e6, "extra_peak_mb": max(r["extra_peak_mb"] for r in ok),
            "ratio": n * frame_bytes / statistics.median(r["disk_bytes"] for r in ok) if ok[0].get("disk_bytes")
            else None}


def _ratio(table: dict[str, Any], a: str, b: str) -> float | None:
    ta, tb = table.get(a, {}).get("seconds"), table.get(b, {}).get("seconds")
    return ta / tb if ta and tb else None


def print_table(title: str, n: int, frame_bytes: int, reps: int, table: dict[str, Any]) -> None:
    print(f"\n{title}: {n} frames ({n * frame_bytes / 1e9:.2f} GB) per run, median of {reps}")
    print(f"{'system':<13}{'s':>8}{'MB/s':>7}{'frames/s':>9}{'vs h5py+fs':>11}{'vs h5py':>8}{'comp.':>6}{'peak MB':>8}")
    for system, row in table.items():
        if "error" in row:
            print(f"{system:<13} error: {row['error']}")
            continue
        r1, r2 = _ratio(table, system, "h5py+fsync"), _ratio(table, system, "h5py")
        mark = "~" if row["spread"] > 1.5 else " "
        comp = f"{row['ratio']:.2f}" if row["ratio"] else "-"
        print(f"{system:<13}{row['seconds']:>7.2f}{mark}{row['MBps']:>7.0f}{row['fps']:>9.1f}"
              f"{(f'{r1:.2f}' if r1 else '-'):>11}{(f'{r2:.2f}' if r2 else '-'):>8}{comp:>6}{row['extra_peak_mb']:>8.0f}")
    a, b = _ratio(table, "new", "h5py+fsync"), _ratio(table, "new bare", "h5py")
    verdict = []
    if a is not None:
        verdict.append(f"new/h5py+fsync = {a:.2f} (target <= 1.00: {'met' if a <= 1.0 else 'NOT met'})")
    if b is not None:
        verdict.append(f"bare/h5py = {b:.2f} (target <= 0.77: {'met' if b <= 1 / 1.3 else 'NOT met'})")
    if verdict:
        print("  " + "; ".join(verdict))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=0,
                    help="frames per run (default: 2 GiB of data per run, --quick 512 MiB)")
    ap.add_argument("--reps", type=int, default=0, help="repetitions per system (default 5, --quick 3)")
    ap.add_argument("--quick", action="store_true", help="512 MiB per run, 3 reps, no 'old' (~2 min)")
    ap.add_argument("--data", default="struct,noise", help="data kinds, comma-separated: struct, noise")
    ap.add_argument("--case", default="frames,volumes", help="cases, comma-separated: frames, volumes")
    ap.add_argument("--systems", default=",".join(SYSTEMS), help="systems, comma-separated")
    ap.add_argument("--sustain", type=float, default=0, help="seconds of 100 fps 2048x2048 camera simulation")
    ap.add_argument("--skip-old", action="store_true")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--new-path", type=Path, default=HERE.parent, help="folder holding the split_dataset to test")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_main(json.loads(args.child))
        return
    strip_malloc_env()
    kinds = [k.strip() for k in args.data.split(",") if k.strip()]
    cases = [c.strip() for c in args.case.split(",") if c.strip()]
    systems = [x.strip() for x in args.systems.split(",") if x.strip()]
    if not kinds or any(k not in MAKERS for k in kinds):
        ap.error(f"--data takes a comma-separated subset of {list(MAKERS)}")
    if not cases or any(c not in CASES for c in cases):
        ap.error(f"--case takes a comma-separated subset of {list(CASES)}")
    if any(x not in SYSTEMS for x in systems):
        ap.error(f"--systems takes a comma-separated subset of {SYSTEMS}")
    if args.skip_old or args.quick:
        systems = [x for x in systems if x != "old"]
    reps = args.reps or (3 if args.quick else 5)
    run_bytes = (512 << 20) if args.quick else (2 << 30)
    load_start = os.getloadavg()
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="sd-stream-", dir=args.workdir))
    old_python = None
    if "old" in systems:
        import oldenv

        old_python = str(oldenv.ensure_env(quiet=True))
    info = hostinfo.machine()
    print(f"{info['cpus']} CPUs ({info['cpu_model']}), {(info['mem_bytes'] or 0) / 2**30:.0f} GiB, "
          f"python {info['python']}; malloc: glibc defaults (no mallopt, no MALLOC_*/GLIBC_TUNABLES); "
          f"scratch: {work}; split_dataset from {args.new_path}", flush=True)
    results: dict[str, Any] = {"machine": info, "reps": reps, "tables": {}}
    try:
        for kind in kinds:
            for case in cases:
                cfg = CASES[case]
                frame, per_file = tuple(cfg["frame"]), int(cfg["per_file"])
                frame_bytes = int(np.prod(frame)) * 2
                n = args.frames or max(per_file, run_bytes // frame_bytes // per_file * per_file)
                data = work / "frames.npy"
                np.save(data, MAKERS[kind](frame, 8))
                times: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
                for rep in range(reps):
                    for k in range(len(systems)):  # rotate the order each repetition
                        system = systems[(rep + k) % len(systems)]
                        spec = {"system": system, "frame": frame, "per_file": per_file, "n": n, "distinct": 8,
                                "root": str(work / f"out-{rep}-{k}"), "data": str(data),
                                "new_path": str(args.new_path.resolve())}
                        os.sync()
                        r = run_child(spec, old_python, OLD_CHILD) if system == "old" else run_child(spec)
                        times[system].append(r)
                table = {system: summarize(runs, n, frame_bytes) for system, runs in times.items()}
                title = f"{kind}, {cfg['label']}"
                results["tables"][title] = {"frames": n, "frame_bytes": frame_bytes, "systems": table}
                print_table(title, n, frame_bytes, reps, table)
                sys.stdout.flush()
        if args.sustain:
            root = work / "sustain"
            r = sustain(args.sustain, root)
            shutil.rmtree(root, ignore_errors=True)
            results["sustain_100fps_2048x2048"] = r
            print(f"\nsustained camera, 100 frames/s of 2048x2048 uint16 (839 MB/s) for {args.sustain:.0f} s:")
            print(json.dumps(r, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_end = os.getloadavg()
    print("\nSummary (ratios of medians; new/h5py+fsync target <= 1.00, bare/h5py target <= 0.77):")
    for title, t in results["tables"].items():
        a, b = _ratio(t["systems"], "new", "h5py+fsync"), _ratio(t["systems"], "new bare", "h5py")
        print(f"  {title:<32} new/h5py+fsync {a if a is None else f'{a:.2f}'}   bare/h5py {b if b is None else f'{b:.2f}'}")
    print("\ns = median seconds per run (~: slowest rep > 1.5x the fastest); 'vs h5py+fs', 'vs h5py' = this "
          "system's median / that peer's median (< 1: faster); comp. = raw bytes / bytes on disk; 'peak MB' = "
          "growth of the process's peak RSS while writing (8 distinct source frames are held before it starts).")
    print(f"load average {load_start[0]:.2f} at the start, {load_end[0]:.2f} at the end; "
          f"wall {time.perf_counter() - started:.0f} s")
    results["load"] = [load_start[0], load_end[0]]
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / time.strftime("stream-%Y%m%d-%H%M%S.json")
    path.write_text(json.dumps(results, indent=1))
    print(f"results: {path}")


if __name__ == "__main__":
    main()
