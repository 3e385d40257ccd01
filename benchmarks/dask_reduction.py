"""Whole-dataset reduction: dask (threads, processes, a 2-worker distributed cluster) against ``ds[:].sum()``.

    python benchmarks/dask_reduction.py [--shape 240,10,256,256] [--reps 5]

Writes a synthetic uint16 dataset (315 MB by default, blocks of 20 time points) and times
the sum of every voxel: single-threaded numpy on ``ds[:]`` (which itself decodes blocks on
all cores), and ``ds.to_dask().sum()`` on dask's threaded and processes schedulers and on a
``LocalCluster(n_workers=2, threads_per_worker=1, processes=True)``. Files are in the page
cache; medians of several runs; the cluster's start-up is not timed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import split_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="240,10,256,256")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    shape = tuple(int(s) for s in args.shape.split(","))
    import dask
    import distributed

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        frame = rng.poisson(100, (8,) + shape[1:]).astype(np.uint16)
        data = np.concatenate([frame] * (shape[0] // 8 + 1))[: shape[0]]
        ds = split_dataset.save(data, Path(tmp) / "ds", (20,), fsync=False)
        expected = int(data.sum(dtype=np.int64))
        del data, frame
        print(f"dataset {shape} uint16, {ds.nbytes / 1e6:.0f} MB in {ds.n_blocks} blocks of {ds.shape_block}")

        def timed(fn) -> float:
            times = []
            for _ in range(args.reps + 1):
                t0 = time.perf_counter()
                assert int(fn()) == expected
                times.append(time.perf_counter() - t0)
            return statistics.median(times[1:])  # first run is a warm-up

        results = {"numpy ds[:].sum()": timed(lambda: split_dataset.open(ds.root)[:].sum(dtype=np.int64))}
        x = ds.to_dask()
        for scheduler in ("threads", "processes"):
            with dask.config.set(scheduler=scheduler):
                results[f"dask {scheduler}"] = timed(lambda: x.sum(dtype=np.int64).compute())
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                      dashboard_address=None) as cluster, distributed.Client(cluster):
            results["dask distributed 2 workers"] = timed(lambda: x.sum(dtype=np.int64).compute())
        # the nanny sets MALLOC_TRIM_THRESHOLD_=64 KiB, so every block's memory goes back to the VM and
        # is faulted in again (slow here); the same cluster with glibc keeping freed memory:
        keep = {"MALLOC_TRIM_THRESHOLD_": str(64 << 30), "MALLOC_MMAP_THRESHOLD_": str(1 << 30)}
        with dask.config.set({"distributed.nanny.pre-spawn-environ": keep}), distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
        ) as cluster, distributed.Client(cluster):
            results["distributed, malloc kept"] = timed(lambda: x.sum(dtype=np.int64).compute())
        ref = results["numpy ds[:].sum()"]
        print(f"{'':<28}{'median':>10}{'GB/s':>8}{'speed-up':>10}")
        for name, sec in results.items():
            print(f"{name:<28}{sec * 1e3:>8.0f}ms{ds.nbytes / sec / 1e9:>8.2f}{ref / sec:>9.2f}x")


if __name__ == "__main__":
    main()
