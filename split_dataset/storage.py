"""All disk I/O: block names, block files, codecs, JSON, atomic writes, the handle cache.

The only module that imports h5py and hdf5plugin. Block files are HDF5 in the
flammkuchen/PyTables layout (FORMAT.md): one array under ``stack``/``stack_{N}D``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import math
import os
import re
import struct
import threading
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import h5py
import hdf5plugin  # noqa: F401  (registers the blosc filter 32001 every block file needs)
import numpy as np

from . import _blosc
from .errors import CorruptBlockError, MetadataError, MissingBlockError, UnsafeDatasetError

__all__ = [
    "METADATA_FILENAME",
    "CHECKSUM_FILENAME",
    "sha256_file",
    "read_checksums",
    "write_checksums",
    "append_checksum",
    "Codec",
    "block_name",
    "scan_block_files",
    "read_json",
    "write_json_atomic",
    "read_legacy_metadata",
    "write_block_atomic",
    "write_bytes_atomic",
    "HandleCache",
    "open_block",
]

METADATA_FILENAME = "stack_metadata.json"
_BLOCK_RE = re.compile(r"^(?P<prefix>.*?)(?P<index>\d{4,})\.h5$")
_TMP_SUFFIX = ".tmp"


def block_name(index: int, prefix: str = "") -> str:
    """File name of block `index`: ``0000.h5``, ``0001.h5``, ... (``prefix`` in front).

    Examples
    --------
    >>> block_name(5), block_name(12345, "stack_")
    ('0005.h5', 'stack_12345.h5')
    """
    return f"{prefix}{index:04d}.h5"


def scan_block_files(root: Path) -> dict[str, dict[int, str]]:
    """Block files in `root`, grouped by name prefix: ``{prefix: {index: name}}``.

    Only names that :func:`block_name` would produce count; everything else
    (``0001 copy.h5``, notes, temporary files) is ignored.
    """
    found: dict[str, dict[int, str]] = {}
    with os.scandir(root) as it:
        for entry in it:
            m = _BLOCK_RE.match(entry.name)
            if m is None:
                continue
            index = int(m["index"])
            if block_name(index, m["prefix"]) != entry.name:
                continue
            found.setdefault(m["prefix"], {})[index] = entry.name
    return found


# ----------------------------------------------------------------------------- codecs

#: HDF5 filter id of blosc (hdf5-blosc, PyTables, hdf5plugin), and blosc's shuffle codes.
BLOSC_FILTER = 32001
SHUFFLE_CODES = {"none": 0, "byte": 1, "bit": 2}
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


# ----------------------------------------------------------------------------- JSON


def read_json(path: Path) -> dict[str, Any]:
    """Parse a metadata JSON file; malformed content raises :class:`MetadataError`."""
    try:
        with open(path, "rb") as f:
            raw = f.read(min(os.fstat(f.fileno()).st_size + 1, 1 << 24))
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MetadataError(f"{str(path)!r} is not valid JSON: {e}") from e
    if not isinstance(doc, dict):
        raise MetadataError(f"{str(path)!r} must hold a JSON object, found {type(doc).__name__}")
    return doc


def fsync_file(path: Path) -> None:
    """Flush a file's data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (renames) to the disk, where the platform allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # not supported (Windows)
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: Path, *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary name beside `path`; when the block exits, that file becomes `path`.

    The temporary file (``.<name>.<uuid>.tmp``, which no reader lists) is flushed to the
    disk and renamed over `path`, so readers see the old file or the whole new one. On any
    error it is removed and `path` is untouched.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}{_TMP_SUFFIX}")
    try:
        yield tmp
        if fsync:
            fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    if fsync:
        fsync_dir(path.parent)


def write_bytes_atomic(path: Path, data: bytes | memoryview, *, fsync: bool = True) -> None:
    """Write `data` to `path` atomically (see :func:`atomic_path`)."""
    with atomic_path(path, fsync=fsync) as tmp, open(tmp, "xb") as f:
        f.write(data)


def write_json_atomic(path: Path, doc: Mapping[str, Any], *, fsync: bool = True) -> None:
    """Write a JSON document atomically (see :func:`write_bytes_atomic`)."""
    data = json.dumps(doc, indent=1, default=_json_default).encode()
    write_bytes_atomic(path, data, fsync=fsync)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"attrs must be JSON-serialisable; {o!r} of type {type(o).__name__} is not")


# ----------------------------------------------------------------------------- checksums

