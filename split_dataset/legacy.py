"""The names of split_dataset 0.4 (``Blocks``, ``EmptySplitDataset``, ``save_to_split_dataset``).

Same signatures and results as 0.4.4, minus its bugs: NumPy 2 works, a wrong-shaped
block is refused instead of printed, ``padding`` passed by the caller is not ignored,
``finalize`` refuses to describe blocks that are missing, and records every block's
SHA-256 in ``SHA256SUMS`` as the other writers do. The geometry, :class:`Blocks`, lives
in :mod:`split_dataset.blocks`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .blocks import Blocks
from .dataset import SplitDataset
from .errors import BlockMismatchError, MissingBlockError
from .locks import refuse_if_written
from .storage import block_name, open_block, pool, sha256_file
from .write.folder import reuse_folder
from .write.options import DEFAULT_COMPRESSION, WriteOptions, default_shape_block
from .write.sink import BlockSink

__all__ = ["Blocks", "EmptySplitDataset", "save_to_split_dataset"]


class EmptySplitDataset(Blocks):
    """A split dataset whose block files are written by the caller, then :meth:`finalize` d.

    Parameters are those of :class:`Blocks`, plus `root` and `name` (the dataset is
    the folder ``root/name``) and `resolution`. ``files[i]`` is the file name of block
    ``i``; workers write them (with :meth:`save_block_data`, flammkuchen or h5py),
    then :meth:`finalize` checks every block is there and writes the metadata.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> e = EmptySplitDataset(tempfile.mkdtemp(), "out", shape_full=(6, 4), shape_block=(3, 4))
    >>> for i, (_, sl) in enumerate(e.slices()):
    ...     e.save_block_data(i, np.ones((3, 4), "uint8") * i)
    >>> e.finalize()[:, 0].tolist()
    [0, 0, 0, 1, 1, 1]
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        name: str,
        shape_full: Sequence[int],
        shape_block: Sequence[int | None] | int | None = None,
        dim_split: Sequence[int] | int | None = None,
        blocks_number: Sequence[int] | int | None = None,
        padding: Sequence[int] | int = 0,
        crop: Sequence[tuple[int, int]] | None = None,
        resolution: Sequence[float] | None = None,
        compression: Any = DEFAULT_COMPRESSION,
    ) -> None:
        super().__init__(shape_full, shape_block, dim_split, blocks_number, padding, crop)
        self.root = Path(root) / name
        reuse_folder(self.root, "write blocks into it")
        self.files = [block_name(i) for i in range(self.n_blocks)]
        self.resolution = resolution
        self.options = WriteOptions.from_keywords(compression=compression)
        self.codec = self.options.codec

    def _block_shape(self, n: int) -> tuple[int, ...]:
        sl = self[n]
        return tuple(s.stop - s.start for s in sl)

    def _sink(self, dtype: Any, data_key: str | None, *, checksums: bool = False) -> BlockSink:
        """A sink for this dataset's blocks (the codec, ``fsync``; no ``compression``/``chunks`` recorded)."""
        meta = self.options.metadata(self.shape_cropped, dtype, self.shape_block, padding=self.padding,
                                     data_key=data_key, describe_codec=False)
        if self.resolution is not None:  # fitted to the number of axes, as 0.4 did
            meta = meta.replace(resolution=tuple(self.resolution))
        return BlockSink.for_options(self.root, meta, self.options, checksums=checksums)

    def save_block_data(self, n: int, data: Any, verbose: bool = False) -> None:
        """Write block `n` (atomically, under the key ``stack``); its shape must match the block's."""
        arr = np.asarray(data)
        expected = self._block_shape(n)
        if arr.shape != expected:
            raise BlockMismatchError(
                f"block {n} of {str(self.root)!r}: expected shape {expected}, got {arr.shape}"
            )
        self._sink(arr.dtype, "stack").write_unchecked(n, arr)  # hashed by finalize (workers write blocks too)

    def finalize(self) -> SplitDataset:
        """Check that every block file is there, write ``SHA256SUMS`` and ``stack_metadata.json``, open the dataset.

        Raises :class:`~split_dataset.errors.WriterLockedError` if a live
        :class:`~split_dataset.SplitDatasetWriter` holds the folder meanwhile.
        """
        refuse_if_written(self.root, "write its metadata")
        missing = [name for name in self.files if not (self.root / name).is_file()]
        if missing:
            raise MissingBlockError(
                self.root / missing[0],
                self.linear_to_cartesian(self.files.index(missing[0])),
                f"{len(missing)} of {self.n_blocks} block files were not written ({', '.join(missing[:5])})",
            )
        dtype, key = self._check_blocks()
        sink = self._sink(dtype, key, checksums=True)
        sink.add_sums(dict(zip(self.files, pool().map(sha256_file, [self.root / f for f in self.files]))))
        sink.write_checksums()
        sink.write_chunk_index()
        sink.write_metadata()
        return SplitDataset(self.root)

    def _check_blocks(self) -> tuple[np.dtype | None, str | None]:
        """Every block holds the shape the grid says and one common dtype; returns (dtype, key or None)."""
        dtype, keys = None, set()
        root = self.root.resolve()
        for n, name in enumerate(self.files):
            f, dset = open_block(self.root / name, self.linear_to_cartesian(n), root, None, 1 << 20)
            try:
                expected = self._block_shape(n)
                if dset.shape != expected or (dtype is not None and dset.dtype != dtype):
                    raise BlockMismatchError(
                        f"block {n} ({name}) of {str(self.root)!r}: expected {expected} "
                        f"{dtype or dset.dtype}, found {dset.shape} {dset.dtype}"
                    )
                dtype = dset.dtype
                keys.add(dset.name.lstrip("/"))
            finally:
                f.close()
        return dtype, (keys.pop() if len(keys) == 1 else None)


def save_to_split_dataset(
    data: Any,
    root_name: str | os.PathLike[str],
    block_size: Sequence[int | None] | None = None,
    crop: Sequence[tuple[int, int]] | None = None,
    padding: Sequence[int] | int = 0,
    prefix: str = "",
    compression: Any = "blosc",
) -> SplitDataset:
    """Write `data` as the split dataset ``root_name/prefix`` (the old package's writer).

    Prefer :func:`split_dataset.save`, which takes the folder itself, picks a faster
    codec and refuses to write into an existing dataset.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> ds = save_to_split_dataset(np.zeros((10, 3, 3)), tempfile.mkdtemp(), block_size=(2, None, None), prefix="ds")
    >>> ds.shape_block
    (2, 3, 3)
    """
    new_name = prefix + ("_cropped" if crop is not None else "")
    if isinstance(data, (Blocks, SplitDataset)) and padding in (0, None):
        padding = data.padding
    if block_size is None:
        itemsize = np.dtype(data.dtype).itemsize
        block_size = getattr(data, "shape_block", None) or default_shape_block(data.shape, itemsize)
    blocks = EmptySplitDataset(
        root=root_name,
        name=new_name,
        shape_full=data.shape,
        shape_block=block_size,
        crop=crop,
        padding=padding or 0,
        compression=compression,
    )
    for i, (_, slices) in enumerate(blocks.slices()):
        arr = np.asarray(data[slices])
        blocks._sink(arr.dtype, f"stack_{arr.ndim}D").write_unchecked(i, arr)
    return blocks.finalize()
