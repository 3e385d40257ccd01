"""``split-dataset info`` and ``verify`` for a dataset given by URL: :func:`info_remote`, :func:`verify_remote`.

Both return what their local counterparts return (:func:`split_dataset.info.info`'s dict,
a :class:`~split_dataset.verify_report.VerifyReport`) and are called by them for a URL.
They talk to the store through a :class:`~split_dataset.remote.store.Store` that asks once
for each thing: the folder's listing (with the objects' sizes, where the store can list),
``stack_metadata.json``, ``chunk_index.bin``, ``SHA256SUMS``, an object's size. Opening
the dataset (:class:`~split_dataset.remote.dataset.RemoteSplitDataset`) shares it, so what
opening fetched is not fetched again.

:func:`verify_remote` fetches each block object once, whole (one GET), a few blocks at a
time (:data:`VERIFY_BLOCKS`: at most that many blocks in memory), hashes its bytes, and
opens them in memory as a :class:`~split_dataset.storage.BlockHandle` over a
:class:`BytesSource`, so that the checks of a local block file run unchanged.
"""

from __future__ import annotations

import collections
import hashlib
import io
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import h5py
import hdf5plugin  # noqa: F401  (the blosc filter, for blocks HDF5 decodes)
import numpy as np

from ..errors import (
    BloscError,
    ChunkIndexError,
    CorruptBlockError,
    MetadataError,
    NotASplitDatasetError,
    RemoteError,
)
from ..grid import BlockGrid
from ..info import describe
from ..metadata import Metadata
from ..opening import choose_prefix
from ..storage import CHECKSUM_FILENAME, METADATA_FILENAME, BlockHandle, IndexFile, block_name
from ..storage.checksums import _LINE, _MAX_SUMS_BYTES
from ..storage.files import MAX_JSON_BYTES, parse_json
from ..storage.handles import block_handle
from ..storage.indexfile import CHUNK_INDEX_FILENAME, BlockRecord, chunk_hash, read_index_bytes, scan_entries
from ..storage.layout import group_block_names
from ..storage.legacymeta import parse_legacy_group
from ..verify import Progress, _check_dtypes, _check_handle, _check_sum, _index_difference, _one_line, _try_open
from ..verify_report import Problem, VerifyReport
from .dataset import RemoteSplitDataset, _io_pool
from .store import MAX_SMALL_FILE, RemotePath, Store

__all__ = ["VERIFY_BLOCKS", "BytesSource", "open_bytes", "info_remote", "verify_remote"]

#: Block objects fetched and checked at the same time by :func:`verify_remote` (and held in memory).
VERIFY_BLOCKS = 4
#: The dataset's small files, fetched once per check and shared with the dataset opened for it.
_SMALL_FILES = frozenset({METADATA_FILENAME, CHUNK_INDEX_FILENAME, CHECKSUM_FILENAME})
#: Largest block object fetched whole (c-blosc's chunk limit bounds chunks, not files).
_MAX_BLOCK = 1 << 62


