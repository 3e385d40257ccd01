"""Timing worker for the OLD ``split-dataset==0.4.4``; runs inside ``benchmarks/.oldenv``.

Usage: ``python -I old_worker.py JOB.json`` (or ``--versions``). Prints one JSON line.
Self-contained (stdlib + numpy + old split_dataset): it must not import the benchmark
modules or the new package. Job format (see ``run.py``)::

    {"data": "data.npy", "tune_malloc": true,
     "tasks": [{"kind": "save", "root": DIR, "prefix": NAME, "block_t": 20},
               {"kind": "write", "root": DIR, "block_t": 20, "reps": 6},
               {"kind": "read", "path": DIR, "patterns": {NAME: [[INDEX, ...], ...]}}]}

An INDEX is a list with one entry per leading axis: int, ``[start, stop]`` or null (``:``).
In "write" and "read" tasks the first repetition is an untimed warm-up (it also checks the
values read against the source array).
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import shutil
import sys
import time
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

Index = tuple[int | slice, ...]


def tune_malloc() -> bool:
    """Keep freed memory in the process (glibc): no mmap for big blocks, no trimming."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**30 * 64))


def decode_index(spec: list[Any]) -> Index:
    return tuple(slice(None) if s is None else (slice(s[0], s[1]) if isinstance(s, list) else int(s)) for s in spec)


def versions() -> dict[str, Any]:
    out: dict[str, Any] = {"python": sys.version.split()[0]}
    for dist in ("numpy", "split-dataset", "flammkuchen", "tables", "h5py", "hdf5plugin"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    import split_dataset
    import tables

    out["split_dataset_file"] = split_dataset.__file__
    out["tables_MAX_BLOSC_THREADS"] = tables.parameters.MAX_BLOSC_THREADS
    return out


def _same(result: Any, expected: np.ndarray) -> bool:
    result = np.asarray(result)
    if result.size != expected.size:
        return False
    return bool(np.array_equal(result.reshape(expected.shape), expected))


def task_save(data: np.ndarray, task: dict[str, Any]) -> dict[str, Any]:
    """Write the old-layout dataset used by all read benchmarks (untimed)."""
    from split_dataset import save_to_split_dataset

    block = (task["block_t"],) + (None,) * (data.ndim - 1)
    save_to_split_dataset(data, task["root"], block_size=block, prefix=task["prefix"])
    return {"path": str(Path(task["root"]) / task["prefix"])}


def task_write(data: np.ndarray, task: dict[str, Any]) -> dict[str, Any]:
    """Time ``save_to_split_dataset`` of the whole array; rep 0 is a warm-up."""
    from split_dataset import save_to_split_dataset

    block = (task["block_t"],) + (None,) * (data.ndim - 1)
    root = Path(task["root"])
    times: list[float] = []
    try:
        for rep in range(task["reps"]):
            dest = root / f"rep{rep}"
            os.sync()
            gc.collect()
            t0 = time.perf_counter()
            save_to_split_dataset(data, str(dest), block_size=block, prefix="ds")
            dt = time.perf_counter() - t0
            if rep:
                times.append(dt)
            shutil.rmtree(dest)
    except Exception:
        return {"times": times, "error": traceback.format_exc(limit=3)}
    return {"times": times, "error": None}


def task_read(source: np.ndarray, task: dict[str, Any]) -> dict[str, Any]:
    """Time each read pattern on one folder; the first repetition is a checked warm-up."""
    from split_dataset import SplitDataset

    out: dict[str, Any] = {}
    for name, reps in task["patterns"].items():
        times: list[float] = []
        res: dict[str, Any] = {"times": times, "error": None}
        try:
            ds = SplitDataset(task["path"])  # fresh per pattern, as in run.py
            for k, rep in enumerate(reps):
                indices = [decode_index(spec) for spec in rep]
                gc.collect()
                t0 = time.perf_counter()
                for idx in indices:
                    ds[idx]
                dt = time.perf_counter() - t0
                if k == 0:
                    for idx in indices[:3]:
                        if not _same(ds[idx], np.asarray(source[idx])):
                            raise AssertionError(f"values read differ from the source at {idx}")
                else:
                    times.append(dt)
        except Exception:
            res["error"] = traceback.format_exc(limit=3)
        out[name] = res
    return out


def main(argv: list[str]) -> None:
    if argv[1:] == ["--versions"]:
        print(json.dumps(versions()))
        return
    job = json.loads(Path(argv[1]).read_text())
    malloc_tuned = tune_malloc() if job.get("tune_malloc", True) else False
    # Writes get a pre-touched in-memory copy (loaded only if needed); reads are checked against a memory map.
    source = np.load(job["data"], mmap_mode="r")
    data = np.load(job["data"]) if any(t["kind"] in ("save", "write") for t in job["tasks"]) else source
    results = []
    for task in job["tasks"]:
        if task["kind"] == "save":
            results.append(task_save(data, task))
        elif task["kind"] == "write":
            results.append(task_write(data, task))
        elif task["kind"] == "read":
            results.append(task_read(source, task))
        else:
            raise ValueError("unknown task kind {!r}".format(task["kind"]))
    print(json.dumps({"versions": versions(), "malloc_tuned": malloc_tuned, "results": results}))


if __name__ == "__main__":
    main(sys.argv)
