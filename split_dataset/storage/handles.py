"""Open block files: :class:`BlockHandle` (an HDF5 file, its array, how to read it) and the
per-process :class:`HandleCache` that keeps them open and closes one only when no read uses it."""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import (
    BloscError,
    CorruptBlockError,
    MissingBlockError,
    NotRegularFileError,
    SplitDatasetError,
    UnsafeDatasetError,
)
from . import blosc as _blosc
from .chunkindex import hdf5_index
from .codecs import BLOSC_FILTER
from .hdf5 import find_data_key, open_same
from .indexfile import blosc_codes
from .reader import ChunkReader, _outer
from .source import ByteSource, LocalFile
from .threads import run_shared

__all__ = ["BlockHandle", "block_handle", "open_block", "HandleCache"]

_SHUFFLE_FILTER, _FLETCHER32 = 2, 3  # HDF5's own filter ids
#: HDF5's built-in filters (deflate, shuffle, fletcher32, szip, nbit, scaleoffset): HDF5 checks
#: what it decodes. Plugin filters (hdf5plugin registers many: lz4, bitshuffle, zstd, ...) may
#: trust the sizes a damaged chunk claims, so only blosc, validated here, is read among them.
BUILTIN_FILTERS = frozenset({1, 2, 3, 4, 5, 6})
#: the largest chunk read: c-blosc's limit, and a bound a crafted chunk shape cannot pass
MAX_CHUNK_BYTES = (1 << 31) - 17