CHECKSUM_FILENAME = "SHA256SUMS"


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def read_checksums(root: Path) -> dict[str, str] | None:
    """``{file name: hex digest}`` from ``SHA256SUMS`` (``sha256sum`` format), or None if absent."""
    path = Path(root) / CHECKSUM_FILENAME
    if not path.is_file():
        return None
    sums: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        digest, sep, name = line.partition("  ")
        if sep and len(digest) == 64:
            sums[name.lstrip("*")] = digest.lower()
    return sums


def write_checksums(root: Path, sums: Mapping[str, str], *, fsync: bool = True) -> None:
    """Replace ``SHA256SUMS`` atomically; ``sha256sum -c SHA256SUMS`` checks it."""
    text = "".join(f"{sums[name]}  {name}\n" for name in sorted(sums))
    write_bytes_atomic(Path(root) / CHECKSUM_FILENAME, text.encode(), fsync=fsync)


def append_checksum(root: Path, name: str, digest: str, *, fsync: bool = True) -> None:
    """Add one line to ``SHA256SUMS`` (for a block written for the first time)."""
    with open(Path(root) / CHECKSUM_FILENAME, "a") as f:
        f.write(f"{digest}  {name}\n")
        f.flush()
        if fsync:
            os.fsync(f.fileno())


# ----------------------------------------------------------------------------- legacy metadata


def _parse_fl_node(node: h5py.Group | h5py.Dataset, depth: int = 0) -> Any:
    """A flammkuchen value as plain Python: dicts, tuples, lists, numbers. Never unpickles."""
    if depth > 8:
        raise MetadataError("legacy metadata nests too deeply")
    if isinstance(node, h5py.Dataset):
        if node.dtype.kind not in "biuf" or node.size > 1024:
            return None  # pickled objects and anything unexpected are ignored, not loaded
        value = node[()]
        return value.tolist() if isinstance(value, np.ndarray) else value.item()
    title = node.attrs.get("TITLE", b"")
    title = title.decode() if isinstance(title, bytes) else str(title)
    kind = title.split(":")[0]

    def attr(v: Any) -> Any:
        if isinstance(v, np.generic):
            return v.item()
        if isinstance(v, bytes):
            return v.decode(errors="replace")
        return v

    if kind in ("tuple", "list"):
        n = int(title.split(":")[1]) if ":" in title else 0
        items = []
        for i in range(min(n, 64)):
            key = f"i{i}"
            if key in node.attrs:
                items.append(attr(node.attrs[key]))
            elif key in node:
                items.append(_parse_fl_node(node[key], depth + 1))
            else:
                items.append(None)
        return tuple(items) if kind == "tuple" else items
    out: dict[str, Any] = {}
    for k, v in node.attrs.items():
        if k not in ("CLASS", "TITLE", "VERSION"):
            out[k] = attr(v)
    for k in node:
        link = node.get(k, getlink=True)
        if isinstance(link, h5py.HardLink):
            out[k] = _parse_fl_node(node[k], depth + 1)
    return out


def read_legacy_metadata(path: Path) -> dict[str, Any]:
    """The ``stack_metadata`` group that split_dataset < 0.3 stored inside the last block file."""
    try:
        with _open_readonly(path) as f:
            link = f.get("stack_metadata", getlink=True)
            if not isinstance(link, h5py.HardLink) or not isinstance(f["stack_metadata"], h5py.Group):
                raise MetadataError(
                    f"{str(path.parent)!r} is not a split dataset: it has no stack_metadata.json, and its last "
                    f"block {path.name!r} has no legacy 'stack_metadata' group either (an interrupted write?)"
                )
            parsed = _parse_fl_node(f["stack_metadata"])
    except OSError as e:
        raise MetadataError(
            f"{str(path.parent)!r} is not a split dataset: it has no stack_metadata.json, and its last "
            f"block {path.name!r} cannot be read: {e}"
        ) from e
    if not isinstance(parsed, dict):
        raise MetadataError(f"'stack_metadata' in {str(path)!r} is not a dict")
    return parsed


# ----------------------------------------------------------------------------- writing blocks

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


def _write_block_file(f: h5py.File, data: np.ndarray, key: str, codec: Codec, chunks: tuple[int, ...] | None) -> None:
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
        return
    blosc = codec.blosc_args(ch[-1] * data.itemsize) if ch is not None else None
    if blosc is None:  # gzip, none: HDF5's own pipeline
        dset.write_direct(np.ascontiguousarray(data))
        return
    # blosc: compress chunks on all cores outside HDF5's global lock, then store them as they are
    assert ch is not None
    offsets = _chunk_grid(data.shape, ch)
    write = dset.id.write_direct_chunk
    for offset, payload in zip(offsets, pool().map(lambda o: _blosc.compress(_chunk_of(data, o, ch), *blosc), offsets)):
        write(offset, payload)