class _CheckStore(Store):
    """A :class:`Store` that asks the server once for each thing a check needs (see the module docstring).

    Where the store lists, the listing (one request, with sizes; never from fsspec's cache)
    answers every later size lookup, and a name it does not hold is not there: no request
    is made for it. Files opened for HDF5 take their size from the same answers.
    """

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None, *, retries: int = 4,
                 timeout: float = 30.0) -> None:
        super().__init__(url, storage_options, retries=retries, timeout=timeout)
        self._memo_lock = threading.Lock()
        self._listed = False
        self._names: list[str] | None = None
        self._known: frozenset[str] = frozenset()
        self._sizes: dict[str, int | FileNotFoundError] = {}
        self._files: dict[str, bytes | FileNotFoundError] = {}

    def listing(self) -> list[str] | None:
        with self._memo_lock:
            if self._listed:
                return None if self._names is None else list(self._names)
        names: list[str] | None = None
        sizes: dict[str, int] = {}
        if not self.http:
            def ls() -> list[Any]:
                self.fs.invalidate_cache(self.path(""))  # a check lists afresh (s3fs keeps listings)
                return list(self.fs.ls(self.path(""), detail=True))

            try:
                entries = self._retry("listing", "", ls)
            except FileNotFoundError:
                entries = []
            names = []
            here = self.path("").strip("/")
            for entry in entries:
                full = entry.get("name", "") if isinstance(entry, dict) else entry
                if (isinstance(entry, dict) and entry.get("type") == "file"
                        and str(full).strip("/") == here):  # the listing of a file is the file
                    raise NotASplitDatasetError(f"{self.url!r} is a file; a split dataset is a folder of block files")
                name = str(full).rstrip("/").rsplit("/", 1)[-1]
                names.append(name)
                size = entry.get("size") if isinstance(entry, dict) else None
                if isinstance(size, int) and entry.get("type", "file") == "file":
                    sizes[name] = size
        with self._memo_lock:
            if not self._listed:
                self._listed, self._names = True, names
                self._known = frozenset(names or ())
                self._sizes.update(sizes)
            return None if self._names is None else list(self._names)

    def _absent(self, name: str) -> bool:
        """Whether the listing (if there is one) shows that `name` is not in the folder."""
        with self._memo_lock:
            return self._listed and self._names is not None and "/" not in name and name not in self._known

    def size(self, name: str) -> int:
        with self._memo_lock:
            known = self._sizes.get(name)
        if known is None and self._absent(name):
            known = FileNotFoundError(self.where(name))
        if known is None:
            try:
                known = super().size(name)
            except FileNotFoundError as e:
                known = e
            with self._memo_lock:
                self._sizes[name] = known
        if isinstance(known, FileNotFoundError):
            raise FileNotFoundError(str(known))
        return known

    def cat(self, name: str, limit: int = MAX_SMALL_FILE) -> bytes:
        if self._absent(name):
            raise FileNotFoundError(self.where(name))
        if name not in _SMALL_FILES:
            return super().cat(name, limit)
        with self._memo_lock:
            known = self._files.get(name)
        if known is None:
            try:
                known = super().cat(name, MAX_SMALL_FILE)
            except FileNotFoundError as e:
                known = e
            with self._memo_lock:
                self._files[name] = known
        if isinstance(known, FileNotFoundError):
            raise FileNotFoundError(str(known))
        if len(known) > limit:  # as Store.cat says it
            raise RemoteError(self.where(name), f"it holds {len(known)} bytes; at most {limit} were expected")
        return known

    def open(self, name: str, size: int | None = None) -> Any:
        return super().open(name, self.size(name) if size is None else size)

    def exists(self, name: str) -> bool:
        """Whether `name` is in the folder (the listing, else one size request)."""
        try:
            self.size(name)
            return True
        except FileNotFoundError:
            return False


class _Opened(RemoteSplitDataset):
    """The dataset opened over a given store, so that it shares the store's answers."""

    def __init__(self, store: Store, prefix: str | None) -> None:
        self._given = store
        super().__init__(store.url, prefix, storage_options=store.storage_options, retries=store.retries,
                         timeout=store.timeout)

    def _load(self) -> None:
        self._store = self._given
        super()._load()


class BytesSource:
    """A block file's bytes held in memory, as a :class:`~split_dataset.storage.source.ByteSource`.

    Examples
    --------
    >>> src = BytesSource(b"0123456789", "memory://ds/0000.h5")
    >>> buf = bytearray(4); src.read_exactly(memoryview(buf), 3); bytes(buf), src.size()
    (b'3456', 10)
    >>> src.pread(memoryview(bytearray(4)), 8)
    2
    """

    __slots__ = ("_data", "name")

    def __init__(self, data: bytes, name: str) -> None:
        self._data = memoryview(data)
        self.name = name

    def size(self) -> int:
        return len(self._data)

    def pread(self, view: memoryview, offset: int) -> int:
        part = self._data[offset:offset + len(view)] if offset >= 0 else self._data[:0]
        view[:len(part)] = part
        return len(part)

    def read_exactly(self, view: memoryview, offset: int) -> None:
        if self.pread(view, offset) != len(view):
            raise BloscError(f"the chunk bytes {offset}..{offset + len(view)} lie past the end of {self.name} "
                             "(a truncated file?)")

    def read_many(self, requests: Sequence[tuple[memoryview, int]]) -> None:
        for view, offset in requests:
            self.read_exactly(view, offset)

    def close(self) -> None:
        """Nothing to release: the bytes go with the last reference to them."""


