"""How block files are compressed: :class:`Codec`, and the blosc HDF5 filter's codes (``docs/format.md`` §4.3)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import hdf5plugin

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
    bytes blosc compresses independently inside a chunk: 0 for blosc's choice (64 KiB
    or more for lz4), a number of bytes, or ``"rows"``, what ``"blosc-lz4"`` uses:
    8 KiB where a chunk's rows (its last axis) take at most 1 KiB, else 16 KiB. Small
    blocks let a read of a small window of a chunk (a trace through time) decode a
    block or a few instead of the whole image plane, for about 1 % more bytes on disk
    and, measured here, whole-chunk decoding 0-30 % slower (16 KiB) or 0-100 % slower
    (8 KiB, on dark, nearly constant images) than blosc's own larger blocks. 8 KiB
    is kept for narrow images, where an 8-row window is 4 KiB or less; on wider ones
    such a window spans several rows of 16 KiB blocks anyway.

    Examples
    --------
    >>> Codec.parse("blosc-zstd").cname
    'zstd'
    >>> Codec.parse("blosc").describe()  # the old package's default
    {'name': 'blosc', 'cname': 'blosclz', 'clevel': 9, 'shuffle': 'byte'}
    >>> Codec.parse("blosc-lz4").block_bytes(256 * 2), Codec.parse("blosc-lz4").block_bytes(2048 * 2)
    (8192, 16384)
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

    def block_bytes(self, row_bytes: int) -> int:
        """The blosc block size for chunks whose rows (last axis) take `row_bytes`; 0: blosc's choice."""
        if self.blocksize == ROW_BLOCKS:
            return 8192 if row_bytes <= 1024 else 16384
        return int(self.blocksize)

    def h5py_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``h5py.Group.create_dataset``."""
        if self.name == "none":
            return {}
        if self.name == "gzip":
            return {"compression": "gzip", "compression_opts": int(self.clevel), "shuffle": self.shuffle != "none"}
        return dict(hdf5plugin.Blosc(cname=self.cname, clevel=int(self.clevel),  # type: ignore[arg-type]
                                     shuffle=SHUFFLE_CODES[self.shuffle]))

    def blosc_args(self, row_bytes: int) -> tuple[str, int, int, int] | None:
        """(cname, clevel, shuffle, blocksize) to compress chunks with rows of `row_bytes`
        outside HDF5, or None where HDF5's filter pipeline has to do it."""
        if self.name != "blosc" or not _blosc.available():
            return None
        return self.cname, int(self.clevel), SHUFFLE_CODES[self.shuffle], self.block_bytes(row_bytes)

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
