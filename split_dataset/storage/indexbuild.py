"""Between block files and ``chunk_index.bin``: a block's record from its HDF5 file
(:func:`index_block`), and a block opened from its record without HDF5 (:func:`open_indexed`)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import numpy as np

from . import blosc as _blosc
from .handles import BlockHandle, open_block
from .indexfile import BlockEntries, BlockRecord, IndexFile, block_record, chunk_hash, scan_entries
from .reader import ChunkReader
from .source import ByteSource, LocalFile
from .threads import part_buffers

__all__ = ["index_block", "current_record", "open_indexed", "indexed_handle"]


def index_block(path: Path, block: int, coords: tuple[int, ...], key: str | None) -> BlockRecord | None:
    """The index record of block file `path`: its identity, array, and every stored chunk's
    address, size and checksum; each chunk's blosc frame validated (header and block offsets)
    on the way. None for a block whose chunks this package does not read itself (not blosc
    alone, not chunked, refused): it is left out of the index and read through HDF5.

    Raises what opening the block raises, and :class:`~split_dataset.errors.BloscError` for
    a damaged chunk index or frame.

    Examples
    --------
    >>> import numpy as np, split_dataset, tempfile, os, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp()) / "ds"
    >>> _ = split_dataset.save(np.zeros((4, 8, 8), "uint16"), root, (2, 8, 8), fsync=False)
    >>> r = index_block(root / "0000.h5", 0, (0, 0, 0), None)
    >>> r.shape, r.chunks, len(r.entries)
    ((2, 8, 8), (1, 8, 8), 2)
    """
    handle = open_block(Path(path), coords, Path(path).parent, key, 0)
    try:
        reader = handle.reader
        if handle.mode != "direct" or reader is None or handle.chunks is None:
            return None
        source = handle.source
        assert isinstance(source, LocalFile) and source.fd is not None
        st = os.fstat(source.fd)
        index = reader.load_index()  # validated: inside the file, no shared bytes
        offsets = sorted(index)
        infos = [index[o] for o in offsets]
        check = reader._check
        assert check is not None
        view = part_buffers(reader._nbytes, handle.dtype)[1]
        hashes = []
        for addr, size, mask in infos:
            stored = view[:size]
            source.read_exactly(stored, addr)
            if not mask & 1:
                nblocks = check.header(stored, size)[2]
                if nblocks:
                    check.offsets(stored, nblocks, size)
            hashes.append(chunk_hash(stored))
        plist = handle.dset.id.get_create_plist()
        cd = tuple(plist.get_filter(0)[2])  # "direct": blosc is the only filter
        entries = scan_entries(offsets, infos, hashes, tuple(handle.shape), tuple(handle.chunks))
        return block_record(block, st, handle.name, handle.dtype, handle.dset.fillvalue, tuple(handle.shape),
                            tuple(handle.chunks), cd, entries)
    finally:
        handle.close()


def current_record(path: Path, block: int, coords: tuple[int, ...], key: str | None, old: IndexFile | None
                   ) -> tuple[BlockRecord | None, bool]:
    """Block `block`'s record as its file is now: the one in the `old` index if the file is still
    the one it describes (size, modification time, inode), else :func:`index_block` of the file.
    Returns ``(record, reused)``; raises what :func:`index_block` raises."""
    record = old.record(block) if old is not None else None
    if record is not None and record.matches(os.stat(path)):
        return record, True
    return index_block(path, block, coords, key), False


def open_indexed(path: Path, record: BlockRecord) -> BlockHandle | None:
    """Block file `path` opened from its index record, without HDF5: None (nothing kept open)
    when the file is not the one indexed (replaced, changed, copied without its times) or
    its chunks cannot be read directly here; the caller then opens it through HDF5.

    Raises what ``os.open`` raises (a missing file: ``FileNotFoundError``).
    """
    if not _blosc.available():
        return None
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or not record.matches(st):
            os.close(fd)
            return None
        source = LocalFile(path, fd)
    except BaseException:
        os.close(fd)
        raise
    return indexed_handle(Path(path), record, source)


def indexed_handle(path: Any, record: BlockRecord, source: ByteSource) -> BlockHandle:
    """A ``"direct"`` handle reading the block at `path` from `source` with the chunks of its `record`."""
    itemsize = record.dtype.itemsize
    nbytes = int(np.prod(record.chunks)) * itemsize
    check = _blosc.FrameCheck(nbytes, itemsize, record.shuffle if record.shuffle >= 0 else None,
                              record.compressor if record.compressor >= 0 else None)
    entries = BlockEntries(record.entries, record.shape, record.chunks)
    fill = np.frombuffer(record.fill, record.dtype)[0]
    reader = ChunkReader(source, lambda: entries, record.chunks, record.dtype, check, fill)
    return BlockHandle.indexed(path, record.name, record.shape, record.dtype, record.chunks, source, reader)
