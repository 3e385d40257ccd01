"""Time the reader of two git revisions of split_dataset on the same files, interleaved.

    python benchmarks/before_after.py REV_BEFORE [REV_AFTER] [--reps 7] [--shape 200,10,256,256]

Each revision is checked out into a temporary git worktree and imported in its own
subprocess; the subprocesses take turns, one repetition each, so drift of the machine
hits both alike. Data (written once, by REV_AFTER or the working tree): camera noise
(Poisson around an offset of 100, like a dark sCMOS frame) with the default codec, and
the same frames with the old package's codec (``compression="blosc"``: blosclz level 9).
"Warm" patterns run on a dataset whose blocks were all read once; "first read" opens the
dataset anew and reads one frame of a block it has not touched. Prints medians (ms) and
after/before ratios (below 1: the after revision is faster). glibc malloc at its defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

WORKER = r'''
import json, sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
import split_dataset
from split_dataset import SplitDataset
path, n_t, n_z = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
ds = SplitDataset(path)
ds[:]  # every block touched once: warm
rng = np.random.default_rng(1)
pats = {
    "ds[t]": lambda: ds[n_t // 2 + 3],
    "ds[:, z]": lambda: ds[:, n_z // 2],
    "8x8 trace": lambda: ds[:, n_z // 2, 60:68, 60:68],
    "ds[:]": lambda: ds[:],
    "100 random ds[t, z]": lambda: [ds[int(t), int(z)] for t, z in zip(rng.integers(0, n_t, 100),
                                                                       rng.integers(0, n_z, 100))],
    "ds[::2]": lambda: ds[::2],
    "ds[:, :, ::2, ::2]": lambda: ds[:, :, ::2, ::2],
    "ds[list of half]": lambda: ds[list(range(0, n_t, 2))],
}
def first_read():
    fresh = SplitDataset(path)
    t0 = time.perf_counter()
    fresh[n_t - 1]
    dt = time.perf_counter() - t0
    fresh.close()
    return dt
for line in sys.stdin:
    out = {}
    for name, f in pats.items():
        t0 = time.perf_counter(); f(); out[name] = time.perf_counter() - t0
    out["first read of a block"] = first_read()
    print(json.dumps(out), flush=True)
'''


def worktree(rev: str, where: Path) -> Path:
    """A checkout of `rev` (a worktree under `where`), or the working tree itself for "WORKTREE"."""
    if rev == "WORKTREE":
        return REPO
    path = where / rev.replace("/", "_")
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "-q", "--detach", str(path), rev], check=True)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("before")
    ap.add_argument("after", nargs="?", default="WORKTREE")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--shape", default="200,10,256,256")
    ap.add_argument("--apart", action="store_true",
                    help="run each revision's repetitions alone, one process after the other, instead of taking "
                         "turns (taking turns was seen to slow page faults in one of the two processes)")
    args = ap.parse_args()
    shape = tuple(int(s) for s in args.shape.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        trees = {"before": worktree(args.before, tmpdir), "after": worktree(args.after, tmpdir)}
        try:
            sys.path.insert(0, str(trees["after"]))
            import numpy as np

            import split_dataset

            rng = np.random.default_rng(0)
            frames = (rng.poisson(20, shape) + 80).astype(np.uint16)
            data = {}
            for label, codec in (("camera noise, default codec", "blosc-lz4"), ("camera noise, 0.4.4's codec", "blosc")):
                path = tmpdir / label.replace(" ", "_").replace(",", "").replace("'", "")
                split_dataset.save(frames, path, (20,), compression=codec, fsync=False)
                data[label] = path
            for label, path in data.items():
                procs = {
                    k: subprocess.Popen([sys.executable, "-c", WORKER, str(tree), str(path), str(shape[0]), str(shape[1])],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
                    for k, tree in trees.items()
                }
                times: dict[str, dict[str, list[float]]] = {k: {} for k in procs}
                order = ([(k,) * args.reps for k in procs] if args.apart else [tuple(procs)] * args.reps)
                for turn in order:
                    for k in turn:  # take turns, or (--apart) one revision's repetitions after the other's
                        p = procs[k]
                        assert p.stdin is not None and p.stdout is not None
                        p.stdin.write("go\n")
                        p.stdin.flush()
                        for name, t in json.loads(p.stdout.readline()).items():
                            times[k].setdefault(name, []).append(t)
                for p in procs.values():
                    assert p.stdin is not None
                    p.stdin.close()
                    p.wait()
                print(f"\n{label}, uint16 {shape}, blocks of 20 frames, medians of {args.reps}")
                print(f"{'pattern':26s} {args.before[:12]:>12s} {args.after[:12]:>12s}  after/before")
                for name in times["before"]:
                    b, a = statistics.median(times["before"][name]), statistics.median(times["after"][name])
                    print(f"{name:26s} {b * 1e3:10.2f}ms {a * 1e3:10.2f}ms  {a / b:8.2f}")
        finally:
            for tree in trees.values():
                if tree != REPO:
                    subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False)


if __name__ == "__main__":
    main()
