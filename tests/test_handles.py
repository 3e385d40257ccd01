"""The handle cache: a file is closed only when no read uses it (close/refresh/LRU under readers)."""

from __future__ import annotations

import threading

import numpy as np
from conftest import save_fast

from split_dataset import SplitDataset
from split_dataset.storage import HandleCache


class _Handle:
    def __init__(self) -> None:
        self.users, self.retired, self.closed = 0, False, 0

    def close(self) -> None:
        self.closed += 1


def test_clear_closes_a_handle_in_use_only_when_released() -> None:
    cache = HandleCache(4)
    h = cache.acquire(0, _Handle)
    cache.clear()
    assert h.retired and not h.closed  # a read still uses it
    cache.release(h)
    assert h.closed == 1
    h2 = cache.acquire(0, _Handle)
    assert h2 is not h  # a new one is opened after clear
    cache.release(h2)
    cache.clear()
    assert h2.closed == 1


def test_lru_eviction_waits_for_readers() -> None:
    cache = HandleCache(1)
    a = cache.acquire(0, _Handle)
    b = cache.acquire(1, _Handle)  # evicts a, which is still in use
    assert a.retired and not a.closed
    cache.release(a)
    assert a.closed == 1
    cache.release(b)
    c = cache.acquire(2, _Handle)  # evicts b, idle: closed at once
    assert b.closed == 1
    cache.release(c)


def test_close_and_refresh_under_threaded_reads(tmp_path) -> None:
    x = np.random.default_rng(0).integers(0, 4000, (24, 2, 16, 32), dtype=np.uint16)
    save_fast(x, tmp_path / "ds", (4,))
    ds = SplitDataset(tmp_path / "ds", cache_size=2)
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            while not stop.is_set():
                t = int(rng.integers(0, 24))
                np.testing.assert_array_equal(ds[t], x[t])
                np.testing.assert_array_equal(ds[:, 1, 3:9, 5:13], x[:, 1, 3:9, 5:13])
                np.testing.assert_array_equal(ds[::3, :, ::2], x[::3, :, ::2])
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for i in range(300):
        ds.refresh() if i % 2 else ds.close()
        # descriptors freed by a close get reused by other files at once
        with open(tmp_path / "ds" / "stack_metadata.json", "rb"):
            pass
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[0]
