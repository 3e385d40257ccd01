"""Timing worker for the OLD ``split-dataset==0.4.4``; runs inside ``benchmarks/.oldenv``.

Usage: ``python -I old_worker.py JOB.json`` (or ``--versions``). Prints one JSON line.
Self-contained (stdlib + numpy + old split_dataset): it must not import the benchmark
modules or the new package. Job format (see ``run.py``)::

    {"tasks": [{"kind": "save", "data": NPY, "root": DIR, "prefix": NAME, "block_t": 20},
               {"kind": "write", "data": NPY, "root": DIR, "block_t": 20, "reps": 6},
               {"kind": "read", "data": NPY, "path": DIR, "touch": [INDEX, ...],
                "patterns": {NAME: [[INDEX, ...], ...]}},
               {"kind": "cold", "data": NPY, "path": DIR, "mode": "fresh" | "open" | "one",
                "patterns": {NAME: [[INDEX, ...], ...]}}]}

An INDEX is a list with one entry per leading axis: int, null (``:``), ``{"s": [start, stop,
step]}``, ``{"i": [indices]}`` or ``{"m": [booleans]}``. 0.4.4 reads only ints and step-1
slices (it silently ignores a step), so any other index is emulated the way a 0.4.4 user
must write it: read the covering step-1 slices, then index the result in memory.

"read" (warm): per repetition a fresh SplitDataset reads the "touch" indices (one per block),
untimed, then the repetition is timed. "cold": "fresh" opens a SplitDataset per index
(untimed) and times its first read; "open" times opening + the read; "one" opens one
SplitDataset per pattern and times every index on its own. The first repetition of every
pattern is an untimed warm-up that also checks the values against the source array.
glibc malloc is left at its defaults (no mallopt, no MALLOC_* variables).
"""

from __future__ import annotations

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


def decode_item(spec: Any) -> Any:
    if spec is None:
        return slice(None)
    if isinstance(spec, dict):
        if "s" in spec:
            return slice(*spec["s"])
        if "i" in spec:
            return np.asarray(spec["i"], dtype=np.int64)
        return np.asarray(spec["m"], dtype=bool)
    if isinstance(spec, list):  # old form [start, stop]
        return slice(spec[0], spec[1])
    return int(spec)


def decode_index(spec: list[Any]) -> Index:
    return tuple(decode_item(s) for s in spec)


def old_read(ds: Any, idx: Index) -> Any:
    """``ds[idx]`` with 0.4.4, emulating steps, index lists and masks (read the covering
    step-1 slices, index in memory)."""
    if all(isinstance(i, int) or (isinstance(i, slice) and i.step in (None, 1)) for i in idx):
        return ds[idx]
    cover: list[Any] = []
    rest: list[Any] = []
    for ax, item in enumerate(idx):
        n = ds.shape[ax]
        if isinstance(item, int):
            cover.append(item)
        elif isinstance(item, slice):
            start, stop, step = item.indices(n)
            cover.append(slice(start, max(start, stop)))
            rest.append(slice(None, None, step))
        else:
            arr = np.flatnonzero(item) if item.dtype == bool else item
            lo = int(arr.min()) if arr.size else 0
            hi = int(arr.max()) + 1 if arr.size else 0
            cover.append(slice(lo, hi))
            rest.append(arr - lo)
    return np.asarray(ds[tuple(cover)])[tuple(rest)]


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


def _check(ds: Any, indices: list[Index], source: np.ndarray) -> None:
    for idx in indices[:3]:
        if not _same(old_read(ds, idx), np.asarray(source[idx])):
            raise AssertionError(f"values read differ from the source at {idx}")


def task_read(source: np.ndarray, task: dict[str, Any]) -> dict[str, Any]:
    """Warm reads: per repetition a fresh SplitDataset touches every block (untimed), then the
    repetition is timed; repetition 0 is an untimed, checked warm-up."""
    from split_dataset import SplitDataset

    touch = [decode_index(spec) for spec in task.get("touch", [])]
    out: dict[str, Any] = {}
    for name, reps in task["patterns"].items():
        times: list[float] = []
        res: dict[str, Any] = {"times": times, "error": None}
        try:
            for k, rep in enumerate(reps):
                indices = [decode_index(spec) for spec in rep]
                ds = SplitDataset(task["path"])
                for idx in touch:
                    old_read(ds, idx)
                gc.collect()
                t0 = time.perf_counter()
                for idx in indices:
                    old_read(ds, idx)
                dt = time.perf_counter() - t0
                if k == 0:
                    _check(ds, indices, source)
                else:
                    times.append(dt)
        except Exception:
            res["error"] = traceback.format_exc(limit=3)
        out[name] = res
    return out


def task_cold(source: np.ndarray, task: dict[str, Any]) -> dict[str, Any]:
    """First reads of a block; every index is timed on its own (see the module docstring)."""
    from split_dataset import SplitDataset

    mode = task["mode"]
    out: dict[str, Any] = {}
    for name, reps in task["patterns"].items():
        times: list[float] = []
        res: dict[str, Any] = {"times": times, "error": None}
        try:
            one = SplitDataset(task["path"]) if mode == "one" else None
            for k, rep in enumerate(reps):
                for spec in rep:
                    idx = decode_index(spec)
                    gc.collect()
                    if mode == "open":
                        t0 = time.perf_counter()
                        ds = SplitDataset(task["path"])
                        old_read(ds, idx)
                        dt = time.perf_counter() - t0
                    else:
                        ds = one if one is not None else SplitDataset(task["path"])
                        t0 = time.perf_counter()
                        old_read(ds, idx)
                        dt = time.perf_counter() - t0
                    if k == 0:
                        _check(ds, [idx], source)
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
    loaded: dict[str, np.ndarray] = {}

    def source(path: str, in_memory: bool) -> np.ndarray:
        # writes get a pre-touched in-memory copy; reads are checked against a memory map
        key = path + ("#mem" if in_memory else "")
        if key not in loaded:
            loaded[key] = np.load(path) if in_memory else np.load(path, mmap_mode="r")
        return loaded[key]

    results = []
    for task in job["tasks"]:
        if task["kind"] == "save":
            results.append(task_save(source(task["data"], True), task))
        elif task["kind"] == "write":
            results.append(task_write(source(task["data"], True), task))
        elif task["kind"] == "read":
            results.append(task_read(source(task["data"], False), task))
        elif task["kind"] == "cold":
            results.append(task_cold(source(task["data"], False), task))
        else:
            raise ValueError("unknown task kind {!r}".format(task["kind"]))
    print(json.dumps({"versions": versions(), "malloc_tuned": False, "results": results}))


if __name__ == "__main__":
    main(sys.argv)
