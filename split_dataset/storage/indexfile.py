"""``chunk_index.bin``: where every chunk of every block file lies, with a checksum (docs/format.md §8a).

One small file beside the blocks lets a first read skip HDF5 entirely: ``os.open`` of the
block file, one ``fstat`` to prove it is the file that was indexed (size, modification
time, inode), then one ``pread`` per chunk. Each chunk's stored bytes carry an XXH3-64
checksum, verified on every whole-chunk read: blosc frames have none of their own.

Layout (all integers little-endian)::

    magic  b"\\x89SDX\\r\\n\\x1a\\n"       8 bytes
    u32 version (1), u32 header length H
    header: H bytes of UTF-8 JSON (an object), padded with spaces to a multiple of 8
    blocks: N records of BLOCK_DTYPE(ndim), sorted by block number
    chunks: M records of ENTRY_DTYPE, grouped by block, sorted by chunk number
    u64 XXH3-64 of every byte before it

A file that fails any check (:func:`read_index`) raises :class:`ChunkIndexError`; a
reader then ignores it and reads the HDF5 files as if it were absent. A block whose file
no longer matches its record (replaced, changed, copied without its times) is ignored
alone: its reads go through HDF5.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import re
import stat
import struct
import threading
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from ..errors import ChunkIndexError
from .files import write_bytes_atomic

__all__ = ["CHUNK_INDEX_FILENAME", "ChunkIndexError", "BlockRecord", "IndexFile", "BlockEntries", "read_index",
           "write_index", "encode_index", "chunk_hash"]

CHUNK_INDEX_FILENAME = "chunk_index.bin"
MAGIC = b"\x89SDX\r\n\x1a\n"
VERSION = 1
_HEAD = struct.Struct("<8sII")
MAX_HEADER = 1 << 16
#: the largest index file read (about 65 million chunks)
MAX_FILE_BYTES = 1 << 31
#: a chunk's stored size is below c-blosc's limit (see handles.MAX_CHUNK_BYTES)
_MAX_CHUNK = (1 << 31) - 17
ENTRY_DTYPE = np.dtype([("chunk", "<u8"), ("addr", "<u8"), ("size", "<u4"), ("mask", "<u4"), ("hash", "<u8")])
#: shuffle / compressor: the blosc filter's cd_values[5] / [6] (-1: absent)
_BLOCK_FIELDS = [("block", "<u8"), ("size", "<u8"), ("mtime_ns", "<i8"), ("ino", "<u8"), ("first", "<u8"),
                 ("count", "<u8"), ("shuffle", "<i2"), ("compressor", "<i2"), ("reserved", "<u4")]


def block_dtype(ndim: int) -> np.dtype:
    """The record of one block file, for arrays of `ndim` dimensions."""
    return np.dtype([*_BLOCK_FIELDS, ("shape", "<u8", (ndim,)), ("chunks", "<u8", (ndim,))])


def chunk_hash(data: Any) -> int:
    """XXH3-64 (seed 0) of a chunk's stored bytes, as the index records it.

    Examples
    --------
    >>> hex(chunk_hash(b""))
    '0x2d06800538d394c2'
    """
    return int(xxhash.xxh3_64_intdigest(data))


@dataclass
class BlockRecord:
    """What the index holds for one block file: its identity, its array, where its chunks lie.

    ``entries`` is an array of :data:`ENTRY_DTYPE` sorted by chunk number (C order over
    the block's chunk grid).
    """

    block: int
    name: str  #: the array's path in the file
    dtype: np.dtype
    fill: bytes  #: the HDF5 fill value's bytes (what an unwritten chunk reads as)
    size: int
    mtime_ns: int
    ino: int
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    shuffle: int
    compressor: int
    entries: np.ndarray

    def matches(self, st: os.stat_result) -> bool:
        """Whether a file with stat `st` is the one indexed (size, modification time, inode)."""
        return st.st_size == self.size and st.st_mtime_ns == self.mtime_ns and st.st_ino == self.ino


def blosc_codes(cd: Sequence[int]) -> tuple[int, int]:
    """``(shuffle, compressor)`` of the blosc filter's `cd` values: ``cd[5]`` and ``cd[6]``, or the
    filter's defaults (byte shuffle, blosclz) where the file does not store them.

    Examples
    --------
    >>> blosc_codes((2, 2, 2, 131072, 5, 1, 1)), blosc_codes((2, 2, 2, 131072))
    ((1, 1), (1, 0))
    """
    return (int(cd[5]) if len(cd) > 5 else 1, int(cd[6]) if len(cd) > 6 else 0)


def block_record(block: int, st: os.stat_result, name: str, dtype: np.dtype, fillvalue: Any, shape: tuple[int, ...],
                 chunks: tuple[int, ...], cd: Sequence[int], entries: np.ndarray) -> BlockRecord:
    """The record of block file `block`, whose ``os.stat`` is `st`: its array `name` (an HDF5
    path), `dtype`, fill value, `shape`, in `chunks` compressed by blosc with `cd` values."""
    return BlockRecord(block, name.lstrip("/"), dtype, np.asarray(fillvalue, dtype).tobytes(), st.st_size,
                       st.st_mtime_ns, st.st_ino, tuple(shape), tuple(chunks), *blosc_codes(cd), entries)


def encode_index(records: Iterable[BlockRecord], prefix: str) -> bytes:
    """The bytes of an index file holding `records` (those sharing the most common dtype,
    array name and fill value; other blocks are left out, so they read through HDF5).

    Examples
    --------
    >>> read_index_bytes(encode_index([], ""), "x").n_blocks
    0
    """
    records = sorted(records, key=lambda r: r.block)
    groups: dict[tuple[str, str, bytes, int], list[BlockRecord]] = {}
    for r in records:
        groups.setdefault((r.dtype.str, r.name, r.fill, len(r.shape)), []).append(r)
    chosen = max(groups.values(), key=len) if groups else []
    ndim = len(chosen[0].shape) if chosen else 1
    dtype = chosen[0].dtype if chosen else np.dtype("u1")
    header = {
        "format": "split_dataset chunk index",
        "checksum": "xxh3-64",
        "prefix": prefix,
        "data_key": chosen[0].name if chosen else "",
        "dtype": dtype.str,
        "fill": (chosen[0].fill if chosen else b"\0").hex(),
        "ndim": ndim,
        "blocks": len(chosen),
        "entries": int(sum(len(r.entries) for r in chosen)),
    }
    text = json.dumps(header, sort_keys=True).encode()
    text += b" " * (-len(text) % 8)
    table = np.zeros(len(chosen), block_dtype(ndim))
    first = 0
    for row, r in zip(table, chosen):
        row["block"], row["size"], row["mtime_ns"], row["ino"] = r.block, r.size, r.mtime_ns, r.ino
        row["first"], row["count"] = first, len(r.entries)
        row["shuffle"], row["compressor"] = r.shuffle, r.compressor
        row["shape"], row["chunks"] = r.shape, r.chunks
        first += len(r.entries)
    entries = np.concatenate([r.entries for r in chosen]) if chosen else np.zeros(0, ENTRY_DTYPE)
    body = b"".join([_HEAD.pack(MAGIC, VERSION, len(text)), text, table.tobytes(),
                     entries.astype(ENTRY_DTYPE).tobytes()])
    return body + struct.pack("<Q", chunk_hash(body))


def write_index(root: Path, records: Iterable[BlockRecord], prefix: str = "", *, fsync: bool = True) -> Path:
    """Replace ``chunk_index.bin`` in `root` atomically with one holding `records`.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> write_index(pathlib.Path(tempfile.mkdtemp()), [], fsync=False).name
    'chunk_index.bin'
    """
    path = Path(root) / CHUNK_INDEX_FILENAME
    write_bytes_atomic(path, encode_index(records, prefix), fsync=fsync)
    return path


class BlockEntries(Mapping[tuple[int, ...], tuple[int, int, int]]):
    """One block's chunk index from the file, as the chunk reader asks for it: a mapping
    ``{chunk offset: (address, size, filter mask)}``, plus :meth:`hashed` (with the checksum). Validated on load."""

    __slots__ = ("_addr", "_axes", "_chunk", "_full", "_grid", "_hash", "_mask", "_memo", "_size", "chunks",
                 "validated")

    def __init__(self, entries: np.ndarray, shape: tuple[int, ...], chunks: tuple[int, ...]) -> None:
        self.chunks = chunks
        counts = [-(-n // c) for n, c in zip(shape, chunks)]
        self._grid = tuple(math.prod(counts[k + 1:]) for k in range(len(counts)))  # chunk-grid strides
        self._chunk: list[int] = entries["chunk"].tolist()
        self._addr: list[int] = entries["addr"].tolist()
        self._size: list[int] = entries["size"].tolist()
        self._mask: list[int] = entries["mask"].tolist()
        self._hash: list[int] = entries["hash"].tolist()
        self._full = len(self._chunk) == math.prod(counts)  # every chunk stored: entry i is chunk i
        self._axes = tuple(zip(chunks, counts, self._grid))
        self._memo: dict[tuple[int, ...], int] = {}  # offset -> entry position (-1: none)
        self.validated = True

    def _pos(self, offset: tuple[int, ...]) -> int:
        i = self._memo.get(offset)
        if i is not None:
            return i
        i = self._find(offset)
        if len(self._memo) < 1 << 16:
            self._memo[offset] = i
        return i

    def _find(self, offset: tuple[int, ...]) -> int:
        if len(offset) != len(self._axes):
            return -1
        linear = 0
        for o, (c, n, g) in zip(offset, self._axes):
            k, r = divmod(o, c)
            if r or not 0 <= k < n:
                return -1
            linear += k * g
        if self._full:
            return linear
        i = bisect.bisect_left(self._chunk, linear)
        return i if i < len(self._chunk) and self._chunk[i] == linear else -1

    def get(self, offset: tuple[int, ...], default: Any = None) -> Any:
        i = self._pos(offset)
        if i < 0:
            return default
        return (self._addr[i], self._size[i], self._mask[i])

    def __getitem__(self, offset: tuple[int, ...]) -> tuple[int, int, int]:
        i = self._pos(offset)
        if i < 0:
            raise KeyError(offset)
        return (self._addr[i], self._size[i], self._mask[i])

    def hashed(self, offset: tuple[int, ...]) -> tuple[int, int, int, int] | None:
        """``(address, size, filter mask, checksum)`` of the chunk at `offset`, None if not stored."""
        i = self._pos(offset)
        if i < 0:
            return None
        return (self._addr[i], self._size[i], self._mask[i], self._hash[i])

    def _offset(self, linear: int) -> tuple[int, ...]:
        out = []
        for c, g in zip(self.chunks, self._grid):
            k, linear = divmod(linear, g)
            out.append(k * c)
        return tuple(out)

    def __iter__(self) -> Iterator[tuple[int, ...]]:
        return (self._offset(k) for k in self._chunk)

    def __len__(self) -> int:
        return len(self._chunk)

    def __contains__(self, offset: object) -> bool:
        return isinstance(offset, tuple) and self._pos(offset) >= 0

    def items(self) -> Any:
        return [(self._offset(k), (self._addr[i], self._size[i], self._mask[i])) for i, k in enumerate(self._chunk)]


class IndexFile:
    """A validated ``chunk_index.bin`` (see :func:`read_index`)."""

    def __init__(self, header: dict[str, Any], blocks: np.ndarray, entries: np.ndarray, root: Path | None = None
                 ) -> None:
        self.root = root
        self.prefix: str = header["prefix"]
        self.data_key: str = header["data_key"]
        self.dtype = np.dtype(header["dtype"])
        self.fill = bytes.fromhex(header["fill"])
        self.blocks = blocks
        self.entries = entries
        self._rows = {int(b): i for i, b in enumerate(blocks["block"].tolist())}

    @property
    def n_blocks(self) -> int:
        return len(self.blocks)

    def __reduce__(self) -> Any:  # pickled as where it is: read (and validated) again on unpickling
        return (_reload, (self.root, self.prefix))

    def __contains__(self, block: int) -> bool:
        return block in self._rows

    def record(self, block: int) -> BlockRecord | None:
        """Block `block`'s record, or None if the index has none."""
        i = self._rows.get(block)
        if i is None:
            return None
        row = self.blocks[i]
        first, count = int(row["first"]), int(row["count"])
        return BlockRecord(
            int(row["block"]), self.data_key, self.dtype, self.fill, int(row["size"]), int(row["mtime_ns"]),
            int(row["ino"]), tuple(int(x) for x in row["shape"]), tuple(int(x) for x in row["chunks"]),
            int(row["shuffle"]), int(row["compressor"]), self.entries[first:first + count],
        )

    def records(self) -> list[BlockRecord]:
        """Every block's record."""
        return [r for b in self._rows if (r := self.record(b)) is not None]


def _reload(root: Path | None, prefix: str) -> IndexFile | None:
    try:
        return read_index(root, prefix) if root is not None else None
    except (ChunkIndexError, OSError):
        return None


def read_index(root: Path, prefix: str | None = None) -> IndexFile | None:
    """The validated index of the dataset in `root`, None if it has none. Raises
    :class:`ChunkIndexError` for a file that fails any check (or whose prefix is not `prefix`).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> read_index(pathlib.Path(tempfile.mkdtemp())) is None
    True
    """
    path = Path(root) / CHUNK_INDEX_FILENAME
    try:  # never through a symbolic link (it could lead to another dataset's index)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
                     | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    except OSError as e:
        why = "it is a symbolic link (not followed)" if os.path.islink(path) else f"it cannot be opened ({e})"
        raise ChunkIndexError(f"{str(path)!r}: {why}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ChunkIndexError(f"{str(path)!r} is not a regular file")
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        with _CACHE_LOCK:
            index = _CACHE.get(key)
        if index is None:
            index = _read_fd(fd, st.st_size, path)
            with _CACHE_LOCK:
                _CACHE[key] = index
                while len(_CACHE) > 8:
                    del _CACHE[next(iter(_CACHE))]
    finally:
        os.close(fd)
    if prefix is not None and index.prefix != prefix:
        raise _fail(str(path), f"it indexes blocks of prefix {index.prefix!r}, the dataset's is {prefix!r}")
    index.root = Path(root)
    return index


#: validated index files by (device, inode, size, mtime): a dataset opened again in this process
#: reads its index once (the same identity rule as the block records)
_CACHE: dict[tuple[int, int, int, int], IndexFile] = {}
_CACHE_LOCK = threading.Lock()


def _read_fd(fd: int, size: int, path: Path) -> IndexFile:
    if size > MAX_FILE_BYTES:
        raise ChunkIndexError(f"{str(path)!r} has {size} bytes, more than an index is allowed ({MAX_FILE_BYTES})")
    head = os.pread(fd, _HEAD.size, 0)  # the magic and lengths first: junk is refused before it is read
    if len(head) == _HEAD.size:
        magic, version, hlen = _HEAD.unpack(head)
        if magic != MAGIC or version != VERSION or hlen > MAX_HEADER:
            _header(head + bytes(8), str(path))  # raises, saying which
    data = bytearray(size)
    view, done = memoryview(data), 0
    while done < size:  # Linux reads at most 2 GiB - 4 KiB per call
        n = os.preadv(fd, (view[done:],), done)
        if n <= 0:
            raise ChunkIndexError(f"{str(path)!r} changed while it was read")
        done += n
    try:
        return read_index_bytes(data, str(path))
    except ChunkIndexError:
        raise
    except (ValueError, TypeError, KeyError, OverflowError, struct.error) as e:  # a field of an unexpected type
        raise ChunkIndexError(f"{str(path)!r}: malformed ({e})") from None


def _fail(where: str, what: str) -> ChunkIndexError:
    return ChunkIndexError(f"{where!r}: {what}")


def _header(data: bytes | bytearray, where: str) -> tuple[dict[str, Any], int]:
    if len(data) < _HEAD.size + 8:
        raise _fail(where, f"{len(data)} bytes is too short for a chunk index")
    magic, version, hlen = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise _fail(where, "not a split_dataset chunk index (wrong magic bytes)")
    if version != VERSION:
        raise _fail(where, f"format version {version}; this reader knows {VERSION}")
    if hlen > MAX_HEADER or hlen % 8 or _HEAD.size + hlen + 8 > len(data):
        raise _fail(where, f"header length {hlen} does not fit the file")
    (digest,) = struct.unpack_from("<Q", data, len(data) - 8)
    if chunk_hash(memoryview(data)[:-8]) != digest:
        raise _fail(where, "its checksum does not match its content (damaged or cut short)")
    try:
        header = json.loads(data[_HEAD.size:_HEAD.size + hlen].decode())
    except (UnicodeDecodeError, ValueError, RecursionError) as e:  # ValueError: also integers of 4300+ digits
        raise _fail(where, f"its header is not JSON ({e})") from None
    want = {"checksum": str, "prefix": str, "data_key": str, "dtype": str, "fill": str, "ndim": int,
            "blocks": int, "entries": int}
    if not isinstance(header, dict) or any(type(header.get(k)) is not t for k, t in want.items()):
        raise _fail(where, f"its header lacks fields or has fields of the wrong type (expected {sorted(want)})")
    if header["checksum"] != "xxh3-64":
        raise _fail(where, f"checksum {header['checksum']!r} is unknown (expected 'xxh3-64')")
    return header, _HEAD.size + hlen


def read_index_bytes(data: bytes | bytearray, where: str, prefix: str | None = None) -> IndexFile:
    """:func:`read_index` of the file's bytes (`where` names it in errors); raises only
    :class:`ChunkIndexError`."""
    try:
        with warnings.catch_warnings():  # numpy's deprecations and casts on nonsense fields are refusals here
            warnings.simplefilter("error")
            return _parse(data, where, prefix)
    except ChunkIndexError:
        raise
    except (ValueError, TypeError, KeyError, OverflowError, struct.error, Warning) as e:
        raise _fail(where, f"malformed ({type(e).__name__}: {e})") from None


_HEX = re.compile(r"(?:[0-9a-f]{2})+")


def _parse(data: bytes | bytearray, where: str, prefix: str | None) -> IndexFile:
    header, pos = _header(data, where)
    ndim, nblocks, nentries = header["ndim"], header["blocks"], header["entries"]
    if not 1 <= ndim <= 32 or not 0 <= nblocks < 1 << 40 or not 0 <= nentries < 1 << 40:
        raise _fail(where, f"ndim {ndim}, {nblocks} blocks, {nentries} chunks are out of range")
    try:
        dtype = np.dtype(header["dtype"])
    except TypeError as e:
        raise _fail(where, f"dtype {header['dtype']!r} is not a dtype ({e})") from None
    fill = header["fill"]
    if (dtype.kind not in "biufcSV" or dtype.hasobject or not 0 < dtype.itemsize <= 1 << 16
            or len(fill) != 2 * dtype.itemsize or not _HEX.fullmatch(fill)):
        raise _fail(where, f"dtype {dtype} with fill {fill[:40]!r} is not readable")
    if prefix is not None and header["prefix"] != prefix:
        raise _fail(where, f"it indexes blocks of prefix {header['prefix']!r}, the dataset's is {prefix!r}")
    bdt = block_dtype(ndim)
    if pos + nblocks * bdt.itemsize + nentries * ENTRY_DTYPE.itemsize + 8 != len(data):
        raise _fail(where, f"{len(data)} bytes do not hold {nblocks} blocks and {nentries} chunks as its header says")
    blocks = np.frombuffer(data, bdt, nblocks, pos)
    entries = np.frombuffer(data, ENTRY_DTYPE, nentries, pos + nblocks * bdt.itemsize)
    _check_blocks(blocks, entries, dtype.itemsize, where)
    return IndexFile(header, blocks, entries)


def _check_blocks(blocks: np.ndarray, entries: np.ndarray, itemsize: int, where: str) -> None:
    """Every record and entry in range, consistent, and no two chunks of a block sharing bytes."""
    n = len(blocks)
    if not n:
        if len(entries):
            raise _fail(where, "chunks listed without a block")
        return
    num, first, count = blocks["block"], blocks["first"], blocks["count"]
    shape, chunks = blocks["shape"], blocks["chunks"]
    if (n > 1 and np.any(num[1:] <= num[:-1])) or num[-1] >= 1 << 40:
        raise _fail(where, "block numbers are not increasing, or out of range")
    if np.any(count >= 1 << 40):
        raise _fail(where, "a block lists an impossible number of chunks")
    starts = np.concatenate([np.zeros(1, np.uint64), np.cumsum(count, dtype=np.uint64)[:-1]])
    if np.any(first != starts) or int(count.sum(dtype=np.uint64)) != len(entries):
        raise _fail(where, "the blocks' chunk ranges do not tile the chunk table")
    if np.any(shape < 1) or np.any(shape >= 1 << 40) or np.any(chunks < 1) or np.any(chunks >= 1 << 40):
        raise _fail(where, "a block's shape or chunk shape is out of range")
    shuffle, compressor = blocks["shuffle"], blocks["compressor"]
    if shuffle.min() < -1 or shuffle.max() > 2 or compressor.min() < -1 or compressor.max() > 5:
        raise _fail(where, "a block's blosc shuffle or compressor code is unknown")
    chunk_bytes = np.prod(chunks.astype(np.float64), axis=1) * itemsize
    block_bytes = np.prod(shape.astype(np.float64), axis=1) * itemsize
    if np.any(chunk_bytes > _MAX_CHUNK) or np.any(chunk_bytes > np.maximum(64 * block_bytes, 4 << 20)):
        raise _fail(where, "a block's chunks are larger than any codec handles")
    nchunks = np.prod(np.ceil(shape / chunks), axis=1)  # exact below 2**53
    if np.any(count > nchunks):
        raise _fail(where, "a block lists more chunks than its array has")
    if not len(entries):
        return
    owner = np.repeat(np.arange(n), count.astype(np.int64))
    ck, addr, size, mask = entries["chunk"], entries["addr"], entries["size"].astype(np.uint64), entries["mask"]
    nbytes = chunk_bytes[owner].astype(np.uint64)
    if np.any(ck >= nchunks[owner]):
        raise _fail(where, "a chunk number lies outside its block's chunk grid")
    same = owner[1:] == owner[:-1]
    if np.any(same & (ck[1:] <= ck[:-1])):
        raise _fail(where, "a block's chunk numbers are not increasing")
    if np.any(mask > 1):
        raise _fail(where, "a filter mask other than 0 (blosc applied) or 1 (stored raw)")
    raw = mask == 1
    if np.any(raw & (size != nbytes)) or np.any(~raw & ((size < 16) | (size > nbytes + 16))):
        raise _fail(where, "a chunk's stored size is impossible for its chunk shape")
    if np.any(addr >= 1 << 62) or np.any(addr + size > blocks["size"][owner]):
        raise _fail(where, "a chunk lies past the end of its block file")
    order = np.lexsort((addr, owner))
    a, s, o = addr[order], size[order], owner[order]
    if np.any((o[1:] == o[:-1]) & (a[:-1] + s[:-1] > a[1:])):
        raise _fail(where, "two chunks of a block share bytes")


def scan_entries(offsets: Sequence[tuple[int, ...]], infos: Sequence[tuple[int, int, int]], hashes: Sequence[int],
                 shape: tuple[int, ...], chunks: tuple[int, ...]) -> np.ndarray:
    """An :data:`ENTRY_DTYPE` array for chunks at `offsets` with (address, size, mask) `infos`, sorted by chunk."""
    counts = [-(-n // c) for n, c in zip(shape, chunks)]
    grid = np.array([math.prod(counts[k + 1:]) for k in range(len(counts))], np.uint64)
    out = np.zeros(len(offsets), ENTRY_DTYPE)
    if not len(offsets):
        return out
    where = np.array(offsets, np.uint64).reshape(len(offsets), len(shape)) // np.array(chunks, np.uint64)
    out["chunk"] = where @ grid
    info = np.array(infos, np.uint64).reshape(len(offsets), 3)
    out["addr"], out["size"], out["mask"] = info[:, 0], info[:, 1], info[:, 2]
    out["hash"] = np.array(hashes, np.uint64)
    out.sort(order="chunk")
    return out
