"""Threads and scratch memory for chunk codecs: one pool per process, per-thread buffers."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

__all__ = ["POOL_THREADS", "pool", "run_shared", "scratch", "part_buffers", "bytes_of"]

_POOL: tuple[int, ThreadPoolExecutor] | None = None
_POOL_LOCK = threading.Lock()


def _pool_threads() -> int:
    """Threads that compress/decompress chunks: ``SPLIT_DATASET_THREADS``, else the usable cores."""
    env = os.environ.get("SPLIT_DATASET_THREADS", "")
    if env.strip().isdigit() and int(env) > 0:
        return int(env)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


POOL_THREADS = _pool_threads()


def pool() -> ThreadPoolExecutor:
    """A thread pool for chunk compression/decompression, one per process."""
    global _POOL
    pid = os.getpid()
    if _POOL is not None and _POOL[0] == pid:
        return _POOL[1]
    with _POOL_LOCK:
        if _POOL is None or _POOL[0] != pid:
            _POOL = (pid, ThreadPoolExecutor(POOL_THREADS, thread_name_prefix="split_dataset"))
        return _POOL[1]


def run_shared(work: Any, items: list[Any], *args: Any) -> None:
    """``work(iterator, *args)`` on this thread and on up to ``POOL_THREADS - 1`` pool threads,
    all taking items from one iterator until it is empty.

    This thread starts at once and never waits for a pool thread that has not started by
    the time the items run out: on a VM, waking an idle thread can take longer than
    decoding a few chunks, so a small read is then done by this thread alone. A list
    iterator hands each item to exactly one thread. The first exception is raised here.
    """
    queue = iter(items)
    helpers = min(len(items), POOL_THREADS) - 1
    if helpers <= 0:
        work(queue, *args)
        return
    cond = threading.Condition()
    state: dict[str, Any] = {"closed": False, "active": 0, "error": None}

    def helper() -> None:
        with cond:
            if state["closed"]:
                return
            state["active"] += 1
        try:
            work(queue, *args)
        except BaseException as e:
            state["error"] = state["error"] or e
        finally:
            with cond:
                state["active"] -= 1
                cond.notify_all()

    for _ in range(helpers):
        pool().submit(helper)
    try:
        work(queue, *args)
    finally:
        with cond:
            state["closed"] = True
            while state["active"]:
                cond.wait()
    if state["error"] is not None:
        raise state["error"]


_SCRATCH = threading.local()


def scratch(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A per-thread buffer for one decoded chunk, reused across reads (no allocation per chunk)."""
    key = (shape, dtype)
    cache = getattr(_SCRATCH, "buffers", None)
    if cache is None:
        cache = _SCRATCH.buffers = {}
    buf = cache.get(key)
    if buf is None:
        if len(cache) > 8:
            cache.clear()
        buf = cache[key] = np.empty(shape, dtype)
    return buf


def bytes_of(a: np.ndarray) -> memoryview:
    """The bytes of a C-contiguous array (any dtype, byte order included)."""
    return a.reshape(-1).view(np.uint8).data


def part_buffers(nbytes: int, dtype: np.dtype) -> tuple[np.ndarray, memoryview, np.ndarray, memoryview, int, int]:
    """Per-thread buffers for chunk reads: the compressed frame and its memoryview (room for
    the largest valid frame and more: c-blosc never reads past it), decoded items and their
    memoryview (bytes), and the addresses of the two arrays."""
    cache = getattr(_SCRATCH, "parts", None)
    if cache is None:
        cache = _SCRATCH.parts = {}
    key = (nbytes, dtype)
    bufs = cache.get(key)
    if bufs is None:
        if len(cache) > 8:
            cache.clear()
        frame = np.zeros(nbytes + 64 + 4 * (nbytes // 128 + 1), np.uint8)
        items = np.empty(nbytes // dtype.itemsize, dtype)
        bufs = cache[key] = (frame, frame.data, items, bytes_of(items), frame.ctypes.data, items.ctypes.data)
    return bufs
