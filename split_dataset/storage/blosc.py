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

import bisect
import ctypes
import functools
import itertools
import struct
from typing import Any

import numpy as np

from ..errors import BloscError

__all__ = ["available", "compress", "decompress_ptr", "getitem_ptr", "FrameCheck", "span", "BloscError"]

_MAX_OVERHEAD = 16
MEMCPYED = 0x02  # header flag: the frame holds the items uncompressed
_FORWARD_COMPAT_SPLIT, _NEVER_SPLIT = 4, 2  # blosc_set_splitmode values (c-blosc 1.x)
_split_mode: int | None = None  # last value this module set
#: a frame's header: version, versionlz, flags, typesize, nbytes, blocksize, cbytes
HEADER = struct.Struct("<BBBBIII")
OFFSET = struct.Struct("<I")


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


#: flags bits (c-blosc 1.x README_HEADER): 0x01 byte shuffle, 0x02 memcpyed, 0x04 bit shuffle,
#: 0x08 reserved (zero), 0x10 blocks not split, 0xe0 the compressor's format code
_RESERVED = 0x08
SHUFFLE_FLAGS = {0: 0x00, 1: 0x01, 2: 0x04}  # HDF5 filter's shuffle code -> header flags
#: HDF5 filter's compressor code (blosclz, lz4, lz4hc, snappy, zlib, zstd) -> the header's format code
COMPRESSOR_FORMATS = {0: 0, 1: 1, 2: 1, 3: 2, 4: 3, 5: 4}


