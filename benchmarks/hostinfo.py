"""Machine facts for the report: malloc environment, page-cache residency (mincore), CPUs, RAM."""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
import platform
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_libc: Any = None


def _get_libc() -> Any:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return _libc


#: environment variables that tune glibc malloc; the benchmarks run without them
MALLOC_ENV_PREFIXES = ("MALLOC_", "GLIBC_TUNABLES")


def malloc_env() -> dict[str, str]:
    """The malloc-tuning variables set in this process's environment (none in a measured run)."""
    return {k: v for k, v in os.environ.items() if k.startswith(MALLOC_ENV_PREFIXES)}


def _resident_pages(path: Path) -> tuple[int, int]:
    """(resident, total) pages of one file in the page cache."""
    size = path.stat().st_size
    if size == 0:
        return 0, 0
    libc = _get_libc()
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    page = mmap.PAGESIZE
    npages = -(-size // page)
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap failed")
        try:
            vec = (ctypes.c_ubyte * npages)()
            if libc.mincore(ctypes.c_void_p(addr), size, vec) != 0:
                raise OSError(ctypes.get_errno(), "mincore failed")
            return sum(b & 1 for b in vec), npages
        finally:
            libc.munmap(ctypes.c_void_p(addr), size)
    finally:
        os.close(fd)


def page_cache_fraction(paths: Iterable[Path]) -> float | None:
    """Fraction of the files' pages that are in the page cache, or None if unknown."""
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(q for q in p.rglob("*") if q.is_file())
        else:
            files.append(p)
    try:
        counts = [_resident_pages(f) for f in files]
    except OSError:
        return None
    total = sum(t for _, t in counts)
    return sum(r for r, _ in counts) / total if total else None


def disk_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(q.stat().st_size for q in path.rglob("*") if q.is_file())


def machine() -> dict[str, Any]:
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "mem_bytes": mem,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "BLOSC_NTHREADS": os.environ.get("BLOSC_NTHREADS"),
    }
