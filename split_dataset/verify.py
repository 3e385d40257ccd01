"""Checking that a split dataset is whole: :func:`verify` (``split-dataset verify``).

It returns a :class:`~split_dataset.verify_report.VerifyReport` and never prints; the
``split-dataset verify`` command formats it. (:func:`info` and :func:`block_codec` live
in :mod:`split_dataset.info`; they are importable from here too.)

:func:`verify` works from the metadata and the files on disk, independently of the
reader's own reconciliation: every block file the metadata describes is opened and every
chunk it stores is decoded (:meth:`~split_dataset.storage.BlockHandle.check_chunks`:
validated, never by HDF5's blosc filter on trust, bounded by the file's size whatever
shape it declares), its shape and dtype are compared with the metadata, and where the
folder holds a ``SHA256SUMS`` file (``docs/format.md`` §7: written by
:func:`split_dataset.save`, the :class:`~split_dataset.SplitDatasetWriter` and dask saves as
each block is written) every block's SHA-256 is compared with it, so a changed byte is
found even where the damaged block still decodes.
"""

from __future__ import annotations

import collections
import math
import os
import stat
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .dataset import SplitDataset
from .errors import ChunkIndexError, CorruptBlockError, MetadataError, TruncatedDatasetWarning
from .grid import BlockGrid
from .info import block_codec, info
from .locks import LOCK_FILENAME, live_writer, writer_gone
from .metadata import Metadata
from .opening import choose_prefix, read_metadata, resolve_root
from .remote.store import is_url
from .storage import (
    CHECKSUM_FILENAME,
    CHUNK_INDEX_FILENAME,
    METADATA_FILENAME,
    BlockHandle,
    block_name,
    index_block,
    open_block,
    pool,
    read_checksums,
    read_index,
    scan_block_files,
    sha256_file,
)
from .verify_report import Problem, VerifyReport

__all__ = ["Problem", "VerifyReport", "block_codec", "info", "verify"]

#: ``progress(done, total)``: called with ``done == 0`` first, then after each unit of work.
Progress = Callable[[int, int], None]


#: Above this many chunks per block, stored chunks are counted, not listed one by one.
_LIST_CHUNKS = 1 << 20


def _stored_offsets(dset: Any) -> set[tuple[int, ...]]:
    """The offsets of the chunks stored in `dset`'s index (as many as the file holds, no more)."""
    found: set[tuple[int, ...]] = set()
    try:
        dset.id.chunk_iter(lambda c: found.add(tuple(c.chunk_offset)))
    except (AttributeError, RuntimeError):  # pragma: no cover - HDF5 before 1.12.3 / 1.10.10
        for i in range(dset.id.get_num_chunks()):
            found.add(tuple(dset.id.get_chunk_info(i).chunk_offset))
    return found