class BlockHandle:
    """An open block file and its array, with its read strategy chosen once, by the
    array's HDF5 filter pipeline:

    - ``"direct"`` (blosc alone, what this package and the old one write): a
      :class:`~split_dataset.storage.reader.ChunkReader` reads and decodes the chunks,
      HDF5 only supplying the chunk index.
    - ``"checked"`` (byte shuffle before blosc, or fletcher32 after it, or a c-blosc that
      cannot be called directly): every touched chunk's blosc frame is validated, then
      HDF5 decodes it.
    - ``"hdf5"`` (no blosc: gzip, none, contiguous): h5py reads it.
    - ``"refused"`` (blosc among filters whose frames cannot be validated): reads raise.

    Block files never change once renamed into place, so the index stays valid.

    Examples
    --------
    >>> handle = open_block(path, (0, 0), root, None, 1 << 20)  # doctest: +SKIP
    >>> handle.mode, handle.shape  # doctest: +SKIP
    ('direct', (20, 10, 256, 256))
    """

    __slots__ = (
        "__weakref__",
        "checked",
        "chunks",
        "dset",
        "dtype",
        "file",
        "mode",
        "name",
        "path",
        "reader",
        "refusal",
        "retired",
        "shape",
        "source",
        "users",
    )

    def __init__(self, file: h5py.File, dset: h5py.Dataset, source: ByteSource | None = None) -> None:
        self.file = file
        self.dset = dset
        self.path = Path(file.filename)
        self.name = str(dset.name).lstrip("/")  # the array's path in the file
        self.shape: tuple[int, ...] = dset.shape
        self.dtype: np.dtype = dset.dtype
        self.chunks: tuple[int, ...] | None = dset.chunks
        self.checked = False  # set by the dataset once the shape and dtype were validated
        self.users = 0  # reads under way (HandleCache)
        self.retired = False  # dropped from the cache: closes when the last read ends
        self.mode = "hdf5"
        self.reader: ChunkReader | None = None
        self.source = source
        self.refusal = ""  # why reads are refused (mode "refused")
        chunks = self.chunks
        if chunks is not None:
            plist = dset.id.get_create_plist()
            filters = [plist.get_filter(i) for i in range(plist.get_nfilters())]
            ids = [f[0] for f in filters]
            nbytes = math.prod(chunks) * self.dtype.itemsize
            block_bytes = math.prod(self.shape) * self.dtype.itemsize
            if nbytes > MAX_CHUNK_BYTES or nbytes > max(64 * block_bytes, 4 << 20):
                self._refuse(f"its chunks of {chunks} ({nbytes} bytes) are far larger than the array "
                             f"{self.shape} itself or than any codec handles")
            elif BLOSC_FILTER in ids:
                k = ids.index(BLOSC_FILTER)
                cd = tuple(filters[k][2])
                trailer = 4 * len(ids[k + 1:])
                if self.dtype.hasobject or not nbytes:
                    self._refuse("blosc over a dtype without fixed-size items")
                elif ids == [BLOSC_FILTER] and _blosc.available():
                    self.mode = "direct"
                elif set(ids[:k]) <= {_SHUFFLE_FILTER} and ids[k + 1:] in ([], [_FLETCHER32]):
                    self.mode = "checked"
                else:
                    self._refuse(f"its HDF5 filters {ids} combine blosc with others in an order whose blosc "
                                 "frames cannot be validated before decoding")
                if self.mode != "refused":
                    if source is None:
                        source = self.source = LocalFile(self.path)
                    check = _blosc.FrameCheck(nbytes, self.dtype.itemsize, *blosc_codes(cd))
                    self.reader = ChunkReader(source, lambda: hdf5_index(dset), chunks, self.dtype, check,
                                              dset.fillvalue, trailer, skipped_bit=1 << k)
            elif not set(ids) <= BUILTIN_FILTERS:
                self._refuse(f"its HDF5 filters {ids} include a plugin filter other than blosc (32001), whose "
                             "decoder could trust a damaged chunk's sizes")
        if self.reader is None and source is not None:  # h5py reads it all: no descriptor needed
            source.close()
            self.source = None

    @classmethod
    def indexed(cls, path: Path, name: str, shape: tuple[int, ...], dtype: np.dtype, chunks: tuple[int, ...],
                source: ByteSource, reader: ChunkReader) -> BlockHandle:
        """A ``"direct"`` handle whose chunk index came from ``chunk_index.bin``: no HDF5 file is
        open (``file`` and ``dset`` are None)."""
        self = cls.__new__(cls)
        self.file = self.dset = None
        self.path, self.name, self.shape, self.dtype, self.chunks = path, name, shape, dtype, chunks
        self.checked, self.users, self.retired, self.mode, self.refusal = False, 0, False, "direct", ""
        self.source, self.reader = source, reader
        return self

    def _refuse(self, why: str) -> None:
        self.mode, self.refusal = "refused", why

    def __iter__(self) -> Any:  # unpacks as (file, dataset)
        return iter((self.file, self.dset))

    def __enter__(self) -> BlockHandle:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the file (and the source of direct chunk reads). Idempotent."""
        if self.source is not None:
            self.source.close()
        if self.file is not None:
            self.file.close()

    @property
    def direct(self) -> bool:
        """Whether chunks are read and decoded by this package (blosc alone)."""
        return self.mode == "direct"

    def get(self, local: tuple[slice, ...]) -> np.ndarray:
        """``dset[local]`` for step-1 slices of a :attr:`direct` array, as a new array (or a view of one)."""
        assert self.reader is not None
        return self.reader.get(local)

    def read(self, local: tuple[Any, ...], buf: np.ndarray, out: tuple[slice, ...]) -> None:
        """Read ``dset[local]`` into ``buf[out]``; `local` holds per axis a slice (step > 0) or sorted
        unique indices, taken as an outer product."""
        mode = self.mode
        if mode == "direct":
            self.reader.read(local, buf, out)  # type: ignore[union-attr]
            return
        if mode == "refused":
            raise BloscError(f"{self.refusal}; refused")
        if mode == "checked":
            self.reader.validate(local)  # type: ignore[union-attr]
        if sum(type(s) is not slice for s in local) <= 1:
            buf[out] = self.dset[local]
            return
        # h5py takes one index array at a time: read the arrays' bounding box, then take
        box = tuple(s if type(s) is slice else slice(int(s[0]), int(s[-1]) + 1) for s in local)
        rel = tuple(slice(0, len(range(s.start, s.stop, s.step)), 1) if type(s) is slice else s - s[0] for s in local)
        buf[out] = self.dset[box][_outer(rel)]

    def validate_frames(self) -> None:
        """Validate every stored chunk's blosc frame without decoding (nothing to do without blosc);
        raises :class:`~split_dataset.errors.BloscError` for a damaged one or a refused pipeline.

        Examples
        --------
        >>> handle.validate_frames()  # doctest: +SKIP
        """
        if self.mode == "refused":
            raise BloscError(f"{self.refusal}; refused")
        if self.reader is not None:
            self.reader.validate()

    def check_chunks(self) -> tuple[int, int]:
        """Decode every chunk stored in the file, as a read would (validated, never by HDF5's
        blosc filter on trust): ``(chunks stored, chunks of the array)``; the others were never
        written and read as the fill value. Bounded by what the file holds, whatever shape it
        declares. Raises what a read of a damaged chunk raises.

        Examples
        --------
        >>> handle.check_chunks()  # doctest: +SKIP
        (200, 200)
        """
        if self.chunks is None:  # contiguous: HDF5 stores it whole, or not at all
            if self.dset.id.get_storage_size() and math.prod(self.shape):
                row = max(1, math.prod(self.shape[1:]) * self.dtype.itemsize)
                step = max(1, (64 << 20) // row)
                for start in range(0, self.shape[0], step):
                    self.dset[start:start + step]
            return (1, 1) if math.prod(self.shape) else (0, 0)
        total = math.prod(-(-n // c) for n, c in zip(self.shape, self.chunks))
        if self.mode == "refused":
            raise BloscError(f"{self.refusal}; refused")
        if self.reader is None:
            offsets: list[tuple[int, ...]] = []
            self.dset.id.chunk_iter(lambda c: offsets.append(c.chunk_offset))
        else:
            offsets = self.reader.stored()
        run_shared(self._check_all, offsets)
        return len(offsets), total

    def _check_all(self, offsets: Iterator[tuple[int, ...]]) -> None:
        chunks = self.chunks
        assert chunks is not None
        if self.mode == "direct":
            self.reader.check_all(offsets)  # type: ignore[union-attr]
            return
        for offset in offsets:
            region = tuple(slice(o, min(o + c, n), 1) for o, c, n in zip(offset, chunks, self.shape))
            if self.mode == "checked":
                self.reader.validate(region)  # type: ignore[union-attr]
            self.dset[region]


def open_block(
    path: Path, block: tuple[int, ...], root: Path, key: str | None, rdcc_nbytes: int
) -> BlockHandle:
    """Open a block file read-only and find its array (see :func:`.hdf5.open_readonly` on locking).

    Refuses (:class:`UnsafeDatasetError`) anything that is not a regular file, and an
    array reached through a link, virtual, or stored in external files; a file that is
    missing raises :class:`MissingBlockError`, one that is not HDF5 :class:`CorruptBlockError`.
    """
    try:
        fd, f = open_same(path, rdcc_nbytes)
    except FileNotFoundError as e:
        raise MissingBlockError(path, block) from e
    except NotRegularFileError as e:
        raise UnsafeDatasetError(f"block {block}: {e}") from None
    except OSError as e:
        if not path.exists():
            raise MissingBlockError(path, block) from e
        raise CorruptBlockError(path, block, str(e)) from e
    source = LocalFile(path, fd)  # the one owner of `fd` from here on
    try:
        return block_handle(f, path, block, key, source)
    except BaseException:
        f.close()
        source.close()
        raise


def block_handle(f: h5py.File, path: Any, block: tuple[int, ...], key: str | None, source: ByteSource
                 ) -> BlockHandle:
    """The :class:`BlockHandle` of block file `f` (opened by the caller, from disk, a store or bytes;
    `path` names it in errors): its array found (`key`, else docs/format.md §4.1's search),
    virtual and external arrays refused. The caller closes `f` and `source` if this raises.
    """
    where = str(path)
    try:
        name = find_data_key(f, key)
        dset = f[name]
    except KeyError as e:
        raise CorruptBlockError(path, block, e.args[0]) from None
    except UnsafeDatasetError as e:  # a link on the way to the array: named by `path`, not HDF5's file name
        raise UnsafeDatasetError(str(e).replace(repr(f.filename), repr(where))) from None
    except SplitDatasetError:
        raise  # said already
    except (RuntimeError, TypeError, ValueError) as e:  # damaged HDF5 metadata: h5py lets these out
        raise CorruptBlockError(path, block, f"its HDF5 metadata is damaged ({' '.join(str(e).split())})") from e
    if dset.is_virtual or dset.external:
        what = "a virtual dataset" if dset.is_virtual else "stored in external raw files"
        raise UnsafeDatasetError(
            f"{where!r}: {name!r} is {what}; a block file must hold its own array (refused, "
            "as its sources could lie outside the dataset folder)"
        )
    try:
        handle = BlockHandle(f, dset, source)
    except (TypeError, ValueError, KeyError) as e:  # h5py cannot map the array's type, ...
        raise CorruptBlockError(path, block, f"its array cannot be read: {e}") from e
    if not isinstance(path, Path):  # a URL: HDF5's own name for the file would be a Python object's
        handle.path = path
    return handle


class HandleCache:
    """A small LRU of open block files, per process: handles never cross a fork.

    Thread-safe. ``maxsize`` bounds the cached files; the least recently used is dropped
    first. A handle is closed only when no read uses it: reads take it with
    :meth:`acquire` and give it back with :meth:`release`; one dropped from the cache (by
    the LRU, :meth:`clear`, a dataset's ``close()`` or ``refresh()``) while reads use it
    closes when the last of them releases it, so no read ever sees its file, or a
    descriptor number reused by another file, closed under it.
    """

    def __init__(self, maxsize: int = 32) -> None:
        self.maxsize = max(1, int(maxsize))
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._items: OrderedDict[int, BlockHandle] = OrderedDict()
        self._generation = 0  # counts clear(): a handle opened across one is not cached

    def _check_pid(self) -> None:
        if self._pid != os.getpid():  # forked: forget the parent's handles without touching them
            self._items = OrderedDict()
            self._lock = threading.Lock()
            self._pid = os.getpid()

    def acquire(self, index: int, opener: Any) -> BlockHandle:
        """The handle of block `index` (opened with ``opener()`` if it is not cached), in use
        until :meth:`release`."""
        self._check_pid()
        with self._lock:
            item = self._items.get(index)
            if item is not None:
                self._items.move_to_end(index)
                item.users += 1
                return item
            generation = self._generation
        fresh = opener()  # outside the lock: other blocks are read (and opened) meanwhile
        dropped: list[BlockHandle] = []
        with self._lock:
            item = self._items.get(index)
            if generation != self._generation:  # cleared meanwhile: this read only, then closed
                fresh.retired = True
                item = fresh
            elif item is not None:  # another thread opened it first: use theirs
                self._items.move_to_end(index)
                dropped.append(fresh)
            else:
                item = self._items[index] = fresh
                while len(self._items) > self.maxsize:
                    old = self._items.popitem(last=False)[1]
                    old.retired = True
                    if not old.users:
                        dropped.append(old)
            item.users += 1
        for old in dropped:
            _close_quietly(old)
        return item

    def release(self, item: BlockHandle) -> None:
        """End a use of `item` begun by :meth:`acquire`."""
        with self._lock:
            item.users -= 1
            close = item.retired and not item.users
        if close:
            _close_quietly(item)

    def get_or_open(self, index: int, opener: Any) -> BlockHandle:
        """The handle of block `index` for metadata only (shape, dtype): no read may use it
        after another thread could :meth:`clear` the cache."""
        item = self.acquire(index, opener)
        self.release(item)
        return item

    def clear(self) -> None:
        """Drop every cached file: close those no read uses now, the others when their reads end."""
        self._check_pid()
        with self._lock:
            self._generation += 1
            items, self._items = list(self._items.values()), OrderedDict()
            idle = []
            for item in items:
                item.retired = True
                if not item.users:
                    idle.append(item)
        for item in idle:
            _close_quietly(item)

    def __len__(self) -> int:
        return len(self._items)


def _close_quietly(handle: BlockHandle) -> None:
    try:
        handle.close()
    except Exception:  # pragma: no cover - closing is best effort
        pass