class FrameCheck:
    """What a chunk's blosc frame must look like, from the array and its HDF5 filter.

    :meth:`header` and :meth:`offsets` validate every field that c-blosc would trust
    (sizes, block size, block offsets, the type size that ``blosc_getitem`` writes
    with) before any C call sees the frame; a frame that fails raises :class:`BloscError`.
    `shuffle` and `compressor` are the filter's codes (None where unknown).
    """

    __slots__ = ("compformat", "nbytes", "shuffle", "typesize")

    def __init__(self, nbytes: int, itemsize: int, shuffle: int | None = None, compressor: int | None = None):
        self.nbytes = nbytes
        self.typesize = itemsize if itemsize <= 255 else 1  # what blosc stores for larger items
        self.shuffle = SHUFFLE_FLAGS.get(shuffle) if shuffle is not None else None
        self.compformat = COMPRESSOR_FORMATS.get(compressor) if compressor is not None else None

    def header(self, head: bytes | bytearray | memoryview, size: int) -> tuple[int, int, int]:
        """Validate the 16-byte header of a frame stored in `size` bytes: (flags, blocksize, nblocks).

        `nblocks` is 0 for a frame stored as is (MEMCPYED). Raises :class:`BloscError`.
        """
        if size < _MAX_OVERHEAD:
            raise BloscError(f"a blosc frame has at least 16 bytes, this chunk has {size}")
        version, _, flags, typesize, nbytes, blocksize, cbytes = HEADER.unpack_from(head)
        nb = self.nbytes
        what = None
        if version not in (1, 2):
            what = f"format version {version} (c-blosc 1.x writes 1 or 2)"
        elif flags & _RESERVED:
            what = f"flags {flags:#04x} with the reserved bit set"
        elif nbytes != nb:
            what = f"{nbytes} bytes decoded; the chunk holds {nb}"
        elif cbytes != size:
            what = f"{cbytes} bytes stored; the chunk has {size}"
        elif typesize != self.typesize:
            what = f"items of {typesize} bytes; the array's are {self.typesize}"
        elif self.shuffle is not None and (flags & 0x05) != self.shuffle and not (typesize == 1 and not flags & 0x04
                                                                                  and not self.shuffle & 0x04):
            what = f"shuffle flags {flags & 0x05:#x}; the HDF5 filter says {self.shuffle:#x}"
        elif self.compformat is not None and flags >> 5 != self.compformat:  # c-blosc sets it on every frame
            what = f"compressor format {flags >> 5}; the HDF5 filter says {self.compformat}"
        elif flags & MEMCPYED:
            if cbytes != nb + _MAX_OVERHEAD:
                what = f"{cbytes} bytes for {nb} bytes stored as is (expected {nb + _MAX_OVERHEAD})"
        elif cbytes > nb + _MAX_OVERHEAD:
            what = f"{cbytes} compressed bytes for {nb} (blosc never stores more than {nb + _MAX_OVERHEAD})"
        elif not 0 < blocksize <= nb or (blocksize > typesize and blocksize % typesize):
            what = f"blocks of {blocksize} bytes (expected 1..{nb}, a multiple of {typesize})"
        elif 16 + 4 * -(-nb // blocksize) > cbytes:
            what = f"{-(-nb // blocksize)} blocks of {blocksize} bytes, whose offsets do not fit in {cbytes} bytes"
        if what is not None:
            raise BloscError(f"blosc frame header says {what}")
        if flags & MEMCPYED:
            return flags, blocksize, 0
        return flags, blocksize, -(-nb // blocksize)

    @staticmethod
    def offsets(table: bytes | bytearray | memoryview, nblocks: int, cbytes: int) -> tuple[int, ...]:
        """Validate a frame's block offsets (the `nblocks` u32 after its header, `table` holding
        the frame from byte 0): each block starts inside the frame, after the table, at its
        own place, the first right after the table (blocks may be stored in any order).
        Returns the offsets sorted."""
        starts = sorted(_offsets(nblocks).unpack_from(table, 16))
        end = 16 + 4 * nblocks
        if starts[0] != end or starts[-1] >= cbytes or any(a >= b for a, b in itertools.pairwise(starts)):
            raise BloscError(
                f"blosc block offsets {starts[0]}..{starts[-1]} are not {nblocks} distinct starts from byte {end} "
                f"inside the frame ({cbytes} bytes)"
            )
        return tuple(starts)


def span(starts: tuple[int, ...], table: bytes | bytearray | memoryview, first: int, last: int,
         cbytes: int) -> tuple[int, int]:
    """Byte range of a frame holding its blocks `first`..`last`, given the validated sorted
    `starts` and the offset table (blocks may be stored out of order)."""
    own = _offsets(last - first + 1).unpack_from(table, 16 + 4 * first)
    lo, top = min(own), max(own)
    k = bisect.bisect_right(starts, top)
    return lo, starts[k] if k < len(starts) else cbytes


_STREAM = struct.Struct("<i")


def check_streams(frame: bytes | bytearray | memoryview, starts: tuple[int, ...], table: bytes | bytearray | memoryview,
                  first: int, last: int, flags: int, typesize: int, blocksize: int, nbytes: int, cbytes: int) -> None:
    """Validate that the compressed streams of blocks `first`..`last` end inside their blocks.

    A block holds one stream per "split" (c-blosc 1.x decodes `typesize` splits unless the
    frame's flag 0x10 says blocks are unsplit, the type is over 16 bytes, a split would be
    under 128 bytes, or the block is the short last one), each an int32 length and that
    many bytes. c-blosc reads each stream as long as its length says; a length past the
    block's end would make a partial decode read bytes the caller did not fetch for this
    frame. Raises :class:`BloscError`.
    """
    own = _offsets(last - first + 1).unpack_from(table, 16 + 4 * first)
    nblocks = len(starts)
    for k, start in zip(range(first, last + 1), own):
        j = bisect.bisect_right(starts, start)
        end = starts[j] if j < nblocks else cbytes
        leftover = k == nblocks - 1 and nbytes % blocksize
        size = nbytes % blocksize if leftover else blocksize
        splits = typesize if not (flags & 0x10 or leftover) and typesize <= 16 and size // typesize >= 128 else 1
        pos = start
        for _ in range(splits):
            if pos + 4 > end:
                raise BloscError(f"blosc block {k} at byte {start} runs past its end ({end})")
            n = _STREAM.unpack_from(frame, pos)[0]
            pos += 4 + n
            if n < 0 or pos > end:
                raise BloscError(f"blosc block {k} at byte {start} runs past its end ({end})")


@functools.lru_cache(maxsize=128)
def _offsets(n: int) -> struct.Struct:
    """Unpacks `n` consecutive blosc block offsets (little-endian uint32)."""
    return struct.Struct(f"<{n}I")


def decompress_ptr(frame: int, out: np.ndarray, nbytes: int) -> None:
    """Decompress the blosc frame at address `frame` into the C-contiguous array `out`.

    The caller validated the frame (:class:`FrameCheck`) and that `out` holds `nbytes`;
    c-blosc 1.21 then reads only inside the frame's validated length.
    """
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
    that hold those items; the caller validated those (:class:`FrameCheck`), the type
    size above all: blosc writes `nitems` times the frame's type size.
    """
    n = _LIB.blosc_getitem(frame, start, nitems, out)
    if n != nitems * itemsize:
        raise BloscError(f"blosc could not decode items {start}..{start + nitems} of a chunk (code {n})")