def _unstored_chunks(handle: BlockHandle, shape: tuple[int, ...], stored: int, total: int) -> str | None:
    """Why ``block[:shape]`` is not whole although every chunk its file stores decodes: chunks it
    needs were never written (they would read as the fill value, silently); None if it is whole.

    `stored` and `total` are what :meth:`~split_dataset.storage.BlockHandle.check_chunks` returned.
    Reads the chunk index only, and never walks more than ``_LIST_CHUNKS`` chunk positions.
    """
    if not shape or math.prod(shape) == 0:
        return None
    dset = handle.dset
    chunks = handle.chunks
    if chunks is None:
        try:
            written = dset.id.get_offset() is not None
        except Exception:
            return None
        return None if written else "its array has no data stored (it would read as the fill value)"
    if stored >= total:
        return None
    grid = [-(-n // c) for n, c in zip(shape, chunks)]
    expected = math.prod(grid)
    found = _stored_offsets(dset)
    inside = sum(1 for o in found if all(a < n for a, n in zip(o, shape)))
    if inside >= expected:
        return None
    if expected > _LIST_CHUNKS:
        return f"only {inside} of the {expected} chunks it needs are stored (the others would read as the fill value)"
    for idx in np.ndindex(*grid):
        offset = tuple(i * c for i, c in zip(idx, chunks))
        if offset not in found:
            return (f"{expected - inside} of its {expected} chunks are not stored, first at {offset} (they would "
                    "read as the fill value)")
    return None  # pragma: no cover - inside < expected leaves one position unstored


def verify(
    path: str | os.PathLike[str],
    *,
    prefix: str | None = None,
    progress: Progress | None = None,
    storage_options: dict[str, Any] | None = None,
) -> VerifyReport:
    """Check that a split dataset is whole: every block present, decodable, consistent, unchanged.

    Every block file the metadata describes is opened read-only and every chunk it stores decoded,
    and its shape and dtype are compared with what the metadata says. If the folder
    holds ``SHA256SUMS`` (datasets written by this package), the SHA-256 of every block
    is compared with it and blocks without a line are flagged; datasets from older
    writers have no checksums, which the report says (``checksums_available``). While a
    live writer holds the folder, its newest blocks without a line yet (the writer appends
    it after each block) are a note, not a problem. A ``SHA256SUMS`` that is a symbolic
    link, or not a regular file, is a problem and is never read.

    Parameters
    ----------
    path
        The dataset folder.
    prefix
        Block-name prefix, as for :class:`~split_dataset.SplitDataset`.
    progress
        Called as ``progress(done, total)`` with the number of blocks checked.
    storage_options
        For a dataset given by URL (``s3://bucket/ds``, ``https://host/ds``, any fsspec URL;
        the ``remote`` extra): options for fsspec. Such a dataset is checked by
        :func:`split_dataset.remote.check.verify_remote`: each block object is fetched once,
        whole, and checked as a local block file is; problems name the objects' URLs.

    Returns
    -------
    VerifyReport
        ``report.ok`` is True only if nothing is wrong; ``report.problems`` names every
        missing, corrupt or inconsistent file.

    Raises
    ------
    FileNotFoundError
        `path` does not exist.
    NotASplitDatasetError
        `path` holds no split dataset at all. (Unreadable metadata is reported as a
        problem, not raised.)

    Examples
    --------
    >>> import numpy as np, split_dataset, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "ds")
    >>> _ = split_dataset.save(np.zeros((10, 4, 4), "uint16"), path, (5,))
    >>> report = verify(path)
    >>> report.ok, report.n_checked, report.checksums_available
    (True, 2, True)
    >>> os.remove(os.path.join(path, "0001.h5"))
    >>> [(p.file, p.kind) for p in verify(path).problems]
    [('0001.h5', 'missing')]
    """
    if is_url(path):
        from .remote.check import verify_remote

        return verify_remote(str(path), prefix=prefix, progress=progress, storage_options=storage_options)
    if storage_options:
        raise TypeError(f"storage_options apply to datasets given by URL; {str(path)!r} is a local path")
    root = resolve_root(path)
    report = VerifyReport(path=root)
    groups = scan_block_files(root)
    prefix = choose_prefix(root, groups, prefix)
    present = groups.get(prefix, {})
    try:
        meta_path, _, meta = read_metadata(root, present)
        meta_file = meta_path.name
    except MetadataError as e:
        name = METADATA_FILENAME if (root / METADATA_FILENAME).is_file() else (present[max(present)] if present else "")
        report.problems.append(Problem(name, "metadata", f"the metadata cannot be read: {e}"))
        return report

    # what a reader would say when opening it (a stopped acquisition, say); whatever stops
    # SplitDataset from opening it is a problem, even if the block checks below find nothing
    reader_dtype, open_problem = _try_open(lambda: SplitDataset(root, prefix), str(root), report,
                                           lambda culprit: Path(culprit).name if culprit is not None else meta_file)

    grid = BlockGrid(meta.shape, meta.shape_block, meta.padding)
    report.n_blocks = grid.n_blocks
    sums, sums_problem = _read_sums(root)
    report.checksums_available = sums is not None
    if sums_problem is not None:
        report.problems.append(sums_problem)
    elif sums is None:
        report.notes.append(
            f"checksums not available: no {CHECKSUM_FILENAME} (written by an older writer); every block was "
            "decoded and checked against the metadata, but a changed byte that still decodes cannot be detected"
        )
    holder = live_writer(root)
    if holder is not None:
        report.notes.append(
            f"a writer holds this dataset ({holder}, lock file {LOCK_FILENAME}): it may still be growing")
    else:
        gone = writer_gone(root)
        if gone is not None:
            report.notes.append(
                f"the writer that held this dataset is gone: {gone} no longer runs (its lock file {LOCK_FILENAME} "
                "remains, and is taken over by the next writer); the frames it wrote are readable. To continue "
                "the acquisition: SplitDatasetWriter(path, frame_shape, dtype, frames_per_file, mode=\"a\")"
            )
    if meta.complete is False:
        report.notes.append("the metadata marks the acquisition as not complete (still running, or stopped early)")

    found_dtypes: dict[int, np.dtype] = {}
    total = grid.n_blocks
    # a live writer appends a block's SHA256SUMS line just after renaming the block into place:
    # the newest blocks (after the last one listed) may have none yet
    pending: set[int] = set()
    if holder is not None and sums is not None:
        last = max((i for i in present if block_name(i, prefix) in sums), default=-1)
        pending = {i for i in present if last < i < total}
    if progress is not None:
        progress(0, total)
    for index in range(total):
        name = block_name(index, prefix)
        coords = grid.coords(index)
        if index not in present:
            listed = " (listed in SHA256SUMS)" if sums and name in sums else ""
            report.problems.append(
                Problem(name, "missing",
                        f"block {coords} is missing: the metadata describes it, the file is not there{listed}")
            )
        else:
            _check_block(root / name, index, coords, grid, meta, sums, report, found_dtypes, index in pending)
        if progress is not None:
            progress(index + 1, total)

    _check_dtypes(found_dtypes, meta, reader_dtype, grid, report, lambda i: block_name(i, prefix))
    _check_chunk_index(root, prefix, grid, present, meta.data_key, report)
    if report.n_checksums_pending:
        names = [block_name(i, prefix) for i in sorted(pending)]
        shown = ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")
        report.notes.append(
            f"{report.n_checksums_pending} newest block(s) ({shown}) have no line in {CHECKSUM_FILENAME} yet: the "
            "live writer adds it after each block; decoded and checked against the metadata, checksum not checked"
        )
    if open_problem is not None:
        report.problems.append(open_problem)
    report.problems.sort(key=lambda p: (p.file != meta_file, len(p.file), p.file))

    if sums is not None:
        grid_names = {block_name(i, prefix) for i in range(total)}
        beyond = sorted(n for n in sums if n not in grid_names)
        for n in beyond:
            if not (root / n).exists():
                report.problems.append(Problem(n, "missing", f"listed in {CHECKSUM_FILENAME} but not on disk"))
        extra = [n for n in beyond if (root / n).exists()]
        if extra:
            report.notes.append(
                f"{len(extra)} file(s) listed in {CHECKSUM_FILENAME} lie beyond what the metadata describes "
                f"({', '.join(extra[:3])}{'...' if len(extra) > 3 else ''}); not checked"
            )
    return report


def _try_open(opener: Callable[[], SplitDataset], where: str, report: VerifyReport,
              name_of: Callable[[Any], str]) -> tuple[np.dtype | None, Problem | None]:
    """Open the dataset as a reader would: (its dtype, or the problem that stopped it; named by
    ``name_of(the error's path or None)``). What it warns of a truncated acquisition becomes a note."""
    reader_dtype: np.dtype | None = None
    problem: Problem | None = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with opener() as ds:
                reader_dtype = ds.dtype
        except Exception as e:
            problem = Problem(name_of(getattr(e, "path", None)), "open",
                              f"opening the dataset (split_dataset.open) raises {type(e).__name__}: {_one_line(e)}")
    for w in caught:
        if issubclass(w.category, TruncatedDatasetWarning):
            report.notes.append(str(w.message).replace(f"{where!r}: ", ""))
    return reader_dtype, problem


def _check_dtypes(found_dtypes: dict[int, np.dtype], meta: Metadata, reader_dtype: np.dtype | None,
                  grid: BlockGrid, report: VerifyReport, file: Callable[[int], str]) -> None:
    """A "mismatch" problem (under ``file(index)``) for each block whose dtype is not the expected one:
    the metadata's; for old datasets that do not record it, what the reader uses (or most blocks have)."""
    expected_dtype = meta.dtype or reader_dtype
    if expected_dtype is None and found_dtypes:
        expected_dtype = collections.Counter(found_dtypes.values()).most_common(1)[0][0]
    for index, dt in found_dtypes.items():
        if dt != expected_dtype:
            where = "the metadata says" if meta.dtype is not None else "the other blocks hold"
            report.problems.append(
                Problem(file(index), "mismatch", f"block {grid.coords(index)} holds {dt}; {where} {expected_dtype}")
            )


def _check_block(
    path: Path,
    index: int,
    coords: tuple[int, ...],
    grid: BlockGrid,
    meta: Metadata,
    sums: dict[str, str] | None,
    report: VerifyReport,
    found_dtypes: dict[int, np.dtype],
    pending: bool = False,
) -> None:
    name = path.name
    try:
        regular = stat.S_ISREG(os.stat(path).st_mode)
    except OSError as e:
        report.problems.append(Problem(name, "corrupt", f"block {coords} cannot be examined: {_one_line(e)}"))
        return
    if not regular:  # a FIFO, a device, a folder: never opened, never read
        report.problems.append(Problem(name, "corrupt", f"block {coords} is not a regular file"))
        return
    digest = pool().submit(sha256_file, path) if sums is not None and name in sums else None
    try:
        handle = open_block(path, coords, path.parent, meta.data_key, 1 << 20)
    except Exception as e:
        cause = e.__cause__ if isinstance(e, CorruptBlockError) and e.__cause__ is not None else e
        report.problems.append(Problem(name, "corrupt", f"block {coords} cannot be opened: {_one_line(cause)}"))
    else:
        try:
            _check_handle(handle, name, index, coords, grid, meta, report, found_dtypes)
        finally:
            handle.close()
    _check_sum(name, digest, sums, report, pending)


def _check_handle(handle: BlockHandle, file: str, index: int, coords: tuple[int, ...], grid: BlockGrid,
                  meta: Metadata, report: VerifyReport, found_dtypes: dict[int, np.dtype]) -> None:
    """The checks of one open block, wherever its bytes come from: its shape against the metadata's
    grid, its dtype recorded in `found_dtypes` (compared once all are known), and, if both fit,
    every chunk it stores decoded and the chunks it needs but does not store found. Problems
    are reported under `file`; a block found whole counts in ``report.n_checked``."""
    expected = grid.block_shape(coords)
    shape = tuple(handle.shape)
    ok_shape = shape == expected
    if not ok_shape and meta.complete is False and coords[0] == grid.grid_shape[0] - 1:
        ok_shape = (len(shape) == len(expected) and shape[1:] == expected[1:]
                    and shape[0] >= expected[0])  # a live writer's growing block
    if not ok_shape:
        report.problems.append(
            Problem(file, "mismatch", f"block {coords} holds an array of shape {shape}; the metadata says "
                    f"{expected} (not decoded)")
        )
    found_dtypes[index] = handle.dtype
    ok_dtype = meta.dtype is None or handle.dtype == meta.dtype  # else reported with the other dtypes
    if ok_shape and ok_dtype:  # decode only what the metadata describes, and only if it fits
        try:  # every chunk the file stores, validated and decoded; bounded by the file's size
            stored, total = handle.check_chunks()
            unstored = _unstored_chunks(handle, expected, stored, total)
        except Exception as e:
            report.problems.append(
                Problem(file, "corrupt", f"block {coords} cannot be decoded: {_one_line(e)}"))
        else:
            if unstored is not None:
                report.problems.append(Problem(file, "corrupt", f"block {coords}: {unstored}"))
            else:
                report.n_checked += 1


def _check_sum(name: str, digest: Any, sums: dict[str, str] | None, report: VerifyReport, pending: bool,
               file: str | None = None) -> None:
    """Block `name`'s SHA-256 (``digest.result()``, a future) against its line in `sums`; problems are
    reported under `file` (default: `name`)."""
    file = name if file is None else file
    if sums is None:
        return
    if digest is None and pending:  # a live writer's newest block: its line is not written yet
        report.n_checksums_pending += 1
        return
    if digest is None:
        report.problems.append(
            Problem(file, "no-checksum", f"{CHECKSUM_FILENAME} has no line for this block; it cannot be checked")
        )
        return
    try:
        actual = digest.result()
    except OSError as e:
        report.problems.append(Problem(file, "corrupt", f"cannot be read to compute its checksum: {_one_line(e)}"))
        return
    if actual != sums[name]:
        report.problems.append(
            Problem(file, "checksum", f"SHA-256 {actual[:12]}... differs from {sums[name][:12]}... recorded in "
                    f"{CHECKSUM_FILENAME} when the block was written: the file changed since")
        )
    else:
        report.n_checksums_matched += 1


def _read_sums(root: Path) -> tuple[dict[str, str] | None, Problem | None]:
    """``SHA256SUMS`` as ``{name: digest}`` (None if absent), or a problem if it is not a regular
    file of its own: a symbolic link is never followed (its target could be anything, anywhere)."""
    path = root / CHECKSUM_FILENAME
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None, None
    except OSError as e:
        return None, Problem(CHECKSUM_FILENAME, "corrupt", f"cannot be examined: {_one_line(e)}; checksums not checked")
    if stat.S_ISLNK(mode):
        return None, Problem(CHECKSUM_FILENAME, "corrupt", "is a symbolic link, not followed (a dataset's checksums "
                             "must be a file of its own); checksums not checked")
    if not stat.S_ISREG(mode):
        return None, Problem(CHECKSUM_FILENAME, "corrupt", "is not a regular file, not read; checksums not checked")
    try:
        return read_checksums(root), None
    except OSError as e:
        return None, Problem(CHECKSUM_FILENAME, "corrupt", f"cannot be read: {_one_line(e)}; checksums not checked")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _check_chunk_index(root: Path, prefix: str, grid: BlockGrid, present: Any, key: str | None,
                       report: VerifyReport) -> None:
    """``chunk_index.bin``: a damaged one is a problem; a block whose file is the one indexed
    must still have the indexed chunks, with the recorded checksums; stale records are a note."""
    try:
        index = read_index(root, prefix)
    except ChunkIndexError as e:
        report.problems.append(Problem(CHUNK_INDEX_FILENAME, "corrupt", f"{_one_line(e)}; readers ignore it "
                                       "(`split-dataset index --rebuild` writes it again)"))
        return
    if index is None:
        return
    stale = []
    for record in index.records():
        name = block_name(record.block, prefix)
        if record.block not in present or record.block >= grid.n_blocks:
            continue
        try:
            if not record.matches(os.stat(root / name)):
                stale.append(name)
                continue
            fresh = index_block(root / name, record.block, grid.coords(record.block), key)
        except (OSError, ValueError, RuntimeError):
            continue  # the block itself is reported above
        if fresh is None or not np.array_equal(fresh.entries, record.entries):
            report.problems.append(Problem(name, "changed", _index_difference(record.entries, fresh)))
    if stale:
        shown = ", ".join(stale[:3]) + (" ..." if len(stale) > 3 else "")
        report.notes.append(f"{CHUNK_INDEX_FILENAME} is out of date for {len(stale)} block(s) ({shown}): replaced or "
                            "copied since it was written; readers read them through HDF5 (`split-dataset index` "
                            "updates it)")


def _index_difference(recorded: np.ndarray, fresh: Any, identity: str = "size, time and inode") -> str:
    """What differs between a block's chunks as indexed and as they are now (`identity`: what
    showed the file to be the one indexed)."""
    if fresh is None:
        return f"its chunks can no longer be read directly, but {CHUNK_INDEX_FILENAME} indexed them"
    now = {int(e["chunk"]): e for e in fresh.entries}
    for e in recorded:
        other = now.get(int(e["chunk"]))
        if other is None:
            return f"chunk {int(e['chunk'])} is indexed in {CHUNK_INDEX_FILENAME} but no longer stored"
        if other["hash"] != e["hash"]:
            return (f"chunk {int(e['chunk'])} (bytes {int(e['addr'])}..{int(e['addr']) + int(e['size'])}) does not "
                    f"match its checksum in {CHUNK_INDEX_FILENAME}: its bytes changed in place since the block was "
                    f"indexed ({identity} unchanged)")
        if (other["addr"], other["size"]) != (e["addr"], e["size"]):
            return f"chunk {int(e['chunk'])} moved within the file since {CHUNK_INDEX_FILENAME} was written"
    return f"it stores chunks {CHUNK_INDEX_FILENAME} does not list, although the file is the one indexed"
