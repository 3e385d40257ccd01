"""HDF5 block files: opening one safely, finding its array, writing one (``docs/format.md`` §4, §11).

Block files are HDF5 in the flammkuchen/PyTables layout: one array under
``stack``/``stack_{N}D``, reached through hard links only.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
from pathlib import Path
from typing import Any, NamedTuple

import h5py
import hdf5plugin  # noqa: F401  (registers the blosc filter 32001 every block file needs)
import numpy as np

from ..errors import UnsafeDatasetError
from . import blosc as _blosc
from .chunkindex import hdf5_index
from .codecs import Codec
from .files import fsync_dir, fsync_file, open_regular, regular_stat
from .indexfile import BlockRecord, block_record, chunk_hash, scan_entries
from .layout import temporary_name
from .threads import pool

__all__ = ["find_data_key", "open_readonly", "open_same", "default_chunks", "write_block_atomic", "StagedBlock",
           "stage_block", "commit_block", "discard_block", "FRAME_META_KEY", "read_frame_meta",
           "frame_meta_of"]

def find_data_key(f: h5py.File, preferred: str | None = None) -> str:
    """The block's array: `preferred`, else ``stack_{N}D``/``stack``, else the one dataset named ``stack*``.

    Every link on the way to it must be a hard link inside the file: an external or soft
    link, anywhere on a path like ``grp/stack_3D``, raises :class:`UnsafeDatasetError`.
    """
    if preferred:  # the usual case: found without listing the file's root group
        try:
            return _hard_path(f, preferred)
        except KeyError:
            pass
    names = sorted(k for k in f if k.startswith("stack") and k != "stack_metadata")
    for name in names:
        try:
            return _hard_path(f, name)
        except KeyError:
            continue
    raise KeyError(f"no dataset named 'stack*' in {f.filename!r}; found {sorted(f.keys())}")


def _hard_path(f: h5py.File, name: str) -> str:
    """`name` if it leads to a dataset through hard links only; KeyError if it leads nowhere."""
    node: Any = f
    parts = [p for p in name.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise KeyError(f"no dataset {name!r} in {f.filename!r}")
    for i, part in enumerate(parts):
        if not isinstance(node, h5py.Group):
            raise KeyError(f"no dataset {name!r} in {f.filename!r}: {'/'.join(parts[:i])!r} is not a group")
        link = node.get(part, getlink=True)
        if link is None:
            raise KeyError(f"no dataset {name!r} in {f.filename!r}; found {sorted(f.keys())}")
        if not isinstance(link, h5py.HardLink):
            raise UnsafeDatasetError(
                f"{f.filename!r}: {'/'.join(parts[:i + 1])!r} on the way to {name!r} is a {type(link).__name__}; "
                "refused (a link can lead outside the dataset folder)"
            )
        node = node[part]
    if not isinstance(node, h5py.Dataset):
        raise KeyError(f"{name!r} in {f.filename!r} is not a dataset")
    return "/".join(parts)


def open_readonly(path: Path, rdcc_nbytes: int = 1 << 20) -> h5py.File:
    """Open read-only with HDF5's default locking, or without locks where they fail.

    Blocks are immutable once renamed into place, so readers need no lock; but HDF5
    refuses to open a file twice in one process with different locking flags, so the
    default (what a user's own ``h5py.File(path)`` uses) is tried first. Where locks are
    unavailable (NFS: "No locks available") or the file was opened without locks
    elsewhere in this process, it is opened with ``locking=False``. Anything but a
    regular file (a FIFO, a device: opening those can block forever) raises
    :class:`NotRegularFileError` first.
    """
    regular_stat(path)
    try:
        return h5py.File(path, "r", rdcc_nbytes=rdcc_nbytes)
    except OSError as e:
        msg = str(e).lower()
        if "lock" not in msg:
            raise
    return h5py.File(path, "r", locking=False, rdcc_nbytes=rdcc_nbytes)


def open_same(path: Path, rdcc_nbytes: int) -> tuple[int, h5py.File]:
    """A descriptor and an h5py file of the same file at `path`, which a writer may replace
    (rename over) at any moment: the file HDF5 opened must be the one the descriptor holds
    (compared through HDF5's own descriptor where its driver has one, else by the path
    before and after: an A→B→A swap meanwhile could pass that)."""
    for _ in range(8):
        fd = open_regular(path)
        try:
            before = os.fstat(fd)
            f = open_readonly(path, rdcc_nbytes)
        except BaseException:
            os.close(fd)
            raise
        try:
            after = os.fstat(f.id.get_vfd_handle())
        except (OSError, ValueError, TypeError, AttributeError):  # a driver without a descriptor
            try:
                after = os.stat(path)
            except OSError:
                after = None
        if after is not None and (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino):
            return fd, f
        f.close()
        os.close(fd)
    raise OSError(f"{str(path)!r} kept being replaced while it was opened")


_FL_ROOT_ATTRS = {
    "CLASS": np.bytes_(b"GROUP"),
    "DEEPDISH_IO_VERSION": np.int64(12),
    "PYTABLES_FORMAT_VERSION": np.bytes_(b"2.1"),
    "TITLE": np.bytes_(b""),
    "VERSION": np.bytes_(b"1.0"),
}
_FL_ARRAY_ATTRS = {"CLASS": np.bytes_(b"CARRAY"), "TITLE": np.bytes_(b""), "VERSION": np.bytes_(b"1.1")}


def default_chunks(shape: tuple[int, ...], itemsize: int, target_bytes: int = 1 << 20) -> tuple[int, ...]:
    """HDF5 chunk shape inside a block: whole image planes (the last two axes), split in y if large.

    One plane per chunk makes ``ds[t, z]`` decode only what it returns, as PyTables'
    choice for the old files did.

    Examples
    --------
    >>> default_chunks((20, 10, 256, 256), 2)
    (1, 1, 256, 256)
    >>> default_chunks((10, 2048, 2048), 2)
    (1, 256, 2048)
    """
    if not shape or 0 in shape:
        return tuple(max(1, s) for s in shape)
    if len(shape) == 1:
        return (max(1, min(shape[0], target_bytes // itemsize)),)
    row = shape[-1] * itemsize
    if len(shape) == 2:
        return (max(1, min(shape[0], target_bytes // max(row, 1))), shape[-1])
    ny = max(1, min(shape[-2], target_bytes // max(row, 1)))
    return (1,) * (len(shape) - 2) + (ny, shape[-1])


def _chunk_grid(shape: tuple[int, ...], chunks: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Offsets of every HDF5 chunk of an array, in C order."""
    return list(itertools.product(*(range(0, s, c) for s, c in zip(shape, chunks))))


def _chunk_of(data: np.ndarray, offset: tuple[int, ...], chunks: tuple[int, ...]) -> np.ndarray:
    """The chunk at `offset`, zero-padded to the full chunk shape as HDF5 stores edge chunks."""
    region = data[tuple(slice(o, o + c) for o, c in zip(offset, chunks))]
    if region.shape == chunks:
        return np.ascontiguousarray(region)
    full = np.zeros(chunks, data.dtype)
    full[tuple(slice(0, n) for n in region.shape)] = region
    return full


def _write_block_file(f: h5py.File, data: np.ndarray, key: str, codec: Codec, chunks: tuple[int, ...] | None
                      ) -> Any:
    """Write the block's array; for blosc, returns what its chunk-index record needs (else None)."""
    for k, v in _FL_ROOT_ATTRS.items():
        f.attrs[k] = v
    kwargs: dict[str, Any] = {}
    ch: tuple[int, ...] | None = None
    if data.size and (codec.name != "none" or chunks):
        ch = tuple(min(c, s) for c, s in zip(chunks or default_chunks(data.shape, data.itemsize), data.shape))
        kwargs = dict(chunks=ch, **codec.h5py_kwargs())
    dset = f.create_dataset(key, shape=data.shape, dtype=data.dtype, **kwargs)
    for k, v in _FL_ARRAY_ATTRS.items():
        dset.attrs[k] = v
    if not data.size:
        return None
    blosc = (codec.blosc_args(ch[-1] * data.itemsize, math.prod(ch) * data.itemsize, data.itemsize)
             if ch is not None else None)
    if blosc is None:  # gzip, none: HDF5's own pipeline
        dset.write_direct(np.ascontiguousarray(data))
        return None
    # blosc: compress chunks on all cores outside HDF5's global lock, then store them as they are
    assert ch is not None
    offsets = _chunk_grid(data.shape, ch)
    write = dset.id.write_direct_chunk

    def encode(o: tuple[int, ...]) -> tuple[np.ndarray, int]:
        payload = _blosc.compress(_chunk_of(data, o, ch), *blosc)
        return payload, chunk_hash(payload)

    hashes = []
    for offset, (payload, digest) in zip(offsets, pool().map(encode, offsets)):
        write(offset, payload)
        hashes.append(digest)
    plist = dset.id.get_create_plist()
    if plist.get_nfilters() != 1:  # not blosc alone: not indexed
        return None
    stored = hdf5_index(dset)
    entries = scan_entries(offsets, [stored[o] for o in offsets], hashes, data.shape, ch)
    return functools.partial(block_record, name=str(dset.name), dtype=data.dtype, fillvalue=dset.fillvalue,
                             shape=data.shape, chunks=ch, cd=tuple(plist.get_filter(0)[2]), entries=entries)


class StagedBlock(NamedTuple):
    """A block file written completely under a temporary name, not yet renamed into place."""

    tmp: Path
    path: Path
    parts: Any  #: ``parts(block, stat)`` makes its chunk-index record (None: not indexed)


#: The per-frame metadata array in a block file (docs/format.md §4.3): one record per frame along axis 0.
FRAME_META_KEY = "frame_meta"


def stage_block(path: Path, data: np.ndarray, key: str, codec: Codec, chunks: tuple[int, ...] | None = None,
                frame_meta: np.ndarray | None = None) -> StagedBlock:
    """The first half of :func:`write_block_atomic`: the whole file under a temporary name beside
    `path` (removed again on any error). :func:`commit_block` or :func:`discard_block` follows.

    `frame_meta`, a structured array with one record per frame along axis 0, is stored beside
    the array as ``frame_meta`` (in the same file, so it lands with its frames)."""
    tmp = temporary_name(Path(path))
    try:
        with h5py.File(tmp, "x", libver=("earliest", "v110"), locking=False) as f:
            parts = _write_block_file(f, np.asarray(data), key, codec, chunks)
            if frame_meta is not None:
                f.create_dataset(FRAME_META_KEY, data=frame_meta)
    except BaseException:
        discard_block(StagedBlock(tmp, Path(path), None))
        raise
    return StagedBlock(tmp, Path(path), parts)


def discard_block(staged: StagedBlock) -> None:
    """Remove a staged block that will not be committed."""
    try:
        staged.tmp.unlink()
    except OSError:
        pass


def commit_block(staged: StagedBlock, *, fsync: bool = True, block: int = 0) -> BlockRecord | None:
    """The second half of :func:`write_block_atomic`: flush the staged file to the disk (with
    `fsync`), rename it over its final name, flush the folder; its chunk-index record."""
    try:
        if fsync:
            fsync_file(staged.tmp)
        os.replace(staged.tmp, staged.path)
    except BaseException:
        discard_block(staged)
        raise
    if fsync:
        fsync_dir(staged.path.parent)
    if staged.parts is None:
        return None
    return staged.parts(block, os.stat(staged.path))  # type: ignore[no-any-return]


def write_block_atomic(
    path: Path,
    data: np.ndarray,
    key: str,
    codec: Codec,
    chunks: tuple[int, ...] | None = None,
    *,
    fsync: bool = True,
    block: int = 0,
) -> BlockRecord | None:
    """Write one block file: `data` under `key`, compressed, renamed into place when complete.

    Blosc chunks are compressed in parallel (outside the GIL, see ``_blosc``) and written
    with ``write_direct_chunk``; the bytes are those HDF5's blosc filter would write.
    Returns the block's ``chunk_index.bin`` record (number `block`), from the chunks as
    written, with no second read; None for codecs that are not blosc.
    """
    return commit_block(stage_block(path, data, key, codec, chunks), fsync=fsync, block=block)


def read_frame_meta(path: Path, frames: int) -> np.ndarray | None:
    """The per-frame records stored in block file `path` (``frame_meta``), the first `frames` of them,
    or None where the block has none or they do not fit (wrong length, not a structured array)."""
    try:
        with open_readonly(path) as f:
            return frame_meta_of(f, frames)
    except (OSError, KeyError, TypeError, ValueError, RuntimeError):
        return None


def frame_meta_of(f: h5py.File, frames: int) -> np.ndarray | None:
    """:func:`read_frame_meta` of an open block file (None where it has no valid records)."""
    try:
        link = f.get(FRAME_META_KEY, getlink=True)
        if not isinstance(link, h5py.HardLink):
            return None
        d = f[FRAME_META_KEY]
        if not isinstance(d, h5py.Dataset) or d.ndim != 1 or d.dtype.names is None or d.shape[0] < frames:
            return None
        if any(d.dtype[n].kind not in "iuf" or d.dtype[n].shape for n in d.dtype.names):
            return None
        out: np.ndarray = d[:frames]
        return out
    except (OSError, KeyError, TypeError, ValueError, RuntimeError):
        return None
