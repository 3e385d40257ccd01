"""The OLD napari plugin (``napari-split-dataset`` 0.3.0 on split-dataset 0.4.4) against ours.

    python benchmarks/napari_old_plugin.py [--reps 3] [--napari 0.4.19.post1[,0.9.2]]
                                           [--old-python PY] [--skip-new] [--keep-dask-cache]

Same data and the same measurement as ``benchmarks/napari_open.py``: the demo acquisition
(``python -m split_dataset demo DIR -q``) and 100 dark-camera 2048 x 2048 uint16 frames
(``rng.poisson(2.0) + 100`` with seed 0, drawn frame by frame, which gives the same values as
napari_open.py's single draw without its 7 GB of int64 temporaries, then ``split_dataset.save``
with defaults), both written by THIS package. Each dataset is opened with a headless
``napari.components.ViewerModel`` through a plugin (``viewer.open(path, plugin=...)``: the
time includes the reader and napari slicing the first plane), then the first slider is moved
to 5 positions (napari_open.py's positions), each followed by reading the displayed plane.
Medians over ``--reps`` fresh viewers. napari's dask cache, which serves a reopened path's
planes from memory, is emptied before every opening (``--keep-dask-cache`` keeps it, as
napari_open.py does, whose openings after the first then decode nothing for our plugin).

The old plugin needs NumPy < 2 (split-dataset 0.4.4), so it runs in its own cached virtualenv,
``benchmarks/.oldnapari/napari-VERSION/`` (git-ignored; ~1 min to build once, PyPI access),
with ``oldenv.REQUIREMENTS`` (numpy 1.26.4, split-dataset 0.4.4, flammkuchen, tables, h5py,
hdf5plugin) plus ``napari-split-dataset==0.3.0`` and ``napari==VERSION`` (default 0.4.19.post1,
the last NumPy-1-only napari; 0.3.0 is an npe2 plugin, so newer napari loads it too: pass a
comma list to get one row per napari). This file is also the worker: the parent runs it
with ``--worker JOB.json`` under ``python -I`` in the old env, and under this interpreter for
our plugin (``split-dataset``), one process per (plugin, dataset) so peak RSS is per case.

Counted: ours, chunk decodes in the package's ChunkReader (as napari_open.py counts them);
the old one, HDF5 chunks its reads touch (from each ``flammkuchen.load`` selection and the
file's chunk shape; every 0.4.4 read opens the file anew, so each touched chunk is one
decode), MB returned by those reads and files opened (``fl.load`` + ``fl.meta``). Memory:
RSS after imports, RSS added by the open (median over reps) and the process's peak RSS
(``VmHWM``). "of it reader ms" is the plugin's reader function alone (the rest of the open is
napari building the layer and slicing). The layer's contrast limits, scale, units and axis
labels are printed too.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ENV_ROOT = HERE / ".oldnapari"
OLD_PLUGIN_REQ = "napari-split-dataset==0.3.0"
DEFAULT_NAPARI = "0.4.19.post1"
N_MOVES = 5
_MARKER = ".requirements-installed"


# ---------------------------------------------------------------------------- old env


def old_requirements(napari_version: str) -> tuple[str, ...]:
    """oldenv's 0.4.4 requirements plus the old plugin and one napari release."""
    sys.path.insert(0, str(HERE))
    import oldenv

    return (*oldenv.REQUIREMENTS, OLD_PLUGIN_REQ, f"napari=={napari_version}")


def ensure_old_napari_env(napari_version: str, base_python: str | None = None) -> Path:
    """Create (once per requirement list) ``.oldnapari/napari-VERSION`` and return its python."""
    sys.path.insert(0, str(HERE))
    import oldenv

    env_dir = ENV_ROOT / f"napari-{napari_version}"
    python = env_dir / "bin" / "python"
    reqs = old_requirements(napari_version)
    wanted = "\n".join(reqs) + "\n"
    marker = env_dir / _MARKER
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    if env_dir.exists():
        shutil.rmtree(env_dir)
    base = base_python or oldenv._default_base_python()
    print(f"[oldnapari] creating {env_dir} with {base}: {' '.join(reqs)} ...", flush=True)
    t = time.perf_counter()
    subprocess.run([base, "-m", "venv", str(env_dir)], check=True)
    proc = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *reqs],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"pip install into {env_dir} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    check = subprocess.run([str(python), "-I", "-c",
                            "import numpy, split_dataset, napari_split_dataset, napari.components"],
                           capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"env at {env_dir} does not import:\n{check.stderr[-3000:]}")
    marker.write_text(wanted)
    print(f"[oldnapari] built in {time.perf_counter() - t:.0f} s", flush=True)
    return python


