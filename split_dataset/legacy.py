"""The names of split_dataset 0.4 (``Blocks``, ``EmptySplitDataset``, ``save_to_split_dataset``).

Same signatures and results as 0.4.4, minus its bugs: NumPy 2 works, ``Blocks(shape)``
without a block shape is one block, ``neighbour_blocks`` returns all neighbours and
honours ``dims``, coordinates on a block boundary map to the block that starts
there, a wrong-shaped block is refused instead of printed, ``padding`` passed by the
caller is not ignored, and ``finalize`` refuses to describe blocks that are missing.
"""

from __future__ import annotations

import itertools
import os
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .dataset import SplitDataset
from .errors import BlockMismatchError, MissingBlockError
from .grid import grid_shape
from .locks import refuse_if_written
from .metadata import Metadata
from .storage import METADATA_FILENAME, Codec, block_name, open_block, write_json_atomic
from .writer import BlockSink, DEFAULT_COMPRESSION, default_shape_block

__all__ = ["Blocks", "EmptySplitDataset", "save_to_split_dataset"]


def _drop_ith(xs: Sequence[Any], i: int) -> tuple[Any, ...]:
    return tuple(x for j, x in enumerate(xs) if j != i)


def _make_iterable(value: Any, n: int = 1) -> Any:
    try:
        iter(value)
        return value
    except TypeError:
        return (value,) * n


