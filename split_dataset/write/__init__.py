"""The write pipeline every writer shares (docs/format.md §7–§10).

- :mod:`~split_dataset.write.options`: :class:`WriteOptions`, one value for the keywords
  every writer takes (codec, chunks, checksums, fsync, physical metadata, attrs), and
  :meth:`WriteOptions.metadata`, the one metadata builder.
- :mod:`~split_dataset.write.folder`: the one policy for an existing folder, with the lock.
- :mod:`~split_dataset.write.sink`: :class:`BlockSink`, which writes blocks (atomically),
  ``SHA256SUMS`` and ``stack_metadata.json``.
- :mod:`~split_dataset.write.sums`: ``SHA256SUMS`` of a growing dataset (appended lines,
  reconciled on resume).
- :mod:`~split_dataset.write.start`, :mod:`~split_dataset.write.resume`: how
  ``SplitDatasetWriter`` starts, or continues a dataset.
- :mod:`~split_dataset.write.exits`: open writers written out at exit, on SIGTERM.

The writers built on it: :func:`split_dataset.writer.save`,
:func:`split_dataset.dask_adapter.save_dask`, :class:`split_dataset.SplitDatasetWriter`,
:class:`split_dataset.EmptySplitDataset`, ``split_dataset.convert``.
"""

from __future__ import annotations

from .folder import claim_folder, is_empty_folder, is_temporary_name, lock_folder, prepare_folder, reuse_folder
from .options import DEFAULT_COMPRESSION, WriteOptions, check_dtype, default_shape_block, like_metadata
from .sink import BlockSink

__all__ = [
    "WriteOptions",
    "DEFAULT_COMPRESSION",
    "default_shape_block",
    "check_dtype",
    "like_metadata",
    "BlockSink",
    "prepare_folder",
    "claim_folder",
    "lock_folder",
    "reuse_folder",
    "is_temporary_name",
    "is_empty_folder",
]