def run_worker(python: Path, isolated: bool, job: dict[str, Any], job_file: Path) -> dict[str, Any]:
    """Run this file as a worker on `job` with `python` and return its JSON line."""
    job_file.write_text(json.dumps(job))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "MALLOC_", "GLIBC_TUNABLES"))}
    cmd = [str(python), *(["-I"] if isolated else []), str(Path(__file__).resolve()), "--worker", str(job_file)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {cmd} failed (exit {proc.returncode}):\n{proc.stderr[-5000:]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"worker printed no JSON; stderr:\n{proc.stderr[-5000:]}")
    answer: dict[str, Any] = json.loads(lines[-1])
    return answer


# ---------------------------------------------------------------------------- worker


def _rss() -> int:
    """Current resident set size in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss() -> int:
    """This process's peak resident set size in bytes: VmHWM, which starts afresh at exec
    (``ru_maxrss`` does not on Linux: a child started from a big parent inherits its peak)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _chunks_touched(sel: Any, shape: tuple[int, ...], chunks: tuple[int, ...] | None) -> int:
    """HDF5 chunks a selection (tuple of ints / step-1 slices, as 0.4.4 passes) intersects."""
    if chunks is None:
        return 1
    sel = sel if isinstance(sel, tuple) else (sel,)
    n = 1
    for ax, (size, c) in enumerate(zip(shape, chunks)):
        s = sel[ax] if ax < len(sel) else slice(None)
        if isinstance(s, slice):
            start, stop, _ = s.indices(size)
            if stop <= start:
                return 0
            n *= (stop - 1) // c - start // c + 1
    return n


def _install_old_counters(counts: dict[str, Any]) -> Callable[[], None]:
    """Wrap flammkuchen.load / meta (all 0.4.4 SplitDataset I/O goes through them)."""
    import flammkuchen

    load, meta = flammkuchen.load, flammkuchen.meta

    def counted_load(path: Any, group: Any = None, sel: Any = None, unpack: bool = False) -> Any:
        out = load(path, group, sel=sel, unpack=unpack)
        counts["files"] += 1
        counts["bytes"] += int(getattr(out, "nbytes", 0))
        counts["reads"].append((str(path), group, sel))
        return out

    def counted_meta(*a: Any, **k: Any) -> Any:
        counts["files"] += 1
        return meta(*a, **k)

    flammkuchen.load = counted_load
    flammkuchen.meta = counted_meta

    def settle() -> None:
        """Turn the recorded selections into chunk counts (after the timing: opens the files)."""
        import h5py

        layout: dict[tuple[str, str], tuple[tuple[int, ...], tuple[int, ...] | None]] = counts["layout"]
        for path, group, sel in counts["reads"]:
            key = (path, str(group))
            if key not in layout:
                with h5py.File(path, "r") as f:
                    d = f[str(group)]
                    layout[key] = (tuple(d.shape), d.chunks)
            counts["chunks"] += _chunks_touched(sel, *layout[key])
        counts["reads"] = []

    return settle


def _install_new_counters(counts: dict[str, Any]) -> Callable[[], None]:
    """Count chunk decodes in the package's ChunkReader exactly as napari_open.py does."""
    from split_dataset.storage.reader import ChunkReader

    whole, part = ChunkReader._whole, ChunkReader._decode_part

    def counted_whole(self: Any, *a: Any, **k: Any) -> Any:
        counts["chunks"] += 1
        return whole(self, *a, **k)

    def counted_part(self: Any, *a: Any, **k: Any) -> Any:
        counts["chunks"] += 1
        return part(self, *a, **k)

    ChunkReader._whole = counted_whole  # type: ignore[method-assign]
    ChunkReader._decode_part = counted_part  # type: ignore[method-assign]
    return lambda: None


def _clear_napari_dask_cache() -> None:
    """Empty napari's process-wide dask chunk cache (it keeps planes of dask-backed layers by
    task key, so reopening the same path in one process would show cached planes)."""
    try:
        from napari.utils import _dask_utils
    except ImportError:
        return
    inner = getattr(getattr(_dask_utils, "_DASK_CACHE", None), "cache", None)
    if inner is not None and hasattr(inner, "clear"):
        inner.clear()


def _time_reader(counts: dict[str, Any], old: bool) -> None:
    """Time the plugin's reader function alone (what the plugin does before napari builds the
    layer): both plugins' get_reader hooks return it by a module-global lookup."""
    import importlib

    module = importlib.import_module("napari_split_dataset.napari_split_dataset" if old
                                      else "split_dataset.napari._reader")
    name = "read_directory" if old else "read"
    inner = getattr(module, name)

    def timed(*a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        try:
            return inner(*a, **k)
        finally:
            counts["reader_s"] += time.perf_counter() - t

    setattr(module, name, timed)


def _plain(x: Any) -> Any:
    """A JSON-able copy of a layer attribute (arrays, tuples, numpy scalars, pint units)."""
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, (list, tuple, np.ndarray)):
        return [_plain(v) for v in x]
    return str(x)


def worker(job: dict[str, Any]) -> dict[str, Any]:
    """Open job["path"] job["reps"] times through job["plugin"]; time, count, measure memory."""
    t0 = time.perf_counter()
    import napari
    import npe2
    from napari.components import ViewerModel

    npe2.PluginManager.instance().discover()
    import_s = time.perf_counter() - t0
    counts: dict[str, Any] = {"chunks": 0, "files": 0, "bytes": 0, "reads": [], "layout": {}, "reader_s": 0.0}
    old = job["plugin"] == "napari-split-dataset"
    settle = _install_old_counters(counts) if old else _install_new_counters(counts)
    _time_reader(counts, old)

    def take() -> dict[str, int]:
        settle()
        got = {k: int(counts[k]) for k in ("chunks", "files", "bytes")}
        counts.update(chunks=0, files=0, bytes=0)
        return got

    rss_import = _rss()
    res: dict[str, list[Any]] = {k: [] for k in ("open_s", "reader_s", "open_n", "move_s", "move_n", "held")}
    info: dict[str, Any] = {}
    for rep in range(job["reps"]):
        if job["clear_dask_cache"]:
            _clear_napari_dask_cache()
        gc.collect()
        take()
        counts["reader_s"] = 0.0
        viewer = ViewerModel()
        before = _rss()
        t = time.perf_counter()
        layers = viewer.open(job["path"], plugin=job["plugin"])
        res["open_s"].append(time.perf_counter() - t)
        res["reader_s"].append(counts["reader_s"])
        res["held"].append(_rss() - before)
        res["open_n"].append(take())
        layer = layers[0]
        data = layer.data[0] if layer.multiscale else layer.data
        n = data.shape[0]
        if rep == 0:
            info = {
                "layers": len(layers),
                "data_type": f"{type(data).__module__}.{type(data).__name__}",
                "shape": [int(s) for s in data.shape],
                "multiscale": bool(layer.multiscale),
                "contrast_limits": _plain(layer.contrast_limits),
                "scale": _plain(layer.scale),
                "units": _plain(getattr(layer, "units", "n/a (no such layer attribute)")),
                "axis_labels": _plain(getattr(layer, "axis_labels", "n/a (no such layer attribute)")),
                "dims_axis_labels": _plain(viewer.dims.axis_labels),
            }
        for k in range(N_MOVES):
            step = list(viewer.dims.current_step)
            step[0] = (rep * 7 + k * 11 + 3) % n
            take()
            t = time.perf_counter()
            viewer.dims.current_step = tuple(step)
            np.asarray(data[tuple(step[: data.ndim - 2])])
            res["move_s"].append(time.perf_counter() - t)
            res["move_n"].append(take())
        viewer.layers.clear()
        del layers, layer, data, viewer
    gc.collect()
    plugin_version = metadata.version("napari-split-dataset" if old else "split-dataset")
    return {
        **res,
        "info": info,
        "import_s": import_s,
        "rss_import": rss_import,
        "peak_rss": _peak_rss(),
        "napari": napari.__version__,
        "numpy": np.__version__,
        "plugin_version": plugin_version,
    }


# ---------------------------------------------------------------------------- parent


def make_datasets(tmp: Path) -> list[tuple[str, Path]]:
    """The two datasets of napari_open.py, written by this package (same calls, same values)."""
    import split_dataset

    demo = tmp / "demo"
    subprocess.run([sys.executable, "-m", "split_dataset", "demo", str(demo), "-q"], check=True,
                   capture_output=True)
    frames = tmp / "frames2048"
    rng = np.random.default_rng(0)
    arr = np.empty((100, 2048, 2048), dtype="uint16")
    for i in range(arr.shape[0]):  # same stream as rng.poisson(2.0, (100, 2048, 2048)) in one draw
        arr[i] = rng.poisson(2.0, (2048, 2048)) + 100
    split_dataset.save(arr, frames, fsync=False)
    del arr
    out = []
    for path in (demo, frames):
        ds = split_dataset.SplitDataset(path)
        out.append((f"{path.name} {tuple(ds.shape)}", path))
    return out


def _med(xs: list[float]) -> float:
    return statistics.median(xs)


def _fmt_counts(ns: list[dict[str, int]], old: bool) -> str:
    chunks = f"{_med([n['chunks'] for n in ns]):.0f}"
    if not old:
        return chunks
    mb = _med([n["bytes"] for n in ns]) / 1e6
    files = _med([n["files"] for n in ns])
    return f"{chunks} ({mb:.1f} MB, {files:.0f} files)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--napari", default=DEFAULT_NAPARI,
                    help="napari release(s) for the old plugin's env, comma-separated (one column each)")
    ap.add_argument("--old-python", default=None, help="base interpreter for the old env (3.10-3.12)")
    ap.add_argument("--skip-new", action="store_true", help="leave our plugin out")
    ap.add_argument("--keep-dask-cache", action="store_true",
                    help="do not empty napari's dask cache between openings (napari_open.py does not)")
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker.read_text()))), flush=True)
        return

    systems: list[tuple[str, Path, bool, str]] = []  # label, python, isolated, plugin
    if not args.skip_new:
        systems.append(("new", Path(sys.executable), False, "split-dataset"))
    for v in [s.strip() for s in args.napari.split(",") if s.strip()]:
        systems.append((f"old@napari {v}", ensure_old_napari_env(v, args.old_python), True, "napari-split-dataset"))

    print(f"load average {os.getloadavg()[0]:.2f}", flush=True)
    rows: list[tuple[str, str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        datasets = make_datasets(tmp)
        for name, path in datasets:
            for label, python, isolated, plugin in systems:
                job = {"path": str(path), "plugin": plugin, "reps": args.reps,
                       "clear_dask_cache": not args.keep_dask_cache}
                r = run_worker(python, isolated, job, tmp / "job.json")
                rows.append((name, label, r))
                print(f"  done: {name} / {label} ({r['plugin_version']}, napari {r['napari']}, "
                      f"numpy {r['numpy']})", flush=True)
    print(f"load average {os.getloadavg()[0]:.2f}")
    print()
    cache = "kept" if args.keep_dask_cache else "emptied before every opening"
    print(f"medians over {args.reps} openings (1st open: the first, with one-time imports), {N_MOVES} slider "
          f"moves each; napari's dask cache {cache}; chunks = chunk decodes (new: ChunkReader; old: HDF5 "
          "chunks its reads touch, MB its reads returned, files it opened)")
    print()
    print("| dataset | plugin | open ms [min-max] | of it reader ms | 1st open ms | open chunks "
          "| slider move + plane ms | move chunks | RSS after import MB | RSS added by open MB | peak RSS MB |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, label, r in rows:
        old = label != "new"
        op = r["open_s"]
        print(f"| {name} | {label} | {_med(op) * 1e3:.1f} [{min(op) * 1e3:.0f}-{max(op) * 1e3:.0f}] "
              f"| {_med(r['reader_s']) * 1e3:.1f} | {op[0] * 1e3:.1f} | {_fmt_counts(r['open_n'], old)} "
              f"| {_med(r['move_s']) * 1e3:.1f} | {_fmt_counts(r['move_n'], old)} "
              f"| {round(r['rss_import'] / 1e6)} | {round(_med(r['held']) / 1e6)} | {round(r['peak_rss'] / 1e6)} |")
    print()
    print("| dataset | plugin | layer data | multiscale | contrast limits | scale | units | axis labels |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, label, r in rows:
        i = r["info"]
        cl = ", ".join(f"{c:g}" for c in i["contrast_limits"])
        print(f"| {name} | {label} | {i['data_type']} | {i['multiscale']} | [{cl}] | {i['scale']} "
              f"| {i['units']} | {i['axis_labels']} (dims: {i['dims_axis_labels']}) |")
    print()
    for label, python, _isolated, plugin in systems:
        r = next(r for _n, lab, r in rows if lab == label)
        print(f"{label}: {plugin} {r['plugin_version']}, napari {r['napari']}, numpy {r['numpy']}, {python}")


if __name__ == "__main__":
    main()
