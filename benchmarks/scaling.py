"""Thread scaling, the in-file chunk-shape trade-off, and memory of the reader.

    python benchmarks/scaling.py

1. Whole-array read and save of a 262 MB uint16 (200, 10, 256, 256) dataset with
   ``SPLIT_DATASET_THREADS`` = 1, 2, 4 (each in a fresh process; files in the page cache).
2. One frame ``ds[t, z]`` and an 8x8 trace ``ds[:, z, y:y+8, x:x+8]``, read by 1.x, on the
   default layout (one image plane per chunk, blosc-lz4 in 8 KiB blocks), the same with
   blosc's automatic block size, the old package's layout (blosclz level 9, plane chunks),
   and chunks spanning time (``chunks=(20, 1, 64, 64)``); interleaved, fresh positions.
3. Peak memory: RSS growth of opening the dataset and reading 10 frames, and of ``ds[:]``.
Medians of several repetitions at fresh positions.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SHAPE = (200, 10, 256, 256)


def synth(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.poisson(100, (8,) + shape[1:]).astype(np.uint16)
    return np.concatenate([base] * (shape[0] // 8 + 1))[: shape[0]]


CHILD = r"""
import json, sys, time, statistics, numpy as np
sys.path.insert(0, {repo!r})
def peak_kb():  # VmHWM: unlike ru_maxrss it is not inherited from the parent across exec
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
import split_dataset
path, mode = sys.argv[1], sys.argv[2]
if mode == "threads":
    ds = split_dataset.open(path)
    ds[:]
    t = []
    for _ in range(5):
        t0 = time.perf_counter(); ds[:]; t.append(time.perf_counter() - t0)
    data = ds[:]
    s = []
    for i in range(3):
        t0 = time.perf_counter(); split_dataset.save(data, path + f"-copy{{i}}", (20,), fsync=False, overwrite=True); s.append(time.perf_counter() - t0)
    print(json.dumps({{"read": statistics.median(t), "save": statistics.median(s)}}))
else:
    base = peak_kb()
    ds = split_dataset.open(path)
    for t in range(0, 200, 20):
        ds[t, 3]
    few = peak_kb()
    out = ds[:]
    whole = peak_kb()
    print(json.dumps({{"few_frames_mb": (few - base) / 1024, "whole_mb": (whole - few) / 1024, "output_mb": out.nbytes / 2**20}}))
"""


def child(path: Path, mode: str, threads: int | None = None) -> dict:
    env = dict(os.environ)
    if threads:
        env["SPLIT_DATASET_THREADS"] = str(threads)
    code = CHILD.format(repo=str(HERE.parent))
    out = subprocess.run([sys.executable, "-c", code, str(path), mode], env=env, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    sys.path.insert(0, str(HERE.parent))
    import split_dataset
    from split_dataset.storage import Codec

    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        arr = synth(SHAPE)
        plain = split_dataset.save(arr, Path(tmp) / "plain", (20,), fsync=False)
        layouts = {
            "default (planes, 8 KiB blocks)": plain,
            "planes, automatic blocks": split_dataset.save(
                arr, Path(tmp) / "auto", (20,), compression=Codec("blosc", "lz4", 5, "byte", 0), fsync=False),
            "old: planes, blosclz 9": split_dataset.save(arr, Path(tmp) / "old", (20,), compression="blosc",
                                                         fsync=False),
            "time chunks (20,1,64,64)": split_dataset.save(arr, Path(tmp) / "timechunks", (20,),
                                                           chunks=(20, 1, 64, 64), fsync=False),
        }
        print(f"1. threads: whole-array read and save of {arr.nbytes / 1e6:.0f} MB, fresh process each")
        print(f"{'threads':>8}{'read ms':>9}{'GB/s':>7}{'save ms':>9}{'GB/s':>7}")
        for n in (1, 2, 4):
            r = child(plain.root, "threads", n)
            print(f"{n:>8}{r['read'] * 1e3:>9.0f}{arr.nbytes / r['read'] / 1e9:>7.2f}"
                  f"{r['save'] * 1e3:>9.0f}{arr.nbytes / r['save'] / 1e9:>7.2f}")
        print("\n2. layouts read by 1.x: one frame and an 8x8 trace over 200 time points (medians, interleaved)")
        readers = {name: split_dataset.open(ds.root) for name, ds in layouts.items()}
        times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in readers}
        for ds in readers.values():
            ds[0, 0], ds[:, 0, :8, :8]
        for _ in range(30):
            t, z, y, x = (int(rng.integers(n)) for n in (200, 10, 248, 248))
            for name, ds in readers.items():
                frame, trace = times[name]
                t0 = time.perf_counter(); ds[t, z]; frame.append(time.perf_counter() - t0)
                t0 = time.perf_counter(); ds[:, z, y:y + 8, x:x + 8]; trace.append(time.perf_counter() - t0)
        old_frame, old_trace = (statistics.median(v) for v in times["old: planes, blosclz 9"])
        for name, ds in readers.items():
            frame, trace = (statistics.median(v) for v in times[name])
            size = sum(p.stat().st_size for p in ds.files.flat)
            print(f"  {name:<32} frame {frame * 1e6:6.0f} us ({frame / old_frame:4.2f}x old)   trace "
                  f"{trace * 1e3:6.2f} ms ({old_trace / trace:4.1f}x faster than old)   on disk {size / 1e6:.0f} MB")
        r = child(plain.root, "memory")
        print(f"\n3. memory: open + 10 frames grows peak RSS by {r['few_frames_mb']:.0f} MiB; ds[:] by "
              f"{r['whole_mb']:.0f} MiB for a {r['output_mb']:.0f} MiB result")


if __name__ == "__main__":
    main()
