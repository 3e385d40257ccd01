"""How block files are compressed: :class:`Codec`, and the blosc HDF5 filter's codes (``docs/format.md`` §4.3)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import hdf5plugin
import numpy as np

from . import blosc as _blosc

__all__ = ["Codec", "BLOSC_FILTER", "SHUFFLE_CODES", "COMPRESSOR_CODES", "ROW_BLOCKS"]

#: HDF5 filter id of blosc (hdf5-blosc, PyTables, hdf5plugin), and blosc's shuffle codes.
BLOSC_FILTER = 32001
SHUFFLE_CODES = {"none": 0, "byte": 1, "bit": 2}
#: the blosc filter's compressor code (its 7th cd_value; absent means blosclz) -> compressor name
COMPRESSOR_CODES = {0: "blosclz", 1: "lz4", 2: "lz4hc", 3: "snappy", 4: "zlib", 5: "zstd"}
#: ``Codec.blocksize`` of the default codec: small blocks sized by the chunk's rows (see Codec)
ROW_BLOCKS = "rows"


@dataclass(frozen=True)
class Codec:
    """How block files are compressed.

    ``name`` is ``"blosc"`` (HDF5 filter 32001, what flammkuchen/PyTables write and
    read), ``"gzip"`` (built into every HDF5) or ``"none"``. For blosc, ``cname`` is
    one of ``lz4``, ``zstd``, ``blosclz``, ``lz4hc``, ``zlib``, and ``blocksize`` the
    bytes blosc compresses independently inside a chunk: 0 for blosc's choice (for lz4
    level 5 on 16-bit items: the whole chunk up to 256 KiB, as one stream per byte of the
    item), a number of bytes, or ``"rows"``, the rule ``"blosc-lz4"`` uses (the name is
    historical: the rule now looks at the chunk's bytes, see :meth:`block_bytes`): blosc's
    own blocks where at least 4 of them fit in a chunk (1 MiB chunks of wide frames), else
    the largest of 8, 16, 32, 64 KiB that fits 4 times (32 KiB for 256x256 uint16 planes,
    64 KiB for 512x512). A read of a small window of a chunk (a trace through time) then
    decodes one or two blocks, at most about half the chunk, instead of the whole plane,
    while the blocks stay as large as that allows: larger blocks compress faster and
    smaller (on dark-camera noise, 32 KiB blocks store about 9 % fewer bytes than 8 KiB
    ones, blosc's own blocks another 4-9 % fewer) and blosc's own byte-split blocks decode
    noise about 1.6x faster than unsplit ones (``benchmarks/blocksize.py``). Files written
    with the earlier rule (8 or 16 KiB blocks) read as before: every chunk's frame says
    its block size.

    Examples
    --------
    >>> Codec.parse("blosc-zstd").cname
    'zstd'
    >>> Codec.parse("blosc").describe()  # the old package's default
    {'name': 'blosc', 'cname': 'blosclz', 'clevel': 9, 'shuffle': 'byte'}
    >>> lz4 = Codec.parse("blosc-lz4")
    >>> lz4.block_bytes(512, 128 << 10, 2), lz4.block_bytes(1024, 512 << 10, 2), lz4.block_bytes(256, 32 << 10, 2)
    (32768, 65536, 8192)
    >>> lz4.block_bytes(4096, 1 << 20, 2) in (0, 65536)  # blosc's own 256 KiB blocks (64 KiB without libh5blosc)
    True
    """

    name: str = "blosc"
    cname: str = "lz4"
    clevel: int = 5
    shuffle: str = "byte"
    blocksize: int | str = 0

    _BLOSC_CNAMES = ("blosclz", "lz4", "lz4hc", "zlib", "zstd")

    @classmethod
    def parse(cls, spec: Any) -> Codec:
        """Accept a Codec, None/"none", "gzip", "blosc" (old default), "blosc-<cname>", or a dict."""
        if isinstance(spec, Codec):
            return spec
        if spec is None or spec is False or spec == "none":
            return cls("none", "", 0, "none")
        if isinstance(spec, Mapping):
            keys = ("name", "cname", "clevel", "shuffle", "blocksize")
            return cls(**{k: v for k, v in spec.items() if k in keys})._checked()
        if isinstance(spec, str):
            s = spec.lower()
            if s == "gzip":
                return cls("gzip", "", 4, "byte")
            if s == "blosc":
                return cls("blosc", "blosclz", 9, "byte")
            if s.startswith("blosc-") or s.startswith("blosc:"):
                return cls("blosc", s[6:], 5, "byte", ROW_BLOCKS if s[6:] == "lz4" else 0)._checked()
        raise ValueError(
            f"unknown compression {spec!r}; expected None, 'gzip', 'blosc' or 'blosc-<cname>' "
            f"with cname in {cls._BLOSC_CNAMES}"
        )

    def _checked(self) -> Codec:
        if self.name not in ("blosc", "gzip", "none"):
            raise ValueError(f"unknown codec {self.name!r}; expected 'blosc', 'gzip' or 'none'")
        if self.name == "blosc" and self.cname not in self._BLOSC_CNAMES:
            raise ValueError(f"unknown blosc compressor {self.cname!r}; expected one of {self._BLOSC_CNAMES}")
        if self.shuffle not in SHUFFLE_CODES:
            raise ValueError(f"unknown shuffle {self.shuffle!r}; expected one of {tuple(SHUFFLE_CODES)}")
        if not 0 <= int(self.clevel) <= 9:
            raise ValueError(f"compression level must be in 0..9, got {self.clevel!r}")
        bs = self.blocksize
        if bs != ROW_BLOCKS and (type(bs) is not int or not (bs == 0 or 128 <= bs <= 1 << 30)):
            raise ValueError(f"blosc blocksize must be 0 (automatic), 128..2**30 bytes or 'rows', got {bs!r}")
        return self

    def block_bytes(self, row_bytes: int, chunk_bytes: int | None = None, itemsize: int = 1) -> int:
        """The blosc block size for chunks of `chunk_bytes` bytes whose rows (last axis) take
        `row_bytes`; 0: blosc's choice.

        For ``"rows"``: 0 where blosc's own block (seen in the header of a probe frame,
        :func:`_auto_block`) is at most a quarter of the chunk, else the largest of 8, 16,
        32, 64 KiB that is (8 KiB for chunks under 32 KiB). Without `chunk_bytes`, the chunk
        is taken to be a square plane of such rows up to 1 MiB (what ``default_chunks``
        makes of square frames).
        """
        if self.blocksize != ROW_BLOCKS:
            return int(self.blocksize)
        if chunk_bytes is None:
            chunk_bytes = min(1 << 20, row_bytes * max(1, row_bytes // max(1, itemsize)))
        auto = _auto_block(self.cname, int(self.clevel), SHUFFLE_CODES[self.shuffle], max(1, itemsize), chunk_bytes)
        if auto and 4 * auto <= chunk_bytes:
            return 0
        size = 8192
        while size < 65536 and 8 * size <= chunk_bytes:
            size *= 2
        return size

    def h5py_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``h5py.Group.create_dataset``."""
        if self.name == "none":
            return {}
        if self.name == "gzip":
            return {"compression": "gzip", "compression_opts": int(self.clevel), "shuffle": self.shuffle != "none"}
        return dict(hdf5plugin.Blosc(cname=self.cname, clevel=int(self.clevel),  # type: ignore[arg-type]
                                     shuffle=SHUFFLE_CODES[self.shuffle]))

    def blosc_args(self, row_bytes: int, chunk_bytes: int | None = None, itemsize: int = 1
                   ) -> tuple[str, int, int, int] | None:
        """(cname, clevel, shuffle, blocksize) to compress chunks of `chunk_bytes` bytes with
        rows of `row_bytes` and items of `itemsize` bytes outside HDF5 (see :meth:`block_bytes`),
        or None where HDF5's filter pipeline has to do it."""
        if self.name != "blosc" or not _blosc.available():
            return None
        return self.cname, int(self.clevel), SHUFFLE_CODES[self.shuffle], self.block_bytes(row_bytes, chunk_bytes,
                                                                                           itemsize)

    def describe(self) -> dict[str, Any]:
        """JSON description, as recorded in ``stack_metadata.json``."""
        if self.name == "none":
            return {"name": "none"}
        if self.name == "gzip":
            return {"name": "gzip", "clevel": int(self.clevel), "shuffle": self.shuffle}
        doc = {"name": "blosc", "cname": self.cname, "clevel": int(self.clevel), "shuffle": self.shuffle}
        if self.blocksize:
            doc["blocksize"] = self.blocksize
        return doc


#: chunks at least this large are left to blosc's own blocks without a probe (c-blosc 1.x
#: blocks are at most 4 MiB, lz4 at level 5 on 16-bit items 256 KiB)
_NO_PROBE_BYTES = 16 << 20


@functools.lru_cache(maxsize=256)
def _auto_block(cname: str, clevel: int, shuffle: int, itemsize: int, chunk_bytes: int) -> int:
    """The block size blosc picks by itself for a chunk of `chunk_bytes` (from the header of
    a frame compressed from zeros: c-blosc 1.x has no call that tells it); 0 where unknown
    (hdf5plugin without the blosc symbols, or a size blosc would not compress)."""
    if chunk_bytes >= _NO_PROBE_BYTES:
        return 1 << 22
    if not _blosc.available() or chunk_bytes < 2 * itemsize or itemsize > 255:
        return 0
    n = chunk_bytes // itemsize
    probe = np.zeros(n * itemsize, np.uint8).view(f"V{itemsize}") if itemsize > 1 else np.zeros(n, np.uint8)
    try:
        frame = _blosc.compress(probe, cname, clevel, shuffle, 0)
    except _blosc.BloscError:  # a probe only: fixed blocks then
        return 0
    return int(_blosc.HEADER.unpack_from(frame.tobytes())[5])
