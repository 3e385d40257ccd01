"""What the napari plugin reads on open and on slider moves: in-file chunks decoded and milliseconds.

    python benchmarks/napari_open.py [--reps 5]

Datasets: the demo acquisition (``split-dataset demo``: 60 volumes of 8 x 256 x 256 uint16,
written by the streaming writer) and 100 dark-camera 2048 x 2048 uint16 frames (``save``
defaults). Each is opened with a headless ``napari.components.ViewerModel`` through the
plugin (``viewer.open(path, plugin="split-dataset")``; napari draws the first plane while
adding the layer), then the first slider is moved to 5 other positions, each followed by
reading the plane shown (what the canvas would draw). Counts: chunk decodes (whole chunks
and parts) by the package's chunk reader. Medians over ``--reps`` fresh openings.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    import npe2
    from napari.components import ViewerModel

    import split_dataset
    from split_dataset.storage.reader import ChunkReader

    npe2.PluginManager.instance().discover()
    counts = {"decodes": 0}
    whole, part = ChunkReader._whole, ChunkReader._decode_part

    def counted_whole(self: Any, *a: Any, **k: Any) -> Any:
        counts["decodes"] += 1
        return whole(self, *a, **k)

    def counted_part(self: Any, *a: Any, **k: Any) -> Any:
        counts["decodes"] += 1
        return part(self, *a, **k)

    ChunkReader._whole = counted_whole  # type: ignore[method-assign]
    ChunkReader._decode_part = counted_part  # type: ignore[method-assign]
    print(f"load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        demo = Path(tmp) / "demo"
        subprocess.run([sys.executable, "-m", "split_dataset", "demo", str(demo), "-q"], check=True,
                       capture_output=True)
        frames = Path(tmp) / "frames2048"
        rng = np.random.default_rng(0)
        split_dataset.save((rng.poisson(2.0, (100, 2048, 2048)) + 100).astype("uint16"), frames, fsync=False)
        for name, path in (("demo (60, 8, 256, 256)", demo), ("frames (100, 2048, 2048)", frames)):
            opened: list[float] = []
            open_decodes: list[int] = []
            moves: list[float] = []
            move_decodes: list[int] = []
            for rep in range(args.reps):
                counts["decodes"] = 0
                viewer = ViewerModel()
                t = time.perf_counter()
                layer, = viewer.open(str(path), plugin="split-dataset")
                opened.append(time.perf_counter() - t)
                open_decodes.append(counts["decodes"])
                data = layer.data[0] if layer.multiscale else layer.data
                n = data.shape[0]
                for k in range(5):
                    step = list(viewer.dims.current_step)
                    step[0] = (rep * 7 + k * 11 + 3) % n
                    counts["decodes"] = 0
                    t = time.perf_counter()
                    viewer.dims.current_step = tuple(step)
                    np.asarray(data[tuple(step[: data.ndim - 2])])
                    moves.append(time.perf_counter() - t)
                    move_decodes.append(counts["decodes"])
                viewer.layers.clear()
            print(f"{name}: open {statistics.median(opened) * 1e3:.1f} ms, {statistics.median(open_decodes):.0f} "
                  f"chunk decodes; slider move + plane shown {statistics.median(moves) * 1e3:.1f} ms, "
                  f"{statistics.median(move_decodes):.0f} chunk decodes (medians; multiscale: {layer.multiscale})")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
