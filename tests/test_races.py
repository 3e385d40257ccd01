"""Adversarial: ``refresh()`` / ``close()`` while other threads read from the same dataset.

Every read must return the right values: no CorruptBlockError ("Bad file descriptor",
"identifier is not of specified type"), no chunk parsed from a reused descriptor that now
belongs to another file, no crash. Runs in a child process (``adversarial/race_runner.py``)
so a crash fails the test. Quick runs in the default suite, long ones with ``-m full``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import split_dataset


def _dataset(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(1)
    x = rng.poisson(100, (24, 2, 128, 128)).astype(np.uint16)  # 32 KiB chunks: 4 blosc blocks each
    x[5, 1] = rng.integers(0, 1 << 16, (128, 128), dtype=np.uint16)  # one chunk stored as is
    root = tmp_path / "ds"
    split_dataset.save(x, root, (2, 2, 128, 128), fsync=False)
    npy = tmp_path / "x.npy"
    np.save(npy, x)
    return root, npy


def _race(tmp_path: Path, seconds: float, cache_size: int, chaos: str, readers: int = 6) -> dict:
    root, npy = _dataset(tmp_path)
    runner = Path(__file__).parent / "adversarial" / "race_runner.py"
    proc = subprocess.run([sys.executable, str(runner), str(root), str(npy), str(seconds), str(cache_size), chaos,
                           str(readers)], capture_output=True, text=True, timeout=seconds * 4 + 60)
    assert proc.returncode == 0, f"child died ({proc.returncode}): {proc.stderr[-1500:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _check(result: dict) -> None:
    n = sum(result["reads"].values())
    assert n > 0
    problems = [f"{c}x {msg}" for msg, c in sorted(result["errors"].items(), key=lambda kv: -kv[1])]
    problems += [f"{c}x wrong values from {kind}" for kind, c in result["wrong"].items()]
    assert not problems, f"{n} reads ({result['reads']}):\n" + "\n".join(problems[:25])


@pytest.mark.parametrize("chaos,cache_size", [
    ("refresh", 1),
    ("close", 1),
    ("refresh,close,fds", 1),
    ("close,fds", 32),
])
def test_reads_during_refresh_and_close_quick(tmp_path, chaos, cache_size):
    _check(_race(tmp_path, 1.25, cache_size, chaos))


@pytest.mark.full
@pytest.mark.parametrize("chaos,cache_size,readers", [
    ("refresh", 1, 8),
    ("close", 1, 8),
    ("refresh,close,fds", 1, 12),
    ("refresh,close,fds", 2, 12),
    ("close,fds", 32, 8),
    ("refresh,fds", 32, 8),
])
def test_reads_during_refresh_and_close_full(tmp_path, chaos, cache_size, readers):
    _check(_race(tmp_path, 30, cache_size, chaos, readers))


def test_close_between_reads_keeps_values(tmp_path):
    """Single-threaded: close() between every read (fd numbers reused by other opens in between)."""
    import os

    root, npy = _dataset(tmp_path)
    want = np.load(npy)
    ds = split_dataset.open(root, cache_size=1)
    for t in range(0, 24, 3):
        assert np.array_equal(ds[:, 1, 0:8, 0:8], want[:, 1, 0:8, 0:8])
        ds.close()
        fds = [os.open(root / "stack_metadata.json", os.O_RDONLY) for _ in range(4)]
        assert np.array_equal(ds[t], want[t])
        for fd in fds:
            os.close(fd)
