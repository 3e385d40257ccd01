"""What exporting costs: OME-Zarr (0.5 and 0.4, with the pyramid), plain zarr, split dataset
copies, and virtual references, on dark-camera noise and on structured frames.

    python benchmarks/export.py [--frames 40] [--reps 3]

Data: ``--frames`` uint16 frames of 2048 x 2048 (Poisson noise around an offset of 100, and
a smooth blob pattern with noise), saved with ``split_dataset.save`` defaults in blocks
of 20 frames. Each export is timed ``--reps`` times into a fresh destination (medians),
with MB/s of uncompressed source, the bytes written, and for OME-Zarr the levels made.
Reading back: one frame and the whole array through zarr-python from the OME-Zarr level 0
and from the virtual references, next to this package's reader.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _time(fn: Callable[[], object], reps: int, cleanup: Callable[[], None] | None = None) -> float:
    times = []
    for _ in range(reps):
        if cleanup is not None:
            cleanup()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()

    import fsspec
    import zarr

    import split_dataset
    from split_dataset.convert import convert

    rng = np.random.default_rng(0)
    shape = (args.frames, 2048, 2048)
    yy, xx = np.mgrid[0:2048, 0:2048]
    blobs = (300 * np.exp(-((yy - 1024) ** 2 + (xx - 900) ** 2) / 4e5)).astype(np.float32)
    kinds = {
        "noise": lambda: rng.poisson(100, size=shape).astype(np.uint16),
        "struct": lambda: (blobs[None] * (1 + 0.1 * np.sin(np.arange(shape[0]))[:, None, None])
                           + rng.poisson(100, size=shape)).astype(np.uint16),
    }
    work = Path(tempfile.mkdtemp(prefix="sd-export-"))
    print(f"{args.frames} frames of 2048 x 2048 uint16 ({np.prod(shape) * 2 / 1e6:.0f} MB), {args.reps} reps, "
          f"load {os.getloadavg()[0]:.1f}; medians")
    print("| data | export | seconds | MB/s | MB written | notes |")
    print("|---|---|---:|---:|---:|---|")
    try:
        for kind, make in kinds.items():
            x = make()
            src = work / f"{kind}_src"
            split_dataset.save(x, src, (20,), fsync=False).close()
            mb = x.nbytes / 1e6
            cases: list[tuple[str, Path, Callable[[Path], object], str]] = [
                ("OME-Zarr 0.5", work / "o5.ome.zarr", lambda d, src=src: convert(src, d), ""),
                ("OME-Zarr 0.4", work / "o4.ome.zarr", lambda d, src=src: convert(src, d, ngff="0.4"), ""),
                ("zarr v3 (plain, blosc-zstd)", work / "p.zarr", lambda d, src=src: convert(src, d, compression="blosc-zstd"),
                 "level 0 only"),
                ("split dataset copy", work / "copy", lambda d, src=src: convert(src, d), "blosc-lz4, as the source"),
                ("virtual refs", work / "refs.json", lambda d, src=src: split_dataset.virtual_refs(src, d), "no pixel copied"),
            ]
            for name, dst, fn, note in cases:
                def clean(dst: Path = dst) -> None:
                    if dst.is_dir():
                        shutil.rmtree(dst)
                    elif dst.exists():
                        dst.unlink()

                seconds = _time(lambda fn=fn, dst=dst: fn(dst), args.reps, clean)
                if name.startswith("OME"):
                    g = zarr.open_group(str(dst), mode="r")
                    note = "levels " + ", ".join("x".join(map(str, g[k].shape[-2:])) for k in sorted(g.array_keys()))
                print(f"| {kind} | {name} | {seconds:.3f} | {mb / seconds:.0f} | {_size(dst) / 1e6:.1f} | {note} |")
            # reading back
            ds = split_dataset.open(src)
            level0 = zarr.open_group(str(work / "o5.ome.zarr"), mode="r")["0"]
            refs = fsspec.filesystem("reference", fo=str(work / "refs.json"), template_overrides={"u": str(src)})
            virtual = zarr.open_group(refs.get_mapper(), mode="r")["data"]
            for what, sel in (("one frame", (7,)), ("whole array", (slice(None),))):
                row = []
                for label, arr in (("split_dataset", ds), ("zarr OME level 0", level0), ("zarr via refs", virtual)):
                    seconds = _time(lambda arr=arr, sel=sel: np.asarray(arr[sel]), args.reps)
                    row.append(f"{label} {seconds * 1e3:.1f} ms")
                print(f"| {kind} | read {what} | | | | {'; '.join(row)} |")
            ds.close()
            shutil.rmtree(src)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