def open_bytes(data: bytes, url: str, coords: tuple[int, ...], key: str | None) -> BlockHandle:
    """A block file's bytes opened in memory as a :class:`~split_dataset.storage.BlockHandle`, as
    :func:`~split_dataset.storage.open_block` opens a local file: its array found (`key`, else
    the search of docs/format.md §4.1), virtual and external arrays refused, and chunks read
    from the bytes by the validating chunk reader. `url` names the block in errors.

    Raises :class:`~split_dataset.errors.CorruptBlockError` for bytes that are not an HDF5
    block, :class:`~split_dataset.errors.UnsafeDatasetError` for a virtual or external array.

    Examples
    --------
    >>> import numpy as np, split_dataset, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "ds")
    >>> _ = split_dataset.save(np.arange(32, dtype="uint16").reshape(2, 4, 4), path, (2,), fsync=False)
    >>> data = open(os.path.join(path, "0000.h5"), "rb").read()
    >>> with open_bytes(data, "memory://ds/0000.h5", (0, 0, 0), None) as handle:
    ...     handle.mode, handle.shape, handle.check_chunks()
    ('direct', (2, 4, 4), (2, 2))
    """
    path = RemotePath(url)
    try:
        f = h5py.File(io.BytesIO(data), "r")
    except (OSError, ValueError) as e:
        raise CorruptBlockError(path, coords, f"not an HDF5 file ({' '.join(str(e).split())})") from e
    try:
        return block_handle(f, path, coords, key, BytesSource(data, url))
    except BaseException:
        f.close()
        raise


# ----------------------------------------------------------------------------- info


def info_remote(url: str, *, prefix: str | None = None, storage_options: dict[str, Any] | None = None
                ) -> dict[str, Any]:
    """:func:`split_dataset.info.info` for a dataset given by URL: the same keys, ``path`` its URL.

    - ``bytes_on_disk``: the sum of the block objects' sizes, from the listing where the
      store can list, else from one size (HEAD) request per block, 16 at a time; a block
      the server does not have (404) counts among ``missing_blocks``.
    - ``checksums``: whether ``SHA256SUMS`` exists (the listing, else one HEAD request).
    - ``chunk_index``: as for a local dataset, but ``current`` counts the records whose
      ``size`` equals the object's: a store has no inode or modification time to compare,
      so an object replaced by one of the same size counts as current (``verify`` compares
      the chunks themselves).

    Requests, for N blocks: opening the dataset (one listing where the store lists;
    ``stack_metadata.json``; ``chunk_index.bin``, unless the listing shows there is none;
    without an index record for it, the HDF5 header of the block opening checks, the last
    of the last whole layer along axis 0, by range), then, without a listing, one HEAD per
    block and one for ``SHA256SUMS``. On S3 that is 3 requests whatever N (listing,
    metadata, and the index or that header); over plain HTTP, N + 3 with an index and
    N + 4 without. Where the metadata does not record the codec or chunk shape, the first
    block's header is read as well.

    Parameters
    ----------
    url
        The dataset folder's URL.
    prefix
        Block-name prefix, as for :class:`~split_dataset.SplitDataset`.
    storage_options
        Options for fsspec (credentials, endpoint, headers...).

    Examples
    --------
    >>> import numpy as np, split_dataset, fsspec, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "ds")
    >>> _ = split_dataset.save(np.zeros((10, 4, 4), "uint16"), path, (5,), fsync=False)
    >>> fsspec.filesystem("memory").put(path, "memory://doc_info/ds", recursive=True)
    >>> d = info_remote("memory://doc_info/ds")
    >>> d["path"], d["n_blocks_present"], d["checksums"], d["chunk_index"]
    ('memory://doc_info/ds', 2, True, {'blocks': 2, 'current': 2})
    """
    store = _CheckStore(url, storage_options)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = _Opened(store, prefix)
    with ds:
        gone = set(ds.missing_blocks)  # not in the listing; without one, every block is tried
        tried = [i for i in range(ds.n_blocks) if i not in gone]

        def size(i: int) -> int | None:
            try:
                return store.size(block_name(i, ds.prefix))
            except FileNotFoundError:
                return None

        sizes = dict(zip(tried, _io_pool().map(size, tried)))
        present = [i for i in tried if sizes[i] is not None]
        missing = [block_name(i, ds.prefix) for i in range(ds.n_blocks) if sizes.get(i) is None]
        on_disk = sum(cast(int, sizes[i]) for i in present)
        index: IndexFile | None = ds._view[4]
        state = None
        if index is not None:
            current = 0
            for i in present:
                record = index.record(i)
                current += record is not None and record.size == sizes[i]
            state = {"blocks": index.n_blocks, "current": current}
        return describe(ds, present, missing, on_disk, store.exists(CHECKSUM_FILENAME), state,
                        [str(w.message) for w in caught])


