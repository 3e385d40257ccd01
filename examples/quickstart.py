"""A short tour: write a 4-D stack as a split dataset, read parts of it back, reopen it.

Run: python examples/quickstart.py [OUTPUT_FOLDER]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

import split_dataset


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()) / "quickstart"
    rng = np.random.default_rng(0)
    # 60 time points of a 10-plane, 128 x 128 volume, as a camera would deliver (uint16)
    stack = (rng.poisson(100, (60, 10, 128, 128)) + 50).astype(np.uint16)

    ds = split_dataset.save(stack, out, shape_block=(20,), resolution=(0.5, 5.0, 0.6, 0.6),
                            attrs={"fish": "F0", "stimulus": "gratings"}, overwrite=True)
    print(ds)
    print("files:", [p.name for p in ds.files.flat])

    ds = split_dataset.open(out)
    assert (ds[17, 4] == stack[17, 4]).all()  # one plane: reads one HDF5 chunk of one file
    trace = ds[:, 5, 60:68, 60:68].mean(axis=(1, 2))  # a trace over all time points
    print("trace over time:", np.round(trace[:5], 1), "...")
    print("every 10th frame, reversed:", ds[::-10, 0, 0, 0])
    print("resolution:", ds.resolution, "axis order:", ds.axis_order, "attrs:", ds.attrs)


if __name__ == "__main__":
    main()
