"""Where each chunk of a block's array is stored: ``{chunk offset: (address, size, filter mask)}``.

Today it comes from the HDF5 file itself (:func:`hdf5_index`); a precomputed index for
the whole dataset can supply the same table later. Either way :func:`check_index`
validates it before any byte is read through it.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from ..errors import BloscError

__all__ = ["Index", "hdf5_index", "check_index"]

#: chunk offset (in items, per axis) -> (byte address, stored size, HDF5 filter mask)
Index = Mapping[tuple[int, ...], tuple[int, int, int]]


def hdf5_index(dset: Any) -> Index:
    """The chunk index of an h5py dataset: one pass over HDF5's index (``chunk_iter``).

    Chunks never written have no entry.

    Examples
    --------
    >>> import h5py, numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "f.h5")
    >>> with h5py.File(path, "w") as f:
    ...     d = f.create_dataset("x", (4, 4), "u1", chunks=(2, 4))
    ...     d[2:] = 1
    ...     sorted(hdf5_index(d))
    [(2, 0)]
    """
    index: dict[tuple[int, ...], tuple[int, int, int]] = {}
    dsid = dset.id
    try:
        dsid.chunk_iter(lambda c: index.__setitem__(c.chunk_offset, (c.byte_offset, c.size, c.filter_mask)))
    except (AttributeError, RuntimeError):  # HDF5 before 1.12.3 / 1.10.10: ask chunk by chunk
        index = {}
        for i in range(dsid.get_num_chunks()):
            c = dsid.get_chunk_info(i)
            index[c.chunk_offset] = (c.byte_offset, c.size, c.filter_mask)
    return index


def check_index(index: Index, file_size: int, nbytes: int, trailer: int = 0, skipped_bit: int = 1) -> None:
    """Refuse (:class:`BloscError`) an index that would send reads anywhere: an entry without an
    address (an unwritten chunk has no entry at all), outside the file, larger than blosc
    ever stores a chunk of `nbytes`, or sharing bytes with another entry.

    Examples
    --------
    >>> check_index({(0,): (100, 50, 0), (8,): (150, 50, 0)}, 200, 64)
    >>> check_index({(0,): (100, 50, 0), (8,): (140, 50, 0)}, 200, 64)
    Traceback (most recent call last):
    ...
    split_dataset.errors.BloscError: the HDF5 chunk index is damaged: the chunks at (0,) and (8,) share bytes 140..
    """
    limit = nbytes + 16 + trailer
    spans = []
    for offset, (addr, size, mask) in index.items():
        what = None
        if addr is None or addr < 0:
            what = "has no address"
        elif size < 0 or addr + size > file_size:
            what = f"lies at bytes {addr}..{addr + size}, past the end of the file ({file_size} bytes)"
        elif size > (nbytes + trailer if mask & skipped_bit else limit):
            what = f"has {size} bytes; a chunk of {nbytes} bytes is stored in at most {limit}"
        if what is not None:
            where = f"the chunk at {offset}" if offset is not None else "an entry"
            raise BloscError(f"the HDF5 chunk index is damaged: {where} {what}")
        spans.append((addr, size, offset))
    spans.sort()
    for (a, n, o), (b, _, p) in itertools.pairwise(spans):
        if a + n > b:
            raise BloscError(f"the HDF5 chunk index is damaged: the chunks at {o} and {p} share bytes {b}..")
