"""``split-dataset demo``: a simulated light-sheet acquisition, streamed to disk, read back, shown."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .exits import EXIT_OK, PROG
from .format import _dims, format_info

__all__ = ["DEMO_MARK", "cmd_demo"]

DEMO_MARK = "split-dataset demo"


def _lightsheet(n_t: int, shape: tuple[int, int, int], seed: int = 0) -> Iterator[np.ndarray]:
    """Synthetic light-sheet volumes: a dim sample with flickering, drifting cells, plus camera noise."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    z, y, x = np.arange(nz, dtype=np.float32), np.arange(ny, dtype=np.float32), np.arange(nx, dtype=np.float32)
    # autofluorescence of the sample: a smooth ellipsoid, brighter in the middle planes
    tissue = (np.exp(-(((z - nz / 2) / nz) ** 2))[:, None, None]
              * np.exp(-(((y - ny / 2) / (0.35 * ny)) ** 2))[None, :, None]
              * np.exp(-(((x - nx / 2) / (0.3 * nx)) ** 2))[None, None, :])
    background = (100 + 250 * tissue).astype(np.float32)
    n_cells = 60
    pos = np.column_stack([rng.uniform(0, nz - 1, n_cells), rng.uniform(0.2 * ny, 0.8 * ny, n_cells),
                           rng.uniform(0.25 * nx, 0.75 * nx, n_cells)])
    drift = rng.normal(0, 1, (n_cells, 3)) * np.array([0.01, 0.15, 0.15])  # voxels per time point
    rate = rng.uniform(0.02, 0.15, n_cells)
    amp = rng.uniform(400, 1500, n_cells)
    sz, sxy = 0.8, 2.5
    r = int(3 * sxy) + 1
    activity = np.zeros(n_cells)
    for t in range(n_t):
        activity = 0.75 * activity + (rng.random(n_cells) < rate)  # calcium-like transients
        vol = background.copy()
        for c in range(n_cells):
            cz, cy, cx = pos[c] + drift[c] * t
            y0, y1 = max(0, int(cy) - r), min(ny, int(cy) + r + 1)
            x0, x1 = max(0, int(cx) - r), min(nx, int(cx) + r + 1)
            if y0 >= y1 or x0 >= x1:
                continue
            gz = np.exp(-0.5 * ((z - cz) / sz) ** 2)
            gy = np.exp(-0.5 * ((y[y0:y1] - cy) / sxy) ** 2)
            gx = np.exp(-0.5 * ((x[x0:x1] - cx) / sxy) ** 2)
            spot = gz[:, None, None] * gy[None, :, None] * gx[None, None, :]
            vol[:, y0:y1, x0:x1] += (amp[c] * (0.2 + activity[c])) * spot
        vol += rng.standard_normal(shape, dtype=np.float32) * 12  # camera noise
        yield np.clip(vol, 0, 65535).astype(np.uint16)


def _is_demo_output(path: Path) -> bool:
    from ..storage import METADATA_FILENAME, read_json

    try:
        attrs = read_json(path / METADATA_FILENAME).get("attrs") or {}
    except (OSError, ValueError):
        return False
    return isinstance(attrs, dict) and attrs.get("created_by") == DEMO_MARK


def _mean_projection(ds: Any) -> tuple[np.ndarray, str]:
    try:
        import dask.array  # noqa: F401
    except ImportError:
        acc = np.zeros(ds.shape[1:], np.float64)
        for start in range(0, ds.shape[0], ds.shape_block[0]):
            acc += ds[start : start + ds.shape_block[0]].sum(axis=0, dtype=np.float64)
        return acc / max(1, ds.shape[0]), "numpy, block by block: dask is not installed"
    x = ds.to_dask()
    return x.mean(axis=0).compute(), f"dask, {x.numblocks[0]} tasks, one per block file"


def cmd_demo(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..dataset import SplitDataset
    from ..stream import SplitDatasetWriter
    from ..verify import info

    out = Path(args.out)
    previous = _is_demo_output(out)
    if out.exists() and not previous and not args.overwrite and not (out.is_dir() and not any(out.iterdir())):
        raise FileExistsError(f"{str(out)!r} exists and is not the output of an earlier demo; "
                              "pass --overwrite to replace it")
    n_t, frame, per_file, interval = args.time_points, (8, 256, 256), 10, 0.5
    print(f"simulating a light-sheet acquisition: {n_t} volumes of {_dims(frame)} uint16, one every {interval} s")
    print(f"streaming it to {out} with SplitDatasetWriter, {per_file} volumes per block file")
    with SplitDatasetWriter(out, frame, "uint16", frames_per_file=per_file, resolution=(interval, 5.0, 0.6, 0.6),
                            units=("s", "um", "um", "um"), frame_interval=interval, overwrite=True,
                            attrs={"created_by": DEMO_MARK, "sample": "synthetic larval zebrafish brain",
                                   "microscope": "simulated light-sheet"}) as writer:
        volumes = tqdm(_lightsheet(n_t, frame, seed=args.seed), total=n_t, desc="acquiring", unit="volume",
                       file=sys.stderr, disable=True if args.quiet else None, leave=False)
        for t, volume in enumerate(volumes):  # the simulated camera's clock and frame counter: same bytes each run
            writer.append(volume, timestamps=t * interval, frame_ids=t)
    with SplitDataset(out) as ds:
        mean, how = _mean_projection(ds)
    z, y, x = np.unravel_index(int(np.argmax(mean)), mean.shape)
    print(f"read back: the mean over time ({how}) is {_dims(mean.shape)}; brightest voxel at "
          f"z={z}, y={y}, x={x} ({mean.max():.0f} counts)")
    print()
    print(format_info(info(out)))
    print()
    print(f"next: {PROG} verify {out}  |  {PROG} export-vds {out} {out}.h5  |  "
          f"{PROG} convert {out} {out}.npy")
    return EXIT_OK