def write_block_atomic(
    path: Path,
    data: np.ndarray,
    key: str,
    codec: Codec,
    chunks: tuple[int, ...] | None = None,
    *,
    fsync: bool = True,
) -> None:
    """Write one block file: `data` under `key`, compressed, renamed into place when complete.

    Blosc chunks are compressed in parallel (outside the GIL, see ``_blosc``) and written
    with ``write_direct_chunk``; the bytes are those HDF5's blosc filter would write.
    """
    with atomic_path(path, fsync=fsync) as tmp, h5py.File(tmp, "x", libver=("earliest", "v110"), locking=False) as f:
        _write_block_file(f, np.asarray(data), key, codec, chunks)


_POOL: tuple[int, ThreadPoolExecutor] | None = None
_POOL_LOCK = threading.Lock()


def _pool_threads() -> int:
    """Threads that compress/decompress chunks: ``SPLIT_DATASET_THREADS``, else the usable cores."""
    env = os.environ.get("SPLIT_DATASET_THREADS", "")
    if env.strip().isdigit() and int(env) > 0:
        return int(env)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


POOL_THREADS = _pool_threads()


def pool() -> ThreadPoolExecutor:
    """A thread pool for chunk compression/decompression, one per process."""
    global _POOL
    pid = os.getpid()
    if _POOL is not None and _POOL[0] == pid:
        return _POOL[1]
    with _POOL_LOCK:
        if _POOL is None or _POOL[0] != pid:
            _POOL = (pid, ThreadPoolExecutor(POOL_THREADS, thread_name_prefix="split_dataset"))
        return _POOL[1]


# ----------------------------------------------------------------------------- reading blocks


def run_shared(work: Any, items: list[Any], *args: Any) -> None:
    """``work(iterator, *args)`` on this thread and on up to ``POOL_THREADS - 1`` pool threads,
    all taking items from one iterator until it is empty.

    This thread starts at once and never waits for a pool thread that has not started by
    the time the items run out: on a VM, waking an idle thread can take longer than
    decoding a few chunks, so a small read is then done by this thread alone. A list
    iterator hands each item to exactly one thread. The first exception is raised here.
    """
    queue = iter(items)
    helpers = min(len(items), POOL_THREADS) - 1
    if helpers <= 0:
        work(queue, *args)
        return
    cond = threading.Condition()
    state: dict[str, Any] = {"closed": False, "active": 0, "error": None}

    def helper() -> None:
        with cond:
            if state["closed"]:
                return
            state["active"] += 1
        try:
            work(queue, *args)
        except BaseException as e:  # noqa: BLE001  (handed to the calling thread)
            state["error"] = state["error"] or e
        finally:
            with cond:
                state["active"] -= 1
                cond.notify_all()

    for _ in range(helpers):
        pool().submit(helper)
    try:
        work(queue, *args)
    finally:
        with cond:
            state["closed"] = True
            while state["active"]:
                cond.wait()
    if state["error"] is not None:
        raise state["error"]


def find_data_key(f: h5py.File, preferred: str | None = None) -> str:
    """The block's array: `preferred`, else ``stack_{N}D``/``stack``, else the one dataset named ``stack*``."""
    candidates = [preferred] if preferred else []
    for name in candidates + sorted(k for k in f.keys() if k.startswith("stack") and k != "stack_metadata"):
        link = f.get(name, getlink=True)
        if isinstance(link, h5py.HardLink) and isinstance(f[name], h5py.Dataset):
            return name
        if isinstance(link, (h5py.ExternalLink, h5py.SoftLink)):
            raise UnsafeDatasetError(f"{f.filename!r}: {name!r} is a link ({type(link).__name__}); refused")
    raise KeyError(f"no dataset named 'stack*' in {f.filename!r}; found {sorted(f.keys())}")


def _open_readonly(path: Path, rdcc_nbytes: int = 1 << 20) -> h5py.File:
    """Open read-only with HDF5's default locking, or without locks where they fail.

    Blocks are immutable once renamed into place, so readers need no lock; but HDF5
    refuses to open a file twice in one process with different locking flags, so the
    default (what a user's own ``h5py.File(path)`` uses) is tried first. Where locks are
    unavailable (NFS: "No locks available") or the file was opened without locks
    elsewhere in this process, it is opened with ``locking=False``.
    """
    try:
        return h5py.File(path, "r", rdcc_nbytes=rdcc_nbytes)
    except OSError as e:
        msg = str(e).lower()
        if "lock" not in msg:
            raise
    return h5py.File(path, "r", locking=False, rdcc_nbytes=rdcc_nbytes)