class Blocks:
    """A regular tiling of an array into blocks (the old package's geometry object).

    The grid can be given by block size or by number of blocks, on all axes or on
    those in `dim_split`; these are equivalent for a (100, 20, 40, 10) array::

        Blocks((100, 20, 40, 10), shape_block=(100, 10, 20, 10))
        Blocks((100, 20, 40, 10), shape_block=(None, 10, 20))
        Blocks((100, 20, 40, 10), dim_split=(1, 2), blocks_number=(2, 2))

    Parameters
    ----------
    shape_full
        Shape of the whole array (before `crop`).
    shape_block
        Block size per axis; None (or missing trailing entries) means the whole axis.
    dim_split
        Axes that are split (default: those with a block size).
    blocks_number
        Number of blocks per split axis, instead of `shape_block`.
    padding
        Overlap between neighbouring blocks, per axis.
    crop
        ``((low, high), ...)`` elements to leave out at each end of each axis.

    Examples
    --------
    >>> b = Blocks((10, 4), shape_block=(3, None))
    >>> b.n_blocks, b.shape_block, b[3]
    (4, (3, 4), (slice(9, 10, None), slice(0, 4, None)))
    """

    def __init__(
        self,
        shape_full: Sequence[int],
        shape_block: Sequence[int | None] | int | None = None,
        dim_split: Sequence[int] | int | None = None,
        blocks_number: Sequence[int] | int | None = None,
        padding: Sequence[int] | int = 0,
        crop: Sequence[tuple[int, int]] | None = None,
    ) -> None:
        self._shape_full = tuple(int(s) for s in shape_full)
        ndim = len(self._shape_full)
        self._crop = tuple(tuple(c) for c in crop) if crop is not None else ((0, 0),) * ndim
        self._cache: dict[str, Any] = {}
        block = list(self.shape_cropped)
        pad = [0] * ndim
        if dim_split is None or (not isinstance(dim_split, (int, np.integer)) and len(dim_split) == 0):
            if shape_block is not None:
                sb = _make_iterable(shape_block, ndim)
                dim_split = [j for j, d in enumerate(sb) if d is not None]
            elif blocks_number is not None:
                dim_split = list(range(len(_make_iterable(blocks_number))))
            else:
                dim_split = []
        self.dim_split = tuple(int(d) for d in _make_iterable(dim_split))
        n_rep = max(self.dim_split) + 1 if self.dim_split else ndim
        pad_amount = _make_iterable(padding, n_rep)
        sizes: dict[int, int]
        if blocks_number is not None:
            numbers = _make_iterable(blocks_number, len(self.dim_split))
            sizes = {d: int(np.ceil(self.shape_cropped[d] / n)) for d, n in zip(self.dim_split, numbers)}
        else:
            sb = _make_iterable(shape_block, n_rep) if shape_block is not None else ()
            sizes = {d: sb[d] for d in self.dim_split if d < len(sb) and sb[d] is not None}
        for dim in self.dim_split:
            if dim in sizes:
                block[dim] = max(1, min(int(sizes[dim]), self.shape_cropped[dim]))
            if dim < len(pad_amount):
                pad[dim] = int(pad_amount[dim])
        self._shape_block = tuple(block)
        self._padding = tuple(pad)

    # geometry, recomputed when a setter changes an input
    @property
    def shape_full(self) -> tuple[int, ...]:
        """Shape of the whole array, before cropping."""
        return self._shape_full

    @shape_full.setter
    def shape_full(self, value: Sequence[int]) -> None:
        self._shape_full = tuple(value)
        self._cache.clear()

    @property
    def crop(self) -> tuple[tuple[int, int], ...]:
        """Elements left out at each end of each axis."""
        return self._crop  # type: ignore[return-value]

    @crop.setter
    def crop(self, value: Sequence[tuple[int, int]] | None) -> None:
        self._crop = tuple(tuple(c) for c in value) if value is not None else ((0, 0),) * len(self.shape_full)
        self._cache.clear()

    @property
    def shape_block(self) -> tuple[int, ...]:
        """Block size per axis."""
        return self._shape_block

    @shape_block.setter
    def shape_block(self, value: Sequence[int]) -> None:
        self._shape_block = tuple(value)
        self._cache.clear()

    @property
    def padding(self) -> tuple[int, ...]:
        """Overlap between neighbouring blocks per axis."""
        return self._padding

    @padding.setter
    def padding(self, value: Sequence[int]) -> None:
        self._padding = tuple(value)
        self._cache.clear()

    @property
    def shape_cropped(self) -> tuple[int, ...]:
        """Shape of the array after cropping: what the blocks tile."""
        return tuple(d - lo - hi for d, (lo, hi) in zip(self._shape_full, self._crop))

    @property
    def starts(self) -> tuple[int, ...]:
        """Offset of the cropped array in the full one."""
        return tuple(lo for lo, _ in self._crop)

    @property
    def n_dims(self) -> int:
        """Number of dimensions."""
        return len(self.shape_cropped)

    @property
    def grid_shape(self) -> tuple[int, ...]:
        """Number of blocks along each axis."""
        return grid_shape(self.shape_cropped, self.shape_block, self.padding)

    @property
    def n_blocks(self) -> int:
        """Total number of blocks."""
        return int(np.prod(self.grid_shape, dtype=np.int64))

    def _bounds(self) -> tuple[np.ndarray, np.ndarray]:
        if "bounds" not in self._cache:
            grid = self.grid_shape
            idx = np.stack(np.meshgrid(*(np.arange(n) for n in grid), indexing="ij"), axis=-1)
            idx = idx.reshape(grid + (len(grid),)).astype(np.int64)
            bs, pd = np.array(self.shape_block), np.array(self.padding)
            st, n = np.array(self.starts), np.array(self.shape_cropped)
            starts = st + idx * bs
            ends = np.minimum(n + st, (idx + 1) * bs + pd + st)
            self._cache["bounds"] = (starts, ends)
        return self._cache["bounds"]  # type: ignore[no-any-return]

    @property
    def block_starts(self) -> np.ndarray:
        """Start of every block, shaped ``grid_shape + (ndim,)``."""
        return self._bounds()[0]

    @property
    def block_ends(self) -> np.ndarray:
        """End (exclusive) of every block, padding included, shaped ``grid_shape + (ndim,)``."""
        return self._bounds()[1]

    def slices(self, as_tuples: bool = False) -> Iterator[tuple[tuple[int, ...], tuple[Any, ...]]]:
        """Iterate ``(block coords, slices)`` (or ``(coords, ((start, end), ...))``) in file order."""
        starts, ends = self._bounds()
        for idx in itertools.product(*(range(n) for n in self.grid_shape)):
            pairs = zip(starts[idx].tolist(), ends[idx].tolist())
            if as_tuples:
                yield idx, tuple((s, e) for s, e in pairs)
            else:
                yield idx, tuple(slice(s, e) for s, e in pairs)

    def __getitem__(self, item: int | Sequence[int]) -> tuple[slice, ...]:
        """Slices of block `item` (a linear index or block coordinates)."""
        if isinstance(item, (int, np.integer)):
            idx = self.linear_to_cartesian(int(item))
        elif isinstance(item, tuple):
            idx = item
        else:
            raise TypeError(f"a block is selected by an integer or a tuple of integers, got {item!r}")
        starts, ends = self._bounds()
        return tuple(slice(int(s), int(e)) for s, e in zip(starts[idx], ends[idx]))

    def __len__(self) -> int:
        return self.n_blocks

    def linear_to_cartesian(self, lin_idx: int) -> tuple[int, ...]:
        """Block coordinates of linear block index `lin_idx` (C order)."""
        return tuple(int(i) for i in np.unravel_index(lin_idx, self.grid_shape))

    def cartesian_to_linear(self, ca_idx: Sequence[int]) -> int:
        """Linear index (file number) of the block at coordinates `ca_idx`."""
        return int(np.ravel_multi_index(tuple(ca_idx), self.grid_shape))

    def neighbour_blocks(self, i_block: int, dims: Sequence[int] | int | None = None) -> np.ndarray:
        """Linear indices of the blocks next to `i_block` (diagonals included), along `dims` only if given."""
        block_idx = self.linear_to_cartesian(i_block)
        grid = self.grid_shape
        active = np.ones(self.n_dims, dtype=bool)
        if dims is not None:
            active[:] = False
            active[list(_make_iterable(dims))] = True
        ranges = [
            range(max(c - 1, 0), min(c + 2, grid[d])) if active[d] else [c]
            for d, c in enumerate(block_idx)
        ]
        neighbours = [idx for idx in itertools.product(*ranges) if idx != block_idx]
        if not neighbours:
            return np.array([], dtype=np.intp)
        return np.ravel_multi_index(np.stack(neighbours, 1), grid)

    def _axis_starts(self, axis: int) -> np.ndarray:
        sel = tuple(slice(None) if i == axis else 0 for i in range(self.n_dims)) + (axis,)
        return self.block_starts[sel]

    def blocks_to_take(
        self, start_take: Sequence[int], end_take: Sequence[int]
    ) -> tuple[list[tuple[int, int]], list[int], list[int]]:
        """Blocks covering ``[start_take, end_take)``: per axis (first, last+1), and offsets in the end blocks."""
        block_slices, s_idx, e_idx = [], [], []
        for axis, (start, end) in enumerate(zip(start_take, end_take)):
            starts = self._axis_starts(axis)
            s = max(0, int(np.searchsorted(starts, start, side="right")) - 1)
            e = max(s + 1, int(np.searchsorted(starts, end, side="left")))
            block_slices.append((s, e))
            s_idx.append(int(start - starts[s]))
            e_idx.append(int(end - starts[e - 1]))
        return block_slices, s_idx, e_idx

    @staticmethod
    def block_to_slices(block: Sequence[tuple[int, int]]) -> tuple[slice, ...]:
        """``((start, end), ...)`` → ``(slice(start, end), ...)``."""
        return tuple(slice(lb, rb) for lb, rb in block)

    def centres(self) -> np.ndarray:
        """Centre of every block, shaped ``grid_shape + (ndim,)``."""
        return (self.block_ends + self.block_starts) / 2

    def block_containing_coords(self, coords: Sequence[int]) -> list[int]:
        """Block coordinates of the block whose start is the last one at or before `coords`."""
        return [
            max(int(np.searchsorted(self._axis_starts(axis), c, side="right")) - 1, 0)
            for axis, c in enumerate(coords)
        ]

    def drop_dim(self, dim_to_drop: int) -> Blocks:
        """The same tiling without axis `dim_to_drop` (e.g. spatial blocks of spatio-temporal ones)."""
        return Blocks(
            _drop_ith(self.shape_full, dim_to_drop),
            shape_block=_drop_ith(self.shape_block, dim_to_drop),
            padding=_drop_ith(self.padding, dim_to_drop),
            crop=_drop_ith(self.crop, dim_to_drop),
        )

    def serialize(self) -> dict[str, Any]:
        """A JSON-able description; :meth:`deserialize` rebuilds the object from it."""
        return dict(
            shape_full=self.shape_full,
            shape_block=self.shape_block,
            crop_start=tuple(c[0] for c in self.crop),
            crop_end=tuple(c[1] for c in self.crop),
            padding=self.padding,
        )

    @classmethod
    def deserialize(cls, d: dict[str, Any]) -> Blocks:
        """Inverse of :meth:`serialize`."""
        ndim = len(d["shape_full"])
        crop = tuple(zip(d.get("crop_start", (0,) * ndim), d.get("crop_end", (0,) * ndim)))
        return cls(d["shape_full"], shape_block=d["shape_block"], padding=d.get("padding", 0), crop=crop)

    def __repr__(self) -> str:
        return f"Blocks(shape={self.shape_cropped}, shape_block={self.shape_block}, grid={self.grid_shape})"


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
        if self.root.is_dir():
            refuse_if_written(self.root, "write blocks into it")
            warnings.warn(f"Existing directory {str(self.root)!r}: blocks written now replace its files",
                          stacklevel=2)
        else:
            self.root.mkdir(parents=True)
        self.files = [block_name(i) for i in range(self.n_blocks)]
        self.resolution = resolution
        self.codec = Codec.parse(compression)

    def _block_shape(self, n: int) -> tuple[int, ...]:
        sl = self[n]
        return tuple(s.stop - s.start for s in sl)

    def save_block_data(self, n: int, data: Any, verbose: bool = False) -> None:
        """Write block `n` (atomically, under the key ``stack``); its shape must match the block's."""
        arr = np.asarray(data)
        expected = self._block_shape(n)
        if arr.shape != expected:
            raise BlockMismatchError(
                f"block {n} of {str(self.root)!r}: expected shape {expected}, got {arr.shape}"
            )
        meta = Metadata(self.shape_cropped, self.shape_block, self.padding, dtype=arr.dtype, data_key="stack")
        BlockSink(self.root, meta, self.codec).write_unchecked(n, arr)

    def finalize(self) -> SplitDataset:
        """Check that every block file is there, write ``stack_metadata.json``, open the dataset.

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
        meta = Metadata(
            shape=self.shape_cropped,
            shape_block=self.shape_block,
            padding=self.padding,
            dtype=dtype,
            resolution=tuple(self.resolution) if self.resolution is not None else (),
            data_key=key,
            complete=True,
        )
        write_json_atomic(self.root / METADATA_FILENAME, meta.to_dict())
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
        block_size = getattr(data, "shape_block", None) or default_shape_block(data.shape, np.dtype(data.dtype).itemsize)
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
        meta = Metadata(blocks.shape_cropped, blocks.shape_block, blocks.padding, dtype=arr.dtype,
                        data_key=f"stack_{arr.ndim}D")
        BlockSink(blocks.root, meta, blocks.codec).write_unchecked(i, arr)
    return blocks.finalize()
