"""Blosc compression through the library that hdf5plugin ships for HDF5 filter 32001.

The blosc HDF5 filter that decodes every block file is c-blosc 1.x compiled into
hdf5plugin's ``libh5blosc``, which also exports blosc's thread-safe ``*_ctx``
functions. Calling them with ctypes releases the GIL, so chunks compress and
decompress on all cores outside HDF5's global lock, producing exactly the bytes the
filter writes. Measured here on 128 KiB uint16 planes: 49 µs to decompress against
125 µs for numcodecs' Blosc, which is why this is not numcodecs.

Small blocks: a blosc frame is a sequence of independently compressed blocks with a
table of their offsets, so :func:`getitem_ptr` decodes only the blocks holding the wanted
items. c-blosc 1.x "splits" lz4 and blosclz blocks into one stream per byte of the
item and then never uses blocks under 64 KiB; :func:`compress` with a `blocksize`
therefore asks for unsplit blocks. That switch is a process-wide setting of c-blosc
(``blosc_set_splitmode``), so it is set back to c-blosc's default before compressing
with an automatic block size. Both layouts are standard blosc 1 frames that every
blosc decoder since 1.11 (2016) reads; a compression running concurrently elsewhere
in the process may pick up either layout, which changes its size by about 1 %, never
its bytes' validity.

Where the symbols are missing (another build of hdf5plugin), :func:`available` is
False and callers use HDF5's filter pipeline instead.
"""

from __future__ import annotations

import ctypes
import struct
from typing import Any

import numpy as np

__all__ = ["available", "compress", "decompress", "getitem_ptr", "block_span", "BloscError"]

_MAX_OVERHEAD = 16
MEMCPYED = 0x02  # header flag: the frame holds the items uncompressed
_FORWARD_COMPAT_SPLIT, _NEVER_SPLIT = 4, 2  # blosc_set_splitmode values (c-blosc 1.x)
_split_mode: int | None = None  # last value this module set
#: a frame's header: version, versionlz, flags, typesize, nbytes, blocksize, cbytes
HEADER = struct.Struct("<BBBBIII")
OFFSET = struct.Struct("<I")


class BloscError(RuntimeError):
    """Blosc failed to compress or decompress a chunk (corrupt data)."""


def _load() -> Any:
    try:
        import hdf5plugin

        path = hdf5plugin.get_config().registered_filters["blosc"]
        lib = ctypes.CDLL(path)
        comp, decomp = lib.blosc_compress_ctx, lib.blosc_decompress_ctx
    except (ImportError, KeyError, OSError, AttributeError):
        return None
    comp.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_void_p,
                     ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int]
    comp.restype = ctypes.c_int
    decomp.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    decomp.restype = ctypes.c_int
    lib.blosc_getitem.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
    lib.blosc_getitem.restype = ctypes.c_int
    return lib


_LIB = _load()
_SET_SPLIT = getattr(_LIB, "blosc_set_splitmode", None)  # absent before c-blosc 1.17: automatic blocks only


def available() -> bool:
    """True when hdf5plugin's blosc can be called directly."""
    return _LIB is not None


def _set_split(mode: int) -> None:
    global _split_mode
    if _split_mode != mode and _SET_SPLIT is not None:
        _SET_SPLIT(mode)
        _split_mode = mode


def compress(chunk: np.ndarray, cname: str, clevel: int, shuffle: int, blocksize: int = 0) -> np.ndarray:
    """Compress a C-contiguous array as one blosc frame (what filter 32001 stores for a chunk).

    `blocksize` in bytes, 0 for blosc's choice; a nonzero one gives unsplit blocks.
    """
    src = np.ascontiguousarray(chunk)
    _set_split(_NEVER_SPLIT if blocksize else _FORWARD_COMPAT_SPLIT)
    dst = np.empty(src.nbytes + _MAX_OVERHEAD, np.uint8)
    n = _LIB.blosc_compress_ctx(
        int(clevel), int(shuffle), src.itemsize, src.nbytes, src.ctypes.data, dst.ctypes.data, dst.nbytes,
        cname.encode(), int(blocksize), 1,
    )
    if n <= 0:
        raise BloscError(f"blosc could not compress a chunk of {src.nbytes} bytes with {cname!r} (code {n})")
    return dst[:n]


def decompress(frame: bytes, out: np.ndarray) -> None:
    """Decompress one blosc frame into the C-contiguous array `out` of exactly its size."""
    if len(frame) < _MAX_OVERHEAD:
        raise BloscError(f"a blosc frame has at least 16 bytes, this chunk has {len(frame)}")
    decompress_ptr(frame, frame, len(frame), out)  # ctypes passes bytes as a pointer to their buffer


def decompress_ptr(frame: int | bytes, head: bytes | memoryview, size: int, out: np.ndarray) -> None:
    """Decompress the blosc frame of `size` bytes at address `frame` (or in the bytes `frame`),
    whose first 16 bytes are `head`, into the C-contiguous array `out` of exactly its size."""
    _, _, _, _, nbytes, _, cbytes = HEADER.unpack_from(head)
    if nbytes != out.nbytes or cbytes != size:
        raise BloscError(f"blosc frame header says {nbytes} bytes from {cbytes}; expected {out.nbytes} from {size}")
    n = _LIB.blosc_decompress_ctx(frame, out.ctypes.data, nbytes, 1)
    if n != nbytes:
        raise BloscError(f"blosc could not decompress a chunk (code {n})")


def getitem_function() -> Any:
    """``blosc_getitem(frame address, start, nitems, out address) -> bytes decoded`` (ctypes), or None."""
    return _LIB.blosc_getitem if _LIB is not None else None


def getitem_ptr(frame: int, start: int, nitems: int, out: int, itemsize: int) -> None:
    """Decode items ``[start, start + nitems)`` of the blosc frame at address `frame` into
    memory at address `out` (room for `nitems` items of `itemsize` bytes).

    The frame needs valid bytes only in its header, its block offsets and the blocks
    that hold those items; the caller checks those offsets (:func:`block_span`).
    """
    n = _LIB.blosc_getitem(frame, start, nitems, out)
    if n != nitems * itemsize:
        raise BloscError(f"blosc could not decode items {start}..{start + nitems} of a chunk (code {n})")


def block_span(table: memoryview, first: int, last: int, cbytes: int) -> tuple[int, int] | None:
    """Byte range of a frame holding blocks `first`..`last`, given its block offset table.

    None when those blocks are not stored in order (multithreaded c-blosc may do that):
    then the caller decodes the whole frame. Raises :class:`BloscError` for offsets
    outside the frame.
    """
    n = len(table) >> 2
    unpack = OFFSET.unpack_from
    span = [unpack(table, 4 * k)[0] for k in range(first, min(last + 2, n))]
    if last + 1 >= n:
        span.append(cbytes)
    lo, hi = span[0], span[-1]
    if not _MAX_OVERHEAD + 4 * n <= lo < hi <= cbytes:
        raise BloscError(f"blosc block offsets {lo}..{hi} lie outside the frame ({cbytes} bytes)")
    if len(span) > 2 and any(a >= b for a, b in zip(span, span[1:])):
        return None
    return lo, hi
