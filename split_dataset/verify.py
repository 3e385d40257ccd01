"""Inspecting a split dataset: :func:`info` (what it holds) and :func:`verify` (whether it is whole).

Both return plain data (a dict, a :class:`VerifyReport`) and never print; the
``split-dataset info`` and ``split-dataset verify`` commands format them.

:func:`verify` works from the metadata and the files on disk, independently of the
reader's own reconciliation: every block file the metadata describes is opened and
decoded in full, its shape and dtype are compared with the metadata, and where the
folder holds a ``SHA256SUMS`` file (written by :func:`split_dataset.save`, the
:class:`~split_dataset.SplitDatasetWriter` and dask saves as each block is written)
every block's SHA-256 is compared with it, so a changed byte is found even where the
damaged block still decodes.
"""

from __future__ import annotations

import collections
import math
import os
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .dataset import SplitDataset, TruncatedDatasetWarning, choose_prefix, read_metadata, resolve_root
from .errors import CorruptBlockError, MetadataError
from .locks import LOCK_FILENAME, live_writer, writer_gone
from .grid import BlockGrid
from .metadata import Metadata
from .storage import (
    BLOSC_FILTER,
    SHUFFLE_CODES,
    CHECKSUM_FILENAME,
    METADATA_FILENAME,
    BlockHandle,
    open_block,
    block_name,
    pool,
    read_checksums,
    scan_block_files,
    sha256_file,
)

__all__ = ["Problem", "VerifyReport", "verify", "info", "block_codec"]

#: ``progress(done, total)``: called with ``done == 0`` first, then after each unit of work.
Progress = Callable[[int, int], None]