# ----------------------------------------------------------------------------- verify


@dataclass
class _Block:
    """What checking one block found, merged into the report in block order."""

    report: VerifyReport
    dtypes: dict[int, np.dtype] = field(default_factory=dict)
    stale: bool = False


def verify_remote(url: str, *, prefix: str | None = None, progress: Progress | None = None,
                  storage_options: dict[str, Any] | None = None) -> VerifyReport:
    """:func:`split_dataset.verify.verify` for a dataset given by URL: the same report, its problems
    naming the objects' URLs (``Problem.file``) and ``report.path`` the dataset's URL.

    Every block object the metadata describes is fetched once, whole (one GET; a few blocks
    at a time, :data:`VERIFY_BLOCKS`, so at most that many blocks are in memory), its SHA-256
    compared with ``SHA256SUMS`` where the dataset has one, then its bytes opened in memory
    and checked as a local block file is: shape and dtype against the metadata, every chunk
    it stores decoded (frames validated), chunks it needs but does not store. Where
    ``chunk_index.bin`` has a record of the block and the record's size is the object's,
    the chunks it lists are compared with those the object holds, checksums included (a
    difference is a ``"changed"`` problem); a record of another size is stale (a note: the
    object was replaced since the index was written; there is no modification time to tell).
    An object the server does not have is ``"missing"``; one that cannot be fetched
    (after retries) is ``"corrupt"``, the message saying why. The dataset is also opened as a
    reader would (:func:`split_dataset.open`); what stops that is an ``"open"`` problem.
    There are no writer locks on a store: no writer notes.

    Requests, for N blocks: one listing where the store lists; ``stack_metadata.json``;
    ``chunk_index.bin`` and ``SHA256SUMS`` (unless the listing shows they are absent); one
    GET per block (none for a block the listing lacks; over plain HTTP a missing block is
    its 404); without an index record for it, the HDF5 header of the block that opening
    checks, by range (and over HTTP a HEAD for its size). On S3 that is N + 4 requests,
    with or without an index; over plain HTTP, N + 3 with an index, N + 5 without. For a
    legacy dataset without ``stack_metadata.json``, the last block is fetched once more.

    Parameters
    ----------
    url
        The dataset folder's URL.
    prefix
        Block-name prefix, as for :class:`~split_dataset.SplitDataset`.
    progress
        Called as ``progress(done, total)`` with the number of blocks checked (in block order).
    storage_options
        Options for fsspec (credentials, endpoint, headers...).

    Returns
    -------
    VerifyReport
        ``report.ok`` is True only if nothing is wrong.

    Raises
    ------
    NotASplitDatasetError
        No metadata and no block objects there (or, on a store that cannot list, no metadata).
    RemoteError
        The store cannot be listed or the metadata cannot be fetched (after retries).

    Examples
    --------
    >>> import numpy as np, split_dataset, fsspec, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "ds")
    >>> _ = split_dataset.save(np.zeros((10, 4, 4), "uint16"), path, (5,), fsync=False)
    >>> fs = fsspec.filesystem("memory")
    >>> fs.put(path, "memory://doc_verify/ds", recursive=True)
    >>> report = verify_remote("memory://doc_verify/ds")
    >>> report.ok, report.n_checked, report.n_checksums_matched
    (True, 2, 2)
    >>> fs.rm("memory://doc_verify/ds/0001.h5")
    >>> [(p.file, p.kind) for p in verify_remote("memory://doc_verify/ds").problems]
    [('memory://doc_verify/ds/0001.h5', 'missing')]
    """
    store = _CheckStore(url, storage_options)
    root = RemotePath(store.url)
    report = VerifyReport(path=cast(Path, root))
    names = store.listing()
    groups = group_block_names(names) if names is not None else None
    prefix = choose_prefix(cast(Path, root), groups, prefix) if groups is not None else (prefix or "")
    present: dict[int, str] | None = groups.get(prefix, {}) if groups is not None else None
    meta_file = store.where(METADATA_FILENAME)
    try:
        raw = parse_json(store.cat(METADATA_FILENAME, MAX_JSON_BYTES), meta_file)
    except FileNotFoundError:
        raw = None
    except MetadataError as e:
        report.problems.append(Problem(meta_file, "metadata", f"the metadata cannot be read: {e}"))
        return report
    try:
        if raw is None:
            meta_file, raw = _legacy_metadata(store, present)
        try:
            meta = Metadata.from_dict(raw)
        except MetadataError as e:
            raise MetadataError(f"{meta_file!r}: {e}") from e
    except MetadataError as e:
        report.problems.append(Problem(meta_file, "metadata", f"the metadata cannot be read: {e}"))
        return report

    # what a reader would say when opening it; whatever stops it from opening is a problem
    reader_dtype, open_problem = _try_open(
        lambda: _Opened(store, prefix), store.url, report,
        lambda culprit: str(culprit) if isinstance(culprit, RemotePath) else meta_file)

    grid = BlockGrid(meta.shape, meta.shape_block, meta.padding)
    report.n_blocks = total = grid.n_blocks
    sums, sums_problem = _read_sums(store)
    report.checksums_available = sums is not None
    if sums_problem is not None:
        report.problems.append(sums_problem)
    elif sums is None:
        report.notes.append(
            f"checksums not available: no {CHECKSUM_FILENAME} (written by an older writer); every block was "
            "decoded and checked against the metadata, but a changed byte that still decodes cannot be detected"
        )
    index: IndexFile | None = None
    try:
        index = read_index_bytes(store.cat(CHUNK_INDEX_FILENAME), store.where(CHUNK_INDEX_FILENAME), prefix)
    except FileNotFoundError:
        pass
    except (ChunkIndexError, OSError) as e:
        report.problems.append(Problem(store.where(CHUNK_INDEX_FILENAME), "corrupt", f"{_one_line(e)}; readers "
                                       "ignore it (`split-dataset index --rebuild` on a local copy writes it again)"))

    def check(i: int) -> _Block:
        name = block_name(i, prefix)
        if present is not None and i not in present:
            return _missing(store, name, grid.coords(i), sums)
        record = index.record(i) if index is not None else None
        return _verify_block(store, i, name, grid, meta, sums, record)

    found_dtypes: dict[int, np.dtype] = {}
    stale: list[str] = []
    if progress is not None:
        progress(0, total)
    for i, block in enumerate(_in_order(check, total)):
        report.problems += block.report.problems
        report.n_checked += block.report.n_checked
        report.n_checksums_matched += block.report.n_checksums_matched
        found_dtypes.update(block.dtypes)
        if block.stale:
            stale.append(block_name(i, prefix))
        if progress is not None:
            progress(i + 1, total)

    _check_dtypes(found_dtypes, meta, reader_dtype, grid, report, lambda i: store.where(block_name(i, prefix)))
    if stale:
        shown = ", ".join(stale[:3]) + (" ..." if len(stale) > 3 else "")
        report.notes.append(
            f"{CHUNK_INDEX_FILENAME} is out of date for {len(stale)} block(s) ({shown}): their objects' sizes differ "
            "from the ones indexed, so they were replaced since it was written. Readers by URL take the index's "
            "word for where chunks lie (a store has no modification time to check it against) and fail on these "
            "blocks' chunk checksums: rebuild the index (`split-dataset index` on a local copy) and upload it"
        )
    if open_problem is not None:
        report.problems.append(open_problem)
    report.problems.sort(key=lambda p: (p.file != meta_file, len(p.file), p.file))

    if sums is not None:
        grid_names = {block_name(i, prefix) for i in range(total)}
        beyond = sorted(n for n in sums if n not in grid_names)
        there = dict(zip(beyond, _io_pool().map(store.exists, beyond)))
        for n in beyond:
            if not there[n]:
                report.problems.append(Problem(store.where(n), "missing",
                                               f"listed in {CHECKSUM_FILENAME} but not in the store"))
        extra = [n for n in beyond if there[n]]
        if extra:
            report.notes.append(
                f"{len(extra)} file(s) listed in {CHECKSUM_FILENAME} lie beyond what the metadata describes "
                f"({', '.join(extra[:3])}{'...' if len(extra) > 3 else ''}); not checked"
            )
    return report


