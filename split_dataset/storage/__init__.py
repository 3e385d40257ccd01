"""All disk I/O of split_dataset, one concern per module (see docs/format.md for the format).

- ``layout``: names in a dataset folder (block files, metadata, checksums).
- ``files``: reading JSON and regular files safely; atomic writes.
- ``checksums``: ``SHA256SUMS``.
- ``codecs``: :class:`Codec`, how blocks are compressed.
- ``blosc``: c-blosc through hdf5plugin's library; :class:`~split_dataset.storage.blosc.FrameCheck`.
- ``hdf5``: opening and writing HDF5 block files.
- ``source``: the seam for bytes (:class:`~split_dataset.storage.source.ByteSource`).
- ``chunkindex``: where each chunk is stored, validated.
- ``reader``: :class:`~split_dataset.storage.reader.ChunkReader`, decoding chunks;
  ``parts``: its partial decoding (only the blosc blocks a small window needs).
- ``handles``: open block files and the per-process handle cache.
- ``indexfile``: ``chunk_index.bin``, every chunk's place and checksum for the whole dataset;
  ``indexbuild``: a block's record from its file, a block opened from its record.
- ``threads``: the codec thread pool and scratch buffers.
- ``legacymeta``: the metadata of split_dataset < 0.3.

The names below are the storage layer's interface to the rest of the package.
"""

from __future__ import annotations

from .checksums import read_checksums, sha256_file, write_checksums
from .codecs import BLOSC_FILTER, ROW_BLOCKS, SHUFFLE_CODES, Codec
from .files import (
    atomic_path,
    fsync_dir,
    fsync_file,
    open_regular,
    read_json,
    regular_stat,
    write_bytes_atomic,
    write_json_atomic,
)
from .handles import BlockHandle, HandleCache, open_block
from .hdf5 import default_chunks, find_data_key, write_block_atomic
from .indexbuild import index_block, open_indexed
from .indexfile import CHUNK_INDEX_FILENAME, BlockRecord, IndexFile, read_index, write_index
from .layout import (
    CHECKSUM_FILENAME,
    METADATA_FILENAME,
    STATUS_FILENAME,
    TMP_SUFFIX,
    block_name,
    is_temporary_name,
    scan_block_files,
    temporary_name,
)
from .legacymeta import read_legacy_metadata
from .threads import POOL_THREADS, pool, run_shared

__all__ = [
    "METADATA_FILENAME",
    "CHECKSUM_FILENAME",
    "CHUNK_INDEX_FILENAME",
    "STATUS_FILENAME",
    "TMP_SUFFIX",
    "temporary_name",
    "is_temporary_name",
    "block_name",
    "scan_block_files",
    "read_json",
    "write_json_atomic",
    "write_bytes_atomic",
    "atomic_path",
    "fsync_file",
    "fsync_dir",
    "regular_stat",
    "open_regular",
    "sha256_file",
    "read_checksums",
    "write_checksums",
    "Codec",
    "BLOSC_FILTER",
    "SHUFFLE_CODES",
    "ROW_BLOCKS",
    "default_chunks",
    "find_data_key",
    "write_block_atomic",
    "read_legacy_metadata",
    "BlockHandle",
    "HandleCache",
    "open_block",
    "BlockRecord",
    "IndexFile",
    "read_index",
    "write_index",
    "index_block",
    "open_indexed",
    "POOL_THREADS",
    "pool",
    "run_shared",
]
