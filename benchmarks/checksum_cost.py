"""What verifying chunk_index.bin's per-chunk checksums costs a whole-array read.

    python benchmarks/checksum_cost.py [--reps 21]

One dataset per data kind (uint16 (100, 10, 256, 256) in blocks of 20 frames, ``save``
defaults, page cache), one reader with every block open; ``ds[:]`` timed with the
checksums verified (the default) and with verification switched off in the same reader
(the chunk reader's lookup without checksums), repetitions interleaved in alternating
order. Prints medians and the minimum of each, and the cost in percent.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import split_dataset


def make(kind: str, rng: np.random.Generator) -> np.ndarray:
    shape = (100, 10, 256, 256)
    if kind == "noise":  # a dark camera
        return (rng.poisson(2.0, shape) + 100).astype("u2")
    yy, xx = np.mgrid[0:256, 0:256]
    base = 100 + 400 * np.exp(-((yy - 128) ** 2 + (xx - 128) ** 2) / 3000)
    return rng.poisson(np.broadcast_to(base, shape)).astype("u2")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=21)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("noise", "struct"):
            root = Path(tmp) / kind
            data = make(kind, rng)
            split_dataset.save(data, root, (20,), fsync=False)
            ds = split_dataset.open(root)
            ds[:, :, 0, 0]  # every block open
            readers = [h.reader for h in ds._handles._items.values()]
            lookups = [r._hashed for r in readers]
            times: dict[str, list[float]] = {"verified": [], "not verified": []}
            for rep in range(args.reps):
                for mode in ("verified", "not verified") if rep % 2 else ("not verified", "verified"):
                    for r, look in zip(readers, lookups):
                        r._hashed = look if mode == "verified" else None
                    t = time.perf_counter()
                    out = ds[:]
                    times[mode].append(time.perf_counter() - t)
                    assert np.array_equal(out, data)
            ds.close()
            med = {k: statistics.median(v) for k, v in times.items()}
            low = {k: min(v) for k, v in times.items()}
            print(f"{kind:6s} ds[:] {data.nbytes / 1e6:.0f} MB: verified {med['verified'] * 1e3:.1f} ms "
                  f"(min {low['verified'] * 1e3:.1f}), not verified {med['not verified'] * 1e3:.1f} ms "
                  f"(min {low['not verified'] * 1e3:.1f}); cost {100 * (med['verified'] / med['not verified'] - 1):+.1f} % "
                  f"of medians, {100 * (low['verified'] / low['not verified'] - 1):+.1f} % of minima")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