def _in_order(check: Callable[[int], _Block], total: int) -> Iterator[_Block]:
    """``check(i)`` for i in ``range(total)``, :data:`VERIFY_BLOCKS` at a time, yielded in order."""
    pool = ThreadPoolExecutor(VERIFY_BLOCKS, thread_name_prefix="split_dataset-verify")
    window: collections.deque[Future[_Block]] = collections.deque()
    try:
        for i in range(total):
            window.append(pool.submit(check, i))
            if len(window) >= 2 * VERIFY_BLOCKS:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _missing(store: Store, name: str, coords: tuple[int, ...], sums: dict[str, str] | None) -> _Block:
    listed = " (listed in SHA256SUMS)" if sums and name in sums else ""
    out = _Block(VerifyReport(path=Path()))
    out.report.problems.append(Problem(store.where(name), "missing", f"block {coords} is missing: the metadata "
                                       f"describes it, the object is not there{listed}"))
    return out


def _verify_block(store: Store, index: int, name: str, grid: BlockGrid, meta: Metadata, sums: dict[str, str] | None,
                  record: BlockRecord | None) -> _Block:
    """Block `index` fetched whole and checked (see :func:`verify_remote`)."""
    url = store.where(name)
    coords = grid.coords(index)
    try:
        data = store.cat(name, _MAX_BLOCK)
    except FileNotFoundError:
        return _missing(store, name, coords, sums)
    out = _Block(VerifyReport(path=Path()))
    report = out.report
    if not isinstance(data, bytes):  # pragma: no cover - fsspec filesystems return bytes
        data = bytes(data)
    digest: Future[str] | None = None
    if sums is not None and name in sums:
        digest = Future[str]()
        digest.set_result(hashlib.sha256(data).hexdigest())
    out.stale = record is not None and record.size != len(data)
    try:
        handle = open_bytes(data, url, coords, meta.data_key)
    except Exception as e:
        cause = e.__cause__ if isinstance(e, CorruptBlockError) and e.__cause__ is not None else e
        report.problems.append(Problem(url, "corrupt", f"block {coords} cannot be opened: {_one_line(cause)}"))
    else:
        try:
            _check_handle(handle, url, index, coords, grid, meta, report, out.dtypes)
            if record is not None and not out.stale:
                _compare_record(handle, data, record, url, report)
        finally:
            handle.close()
    _check_sum(name, digest, sums, report, False, url)
    return out


