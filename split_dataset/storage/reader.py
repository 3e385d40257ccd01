"""The chunk reader: compressed chunks in, decoded pixels out, every frame validated first.

:class:`ChunkReader` reads one chunked array whose chunks are blosc frames (HDF5 filter
32001 alone), from a :class:`~split_dataset.storage.source.ByteSource` and a chunk index
(``{chunk offset: (address, size, filter mask)}``). It never asks HDF5 for anything, so
the bytes may come from a local file, an object store or an HTTP server alike. Every
frame's header and block offsets are validated (:class:`~split_dataset.storage.blosc.FrameCheck`)
before c-blosc sees them; chunks absent from the index read as the fill value.

Strategies, chosen per read from what it touches:

- one chunk, or many chunks whole: decode each whole, straight into the output, on
  all cores (:meth:`ChunkReader._read_chunks`, :meth:`ChunkReader._whole`);
- a small part of many chunks (a trace through time): decode only the blosc blocks
  holding it, one chunk after another (:meth:`ChunkReader._decode_rows`,
  :meth:`ChunkReader._items_into`);
- stepped slices and index arrays: decode each touched chunk once and take what is
  needed in memory (:meth:`ChunkReader._gather`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import numpy as np
import xxhash

from ..errors import BloscError, ChecksumMismatchError
from ..selection import as_slice as _as_slice
from . import blosc as _blosc
from .chunkindex import Index, check_index
from .parts import PartialDecoding
from .source import ByteSource
from .threads import bytes_of, part_buffers, run_shared, scratch

__all__ = ["ChunkReader", "AxisPart"]

_xxh3 = xxhash.xxh3_64_intdigest  # what chunk_index.bin records (indexfile.chunk_hash)
#: Most chunk bytes a remote read fetches before decoding them (bounds the memory a read holds).
FETCH_BATCH = 64 << 20


class _Whole(NamedTuple):
    """A job part naming only a chunk offset (whole-chunk checks)."""

    chunk: int

class AxisPart(NamedTuple):
    """What a read takes from one chunk along one axis."""

    chunk: int  #: the chunk's first index on this axis
    inner: Any  #: the selection inside the chunk (a slice, or sorted indices)
    out: slice  #: where it goes in the output
    whole: bool = False  #: the whole chunk along this axis
    lo: int = 0  #: offset in items (C order in the chunk) of its first element
    hi: int = 0  #: ... and of its last


def _outer(sels: tuple[Any, ...]) -> tuple[Any, ...]:
    """Index selecting the outer product of per-axis slices/index arrays (numpy takes several arrays pointwise)."""
    if sum(type(s) is not slice for s in sels) <= 1:
        return sels
    return np.ix_(*(np.arange(s.start, s.stop, s.step) if type(s) is slice else s for s in sels))


class ChunkReader(PartialDecoding):
    """Reads a chunked array whose chunks are blosc frames (see the module docstring).

    Parameters
    ----------
    source
        The block file's bytes.
    load_index
        Returns the chunk index, called once, on the first read.
    chunks, dtype
        The chunk shape and the array's dtype.
    check
        What every frame must satisfy.
    fill
        What an unwritten chunk reads as.
    trailer
        Bytes stored after each frame (4 for HDF5's fletcher32), not part of it.

    Examples
    --------
    >>> reader = handle.reader  # doctest: +SKIP
    >>> reader.read((slice(0, 2, 1), slice(0, 64, 1)), out_array, (slice(None), slice(None)))  # doctest: +SKIP
    """

    __slots__ = (
        "_bstrides",
        "_check",
        "_fetches",
        "_fill",
        "_frames",
        "_hashed",
        "_index",
        "_itemwise",
        "_loader",
        "_nblocks",
        "_nbytes",
        "_seen",
        "_skipped",
        "_strides",
        "_trailer",
        "chunks",
        "dtype",
        "source",
    )

    def __init__(self, source: ByteSource, load_index: Callable[[], Index], chunks: tuple[int, ...],
                 dtype: np.dtype, check: _blosc.FrameCheck, fill: Any = 0, trailer: int = 0,
                 skipped_bit: int = 1) -> None:
        self.source = source
        self.chunks = chunks
        self.dtype = dtype
        # a source whose reads are round trips (a remote file): fetch each read's chunks at once,
        # whole (no partial decoding, which would cost a round trip per part)
        self._fetches = hasattr(source, "prefetch")
        self._loader = load_index
        self._check: _blosc.FrameCheck | None = check
        self._fill = fill
        self._trailer = trailer
        self._skipped = skipped_bit  # the filter-mask bit that says blosc was skipped for a chunk
        # blosc_getitem counts in the frame's type size, which is 1 for items over 255 bytes
        self._itemwise = check.typesize == dtype.itemsize
        self._index: Index | None = None
        # the index's lookup of an entry with its recorded checksum (chunk_index.bin), else None
        self._hashed: Callable[[tuple[int, ...]], tuple[int, int, int, int] | None] | None = None
        self._strides = tuple(math.prod(chunks[k + 1:]) for k in range(len(chunks)))  # C strides, in items
        self._bstrides = tuple(st * dtype.itemsize for st in self._strides)  # the same in bytes
        self._nbytes = self._strides[0] * chunks[0] * dtype.itemsize  # bytes of a chunk
        self._nblocks = 0  # blosc blocks per chunk seen last (how much of a frame's offset table to read)
        # validated frames: address -> (header and offset table, flags, block size, sorted block starts,
        # the (first, last) block ranges whose streams were checked)
        self._frames: dict[int, tuple[bytes, int, int, tuple[int, ...], set[tuple[int, int]]]] = {}
        # header and offset table of frames validated whole, by address: a frame read again with the
        # same bytes there is not validated again (any difference is, whatever changed the file)
        self._seen: dict[int, bytes] = {}

    def load_index(self) -> Index:
        """The chunk index, loaded and validated once (:func:`~split_dataset.storage.chunkindex.check_index`)."""
        index = self._loader()
        if not getattr(index, "validated", False):  # an index file's entries were validated when it was read
            check_index(index, self.source.size(), self._nbytes, self._trailer, self._skipped)
        self._hashed = getattr(index, "hashed", None)
        self._index = index
        return index

    def read(self, local: tuple[Any, ...], buf: np.ndarray, out: tuple[slice, ...]) -> None:
        """Read ``array[local]`` into ``buf[out]``; `local` holds per axis a slice (step > 0) or
        sorted unique indices, taken as an outer product."""
        if all(type(s) is slice and s.step == 1 for s in local):
            self._read_chunks(local, buf, out)
        else:
            self._gather(local, buf, out)

    def check_all(self, offsets: Iterator[tuple[int, ...]]) -> None:
        """Decode every chunk at `offsets`, for its errors only."""
        if self._fetches:
            self._run(self._check_jobs, [tuple(_Whole(o) for o in offset) for offset in offsets], np.empty(0))
            return
        for offset in offsets:
            self._whole(offset)

    def _check_jobs(self, jobs: Iterator[Any], buf: np.ndarray) -> None:
        for job in jobs:
            self._whole(tuple(j.chunk for j in job))

    def stored(self) -> list[tuple[int, ...]]:
        """Offsets of the chunks the index holds."""
        return list(self._index if self._index is not None else self.load_index())

    def get(self, local: tuple[slice, ...]) -> np.ndarray:
        """``dset[local]`` for step-1 slices of a :attr:`direct` array, as a new array (or a view of one)."""
        chunks = self.chunks
        assert chunks is not None
        offset = []
        for s, c in zip(local, chunks):
            k = s.start // c
            if (s.stop - 1) // c != k:  # several chunks: decode them in parallel into one buffer
                buf = np.empty(tuple(x.stop - x.start for x in local), self.dtype)
                self._read_chunks(local, buf, tuple(slice(0, x.stop - x.start) for x in local))
                return buf
            offset.append(k * c)
        index = self._index if self._index is not None else self.load_index()
        inside = tuple(slice(s.start - o, s.stop - o) for s, o in zip(local, offset))
        whole = all(s.stop - s.start == c for s, c in zip(inside, chunks))
        entry = index.get(tuple(offset))
        if not whole and entry is not None and not self._fetches:
            part = np.empty(tuple(s.stop - s.start for s in inside), self.dtype)
            lo = sum(s.start * st for s, st in zip(inside, self._strides))
            hi = sum((s.stop - 1) * st for s, st in zip(inside, self._strides)) + 1
            if self._decode_part(entry, lo, hi, part):
                return part
        if whole:
            return self._whole(tuple(offset), np.empty(chunks, self.dtype))
        return np.array(self._whole(tuple(offset))[inside])  # decoded into reused memory; the part copied out

    def _whole(self, offset: tuple[int, ...], out: np.ndarray | None = None) -> np.ndarray:
        """The decoded chunk at `offset`: in `out` (C-contiguous, the chunk's shape) if given,
        else in a per-thread buffer. Unwritten chunks hold the fill value."""
        chunk = scratch(self.chunks, self.dtype) if out is None else out
        index = self._index if self._index is not None else self.load_index()
        expected = None
        if self._hashed is not None:  # from chunk_index.bin: the entry and its checksum in one lookup
            found = self._hashed(offset)
            if found is None:
                chunk[...] = self._fill
                return chunk
            addr, size, mask, expected = found
        else:
            entry = index.get(offset)
            if entry is None:
                chunk[...] = self._fill
                return chunk
            addr, size, mask = entry
        nbytes, src = self._nbytes, self.source
        if mask & 1:  # stored without the filter (HDF5 does that when a filter fails)
            if size != nbytes + self._trailer:
                raise BloscError(f"chunk at byte {addr} is stored unfiltered in {size} bytes; it holds {nbytes}")
            src.read_exactly(bytes_of(chunk), addr)
            if expected is not None and _xxh3(bytes_of(chunk)[:size]) != expected:
                raise self._mismatch(offset, addr, size)
            return chunk
        _, view, _, _, ptr, _ = part_buffers(nbytes, self.dtype)
        if size > nbytes + 16 + self._trailer:
            raise BloscError(f"chunk at byte {addr} has {size} bytes; blosc stores {nbytes} in at most {nbytes + 16}")
        src.read_exactly(view[:size], addr)
        if expected is not None and _xxh3(view[:size]) != expected:
            raise self._mismatch(offset, addr, size)
        size -= self._trailer
        seen = self._seen.get(addr)
        if seen is None or view[:len(seen)] != seen:  # validated before? the same bytes, compared
            check = self._check
            assert check is not None
            nblocks = check.header(view, size)[2]
            if nblocks:
                check.offsets(view, nblocks, size)
            if len(self._seen) > 4096:
                self._seen.clear()
            self._seen[addr] = bytes(view[:16 + 4 * nblocks])
        _blosc.decompress_ptr(ptr, chunk, nbytes)
        return chunk

    @staticmethod
    def _mismatch(offset: tuple[int, ...], addr: int, size: int) -> ChecksumMismatchError:
        return ChecksumMismatchError(
            f"the chunk at {offset} (bytes {addr}..{addr + size}) does not match the checksum chunk_index.bin "
            "recorded for it: its stored bytes changed since the block was indexed"
        )

    def validate(self, local: tuple[Any, ...] | None = None) -> None:
        """Validate, without decoding, the blosc frame (header, block offsets) of every stored
        chunk that `local` touches, or of every stored chunk for None: what the ``"checked"``
        strategy does before HDF5 decodes. Raises :class:`BloscError`."""
        index = self._index if self._index is not None else self.load_index()
        chunks, check, src = self.chunks, self._check, self.source
        offsets: Iterable[tuple[int, ...]] = list(index)
        if local is not None:
            ranges = []
            for s, c in zip(local, chunks):
                lo, hi = (s.start, s.stop - 1) if type(s) is slice else (int(s[0]), int(s[-1]))
                ranges.append(range(lo // c * c, hi // c * c + 1, c))
            offsets = itertools.product(*ranges)
        nbytes = self._nbytes
        view = part_buffers(nbytes, self.dtype)[1]
        assert check is not None
        for offset in offsets:
            entry = index.get(offset)
            if entry is None or entry[2] & self._skipped:  # unwritten, or blosc skipped: HDF5 decodes the rest
                continue
            addr, size, _ = entry
            if size > nbytes + 16 + self._trailer:
                raise BloscError(f"chunk at byte {addr} has {size} bytes; blosc stores at most {nbytes + 16}")
            src.read_exactly(view[:size], addr)
            nblocks = check.header(view, size - self._trailer)[2]
            if nblocks:
                check.offsets(view, nblocks, size - self._trailer)

    def _gather(self, local: tuple[Any, ...], buf: np.ndarray, out: tuple[slice, ...]) -> None:
        """Stepped slices and index arrays: decode each touched chunk once, take what is needed."""
        chunks = self.chunks
        assert chunks is not None
        if self._index is None:
            self.load_index()
        per_axis = []
        for s, o, c in zip(local, out, chunks):
            idx = np.arange(s.start, s.stop, s.step) if type(s) is slice else np.asarray(s)
            k = idx // c
            bounds = [0, *(np.flatnonzero(np.diff(k)) + 1).tolist(), len(idx)]
            per_axis.append([AxisPart(int(k[i0]) * c, _as_slice(idx[i0:i1] - int(k[i0]) * c),
                                      slice(o.start + i0, o.start + i1)) for i0, i1 in itertools.pairwise(bounds)])
        self._run(self._gather_all, list(itertools.product(*per_axis)), buf)

    def _gather_all(self, jobs: Iterator[Any], buf: np.ndarray) -> None:
        chunks = self.chunks
        assert chunks is not None
        for job in jobs:
            offset = tuple(j.chunk for j in job)
            inner = tuple(j.inner for j in job)
            target = buf[tuple(j.out for j in job)]
            if target.flags.c_contiguous and all(type(s) is slice and s.step == 1 and s.stop - s.start == c
                                                 for s, c in zip(inner, chunks)):
                self._whole(offset, target)
            else:
                target[...] = self._whole(offset)[_outer(inner)]

    # ------------------------------------------------------------------ step-1 regions

    def _read_chunks(self, local: tuple[slice, ...], buf: np.ndarray, out: tuple[slice, ...]) -> None:
        if self._index is None:
            self.load_index()
        chunks = self.chunks
        assert chunks is not None
        per_axis = []
        span = 1  # bound on the items a partial job spans in C order
        for s, o, c, st in zip(local, out, chunks, self._strides):
            lo, hi = s.start, s.stop
            axis = []
            for k in range(lo // c, (hi - 1) // c + 1):
                a, b = max(lo, k * c) - k * c, min(hi, (k + 1) * c) - k * c
                where = slice(o.start + a + k * c - lo, o.start + b + k * c - lo)
                axis.append(AxisPart(k * c, slice(a, b), where, b - a == c, a * st, (b - 1) * st))
            span += max(j.hi - j.lo for j in axis)
            per_axis.append(axis)
        first = tuple(axis[0] for axis in per_axis)
        if all(len(axis) == 1 for axis in per_axis):
            self._decode(first, buf)
            return
        if self._fetches:  # a remote source: whole chunks, their bytes fetched in a few coalesced requests
            self._run(self._decode_all, list(itertools.product(*per_axis)), buf)
            return
        if self._parts_pay(span * self.dtype.itemsize, first):
            # small parts of many chunks (a trace through time): a few µs of decoding each, less
            # than handing work between threads costs (measured: two threads took twice as long)
            if all(len(axis) == 1 or c == 1 for axis, c in zip(per_axis, chunks)):
                self._decode_rows(per_axis, buf)
            else:
                for job in itertools.product(*per_axis):
                    self._decode(job, buf)
            return
        run_shared(self._decode_all, list(itertools.product(*per_axis)), buf)

    def _run(self, work: Callable[..., None], jobs: list[Any], buf: np.ndarray) -> None:
        """``run_shared(work, jobs, buf)``; from a source that fetches (a remote file), the jobs'
        chunk bytes are fetched first, a batch of at most :data:`FETCH_BATCH` bytes at a time,
        in as few requests as the source can make of them."""
        if not self._fetches:
            run_shared(work, jobs, buf)
            return
        index = self._index if self._index is not None else self.load_index()
        batch: list[Any] = []
        ranges: list[tuple[int, int]] = []
        total = 0
        for job in [*jobs, None]:
            entry = index.get(tuple(j.chunk for j in job)) if job is not None else None
            if job is None or (entry is not None and total + entry[1] > FETCH_BATCH and batch):
                token = self.source.prefetch(ranges)  # type: ignore[attr-defined]
                try:
                    run_shared(work, batch, buf)
                finally:
                    self.source.release(token)  # type: ignore[attr-defined]
                batch, ranges, total = [], [], 0
            if job is None:
                break
            batch.append(job)
            if entry is not None:
                ranges.append((entry[0], entry[1]))
                total += entry[1]

    def _parts_pay(self, span: int, job: Any) -> bool:
        """Whether decoding `span` bytes of each chunk from its own blosc blocks decodes less
        than half of what whole chunks would (judged from the first chunk's header)."""
        nbytes = self._nbytes
        if 2 * span > nbytes or not self._itemwise:
            return False
        if not self._nblocks:
            entry = self._index.get(tuple(j.chunk for j in job)) if self._index else None
            if entry is None or entry[2] & 1 or entry[1] < 16:
                return False
            head = bytearray(16)
            if self.source.pread(memoryview(head), entry[0]) < 16:
                return False
            _, _, flags, _, _, blocksize, _ = _blosc.HEADER.unpack_from(head)
            if flags & _blosc.MEMCPYED:  # stored as is: any part is one read
                return True
            if not 0 < blocksize <= nbytes:
                return False  # the whole-chunk path says what is wrong
            self._nblocks = -(-nbytes // blocksize)
        blocksize = nbytes / self._nblocks
        return (span // blocksize + 2) * blocksize * 2 <= nbytes

    def _decode_all(self, jobs: Iterator[Any], buf: np.ndarray) -> None:
        for job in jobs:
            self._decode(job, buf)

    def _decode(self, job: tuple[AxisPart, ...], buf: np.ndarray) -> None:
        """Decode one chunk's part of a read; `job` holds per axis (chunk offset, slice in the chunk,
        slice in `buf`, whole-axis flag, first and last item offsets in the chunk)."""
        offset = tuple(j.chunk for j in job)
        target = buf[tuple(j.out for j in job)]
        if not all(j.whole for j in job):
            entry = self._index.get(offset) if self._index is not None and not self._fetches else None
            if entry is not None and self._decode_part(entry, sum(j.lo for j in job), sum(j.hi for j in job) + 1,
                                                       target):
                return
        elif target.flags.c_contiguous:
            self._whole(offset, target)  # the whole chunk, straight into the output
            return
        target[...] = self._whole(offset)[tuple(j.inner for j in job)]