#: Bytes decoded at a time while verifying a block (bounds memory for very large blocks).
_DECODE_BYTES = 64 << 20


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one file of a dataset.

    Attributes
    ----------
    file
        File name inside the dataset folder (``0003.h5``, ``stack_metadata.json``).
    kind
        ``"missing"`` (a block file the metadata describes is not there), ``"corrupt"``
        (cannot be opened or decoded), ``"mismatch"`` (shape or dtype differ from the
        metadata), ``"checksum"`` (the bytes changed since the block was written),
        ``"no-checksum"`` (``SHA256SUMS`` exists but has no line for this block),
        ``"metadata"`` (the metadata cannot be read) or ``"open"`` (opening the dataset with
        :class:`~split_dataset.SplitDataset` raises; the message names the exception).
    message
        One human-readable sentence.
    """

    file: str
    kind: str
    message: str


@dataclass
class VerifyReport:
    """What :func:`verify` found.

    Attributes
    ----------
    path
        The dataset folder.
    n_blocks
        Block files the metadata describes.
    n_checked
        Block files opened and decoded in full.
    checksums_available
        Whether the folder has a ``SHA256SUMS`` file (datasets from older writers do not).
    n_checksums_matched
        Blocks whose SHA-256 was computed and equals their line in ``SHA256SUMS``
        (``n_blocks`` when every checksum was verified; fewer when some failed, could not be
        computed, or the block is missing).
    problems
        Every missing, corrupt or inconsistent file, in file order.
    notes
        Things worth knowing that do not make the dataset damaged.
    """

    path: Path
    n_blocks: int = 0
    n_checked: int = 0
    checksums_available: bool = False
    n_checksums_matched: int = 0
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True only if every block is present, decodes, matches the metadata and its checksum."""
        return not self.problems

    @property
    def checksums_verified(self) -> bool:
        """True only if ``SHA256SUMS`` exists and every block's SHA-256 was computed and matches it."""
        return self.checksums_available and self.n_checksums_matched == self.n_blocks and not any(
            p.kind in ("checksum", "no-checksum") for p in self.problems)

    @property
    def damaged_files(self) -> list[str]:
        """Names of the files with at least one problem (each once, in order)."""
        return list(dict.fromkeys(p.file for p in self.problems))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form (stable keys, for ``split-dataset verify --json``)."""
        return {
            "path": str(self.path),
            "ok": self.ok,
            "n_blocks": self.n_blocks,
            "n_checked": self.n_checked,
            "checksums_available": self.checksums_available,
            "checksums_matched": self.n_checksums_matched,
            "checksums_verified": self.checksums_verified,
            "problems": [{"file": p.file, "kind": p.kind, "message": p.message} for p in self.problems],
            "notes": list(self.notes),
        }


#: Above this many chunks per block, stored chunks are counted, not listed one by one.
_LIST_CHUNKS = 1 << 20


def _unstored_chunks(handle: BlockHandle, shape: tuple[int, ...]) -> str | None:
    """Why `handle` does not store every chunk of ``block[:shape]`` (they would read as the fill
    value, silently), or None if it does. Cheap: the chunk index only, no data is read."""
    dset = handle.dset
    if not shape or math.prod(shape) == 0:
        return None
    if dset.chunks is None:
        try:
            stored = dset.id.get_offset() is not None
        except Exception:  # noqa: BLE001 - pragma: no cover - compact layout and the like
            return None
        return None if stored else "its array has no data stored (it would read as the fill value)"
    grid = [-(-n // c) for n, c in zip(shape, dset.chunks)]
    expected = math.prod(grid)
    try:
        n_stored = dset.id.get_num_chunks()
    except Exception:  # noqa: BLE001 - pragma: no cover - HDF5 without it
        return None
    if n_stored < expected and expected > _LIST_CHUNKS:
        return f"only {n_stored} of the {expected} chunks it needs are stored (the others would read as the fill value)"
    if expected > _LIST_CHUNKS:
        return None
    try:
        size: int | None = os.stat(handle.file.filename).st_size
    except (OSError, TypeError, ValueError):  # pragma: no cover
        size = None
    found: set[tuple[int, ...]] = set()

    def seen(info: Any) -> None:
        addr, nbytes = info.byte_offset, info.size
        if addr is not None and nbytes and (size is None or addr + nbytes <= size):
            found.add(tuple(info.chunk_offset))

    try:
        dset.id.chunk_iter(seen)
    except Exception:  # noqa: BLE001 - pragma: no cover - old HDF5 without chunk_iter
        return None
    chunks = dset.chunks
    for idx in np.ndindex(*grid):
        if tuple(i * c for i, c in zip(idx, chunks)) not in found:
            missing = expected - sum(1 for o in found if all(a < n for a, n in zip(o, shape)))
            return (f"{missing} of its {expected} chunks are not stored or lie outside the file, first at "
                    f"{tuple(i * c for i, c in zip(idx, chunks))} (they would read as the fill value)")
    return None


def _decode_fully(handle: BlockHandle, shape: tuple[int, ...]) -> None:
    """Decode ``block[:shape]`` through the package's reader, a slab of whole chunks at a time.

    Never HDF5's own blosc filter (which trusts damaged headers), never more than `shape`
    (what the metadata justifies), at most about ``_DECODE_BYTES`` at a time.
    """
    if not shape or math.prod(shape) == 0:
        return
    row = max(1, math.prod(shape[1:]) * handle.dtype.itemsize)
    unit = handle.chunks[0] if handle.chunks else 1
    step = max(unit, (_DECODE_BYTES // row) // unit * unit)
    rest = tuple(slice(0, n) for n in shape[1:])
    buf = np.empty((min(step, shape[0]),) + tuple(shape[1:]), handle.dtype)
    for start in range(0, shape[0], step):
        stop = min(start + step, shape[0])
        handle.read((slice(start, stop),) + rest, buf, (slice(0, stop - start),) + rest)


def verify(
    path: str | os.PathLike[str],
    *,
    prefix: str | None = None,
    progress: Progress | None = None,
) -> VerifyReport:
    """Check that a split dataset is whole: every block present, decodable, consistent, unchanged.

    Every block file the metadata describes is opened read-only and decoded in full,
    and its shape and dtype are compared with what the metadata says. If the folder
    holds ``SHA256SUMS`` (datasets written by this package), the SHA-256 of every block
    is compared with it and blocks without a line are flagged; datasets from older
    writers have no checksums, which the report says (``checksums_available``).

    Parameters
    ----------
    path
        The dataset folder.
    prefix
        Block-name prefix, as for :class:`~split_dataset.SplitDataset`.
    progress
        Called as ``progress(done, total)`` with the number of blocks checked.

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
    reader_dtype: np.dtype | None = None
    open_problem: Problem | None = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with SplitDataset(root, prefix) as ds:
                reader_dtype = ds.dtype
        except Exception as e:  # noqa: BLE001 - any exception opening it is reported, never swallowed
            culprit = getattr(e, "path", None)
            open_problem = Problem(
                Path(culprit).name if culprit is not None else meta_file, "open",
                f"opening the dataset (split_dataset.open) raises {type(e).__name__}: {_one_line(e)}",
            )
    for w in caught:
        if issubclass(w.category, TruncatedDatasetWarning):
            report.notes.append(str(w.message).replace(f"{str(root)!r}: ", ""))

    grid = BlockGrid(meta.shape, meta.shape_block, meta.padding)
    report.n_blocks = grid.n_blocks
    sums = read_checksums(root)
    report.checksums_available = sums is not None
    if sums is None:
        report.notes.append(
            f"checksums not available: no {CHECKSUM_FILENAME} (written by an older writer); every block was "
            "decoded and checked against the metadata, but a changed byte that still decodes cannot be detected"
        )
    holder = live_writer(root)
    if holder is not None:
        report.notes.append(f"a writer holds this dataset ({holder}, lock file {LOCK_FILENAME}): it may still be growing")
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
    if progress is not None:
        progress(0, total)
    for index in range(total):
        name = block_name(index, prefix)
        coords = grid.coords(index)
        if index not in present:
            listed = " (listed in SHA256SUMS)" if sums and name in sums else ""
            report.problems.append(
                Problem(name, "missing", f"block {coords} is missing: the metadata describes it, the file is not there{listed}")
            )
        else:
            _check_block(root / name, index, coords, grid, meta, sums, report, found_dtypes)
        if progress is not None:
            progress(index + 1, total)

    # dtype: the metadata's; for old datasets that do not record it, what the reader uses (or most blocks have)
    expected_dtype = meta.dtype or reader_dtype
    if expected_dtype is None and found_dtypes:
        expected_dtype = collections.Counter(found_dtypes.values()).most_common(1)[0][0]
    for index, dt in found_dtypes.items():
        if dt != expected_dtype:
            name = block_name(index, prefix)
            where = "the metadata says" if meta.dtype is not None else "the other blocks hold"
            report.problems.append(
                Problem(name, "mismatch", f"block {grid.coords(index)} holds {dt}; {where} {expected_dtype}")
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


def _check_block(
    path: Path,
    index: int,
    coords: tuple[int, ...],
    grid: BlockGrid,
    meta: Metadata,
    sums: dict[str, str] | None,
    report: VerifyReport,
    found_dtypes: dict[int, np.dtype],
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
    except Exception as e:  # noqa: BLE001 - anything that stops a block from opening makes it corrupt
        cause = e.__cause__ if isinstance(e, CorruptBlockError) and e.__cause__ is not None else e
        report.problems.append(Problem(name, "corrupt", f"block {coords} cannot be opened: {_one_line(cause)}"))
    else:
        try:
            expected = grid.block_shape(coords)
            shape = tuple(handle.shape)
            ok_shape = shape == expected
            if not ok_shape and meta.complete is False and coords[0] == grid.grid_shape[0] - 1:
                ok_shape = (len(shape) == len(expected) and shape[1:] == expected[1:]
                            and shape[0] >= expected[0])  # a live writer's growing block
            if not ok_shape:
                report.problems.append(
                    Problem(name, "mismatch", f"block {coords} holds an array of shape {shape}; the metadata says "
                            f"{expected} (not decoded)")
                )
            found_dtypes[index] = handle.dtype
            ok_dtype = meta.dtype is None or handle.dtype == meta.dtype  # else reported with the other dtypes
            if ok_shape and ok_dtype:  # decode only what the metadata describes, and only if it fits
                try:
                    unstored = _unstored_chunks(handle, expected)
                    if unstored is not None:
                        report.problems.append(Problem(name, "corrupt", f"block {coords}: {unstored}"))
                        return _check_sum(name, digest, sums, report)
                    _decode_fully(handle, expected)
                    report.n_checked += 1
                except Exception as e:  # noqa: BLE001 - a block that does not decode is corrupt, whatever raised
                    report.problems.append(Problem(name, "corrupt", f"block {coords} cannot be decoded: {_one_line(e)}"))
        finally:
            handle.close()
    _check_sum(name, digest, sums, report)


def _check_sum(name: str, digest: Any, sums: dict[str, str] | None, report: VerifyReport) -> None:
    if sums is None:
        return
    if digest is None:
        report.problems.append(
            Problem(name, "no-checksum", f"{CHECKSUM_FILENAME} has no line for this block; it cannot be checked")
        )
        return
    try:
        actual = digest.result()
    except OSError as e:
        report.problems.append(Problem(name, "corrupt", f"cannot be read to compute its checksum: {_one_line(e)}"))
        return
    if actual != sums[name]:
        report.problems.append(
            Problem(name, "checksum", f"SHA-256 {actual[:12]}... differs from {sums[name][:12]}... recorded in "
                    f"{CHECKSUM_FILENAME} when the block was written: the file changed since")
        )
    else:
        report.n_checksums_matched += 1


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


# ----------------------------------------------------------------------------- info

_BLOSC_CNAMES = {0: "blosclz", 1: "lz4", 2: "lz4hc", 3: "snappy", 4: "zlib", 5: "zstd"}  # blosc's compressor codes
_SHUFFLES = {code: name for name, code in SHUFFLE_CODES.items()}


def block_codec(dset: Any) -> dict[str, Any]:
    """The codec of an h5py dataset, described as :meth:`split_dataset.Codec.describe` does.

    Used for datasets whose metadata does not record the compression (old writers).

    Examples
    --------
    >>> import h5py, io
    >>> with h5py.File(io.BytesIO(), "w") as f:
    ...     block_codec(f.create_dataset("x", (4, 4), "u2", chunks=(2, 4), compression="gzip"))
    {'name': 'gzip', 'clevel': 4, 'shuffle': 'none'}
    """
    plist = dset.id.get_create_plist()
    filters = [plist.get_filter(i) for i in range(plist.get_nfilters())]
    codes = [f[0] for f in filters]
    for code, _flags, cd, _name in filters:
        if code == BLOSC_FILTER:
            cd = tuple(cd)
            return {
                "name": "blosc",
                "cname": _BLOSC_CNAMES.get(cd[6] if len(cd) > 6 else 0, "unknown"),
                "clevel": int(cd[4]) if len(cd) > 4 else 5,
                "shuffle": _SHUFFLES.get(int(cd[5]) if len(cd) > 5 else 1, "unknown"),
            }
        if code == 1:  # deflate
            return {"name": "gzip", "clevel": int(cd[0]) if cd else 6, "shuffle": "byte" if 2 in codes else "none"}
    if not filters:
        return {"name": "none"}
    return {"name": "other", "filters": [f[3].decode(errors="replace") if isinstance(f[3], bytes) else str(f[3])
                                         for f in filters]}


def info(path: str | os.PathLike[str], *, prefix: str | None = None) -> dict[str, Any]:
    """Everything ``split-dataset info`` shows, as a JSON-serialisable dict with stable keys.

    Keys: ``path``, ``shape``, ``shape_in_metadata``, ``dtype``, ``shape_block``,
    ``chunks``, ``padding``, ``n_blocks``, ``n_blocks_present``, ``missing_blocks``,
    ``codec``, ``nbytes`` (uncompressed), ``bytes_on_disk`` (sum of the block files),
    ``compression_ratio`` (nbytes / bytes_on_disk, None if nothing is on disk),
    ``axis_order``, ``resolution``, ``units``, ``frame_interval``, ``frame_rate``,
    ``attrs``, ``complete`` (True, False or None when the writer did not say),
    ``checksums`` (whether ``SHA256SUMS`` exists) and ``warnings`` (what opening said).

    Examples
    --------
    >>> import numpy as np, split_dataset, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "ds")
    >>> _ = split_dataset.save(np.zeros((10, 4, 4), "uint16"), path, (5,), resolution=(2, 1, 1))
    >>> d = info(path)
    >>> d["shape"], d["dtype"], d["n_blocks"], d["codec"]["name"], d["resolution"], d["complete"]
    ([10, 4, 4], 'uint16', 2, 'blosc', [2.0, 1.0, 1.0], True)
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = SplitDataset(path, prefix)
    with ds:
        root = ds.root
        missing = set(ds.missing_blocks)
        present = [i for i in range(ds.n_blocks) if i not in missing]
        files = ds.files.ravel()
        on_disk = 0
        for i in present:
            try:
                on_disk += files[i].stat().st_size
            except OSError:
                pass
        meta = ds.meta
        codec = meta.compression if isinstance(meta.compression, dict) else None
        chunks = list(meta.chunks) if meta.chunks is not None else None
        if (codec is None or chunks is None) and present:
            dset = ds._handle(present[0]).dset
            if codec is None:
                codec = block_codec(dset)
            if chunks is None and dset.chunks is not None:
                chunks = list(dset.chunks)
        try:
            claimed = list(Metadata.from_dict(ds.metadata).shape)
        except MetadataError:  # pragma: no cover - the dataset opened, so the metadata parses
            claimed = list(ds.shape)
        return {
            "path": str(root),
            "shape": list(ds.shape),
            "shape_in_metadata": claimed,
            "dtype": str(ds.dtype),
            "shape_block": list(ds.shape_block),
            "chunks": chunks,
            "padding": list(ds.padding),
            "n_blocks": ds.n_blocks,
            "n_blocks_present": len(present),
            "missing_blocks": [files[i].name for i in ds.missing_blocks],
            "codec": codec,
            "nbytes": int(ds.nbytes),
            "bytes_on_disk": int(on_disk),
            "compression_ratio": round(ds.nbytes / on_disk, 3) if on_disk else None,
            "axis_order": ds.axis_order,
            "resolution": [float(r) for r in ds.resolution],
            "units": list(ds.units),
            "frame_interval": ds.frame_interval,
            "frame_rate": ds.frame_rate,
            "attrs": dict(ds.attrs),
            "complete": ds.complete,
            "checksums": (root / CHECKSUM_FILENAME).is_file(),
            "warnings": [str(w.message) for w in caught],
        }
