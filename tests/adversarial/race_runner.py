"""Race probe, run in a child: ``python race_runner.py ROOT NPY SECONDS CACHE_SIZE CHAOS,...``.

Reader threads read frames, traces, windows and the whole array from one SplitDataset and
compare each result with the saved array, while chaos threads call ``refresh()`` /
``close()`` in tight loops and churn file descriptors (so fd numbers get reused). Prints
one JSON summary: reads done, exceptions by message, wrong results.
"""

from __future__ import annotations

import collections
import json
import os
import random
import sys
import threading
import time
import warnings


def _msg(e: BaseException) -> str:
    """The exception's message without the paths and block numbers (so equal causes count together)."""
    import re

    text = " ".join(str(e).split())
    text = re.sub(r"block \([0-9, ]+\) in '[^']*'", "block B", text)
    text = re.sub(r"\b\d{3,}\b", "N", text)
    return f"{type(e).__name__}: {text[:160]}"


def main() -> None:
    root, npy, seconds, cache_size, chaos = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    readers = int(sys.argv[6]) if len(sys.argv) > 6 else 6
    warnings.simplefilter("ignore")
    import numpy as np

    import split_dataset

    want = np.load(npy)
    ds = split_dataset.open(root, cache_size=cache_size)
    stop = time.monotonic() + seconds
    lock = threading.Lock()
    errors: collections.Counter = collections.Counter()
    wrong: collections.Counter = collections.Counter()
    counts = collections.Counter()
    T, Z, Y, _X = want.shape

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < stop:
            kind = rng.choice(["frame", "volume", "trace", "window", "all", "trace", "frame", "stepped"])
            t, z, r = rng.randrange(T), rng.randrange(Z), rng.randrange(0, Y - 8)
            sel = {
                "frame": (t, z),
                "volume": (t,),
                "trace": (slice(None), z, slice(r, r + 8), slice(0, 8)),
                "window": (t, z, slice(r, r + 8), slice(None)),
                "all": (slice(None),),
                "stepped": (slice(None, None, 3), z, slice(None, None, 2)),
            }[kind]
            try:
                got = ds[sel]
                ok = np.array_equal(got, want[sel])
                with lock:
                    counts[kind] += 1
                    if not ok:
                        wrong[kind] += 1
            except BaseException as e:
                with lock:
                    counts[kind] += 1
                    errors[f"{kind}: {_msg(e)}"] += 1

    def refresher() -> None:
        while time.monotonic() < stop:
            try:
                ds.refresh()
            except BaseException as e:
                with lock:
                    errors[f"refresh: {_msg(e)}"] += 1

    def closer() -> None:
        while time.monotonic() < stop:
            try:
                ds.close()
            except BaseException as e:
                with lock:
                    errors[f"close: {_msg(e)}"] += 1
            time.sleep(0.0005)

    def fd_churn() -> None:
        names = [os.path.join(root, n) for n in os.listdir(root)] + [os.devnull]
        while time.monotonic() < stop:
            fds = []
            for n in names:
                try:
                    fds.append(os.open(n, os.O_RDONLY))
                except OSError:
                    pass
            for fd in fds:
                os.close(fd)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(readers)]
    for c in chaos.split(","):
        threads.append(threading.Thread(target={"refresh": refresher, "close": closer, "fds": fd_churn}[c]))
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    print(json.dumps({"reads": dict(counts), "errors": dict(errors), "wrong": dict(wrong)}))


if __name__ == "__main__":
    main()