_SCRATCH = threading.local()


def _scratch(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A per-thread buffer for one decoded chunk, reused across reads (no allocation per chunk)."""
    key = (shape, dtype)
    cache = getattr(_SCRATCH, "buffers", None)
    if cache is None:
        cache = _SCRATCH.buffers = {}
    buf = cache.get(key)
    if buf is None:
        if len(cache) > 8:
            cache.clear()
        buf = cache[key] = np.empty(shape, dtype)
    return buf


if hasattr(os, "preadv"):

    def _pread_into(fd: int, view: memoryview, offset: int) -> int:
        """Read ``len(view)`` bytes at `offset` into `view`; the count read."""
        return os.preadv(fd, (view,), offset)

else:  # pragma: no cover  (macOS before 11)

    def _pread_into(fd: int, view: memoryview, offset: int) -> int:
        """Read ``len(view)`` bytes at `offset` into `view`; the count read."""
        data = os.pread(fd, len(view), offset)
        view[: len(data)] = data
        return len(data)


_LIB_GETITEM = _blosc.getitem_function()


@functools.lru_cache(maxsize=64)
def _offsets_struct(n: int) -> struct.Struct:
    """Unpacks `n` consecutive blosc block offsets (little-endian uint32)."""
    return struct.Struct(f"<{n}I")


class BlockHandle:
    """An open block file and its array, with the fast read path chosen once.

    Arrays whose only filter is blosc are read without HDF5 in the loop: the chunk
    index is read once (``chunk_iter``), then each chunk's compressed bytes are
    fetched with ``os.pread`` and decompressed with blosc (``_blosc``), both outside
    the GIL and HDF5's global lock, in parallel when there are several, straight into
    the output where possible. Block files never change once renamed into place, so
    the index stays valid. Everything else goes through h5py.
    """

    __slots__ = ("file", "dset", "shape", "dtype", "chunks", "checked", "_blosc", "_index", "_fd", "_strides",
                 "_bstrides", "_nbytes", "_nblocks", "__weakref__")

    def __init__(self, file: h5py.File, dset: h5py.Dataset) -> None:
        self.file = file
        self.dset = dset
        self.shape: tuple[int, ...] = dset.shape
        self.dtype: np.dtype = dset.dtype
        self.chunks: tuple[int, ...] | None = dset.chunks
        self.checked = False  # set by the dataset once the shape and dtype were validated
        self._blosc = False
        self._index: dict[tuple[int, ...], tuple[int, int, int]] | None = None
        self._fd: int | None = None
        self._strides: tuple[int, ...] = ()  # C strides of a chunk, in items
        self._bstrides: tuple[int, ...] = ()  # the same in bytes
        self._nbytes = 0  # bytes of a chunk
        self._nblocks = 0  # blosc blocks per chunk seen last (how much of a frame's offset table to read)
        if self.chunks is not None:
            self._strides = tuple(int(np.prod(self.chunks[k + 1:])) for k in range(len(self.chunks)))
            self._bstrides = tuple(st * self.dtype.itemsize for st in self._strides)
            self._nbytes = self._strides[0] * self.chunks[0] * self.dtype.itemsize
        if self.chunks is not None and self.dtype.isnative and _blosc.available():
            plist = dset.id.get_create_plist()
            filters = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
            self._blosc = filters == [BLOSC_FILTER]

    def __iter__(self) -> Any:  # unpacks as (file, dataset)
        return iter((self.file, self.dset))

    def __del__(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass

    def close(self) -> None:
        """Close the file (and the raw descriptor used for direct chunk reads)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.file.close()

    def direct(self, local: tuple[Any, ...]) -> bool:
        """Whether `local` is read chunk by chunk outside HDF5 (blosc array, step-1 slices)."""
        return self._blosc and all(type(s) is slice and s.step == 1 for s in local)

    def get(self, local: tuple[slice, ...]) -> np.ndarray:
        """``dset[local]`` for step-1 slices on a :meth:`direct` array, as a new array (or a view of one)."""
        chunks = self.chunks
        assert chunks is not None
        offset = []
        for s, c in zip(local, chunks):
            k = s.start // c
            if (s.stop - 1) // c != k:  # several chunks: decode them in parallel into one buffer
                buf = np.empty(tuple(x.stop - x.start for x in local), self.dtype)
                self._read_chunks(local, buf, tuple(slice(0, x.stop - x.start) for x in local))
                return buf
            offset.append(k * c)
        if self._index is None:
            self._load_index()
        inside = tuple(slice(s.start - o, s.stop - o) for s, o in zip(local, offset))
        whole = all(s.stop - s.start == c for s, c in zip(inside, chunks))
        entry = self._index.get(tuple(offset)) if self._index else None
        if not whole and entry is not None:
            part = np.empty(tuple(s.stop - s.start for s in inside), self.dtype)
            lo = sum(s.start * st for s, st in zip(inside, self._strides))
            hi = sum((s.stop - 1) * st for s, st in zip(inside, self._strides)) + 1
            if self._decode_part(entry, lo, hi, part):
                return part
        if whole:
            return self._whole(tuple(offset), np.empty(chunks, self.dtype))
        return self._whole(tuple(offset))[inside].copy()  # decoded into reused memory; the part copied out

    def read(self, local: tuple[Any, ...], buf: np.ndarray, out: tuple[slice, ...]) -> None:
        """Read ``dset[local]`` into ``buf[out]``."""
        if self.direct(local):
            self._read_chunks(local, buf, out)
        else:
            buf[out] = self.dset[local]

    def _load_index(self) -> None:
        index: dict[tuple[int, ...], tuple[int, int, int]] = {}
        try:
            self.dset.id.chunk_iter(lambda c: index.__setitem__(c.chunk_offset, (c.byte_offset, c.size, c.filter_mask)))
            if hasattr(os, "pread"):
                self._fd = os.open(self.file.filename, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        except (AttributeError, RuntimeError, OSError):  # old HDF5 without chunk_iter: ask per chunk
            index = {}
        self._index = index

    def _decompress_into(self, offset: tuple[int, ...], target: np.ndarray) -> bool:
        """Decode the whole chunk at `offset` into the C-contiguous `target`, reading it into a
        reused per-thread buffer (no allocation per chunk); False, having done nothing, for a
        chunk without an index entry or stored without the filter."""
        entry = self._index.get(offset) if self._index else None
        if entry is None or self._fd is None or entry[2] & 1:
            return False
        addr, size, _ = entry
        nbytes = self._nbytes
        frame, view, _, _, ptr, _ = _part_buffers(nbytes, self.dtype)
        if not 16 <= size <= len(frame):
            return False
        if _pread_into(self._fd, view[:size], addr) != size:
            raise _blosc.BloscError(f"chunk at byte {addr} is cut short")
        _blosc.decompress_ptr(ptr, view[:16], size, target)
        return True

    def _raw_chunk(self, offset: tuple[int, ...]) -> tuple[int, bytes]:
        entry = self._index.get(offset) if self._index else None  # type: ignore[union-attr]
        if entry is None or self._fd is None:
            return self.dset.id.read_direct_chunk(offset)  # type: ignore[no-any-return]
        addr, size, mask = entry
        return mask, os.pread(self._fd, size, addr)

    def _read_chunks(self, local: tuple[slice, ...], buf: np.ndarray, out: tuple[slice, ...]) -> None:
        if self._index is None:
            self._load_index()
        chunks = self.chunks
        assert chunks is not None
        per_axis = []
        span = 1  # bound on the items a partial job spans in C order
        for s, o, c, st in zip(local, out, chunks, self._strides):
            lo, hi = s.start, s.stop
            axis = []
            for k in range(lo // c, (hi - 1) // c + 1):
                a, b = max(lo, k * c) - k * c, min(hi, (k + 1) * c) - k * c
                axis.append((k * c, slice(a, b), slice(o.start + a + k * c - lo, o.start + b + k * c - lo), b - a == c,
                             a * st, (b - 1) * st))
            span += max(j[5] - j[4] for j in axis)
            per_axis.append(axis)
        first = tuple(axis[0] for axis in per_axis)
        if all(len(axis) == 1 for axis in per_axis):
            self._decode(first, buf)
            return
        if self._fd is not None and self._parts_pay(span * self.dtype.itemsize, first):
            # small parts of many chunks (a trace through time): a few µs of decoding each, less
            # than handing work between threads costs (measured: two threads took twice as long)
            if all(len(axis) == 1 or c == 1 for axis, c in zip(per_axis, chunks)):
                self._decode_rows(per_axis, buf)
            else:
                for job in itertools.product(*per_axis):
                    self._decode(job, buf)
            return
        run_shared(self._decode_all, list(itertools.product(*per_axis)), buf)

    def _decode_rows(self, per_axis: list[list[Any]], buf: np.ndarray) -> None:
        """Decode the same part of many chunks that are one item deep on the axes they
        differ in (a trace through time), each into a row of one array, then copy all of
        it into the output at once."""
        first = [axis[0] for axis in per_axis]
        lo = sum(e[4] for e in first)
        hi = sum(e[5] for e in first) + 1
        n = hi - lo
        counts = [len(axis) for axis in per_axis]
        rows = np.empty((math.prod(counts), n), self.dtype)
        itemsize = self.dtype.itemsize
        view, ptr, row = memoryview(rows).cast("B"), rows.ctypes.data, n * itemsize
        index = self._index
        assert index is not None
        offsets = list(itertools.product(*([e[0] for e in axis] for axis in per_axis)))
        entries = [index.get(offset) for offset in offsets]
        for i in self._rows_batch(entries, lo, hi, ptr, row):
            entry = entries[i]
            if entry is None or not self._items_into(entry, lo, hi, view[i * row:(i + 1) * row], ptr + i * row):
                rows[i] = self._whole(offsets[i]).reshape(-1)[lo:hi]
        shape, strides, step = [], [], row
        for k in reversed(range(len(per_axis))):
            if counts[k] > 1:
                shape.append(counts[k])
                strides.append(step)
                step *= counts[k]
            else:
                shape.append(first[k][1].stop - first[k][1].start)
                strides.append(self._bstrides[k])
        region = buf[tuple(slice(axis[0][2].start, axis[-1][2].stop) for axis in per_axis)]
        region[...] = np.ndarray(tuple(reversed(shape)), self.dtype, rows, 0, tuple(reversed(strides)))

    def _rows_batch(self, entries: list[tuple[int, int, int] | None], lo: int, hi: int, dest: int, row: int
                    ) -> list[int]:
        """Decode items ``lo..hi`` of many chunks, chunk i to address ``dest + i * row``, as
        :meth:`_items_into` does one, with less said per chunk when the items lie in one
        blosc block; returns the chunks left for :meth:`_items_into` (an unexpected
        header, a frame stored as is, items across blocks: it decodes them or says what
        is wrong)."""
        nblocks, nbytes, itemsize = self._nblocks, self._nbytes, self.dtype.itemsize
        if nblocks < 2 or self._fd is None:
            return list(range(len(entries)))
        fd, table = self._fd, 16 + 4 * nblocks
        frame, view, _, _, base, _ = _part_buffers(nbytes, self.dtype)
        header, n, getitem, preadv = _blosc.HEADER.unpack_from, hi - lo, _LIB_GETITEM, os.preadv
        left: list[int] = []
        blocksize = 0
        for i, entry in enumerate(entries):
            if entry is None or entry[2] & 1 or not table <= entry[1] <= len(frame):
                left.append(i)
                continue
            addr, size, _ = entry
            if preadv(fd, (view[:table],), addr) != table:
                left.append(i)
                continue
            _, _, flags, _, total, bsize, cbytes = header(frame)
            if not blocksize:  # the blocks holding the items: the same in every chunk of this size
                if bsize <= 0 or -(-nbytes // bsize) != nblocks:
                    return list(range(len(entries)))
                blocksize, first, last = bsize, lo * itemsize // bsize, (hi * itemsize - 1) // bsize
                tail = last + 1 >= nblocks  # the items reach the frame's last block, which ends at its end
                offsets = _offsets_struct(last - first + 1 + (not tail)).unpack_from
            if total != nbytes or cbytes != size or bsize != blocksize or flags & _blosc.MEMCPYED:
                left.append(i)  # unusual: the careful path decodes it or says what is wrong
                continue
            span = offsets(frame, 16 + 4 * first)
            if tail:
                span += (size,)
            a = table - 1
            for b in span:  # stored in order, inside the frame
                if b <= a or b > size:
                    break
                a = b
            else:
                a, b = span[0], span[-1]
                if a < b and _pread_into(fd, view[a:b], addr + a) == b - a:
                    if getitem(base, lo, n, dest + i * row) == n * itemsize:
                        continue
                    raise _blosc.BloscError(f"blosc could not decode items {lo}..{hi} of the chunk at byte {addr}")
            left.append(i)
        return sorted(left)

    def _whole(self, offset: tuple[int, ...], out: np.ndarray | None = None) -> np.ndarray:
        """The decoded chunk at `offset`: in `out` (C-contiguous, the chunk's shape) if given,
        else in a per-thread buffer (or a read-only view of the stored bytes)."""
        chunk = _scratch(self.chunks, self.dtype) if out is None else out  # type: ignore[arg-type]
        if self._decompress_into(offset, chunk):
            return chunk
        mask, raw = self._raw_chunk(offset)
        if not mask & 1:
            _blosc.decompress(raw, chunk)
            return chunk
        stored = np.frombuffer(raw, self.dtype).reshape(self.chunks)  # type: ignore[arg-type]
        if out is None:  # stored without the filter (HDF5 does that for incompressible chunks)
            return stored
        out[...] = stored
        return out

    def _parts_pay(self, span: int, job: Any) -> bool:
        """Whether decoding `span` bytes of each chunk from its own blosc blocks decodes less
        than half of what whole chunks would (judged from the first chunk's header)."""
        nbytes = self._nbytes
        if 2 * span > nbytes:
            return False
        if not self._nblocks:
            entry = self._index.get(tuple(j[0] for j in job)) if self._index else None
            if entry is None or entry[2] & 1 or entry[1] < 16:
                return False
            head = os.pread(self._fd, 16, entry[0])  # type: ignore[arg-type]
            _, _, flags, _, _, blocksize, _ = _blosc.HEADER.unpack_from(head)
            if flags & _blosc.MEMCPYED:  # stored as is: any part is one read
                return True
            self._nblocks = -(-nbytes // max(blocksize, 1))
        blocksize = nbytes / self._nblocks
        return (span // blocksize + 2) * blocksize * 2 <= nbytes

    def _decode_all(self, jobs: Iterator[Any], buf: np.ndarray) -> None:
        for job in jobs:
            self._decode(job, buf)

    def _decode(self, job: tuple[tuple[Any, ...], ...], buf: np.ndarray) -> None:
        """Decode one chunk's part of a read; `job` holds per axis (chunk offset, slice in the chunk,
        slice in `buf`, whole-axis flag, first and last item offsets in the chunk)."""
        offset = tuple(j[0] for j in job)
        target = buf[tuple(j[2] for j in job)]
        if not all(j[3] for j in job):
            entry = self._index.get(offset) if self._index else None
            if entry is not None and self._decode_part(entry, sum(j[4] for j in job), sum(j[5] for j in job) + 1,
                                                       target):
                return
        elif target.flags.c_contiguous:
            self._whole(offset, target)  # the whole chunk, straight into the output
            return
        target[...] = self._whole(offset)[tuple(j[1] for j in job)]

    def _decode_part(self, entry: tuple[int, int, int], lo: int, hi: int, target: np.ndarray) -> bool:
        """Decode items ``lo..hi`` (C order) of the chunk at index `entry` into `target`, which
        receives them at the chunk's strides from `lo`; False, having done nothing, when
        :meth:`_items_into` cannot or it would not pay (half the chunk or more)."""
        if 2 * (hi - lo) * self.dtype.itemsize > self._nbytes:
            return False
        items, view, _, ptr = _part_buffers(self._nbytes, self.dtype)[2:]
        if not self._items_into(entry, lo, hi, view, ptr):
            return False
        target[...] = np.ndarray(target.shape, self.dtype, items, 0, self._bstrides)
        return True

    def _items_into(self, entry: tuple[int, int, int], lo: int, hi: int, dest: memoryview, dest_ptr: int) -> bool:
        """Decode items ``lo..hi`` (C order) of the chunk at index `entry` (address, size,
        filter mask) into `dest` (bytes at address `dest_ptr`), from only the blosc blocks
        that hold them.

        Reads the frame's header and block offsets, then the compressed bytes of those
        blocks, and decodes the items with ``blosc_getitem``. False, having done nothing,
        for a chunk stored without the filter, of one block, or with blocks out of order.
        """
        if self._fd is None or entry[2] & 1:
            return False
        addr, size, _ = entry
        nbytes = self._nbytes
        itemsize = self.dtype.itemsize
        frame, view, _, _, frame_ptr, _ = _part_buffers(nbytes, self.dtype)
        if size > len(frame):  # more than blosc ever writes: let the full path judge
            return False
        fd = self._fd
        have = min(size, 16 + 4 * self._nblocks)
        if _pread_into(fd, view[:have], addr) != have:
            raise _blosc.BloscError(f"chunk at byte {addr} is cut short")
        _, _, flags, _, total, blocksize, cbytes = _blosc.HEADER.unpack_from(frame)
        if total != nbytes or cbytes != size or blocksize <= 0:
            raise _blosc.BloscError(f"blosc frame header says {total} bytes from {cbytes}; expected {nbytes} from {size}")
        n = hi - lo
        if flags & _blosc.MEMCPYED:  # stored as is, after the header
            if _pread_into(fd, dest[: n * itemsize], addr + 16 + lo * itemsize) != n * itemsize:
                raise _blosc.BloscError(f"chunk at byte {addr} is cut short")
            return True
        nblocks = self._nblocks = -(-nbytes // blocksize)
        if nblocks == 1:
            return False
        table = 16 + 4 * nblocks
        if table > size:
            raise _blosc.BloscError(f"blosc frame of {size} bytes cannot hold {nblocks} block offsets")
        if have < table and _pread_into(fd, view[have:table], addr + have) != table - have:
            raise _blosc.BloscError(f"chunk at byte {addr} is cut short")
        span = _blosc.block_span(view[16:table], lo * itemsize // blocksize, (hi * itemsize - 1) // blocksize, cbytes)
        if span is None:
            return False
        a, b = span
        if _pread_into(fd, view[a:b], addr + a) != b - a:
            raise _blosc.BloscError(f"chunk at byte {addr} is cut short")
        _blosc.getitem_ptr(frame_ptr, lo, n, dest_ptr, itemsize)
        return True


def _part_buffers(nbytes: int, dtype: np.dtype) -> tuple[np.ndarray, memoryview, np.ndarray, memoryview, int, int]:
    """Per-thread buffers for partial chunk reads: the compressed frame and its memoryview,
    decoded items and their memoryview (bytes), and the addresses of the two arrays."""
    cache = getattr(_SCRATCH, "parts", None)
    if cache is None:
        cache = _SCRATCH.parts = {}
    key = (nbytes, dtype)
    bufs = cache.get(key)
    if bufs is None:
        if len(cache) > 8:
            cache.clear()
        frame = np.empty(nbytes + 16 + 4 * (nbytes // 128 + 1), np.uint8)
        items = np.empty(nbytes // dtype.itemsize, dtype)
        bufs = cache[key] = (frame, memoryview(frame), items, memoryview(items).cast("B"),  # type: ignore[arg-type]
                             frame.ctypes.data, items.ctypes.data)
    return bufs


def open_block(
    path: Path, block: tuple[int, ...], root: Path, key: str | None, rdcc_nbytes: int
) -> BlockHandle:
    """Open a block file read-only and find its array (see :func:`_open_readonly` on locking)."""
    try:
        f = _open_readonly(path, rdcc_nbytes)
    except FileNotFoundError as e:
        raise MissingBlockError(path, block) from e
    except OSError as e:
        if not path.exists():
            raise MissingBlockError(path, block) from e
        raise CorruptBlockError(path, block, str(e)) from e
    try:
        try:
            name = find_data_key(f, key)
        except KeyError as e:
            raise CorruptBlockError(path, block, e.args[0]) from None
        dset = f[name]
        if dset.is_virtual or dset.external:
            what = "a virtual dataset" if dset.is_virtual else "stored in external raw files"
            raise UnsafeDatasetError(
                f"{str(path)!r}: {name!r} is {what}; a block file must hold its own array (refused, "
                "as its sources could lie outside the dataset folder)"
            )
        return BlockHandle(f, dset)
    except BaseException:
        f.close()
        raise


class HandleCache:
    """A small LRU of open block files, per process: handles never cross a fork.

    Thread-safe. ``maxsize`` bounds the cached files; the least recently used is dropped first.
    """

    def __init__(self, maxsize: int = 32) -> None:
        self.maxsize = max(1, int(maxsize))
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._items: OrderedDict[int, BlockHandle] = OrderedDict()

    def _check_pid(self) -> None:
        if self._pid != os.getpid():  # forked: forget the parent's handles without touching them
            self._items = OrderedDict()
            self._lock = threading.Lock()
            self._pid = os.getpid()

    def get_or_open(self, index: int, opener: Any) -> BlockHandle:
        """The handle of block `index`, opened with ``opener()`` if it is not cached.

        An evicted handle is not closed here but dropped: a thread that is reading from it
        keeps it alive, and it closes when its last reference goes.
        """
        self._check_pid()
        with self._lock:
            item = self._items.get(index)
            if item is not None:
                self._items.move_to_end(index)
                return item
            item = opener()
            self._items[index] = item
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)
            return item

    def clear(self) -> None:
        """Close every cached file."""
        self._check_pid()
        with self._lock:
            items, self._items = list(self._items.values()), OrderedDict()
        for handle in items:
            try:
                handle.close()
            except Exception:  # pragma: no cover - closing is best effort
                pass

    def __len__(self) -> int:
        return len(self._items)
