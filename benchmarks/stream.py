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

``--rates`` (instead of the tables; issue 16): the highest rate each case sustains with the
writer's defaults (blosc-lz4, fsync, SHA256SUMS, queue_depth=2), next to the copy+compress bound
on 1 and 2 cores measured in the same run, per data kind:

    python benchmarks/stream.py --rates [--sustain 15] [--steps 2] [--max-late-ms 100]
                                [--rate-cases cam1,cam2-threads,cam2-procs,volume] [--vol-z 20]
                                [--data struct,noise] [--confirm SECONDS] [--records-off]

- ``cam1``: one 2048x2048 uint16 camera (16 frames per file), one writer;
- ``cam2-threads``: two cameras, one SplitDatasetWriter and dataset each (acq/cam0, acq/cam1),
  each fed from its own thread of one process, the same rate each; ``cam2-procs``: the same
  with one process per camera;
- ``volume``: (z, 1024, 1024) uint16 volumes, z = ``--vol-z`` (20: 40 MiB), one volume per
  append, blocks of about 128 MiB.

Every camera is a thread appending on a fixed clock (``timestamps=time.time(), frame_ids=i``
as an acquisition would; ``--records-off`` leaves them out) in a fresh process. A trial at a
rate passes when, for ``--sustain`` seconds after a warm-up block (its buffer is fresh memory;
the clock restarts after it), no append took longer than ``--max-late-ms``, the feeder was never
further than that behind the clock, ``writer.health()`` (polled every 0.25 s) never showed the
queue full, and every frame is on disk with its id. The search starts at 0.8x one writer's
flat-out rate (measured first; two cameras: 0.75x one camera's sustained rate), goes x1.5 up while
trials pass or /1.5 down while they fail, then bisects the bracket ``--steps`` times; the 2-core
bound (per camera) is the presumed-failing upper end. Printed: each trial, the rates vs the
bound, ``writer.health()`` at the end of the best trial, CPU used by us and by everyone else
(other users of the machine) and disk writes; then per-frame records off vs on (flat-out writer
runs, median of ``--records-reps``, and the cost of one append). Defaults take about 10 minutes;
e.g. ``--sustain 60 --steps 4 --confirm 300`` for a long run.
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
from dataclasses import asdict
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
    if spec["system"] in ("feed", "flat", "append_cost"):
        print(json.dumps({"feed": _feed, "flat": _flat, "append_cost": _append_cost}[spec["system"]](spec)))
        return
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


# ----------------------------------------------------------------------------- highest sustained rate (--rates)

#: 2048x2048 camera frames per block file (128 MiB blocks) in the rate search, as in the tables
CAM_FRAME, CAM_PER_FILE = (2048, 2048), 16
#: how each rate case runs: writers (one per camera) per process and processes
RATE_CASES: dict[str, dict[str, Any]] = {
    "cam1": {"label": "1 camera 2048x2048", "threads": 1, "procs": 1, "unit": "frames/s"},
    "cam2-threads": {"label": "2 cameras, 2 threads", "threads": 2, "procs": 1, "unit": "frames/s/cam"},
    "cam2-procs": {"label": "2 cameras, 2 processes", "threads": 1, "procs": 2, "unit": "frames/s/cam"},
    "volume": {"label": "volumes", "threads": 1, "procs": 1, "unit": "volumes/s"},
}


def _cpu_ticks() -> tuple[int, int, int]:
    """(busy, iowait, total) clock ticks of the whole machine from /proc/stat (all users)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle, iowait = v[3], v[4] if len(v) > 4 else 0
    total = sum(v[:8])
    return total - idle - iowait, iowait, total


def _write_bytes() -> int:
    """Bytes this process caused to be written to storage (/proc/self/io write_bytes), 0 if unknown."""
    try:
        with open("/proc/self/io") as f:
            for line in f:
                if line.startswith("write_bytes:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _feed(spec: dict[str, Any]) -> dict[str, Any]:
    """One process of a rate trial: ``threads`` cameras, each a SplitDatasetWriter with defaults fed
    on a fixed clock from its own thread, from the wall-clock time ``start_at`` for ``seconds``.

    A camera fails the trial as soon as an ``append`` takes longer than ``max_ms`` or the feeder is
    more than ``max_ms`` behind the camera clock (a frame grabber's ring buffer filling), or the
    writer's queue is found full; it then stops, and so do the other cameras (``stop_file``).
    The first block is a warm-up, fed on the clock but not judged (reported), after which the clock
    starts afresh (a warm-up backlog is forgiven): the writer's first block buffer is fresh memory,
    whose page faults make those appends ~10-30x slower than later ones (the spare buffers are
    prefaulted by the writer, the first is not). ``seconds`` is the judged part."""
    import resource
    import threading

    from split_dataset import SplitDataset, SplitDatasetWriter

    frames = np.load(spec["data"])
    m = len(frames)
    rate, per_file, records = float(spec["rate"]), int(spec["per_file"]), bool(spec["records"])
    warm = per_file  # warm-up: the first block, fed on the clock but not judged
    n = warm + max(1, round(spec["seconds"] * rate))
    max_s = spec["max_ms"] / 1e3
    stop_file = Path(spec["stop_file"])
    stop = threading.Event()
    roots = [Path(r) for r in spec["roots"]]
    writers = [SplitDatasetWriter(r, frames.shape[1:], frames.dtype, per_file) for r in roots]
    offsets = [int(o) for o in spec["offsets"]]
    outs: list[dict[str, Any]] = [{} for _ in writers]

    def feed(k: int, t0: float) -> None:
        w, off, out = writers[k], offsets[k], outs[k]
        dur = np.zeros(n)
        late = np.zeros(n)
        behind = queue = 0
        fail = None
        poll = t0
        i = 0
        start = t0
        for i in range(n):
            if i == warm:  # the judged part starts on a fresh clock: a warm-up backlog is forgiven
                start = max(t0 + warm / rate, time.perf_counter())
            due = start + (i - warm) / rate if i >= warm else t0 + i / rate
            now = time.perf_counter()
            if now < due:
                time.sleep(due - now)
            a = time.perf_counter()
            late[i] = a - due
            if records:
                w.append(frames[(i + off) % m], timestamps=time.time(), frame_ids=i)
            else:
                w.append(frames[(i + off) % m])
            b = time.perf_counter()
            dur[i] = b - a
            if i < warm:  # warm-up: the first block's buffer is fresh memory (page faults); not judged
                pass
            elif b - a > max_s:
                fail = f"append took {1e3 * (b - a):.0f} ms at frame {i}"
            elif late[i] > max_s:
                fail = f"{1e3 * late[i]:.0f} ms behind the clock at frame {i}"
            if b >= poll:
                poll = b + 0.25
                h = w.health()
                behind, queue = max(behind, h.frames_behind), max(queue, h.queue_depth)
                if h.queue_depth >= h.queue_capacity and fail is None:
                    fail = f"queue full ({h.queue_depth}/{h.queue_capacity} blocks) at frame {i}"
                if stop_file.exists():
                    stop.set()
            if fail is not None or stop.is_set():
                break
        if fail is not None:
            stop.set()
            try:
                stop_file.touch()
            except OSError:
                pass
        done = i + 1
        w0 = min(warm, done)
        judged = slice(w0, done) if done > w0 else slice(0, done)
        out.update(fail=fail, stopped=fail is None and done < n, appended=done, wanted=n,
                   judged_seconds=time.perf_counter() - start, judged_frames=done - w0,
                   append_ms_p50=1e3 * float(np.median(dur[judged])),
                   append_ms_max=1e3 * float(dur[judged].max()), late_ms_max=1e3 * float(late[judged].max()),
                   warmup_append_ms_max=1e3 * float(dur[:w0].max()), warmup_late_ms_max=1e3 * float(late[:w0].max()),
                   max_frames_behind=behind, max_queue=queue)

    t0 = time.perf_counter() + (spec["start_at"] - time.time())
    while time.perf_counter() < t0:
        time.sleep(min(0.05, max(0.0, t0 - time.perf_counter())))
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    cpu0, io0 = _cpu_ticks(), _write_bytes()
    threads = [threading.Thread(target=feed, args=(k, t0)) for k in range(len(writers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu1, io1 = _cpu_ticks(), _write_bytes()
    for w, out in zip(writers, outs):
        out["health"] = {k: v for k, v in asdict(w.health()).items()}
    closes = []
    for w in writers:
        c = time.perf_counter()
        w.close()
        closes.append(time.perf_counter() - c)
    for k, out in enumerate(outs):
        out["close_seconds"] = closes[k]
        ds = SplitDataset(roots[k])
        got = ds.shape[0]
        ok = got == out["appended"] and ds.complete
        last = out["appended"] - 1
        ok = ok and bool(np.array_equal(ds[last], frames[(last + offsets[k]) % m]))
        if records:
            ids = ds.frame_ids
            ok = ok and ids is not None and bool(np.array_equal(ids, np.arange(got))) and not len(ds.dropped_frames)
        out["on_disk_ok"] = ok
        out["disk_bytes"] = hostinfo.disk_bytes(roots[k])
        out["raw_bytes"] = out["appended"] * frames[0].nbytes
    ticks = cpu1[2] - cpu0[2] or 1
    ncpu = os.cpu_count() or 1
    return {"cams": outs, "wall": wall,
            "cpu_cores": (ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime) / wall,
            "machine_busy_cores": ncpu * (cpu1[0] - cpu0[0]) / ticks, "machine_iowait_cores": ncpu * (cpu1[1] - cpu0[1]) / ticks,
            "disk_MBps": (io1 - io0) / wall / 1e6}


def run_trial(case: str, rate: float, kind_data: Path, per_file: int, seconds: float, max_ms: float, records: bool,
              work: Path, new_path: Path) -> dict[str, Any]:
    """One trial of `case` at `rate` per camera: its processes started together, their results merged."""
    cfg = RATE_CASES[case]
    tdir = work / f"trial-{case}-{time.monotonic_ns()}"
    tdir.mkdir(parents=True)
    stop_file = tdir / "STOP"
    os.sync()
    start_at = time.time() + 2.0 + 0.5 * cfg["procs"]
    env = dict(os.environ, PYTHONPATH=str(new_path) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    procs = []
    for p in range(cfg["procs"]):
        ids = range(p * cfg["threads"], (p + 1) * cfg["threads"])
        spec = {"system": "feed", "data": str(kind_data), "rate": rate, "per_file": per_file, "seconds": seconds,
                "max_ms": max_ms, "records": records, "stop_file": str(stop_file), "start_at": start_at,
                "roots": [str(tdir / "acq" / f"cam{c}") for c in ids], "offsets": [4 * c for c in ids]}
        procs.append(subprocess.Popen([sys.executable, str(Path(__file__)), "--child", json.dumps(spec)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    outs: list[dict[str, Any]] = []
    for proc in procs:
        try:
            so, se = proc.communicate(timeout=seconds + 300)
        except subprocess.TimeoutExpired:
            proc.kill()
            so, se = proc.communicate()
        if proc.returncode != 0:
            outs.append({"error": se.strip().splitlines()[-1] if se.strip() else f"exit {proc.returncode}"})
        else:
            outs.append(json.loads(so.strip().splitlines()[-1]))
    shutil.rmtree(tdir, ignore_errors=True)
    errors = [o["error"] for o in outs if "error" in o]
    if errors:
        return {"rate": rate, "ok": False, "why": "error: " + errors[0]}
    cams: list[dict[str, Any]] = [c for o in outs for c in o["cams"]]
    fails = [c["fail"] for c in cams if c["fail"]]
    lost = [k for k, c in enumerate(cams) if not c["on_disk_ok"]]
    why = fails[0] if fails else (f"camera {lost[0]}: frames missing or wrong on disk" if lost else
                                  ("stopped" if any(c["stopped"] for c in cams) else ""))
    wall = max(o["wall"] for o in outs)
    return {"rate": rate, "ok": not why, "why": why, "cams": cams, "seconds": wall,
            "fed_fps_per_cam": statistics.median(c["judged_frames"] / max(1e-9, c["judged_seconds"]) for c in cams),
            "cpu_cores": sum(o["cpu_cores"] for o in outs), "machine_busy_cores": outs[0]["machine_busy_cores"],
            "machine_iowait_cores": outs[0]["machine_iowait_cores"], "disk_MBps": sum(o["disk_MBps"] for o in outs),
            "compression": statistics.median(c["raw_bytes"] / max(1, c["disk_bytes"]) for c in cams)}


def _round_rate(r: float) -> float:
    """Whole rates from 10 up, one decimal below (rates a camera would be set to)."""
    return float(round(r)) if r >= 10 else round(r, 1)


def search_rate(trial: Any, start: float, cap: float, steps: int, grow: float = 1.5) -> dict[str, Any]:
    """Highest passing rate: from `start`, up by `grow` while trials pass (up to `cap`, the untried,
    presumed-failing upper end) or down by `grow` while they fail, until a pass and a failure
    bracket it; then `steps` bisections of the bracket."""
    tried: list[dict[str, Any]] = []

    def run(r: float) -> bool:
        res = trial(r)
        tried.append(res)
        return bool(res["ok"])

    lo, hi = 0.0, cap
    r = min(_round_rate(start), _round_rate(cap / grow))
    while len(tried) < 8 and r >= 0.2:
        if run(r):
            lo = r
            if hi < cap or _round_rate(r * grow) >= cap:
                break
            r = _round_rate(r * grow)
        else:
            hi = r
            if lo > 0:
                break
            r = _round_rate(r / grow)
    for _ in range(steps):
        if lo <= 0:
            break
        mid = _round_rate((lo + hi) / 2)
        if mid <= lo or mid >= hi:
            break
        if run(mid):
            lo = mid
        else:
            hi = mid
    best = max((t for t in tried if t["ok"]), key=lambda t: t["rate"], default=None)
    return {"best": best, "upper": hi, "upper_tried": any(t["rate"] == hi for t in tried), "trials": tried}


def bound_rate(frames: np.ndarray, per_file: int, threads: int, n: int, reps: int) -> float:
    """Frames/s one process copies into a block buffer and blosc-compresses (the writer's codec,
    chunks and blosc block size) with `threads` threads, no file I/O; median of `reps`."""
    from concurrent.futures import ThreadPoolExecutor

    from split_dataset.storage import Codec, default_chunks
    from split_dataset.storage import blosc as _blosc
    from split_dataset.storage.hdf5 import _chunk_grid, _chunk_of

    frame = frames.shape[1:]
    block = np.empty((per_file,) + frame, frames.dtype)
    chunks = default_chunks(block.shape, frames.itemsize)
    offsets = _chunk_grid(block.shape, chunks)
    args = Codec.parse("blosc-lz4").blosc_args(chunks[-1] * frames.itemsize, int(np.prod(chunks)) * frames.itemsize,
                                               frames.itemsize)
    assert args is not None

    def comp(o: tuple[int, ...]) -> int:
        return len(_blosc.compress(_chunk_of(block, o, chunks), *args))

    rates = []
    with ThreadPoolExecutor(threads) as ex:
        for _ in range(reps):
            t0 = time.perf_counter()
            for i in range(n):
                block[i % per_file] = frames[i % len(frames)]
                if i % per_file == per_file - 1 or i == n - 1:
                    if threads == 1:
                        for o in offsets:
                            comp(o)
                    else:
                        list(ex.map(comp, offsets))
            rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates)


def _flat(spec: dict[str, Any]) -> dict[str, Any]:
    """The writer flat out (no clock): ``n`` frames appended as fast as they come, closed; with or
    without per-frame records, with the writer's options in ``kw``."""
    import resource

    from split_dataset import SplitDatasetWriter

    frames = np.load(spec["data"])
    m, n, records = len(frames), int(spec["n"]), bool(spec["records"])
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    io0 = _write_bytes()
    t0 = time.perf_counter()
    with SplitDatasetWriter(spec["root"], frames.shape[1:], frames.dtype, int(spec["per_file"]), **spec["kw"]) as w:
        for i in range(n):
            if records:
                w.append(frames[i % m], timestamps=time.time(), frame_ids=i)
            else:
                w.append(frames[i % m])
    dt = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    return {"seconds": dt, "cpu_cores": (ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime) / dt,
            "disk_MBps": (_write_bytes() - io0) / dt / 1e6}


def _append_cost(spec: dict[str, Any]) -> dict[str, Any]:
    """Microseconds per ``append`` of a small frame (the data copy negligible): records off, on
    (timestamps + frame_ids), on + one ``meta`` field; variants interleaved, median of reps."""
    from split_dataset import SplitDatasetWriter

    shape, n, reps = tuple(spec["frame"]), int(spec["n"]), int(spec["reps"])
    frame = np.ones(shape, np.uint16)
    variants = ["off", "on", "on+meta"]
    res: dict[str, list[float]] = {v: [] for v in variants}
    for rep in range(reps):
        for k in range(len(variants)):
            v = variants[(rep + k) % len(variants)]
            root = Path(spec["root"]) / f"{rep}-{v}"
            with SplitDatasetWriter(root, shape, np.uint16, int(spec["per_file"])) as w:
                t0 = time.perf_counter()
                if v == "off":
                    for _ in range(n):
                        w.append(frame)
                elif v == "on":
                    for i in range(n):
                        w.append(frame, timestamps=time.time(), frame_ids=i)
                else:
                    for i in range(n):
                        w.append(frame, timestamps=time.time(), frame_ids=i, meta={"exposure_ms": 5.0})
                res[v].append((time.perf_counter() - t0) / n * 1e6)
            shutil.rmtree(root, ignore_errors=True)
    return {v: statistics.median(x) for v, x in res.items()}


def _fmt(v: float | None, spec: str = ".0f") -> str:
    return "-" if v is None else format(v, spec)


def _run_json_child(spec: dict[str, Any], new_path: Path) -> dict[str, Any]:
    return run_child(dict(spec, new_path=str(new_path)))


def rates_main(args: argparse.Namespace, kinds: list[str], work: Path) -> dict[str, Any]:
    """The issue-16 question: the highest rate each case sustains with the writer's defaults, next
    to the copy+compress bound measured in the same run; per-frame records on vs off."""
    cases = [c.strip() for c in args.rate_cases.split(",") if c.strip()]
    z = int(args.vol_z)
    vol = (z, 1024, 1024)
    vol_bytes = int(np.prod(vol)) * 2
    vol_per_file = max(1, round((128 << 20) / vol_bytes))
    seconds, max_ms, steps = args.sustain or 15.0, args.max_late_ms, args.steps
    new_path = args.new_path.resolve()
    cam_bytes = int(np.prod(CAM_FRAME)) * 2
    out: dict[str, Any] = {"seconds_per_trial": seconds, "max_late_ms": max_ms, "steps": steps, "kinds": {}}
    print(f"\nHighest sustained rate with SplitDatasetWriter defaults (blosc-lz4, fsync, SHA256SUMS, queue_depth=2), "
          f"each camera fed from its own thread on a fixed clock, one frame (volume) per append, "
          f"timestamps= and frame_ids= passed (records {'on' if not args.records_off else 'OFF'}).\n"
          f"A rate is sustained when, for {seconds:.0f} s, no append took > {max_ms:.0f} ms, the feeder was never "
          f"> {max_ms:.0f} ms behind the camera clock, the writer's queue was never seen full (health() every "
          f"0.25 s), and every frame is on disk with its id; the first block of each camera is a warm-up before "
          f"those {seconds:.0f} s, not judged (its buffer is fresh memory; the clock restarts after it). Search: from 0.8x one "
          f"writer's flat-out rate (two cameras: 0.75x one camera's sustained rate), x1.5 up while passing, /1.5 "
          f"down while failing, then {steps} bisections; the 2-core copy+compress bound is the upper end (not tried: "
          f"'*').\n"
          f"2048x2048 uint16 frames: {CAM_PER_FILE} per file ({CAM_PER_FILE * cam_bytes >> 20} MiB blocks); volumes "
          f"{z}x1024x1024 uint16 ({vol_bytes >> 20} MiB): {vol_per_file} per file "
          f"({vol_per_file * vol_bytes >> 20} MiB blocks). Two cameras: one dataset each (acq/cam0, acq/cam1), "
          f"the same rate each.", flush=True)
    for kind in kinds:
        cam_data, vol_data = work / f"cam-{kind}.npy", work / f"vol-{kind}.npy"
        cam = MAKERS[kind](CAM_FRAME, 8)
        np.save(cam_data, cam)
        vols = MAKERS[kind](vol, 4) if "volume" in cases else None
        if vols is not None:
            np.save(vol_data, vols)
        bounds: dict[str, dict[int, float]] = {"cam": {}, "vol": {}}
        c0 = _cpu_ticks()
        for threads in (1, 2):
            bounds["cam"][threads] = bound_rate(cam, CAM_PER_FILE, threads, 4 * CAM_PER_FILE, 5)
            if vols is not None:
                bounds["vol"][threads] = bound_rate(vols, vol_per_file, threads, 6 * vol_per_file, 5)
        c1 = _cpu_ticks()
        flat: dict[str, float] = {}  # one writer flat out with defaults: where the search starts
        for what, path, pf, nb in (("cam", cam_data, CAM_PER_FILE, 5), ("vol", vol_data, vol_per_file, 5)):
            if what == "vol" and vols is None:
                continue
            rs = []
            for rep in range(3):
                os.sync()
                r = _run_json_child({"system": "flat", "data": str(path), "n": nb * pf, "per_file": pf,
                                     "records": not args.records_off, "kw": {}, "root": str(work / f"f-{what}-{rep}")},
                                    new_path)
                if "error" not in r:
                    rs.append(nb * pf / r["seconds"])
            flat[what] = statistics.median(rs) if rs else bounds[what][2] / 2
        print(f"\n[{kind}] copy+compress bound (median of 5): 2048x2048 {bounds['cam'][1]:.0f} frames/s on 1 core, "
              f"{bounds['cam'][2]:.0f} on 2"
              + (f"; {z}x1024x1024 {bounds['vol'][1]:.1f} volumes/s on 1 core, {bounds['vol'][2]:.1f} on 2"
                 if vols is not None else "")
              + f" (machine busy {(os.cpu_count() or 1) * (c1[0] - c0[0]) / max(1, c1[2] - c0[2]):.2f} cores meanwhile)",
              flush=True)
        print(f"[{kind}] one writer flat out (defaults, no clock, 5 blocks incl. close, median of 3): 2048x2048 "
              f"{flat['cam']:.0f} frames/s" + (f"; {z}x1024x1024 {flat['vol']:.1f} volumes/s" if "vol" in flat else ""),
              flush=True)
        del cam, vols
        results: dict[str, Any] = {}
        for case in cases:
            cfg = RATE_CASES[case]
            is_vol = case == "volume"
            data, per_file = (vol_data, vol_per_file) if is_vol else (cam_data, CAM_PER_FILE)
            ncam = cfg["threads"] * cfg["procs"]
            b2 = bounds["vol" if is_vol else "cam"][2] / ncam

            def trial(r: float, case: str = case, data: Path = data, per_file: int = per_file) -> dict[str, Any]:
                res = run_trial(case, r, data, per_file, seconds, max_ms, not args.records_off, work, new_path)
                if "cams" in res:
                    h = res["cams"][0]["health"]
                    print(f"  {case:<13} {r:>7.1f}/s  {'pass' if res['ok'] else 'FAIL'}  "
                          f"{res['seconds']:>5.1f} s  warm-up max {max(c['warmup_append_ms_max'] for c in res['cams']):>4.0f}"
                          f"  append max {max(c['append_ms_max'] for c in res['cams']):>5.0f} ms"
                          f"  behind max {max(c['late_ms_max'] for c in res['cams']):>6.0f} ms  "
                          f"queue max {max(c['max_queue'] for c in res['cams'])}  "
                          f"cpu ours {res['cpu_cores']:.2f} others {res['machine_busy_cores'] - res['cpu_cores']:.2f}  "
                          f"cam0 {_fmt(h['mb_per_s'])} MB/s p99 {_fmt(h['latency_p99'] and 1e3 * h['latency_p99'])} ms"
                          f"{'  ' + res['why'] if res['why'] else ''}", flush=True)
                else:
                    print(f"  {case:<13} {r:>7.1f}/s  FAIL  {res['why']}", flush=True)
                return res

            if is_vol:
                start = 0.8 * flat["vol"]
            elif case == "cam1":
                start = 0.8 * flat["cam"]
            else:  # two cameras: from 3/4 of one camera's sustained rate (or of its flat-out one)
                one = results.get("cam1", {}).get("best")
                start = 0.75 * (one["rate"] if one else flat["cam"] / 2)
            results[case] = search_rate(trial, start, _round_rate(b2), steps)
            results[case]["bound1"] = bounds["vol" if is_vol else "cam"][1] / ncam
            results[case]["bound2"] = b2
        out["kinds"][kind] = {"bounds": bounds, "flat_out": flat, "cases": results}
        print_rates(kind, results, z, cam_bytes, vol_bytes, seconds)
    if args.records_cost:
        out["records"] = records_cost(args, kinds[0], work, new_path)
    if args.confirm:
        out["confirm"] = confirm_runs(args, out, work, new_path, vol_per_file)
    return out


def print_rates(kind: str, results: dict[str, Any], z: int, cam_bytes: int, vol_bytes: int, seconds: float) -> None:
    print(f"\n{kind}: highest rate sustained for {seconds:.0f} s with defaults, vs the copy+compress bound "
          f"(per camera: the machine's bound shared by the cameras); cpu ours / others = cores used by this "
          f"benchmark / by everything else on the machine during the best trial, @fail: others during the "
          f"failed trial above it")
    print(f"{'case':<24}{'unit':<14}{'sustained':>10}{'failed at':>10}{'MB/s all':>9}{'bound 1c':>9}{'bound 2c':>9}"
          f"{'/2c':>6}{'comp.':>6}{'cpu ours':>9}{'others':>7}{'@fail':>6}{'disk MB/s':>10}")
    for case, r in results.items():
        cfg = RATE_CASES[case]
        label = cfg["label"] + (f" {z}x1024x1024" if case == "volume" else "")
        ncam = cfg["threads"] * cfg["procs"]
        nbytes = vol_bytes if case == "volume" else cam_bytes
        best = r["best"]
        fail = f"{r['upper']:.1f}" + ("" if r["upper_tried"] else "*")
        if best is None:
            print(f"{label:<24}{cfg['unit']:<14}{'none':>10}{fail:>10}")
            continue
        rate = best["rate"]
        failed = [t for t in r["trials"] if t["rate"] == r["upper"] and "cpu_cores" in t]
        at_fail = _fmt(failed[0]["machine_busy_cores"] - failed[0]["cpu_cores"], ".2f") if failed else "-"
        print(f"{label:<24}{cfg['unit']:<14}{rate:>10.1f}{fail:>10}{rate * ncam * nbytes / 1e6:>9.0f}"
              f"{r['bound1']:>9.1f}{r['bound2']:>9.1f}{rate / r['bound2']:>6.2f}{best['compression']:>6.2f}"
              f"{best['cpu_cores']:>9.2f}{best['machine_busy_cores'] - best['cpu_cores']:>7.2f}{at_fail:>6}"
              f"{best['disk_MBps']:>10.0f}")
    print(f"\n{kind}: writer.health() at the end of the highest sustained trial (before close), per camera")
    print(f"{'case':<24}{'cam':>4}{'MB/s':>7}{'p50 ms':>8}{'p99 ms':>8}{'queue':>7}{'behind':>7}{'max behind':>11}"
          f"{'append p50':>11}{'max':>6}{'late max':>9}{'warm-up':>8}{'close s':>8}{'dropped':>8}")
    for case, r in results.items():
        if r["best"] is None:
            continue
        for k, c in enumerate(r["best"]["cams"]):
            h = c["health"]
            print(f"{RATE_CASES[case]['label']:<24}{k:>4}{_fmt(h['mb_per_s']):>7}"
                  f"{_fmt(h['latency_p50'] and 1e3 * h['latency_p50']):>8}{_fmt(h['latency_p99'] and 1e3 * h['latency_p99']):>8}"
                  f"{h['queue_depth']:>4}/{h['queue_capacity']:<2}{h['frames_behind']:>7}{c['max_frames_behind']:>11}"
                  f"{c['append_ms_p50']:>9.1f}ms{c['append_ms_max']:>6.0f}{c['late_ms_max']:>9.0f}"
                  f"{c['warmup_append_ms_max']:>8.0f}{c['close_seconds']:>8.2f}"
                  f"{h['n_dropped']:>8}")
    sys.stdout.flush()


def records_cost(args: argparse.Namespace, kind: str, work: Path, new_path: Path) -> dict[str, Any]:
    """Per-frame records off vs on: flat-out writer throughput (2048x2048, defaults, fresh process per
    run, interleaved) and the cost of one append of a 64x64 frame."""
    data = work / f"cam-{kind}.npy"
    n = args.records_frames
    reps = args.records_reps
    variants = {"records off": {"records": False, "kw": {}}, "records on": {"records": True, "kw": {}},
                "off, bare": {"records": False, "kw": {"fsync": False, "checksums": False}},
                "on, bare": {"records": True, "kw": {"fsync": False, "checksums": False}}}
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    names = list(variants)
    for rep in range(reps):
        for k in range(len(names)):
            v = names[(rep + k) % len(names)]
            spec = {"system": "flat", "data": str(data), "n": n, "per_file": CAM_PER_FILE,
                    "root": str(work / f"flat-{rep}-{k}"), **variants[v]}
            os.sync()
            runs[v].append(_run_json_child(spec, new_path))
    cost = _run_json_child({"system": "append_cost", "frame": [64, 64], "n": 4000, "reps": 5, "per_file": 1000,
                            "root": str(work / "cost")}, new_path)
    frame_mb = int(np.prod(CAM_FRAME)) * 2 / 1e6
    print(f"\nper-frame records off vs on ({kind} 2048x2048, {n} frames flat out (no clock) per run, fresh process, "
          f"median of {reps}; 'on' = timestamps=time.time(), frame_ids=i)")
    print(f"{'writer':<13}{'s':>7}{'frames/s':>9}{'MB/s':>7}{'cpu cores':>10}{'disk MB/s':>10}   all s")
    table = {}
    for v, rs in runs.items():
        ok = [r for r in rs if "error" not in r]
        if not ok:
            print(f"{v:<13} error: {rs[0].get('error')}")
            continue
        s = statistics.median(r["seconds"] for r in ok)
        table[v] = {"seconds": s, "all": [r["seconds"] for r in ok]}
        print(f"{v:<13}{s:>7.2f}{n / s:>9.1f}{n * frame_mb / s:>7.0f}"
              f"{statistics.median(r['cpu_cores'] for r in ok):>10.2f}{statistics.median(r['disk_MBps'] for r in ok):>10.0f}"
              "   " + " ".join(format(r["seconds"], ".2f") for r in ok))
    if "error" not in cost:
        print(f"one append of a 64x64 uint16 frame (median of 5 x 4000): records off {cost['off']:.1f} us, "
              f"on {cost['on']:.1f} us (+{cost['on'] - cost['off']:.1f}), on + meta={{'exposure_ms': 5.0}} "
              f"{cost['on+meta']:.1f} us (+{cost['on+meta'] - cost['off']:.1f})")
    else:
        print(f"append cost: error: {cost['error']}")
    sys.stdout.flush()
    return {"flat": table, "append_us": cost}


def confirm_runs(args: argparse.Namespace, out: dict[str, Any], work: Path, new_path: Path, vol_per_file: int
                 ) -> dict[str, Any]:
    """Each case again at its highest sustained rate for ``--confirm`` seconds."""
    res: dict[str, Any] = {}
    print(f"\nconfirmation: each case at its highest sustained rate for {args.confirm:.0f} s")
    for kind, k in out["kinds"].items():
        for case, r in k["cases"].items():
            if r["best"] is None:
                continue
            is_vol = case == "volume"
            data = work / (f"vol-{kind}.npy" if is_vol else f"cam-{kind}.npy")
            t = run_trial(case, r["best"]["rate"], data, vol_per_file if is_vol else CAM_PER_FILE, args.confirm,
                          args.max_late_ms, not args.records_off, work, new_path)
            res[f"{kind} {case}"] = t
            cams = t.get("cams", [])
            print(f"  {kind:<7}{case:<14}{r['best']['rate']:>7.1f}/s for {args.confirm:.0f} s: "
                  f"{'pass' if t['ok'] else 'FAIL'} {t['why']}"
                  + (f"  append max {max(c['append_ms_max'] for c in cams):.0f} ms, behind max "
                     f"{max(c['late_ms_max'] for c in cams):.0f} ms, p99 "
                     f"{max(c['health']['latency_p99'] or 0 for c in cams) * 1e3:.0f} ms" if cams else ""), flush=True)
    return res


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
    ap.add_argument("--sustain", type=float, default=0,
                    help="seconds of 100 fps 2048x2048 camera simulation; with --rates, judged seconds per trial (default 15)")
    ap.add_argument("--rates", action="store_true",
                    help="instead of the tables: the highest rate each case sustains with defaults, vs the bound")
    ap.add_argument("--rate-cases", default=",".join(RATE_CASES),
                    help=f"with --rates, comma-separated subset of {list(RATE_CASES)}")
    ap.add_argument("--vol-z", type=int, default=20, help="with --rates: planes per volume (z, 1024, 1024); default 20")
    ap.add_argument("--steps", type=int, default=2, help="with --rates: bisections once a pass and a failure bracket the rate (2)")
    ap.add_argument("--max-late-ms", type=float, default=100.0,
                    help="with --rates: longest append / furthest behind the camera clock a sustained rate allows")
    ap.add_argument("--records-off", action="store_true",
                    help="with --rates: search without timestamps= and frame_ids= (records then hold defaults)")
    ap.add_argument("--no-records-cost", dest="records_cost", action="store_false",
                    help="with --rates: skip the records off/on table")
    ap.add_argument("--records-frames", type=int, default=192, help="with --rates: frames per flat-out run (192)")
    ap.add_argument("--records-reps", type=int, default=3, help="with --rates: flat-out repetitions (3)")
    ap.add_argument("--confirm", type=float, default=0,
                    help="with --rates: run each case again at its highest sustained rate for this many seconds")
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
    if args.rates and any(c.strip() not in RATE_CASES for c in args.rate_cases.split(",") if c.strip()):
        ap.error(f"--rate-cases takes a comma-separated subset of {list(RATE_CASES)}")
    if args.skip_old or args.quick:
        systems = [x for x in systems if x != "old"]
    reps = args.reps or (3 if args.quick else 5)
    run_bytes = (512 << 20) if args.quick else (2 << 30)
    load_start = os.getloadavg()
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="sd-stream-", dir=args.workdir))
    old_python = None
    if "old" in systems and not args.rates:
        import oldenv

        old_python = str(oldenv.ensure_env(quiet=True))
    info = hostinfo.machine()
    print(f"{info['cpus']} CPUs ({info['cpu_model']}), {(info['mem_bytes'] or 0) / 2**30:.0f} GiB, "
          f"python {info['python']}; malloc: glibc defaults (no mallopt, no MALLOC_*/GLIBC_TUNABLES); "
          f"scratch: {work}; split_dataset from {args.new_path}", flush=True)
    results: dict[str, Any] = {"machine": info, "reps": reps, "tables": {}}
    if args.rates:
        print(f"load average at the start {' '.join(f'{x:.2f}' for x in load_start)} (1, 5, 15 min)", flush=True)
        try:
            results["rates"] = rates_main(args, kinds, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        load_end = os.getloadavg()
        print(f"\nload average {' '.join(f'{x:.2f}' for x in load_start)} at the start, "
              f"{' '.join(f'{x:.2f}' for x in load_end)} at the end (1, 5, 15 min); "
              f"wall {time.perf_counter() - started:.0f} s")
        results["load"] = [load_start, load_end]
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / time.strftime("stream-rates-%Y%m%d-%H%M%S.json")
        path.write_text(json.dumps(results, indent=1))
        print(f"results: {path}")
        return
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