def _compare_record(handle: BlockHandle, data: bytes, record: BlockRecord, url: str, report: VerifyReport) -> None:
    """The chunks `record` lists against those the block's bytes hold, as the local verify compares them."""
    try:
        fresh = _entries(handle, data)
    except (OSError, ValueError, RuntimeError):
        return  # the block itself is reported
    if fresh is None or not np.array_equal(fresh, record.entries):
        report.problems.append(Problem(url, "changed", _index_difference(
            record.entries, None if fresh is None else SimpleNamespace(entries=fresh), "its size")))


def _entries(handle: BlockHandle, data: bytes) -> np.ndarray | None:
    """The chunk index entries (as ``chunk_index.bin`` records them) of an open block whose file is
    `data`; None for a block whose chunks this package does not read itself (it is not indexed)."""
    reader = handle.reader
    if handle.mode != "direct" or reader is None or handle.chunks is None:
        return None
    handle.validate_frames()
    index = reader.load_index()
    offsets = sorted(index)
    infos = [index[o] for o in offsets]
    view = memoryview(data)
    hashes = [chunk_hash(view[addr:addr + size]) for addr, size, _ in infos]
    return scan_entries(offsets, infos, hashes, tuple(handle.shape), tuple(handle.chunks))


def _legacy_metadata(store: Store, present: dict[int, str] | None) -> tuple[str, dict[str, Any]]:
    """(URL of the last block, its metadata): what split_dataset < 0.3 kept inside the last block."""
    if present is None:
        raise NotASplitDatasetError(
            f"{store.url!r}: no {METADATA_FILENAME} there. Datasets without one (written by split_dataset < 0.3) "
            "are found by listing their folder, which a plain HTTP server cannot do; add the metadata "
            "(`split-dataset convert` writes it) or serve the dataset from an object store")
    if not present:
        raise NotASplitDatasetError(
            f"{store.url!r} is not a split dataset: no {METADATA_FILENAME} and no block files named like '0000.h5'")
    name = present[max(present)]
    where = store.where(name)
    try:
        with h5py.File(io.BytesIO(store.cat(name, _MAX_BLOCK)), "r") as f:
            link = f.get("stack_metadata", getlink=True)
            if not isinstance(link, h5py.HardLink) or not isinstance(f["stack_metadata"], h5py.Group):
                raise MetadataError(f"{store.url!r} is not a split dataset: it has no {METADATA_FILENAME}, and its "
                                    f"last block {name!r} has no legacy 'stack_metadata' group either")
            return where, parse_legacy_group(f["stack_metadata"], where)
    except FileNotFoundError as e:
        raise MetadataError(f"{store.url!r}: its last block {name!r} was listed but cannot be fetched: {e}") from e
    except (OSError, ValueError) as e:
        if isinstance(e, MetadataError):
            raise
        raise MetadataError(f"{store.url!r} is not a split dataset: it has no {METADATA_FILENAME}, and its last "
                            f"block {name!r} cannot be read: {_one_line(e)}") from e


def _read_sums(store: Store) -> tuple[dict[str, str] | None, Problem | None]:
    """``SHA256SUMS`` as ``{name: digest}`` (None if absent), or a problem if it cannot be fetched."""
    where = store.where(CHECKSUM_FILENAME)
    try:
        data = store.cat(CHECKSUM_FILENAME, _MAX_SUMS_BYTES)
    except FileNotFoundError:
        return None, None
    except OSError as e:
        return None, Problem(where, "corrupt", f"cannot be read: {_one_line(e)}; checksums not checked")
    sums: dict[str, str] = {}
    for line in data.decode(errors="replace").splitlines():
        m = _LINE.match(line)
        if m is not None:
            sums[m["name"]] = m["digest"].lower()
    return sums, None
