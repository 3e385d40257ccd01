"""Decoding parts of chunks: only the blosc blocks that hold a small window (a trace through time).

A blosc frame is a table of independently compressed blocks; for a window of a chunk
these methods fetch the frame's header and offset table, validate them (once per chunk:
block files never change), fetch only the blocks holding the window, check that their
compressed streams end inside them, and decode the items with ``blosc_getitem``. They are
a base class of :class:`~split_dataset.storage.reader.ChunkReader`, whose state they use.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from ..errors import BloscError
from . import blosc as _blosc
from .chunkindex import Index
from .source import ByteSource
from .threads import bytes_of, part_buffers

__all__ = ["PartialDecoding"]

_LIB_GETITEM = _blosc.getitem_function()


class PartialDecoding:
    """The partial-chunk strategies of :class:`~split_dataset.storage.reader.ChunkReader`."""

    __slots__ = ()
    source: ByteSource
    dtype: np.dtype
    _check: _blosc.FrameCheck | None
    _index: Index | None
    _nbytes: int
    _nblocks: int
    _bstrides: tuple[int, ...]
    _itemwise: bool
    _frames: dict[int, tuple[bytes, int, int, tuple[int, ...], set[tuple[int, int]]]]

    def _whole(self, offset: tuple[int, ...], out: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError

    def _decode_rows(self, per_axis: list[list[Any]], buf: np.ndarray) -> None:
        """Decode the same part of many chunks that are one item deep on the axes they
        differ in (a trace through time), each into a row of one array, then copy all of
        it into the output at once."""
        first = [axis[0] for axis in per_axis]
        lo = sum(e.lo for e in first)
        hi = sum(e.hi for e in first) + 1
        n = hi - lo
        counts = [len(axis) for axis in per_axis]
        rows = np.empty((math.prod(counts), n), self.dtype)
        itemsize = self.dtype.itemsize
        view, ptr, row = bytes_of(rows), rows.ctypes.data, n * itemsize
        index = self._index
        assert index is not None
        offsets = list(itertools.product(*([e.chunk for e in axis] for axis in per_axis)))
        entries = [index.get(offset) for offset in offsets]
        for i in self._rows_batch(entries, lo, hi, ptr, row):
            entry = entries[i]
            if entry is None or not self._items_into(entry, lo, hi, view[i * row:(i + 1) * row], ptr + i * row):
                rows[i] = self._whole(offsets[i]).reshape(-1)[lo:hi]
        shape, strides, step = [], [], row
        for k in reversed(range(len(per_axis))):
            if counts[k] > 1:
                shape.append(counts[k])
                strides.append(step)
                step *= counts[k]
            else:
                shape.append(first[k].inner.stop - first[k].inner.start)
                strides.append(self._bstrides[k])
        region = buf[tuple(slice(axis[0].out.start, axis[-1].out.stop) for axis in per_axis)]
        region[...] = np.ndarray(tuple(reversed(shape)), self.dtype, rows, 0, tuple(reversed(strides)))

    def _rows_batch(self, entries: list[tuple[int, int, int] | None], lo: int, hi: int, dest: int, row: int
                    ) -> list[int]:
        """Decode items ``lo..hi`` of many chunks, chunk i to address ``dest + i * row``, as
        :meth:`_items_into` does one, with less said per chunk; returns the chunks left for
        :meth:`_items_into` (unwritten, stored unfiltered or as is, a different block size,
        a table not as read: it decodes them or says what is wrong). Every header and
        offset table is validated before c-blosc sees it, once: block files never change, so
        a frame's validated header and table (and which blocks' streams were checked) are
        kept per chunk address, and a repeated read fetches only the blocks it decodes."""
        nblocks, nbytes, itemsize = self._nblocks, self._nbytes, self.dtype.itemsize
        check, pread = self._check, self.source.pread
        if nblocks < 2 or check is None:
            return list(range(len(entries)))
        table = 16 + 4 * nblocks
        _, view, _, _, base, _ = part_buffers(nbytes, self.dtype)
        getitem, header, offsets, span, streams = (_LIB_GETITEM, check.header, check.offsets, _blosc.span,
                                                   _blosc.check_streams)
        typesize = check.typesize
        n = hi - lo
        left: list[int] = []
        blocksize = first = last = 0
        known = self._frames
        if len(known) > 4096:
            known.clear()
        for i, entry in enumerate(entries):
            if entry is None or entry[2] & 1 or not table <= entry[1] <= nbytes + 16:
                left.append(i)
                continue
            addr, size, _ = entry
            frame = known.get(addr)
            if frame is None:
                if pread(view[:table], addr) != table:
                    left.append(i)
                    continue
                flags, bsize, nb = header(view, size)  # raises on anything c-blosc must not see
                if nb != nblocks:
                    left.append(i)  # stored as is, or another block size: the careful path
                    continue
                starts = offsets(view, nblocks, size)
                frame = known[addr] = (bytes(view[:table]), flags, bsize, starts, set())
            else:
                view[:table] = frame[0]
                flags, bsize, starts = frame[1], frame[2], frame[3]
            if bsize != blocksize:  # the blocks holding the items: the same in every chunk of this size
                blocksize, first, last = bsize, lo * itemsize // bsize, (hi * itemsize - 1) // bsize
            a, b = span(starts, view, first, last, size)
            if pread(view[a:b], addr + a) != b - a:
                raise BloscError(f"the chunk at byte {addr} is cut short (a truncated file?)")
            if (first, last) not in frame[4]:
                streams(view, starts, view, first, last, flags, typesize, bsize, nbytes, size)
                frame[4].add((first, last))
            if getitem(base, lo, n, dest + i * row) != n * itemsize:
                raise BloscError(f"blosc could not decode items {lo}..{hi} of the chunk at byte {addr}")
        return left

    def _decode_part(self, entry: tuple[int, int, int], lo: int, hi: int, target: np.ndarray) -> bool:
        """Decode items ``lo..hi`` (C order) of the chunk at index `entry` into `target`, which
        receives them at the chunk's strides from `lo`; False, having done nothing, when
        :meth:`_items_into` cannot or it would not pay (half the chunk or more)."""
        if 2 * (hi - lo) * self.dtype.itemsize > self._nbytes or not self._itemwise:
            return False
        items, view, _, ptr = part_buffers(self._nbytes, self.dtype)[2:]
        if not self._items_into(entry, lo, hi, view, ptr):
            return False
        target[...] = np.ndarray(target.shape, self.dtype, items, 0, self._bstrides)
        return True

    def _items_into(self, entry: tuple[int, int, int], lo: int, hi: int, dest: memoryview, dest_ptr: int) -> bool:
        """Decode items ``lo..hi`` (C order) of the chunk at index `entry` (address, size,
        filter mask) into `dest` (bytes at address `dest_ptr`), from only the blosc blocks
        that hold them.

        Reads the frame's header and block offsets, validates them, then reads the
        compressed bytes of those blocks and decodes the items with ``blosc_getitem``.
        False, having done nothing, for a chunk of one blosc block.
        """
        src, check = self.source, self._check
        assert check is not None
        addr, size, mask = entry
        nbytes, itemsize = self._nbytes, self.dtype.itemsize
        n = hi - lo
        if mask & 1:  # stored without the filter: the items are where they are
            if size != nbytes:
                raise BloscError(f"chunk at byte {addr} is stored unfiltered in {size} bytes; it holds {nbytes}")
            src.read_exactly(dest[: n * itemsize], addr + lo * itemsize)
            return True
        _, view, _, _, frame_ptr, _ = part_buffers(nbytes, self.dtype)
        if size > nbytes + 16:
            raise BloscError(f"chunk at byte {addr} has {size} bytes; blosc stores {nbytes} in at most {nbytes + 16}")
        have = min(size, 16 + 4 * self._nblocks)
        src.read_exactly(view[:have], addr)
        flags, blocksize, nblocks = check.header(view, size)
        if not nblocks:  # stored as is, after the header
            src.read_exactly(dest[: n * itemsize], addr + 16 + lo * itemsize)
            return True
        self._nblocks = nblocks  # type: ignore[misc]  # a slot of ChunkReader
        if nblocks == 1:
            return False
        table = 16 + 4 * nblocks
        if have < table:
            src.read_exactly(view[have:table], addr + have)
        starts = check.offsets(view, nblocks, size)
        first, last = lo * itemsize // blocksize, (hi * itemsize - 1) // blocksize
        a, b = _blosc.span(starts, view, first, last, size)
        src.read_exactly(view[a:b], addr + a)
        _blosc.check_streams(view, starts, view, first, last, flags, check.typesize, blocksize, nbytes, size)
        _blosc.getitem_ptr(frame_ptr, lo, n, dest_ptr, itemsize)
        return True
