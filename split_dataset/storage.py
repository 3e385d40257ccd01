"""All disk I/O: block names, block files, codecs, JSON, atomic writes, the handle cache.

The only module that imports h5py and hdf5plugin. Block files are HDF5 in the
flammkuchen/PyTables layout (FORMAT.md): one array under ``stack``/``stack_{N}D``.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import os
import re
import stat
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
    """Parse a metadata JSON file; malformed content raises :class:`MetadataError`.

    At most 16 MiB are read; anything but a regular file, nesting deeper than Python's
    parser goes, and integers longer than Python converts are malformed too.
    """
    try:
        fd = open_regular(path)
    except NotRegularFileError as e:
        raise MetadataError(str(e)) from None
    except OSError as e:
        raise MetadataError(f"{str(path)!r} cannot be read: {e.strerror or e}") from e
    try:
        with os.fdopen(fd, "rb") as f:
            raw = f.read(min(os.fstat(f.fileno()).st_size + 1, 1 << 24))
        doc = json.loads(raw)
    except RecursionError:
        raise MetadataError(f"{str(path)!r} nests JSON values too deeply to be metadata") from None
    except ValueError as e:  # invalid JSON or UTF-8, integers past Python's digit limit
        raise MetadataError(f"{str(path)!r} is not valid JSON: {_short(str(e))}") from None
    if not isinstance(doc, dict):
        raise MetadataError(f"{str(path)!r} must hold a JSON object, found {type(doc).__name__}")
    return doc


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


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
    if isinstance(o, Mapping):  # ds.attrs
        return dict(o)
    raise TypeError(f"attrs must be JSON-serialisable; {o!r} of type {type(o).__name__} is not")


# ----------------------------------------------------------------------------- checksums

CHECKSUM_FILENAME = "SHA256SUMS"


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes; anything but a regular file raises :class:`NotRegularFileError`."""
    h = hashlib.sha256()
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    with os.fdopen(open_regular(path), "rb", buffering=0) as f:
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
        if node.dtype.kind not in "biuf" or node.size > 1024 or node.is_virtual or node.external:
            return None  # pickled objects and anything unexpected are ignored, not loaded
        handle = BlockHandle(node.file, node)
        if handle.mode == "hdf5" or not node.size:
            value = node[()]
        else:  # blosc: decoded by the validating reader, never by HDF5's filter on trust
            value = np.empty(node.shape, node.dtype)
            try:
                handle.read(tuple(slice(0, n, 1) for n in node.shape), value, tuple(slice(None) for _ in node.shape))
            except (OSError, ValueError, RuntimeError) as e:
                raise MetadataError(f"legacy metadata value {node.name!r} cannot be decoded: {e}") from e
        return value.tolist() if value.ndim else value.item()
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
    """The block's array: `preferred`, else ``stack_{N}D``/``stack``, else the one dataset named ``stack*``.

    Every link on the way to it must be a hard link inside the file: an external or soft
    link, anywhere on a path like ``grp/stack_3D``, raises :class:`UnsafeDatasetError`.
    """
    names = sorted(k for k in f.keys() if k.startswith("stack") and k != "stack_metadata")
    for name in ([preferred] if preferred else []) + names:
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


def _open_readonly(path: Path, rdcc_nbytes: int = 1 << 20) -> h5py.File:
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


def regular_stat(path: Path) -> os.stat_result:
    """``os.stat(path)`` (following links) if it is a regular file, else :class:`NotRegularFileError`."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise NotRegularFileError(f"{str(path)!r} is {_file_kind(st.st_mode)}, not a regular file; refused")
    return st


def open_regular(path: Path) -> int:
    """A read-only descriptor of `path`, which must be a regular file (checked on the open file,
    which a FIFO's open cannot block: ``O_NONBLOCK``)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFileError(f"{str(path)!r} is {_file_kind(mode)}, not a regular file; refused")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


class NotRegularFileError(OSError):
    """A path that must be a regular file is a FIFO, a device, a folder or a socket."""


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


def _bytes_of(a: np.ndarray) -> memoryview:
    """The bytes of a C-contiguous array (any dtype, byte order included)."""
    return memoryview(a.reshape(-1).view(np.uint8))


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


def _read_exactly(fd: int, view: memoryview, offset: int) -> None:
    if _pread_into(fd, view, offset) != len(view):
        raise _blosc.BloscError(f"the chunk bytes {offset}..{offset + len(view)} lie past the end of the file "
                                "(a truncated file?)")


_LIB_GETITEM = _blosc.getitem_function()
_SHUFFLE_FILTER, _FLETCHER32 = 2, 3  # HDF5's own filter ids


def _outer(sels: tuple[Any, ...]) -> tuple[Any, ...]:
    """Index selecting the outer product of per-axis slices/index arrays (numpy takes several arrays pointwise)."""
    if sum(type(s) is not slice for s in sels) <= 1:
        return sels
    return np.ix_(*(np.arange(s.start, s.stop, s.step) if type(s) is slice else s for s in sels))


def _as_slice(idx: np.ndarray) -> Any:
    """Sorted unique indices as a slice when evenly spaced, else as they are."""
    if len(idx) == 1:
        return slice(int(idx[0]), int(idx[0]) + 1, 1)
    d = np.diff(idx)
    if np.all(d == d[0]):
        return slice(int(idx[0]), int(idx[-1]) + 1, int(d[0]))
    return idx


class BlockHandle:
    """An open block file and its array, with its read strategy chosen once.

    Strategies, by the array's HDF5 filter pipeline:

    - ``"direct"`` (blosc alone, what this package and the old one write): the chunk
      index is read once (``chunk_iter``), then each chunk's compressed bytes are fetched
      with ``os.pread``, their blosc header and block offsets validated
      (:class:`_blosc.FrameCheck`) and decoded by c-blosc (``_blosc``), outside the GIL
      and HDF5's global lock, in parallel, straight into the output where possible: whole
      chunks, or only the blosc blocks that hold a small window. Stepped slices and
      index arrays decode each touched chunk once and take what they need in memory.
      Chunks never written read as the fill value, as HDF5 defines.
    - ``"checked"`` (byte shuffle before blosc, or fletcher32 after it): every touched
      chunk's blosc frame is validated, then HDF5 decodes it.
    - ``"hdf5"`` (no blosc: gzip, none, contiguous): h5py reads it.
    - ``"refused"`` (blosc among other filters whose frames cannot be validated): reads raise.

    Block files never change once renamed into place, so the index stays valid.
    """

    __slots__ = ("file", "dset", "path", "name", "shape", "dtype", "chunks", "checked", "users", "retired", "mode",
                 "_check", "_trailer", "_fill", "_index", "_fd", "_strides", "_bstrides", "_nbytes",
                 "_nblocks", "__weakref__")

    def __init__(self, file: h5py.File, dset: h5py.Dataset, fd: int | None = None) -> None:
        self.file = file
        self.dset = dset
        self.path = Path(file.filename)
        self.name = str(dset.name).lstrip("/")  # the array's path in the file
        self.shape: tuple[int, ...] = dset.shape
        self.dtype: np.dtype = dset.dtype
        self.chunks: tuple[int, ...] | None = dset.chunks
        self.checked = False  # set by the dataset once the shape and dtype were validated
        self.users = 0  # reads under way (HandleCache)
        self.retired = False  # dropped from the cache: closes when the last read ends
        self._index: dict[tuple[int, ...], tuple[int, int, int]] | None = None
        self._fd = fd  # a descriptor of the same file as `file`, for os.pread
        self._strides: tuple[int, ...] = ()  # C strides of a chunk, in items
        self._bstrides: tuple[int, ...] = ()  # the same in bytes
        self._nbytes = 0  # bytes of a chunk
        self._nblocks = 0  # blosc blocks per chunk seen last (how much of a frame's offset table to read)
        self._trailer = 0  # bytes after the blosc frame in a stored chunk (fletcher32)
        self._fill = dset.fillvalue
        self._check: _blosc.FrameCheck | None = None
        self.mode = "hdf5"
        if self.chunks is None:
            return
        self._strides = tuple(math.prod(self.chunks[k + 1:]) for k in range(len(self.chunks)))
        self._bstrides = tuple(st * self.dtype.itemsize for st in self._strides)
        self._nbytes = self._strides[0] * self.chunks[0] * self.dtype.itemsize
        plist = dset.id.get_create_plist()
        filters = [plist.get_filter(i) for i in range(plist.get_nfilters())]
        ids = [f[0] for f in filters]
        if BLOSC_FILTER not in ids:
            return
        k = ids.index(BLOSC_FILTER)
        cd = tuple(filters[k][2])
        if self.dtype.hasobject or not self._nbytes:
            self.mode = "refused"
            return
        self._check = _blosc.FrameCheck(self._nbytes, self.dtype.itemsize, cd[5] if len(cd) > 5 else 1,
                                        cd[6] if len(cd) > 6 else 0)
        if ids == [BLOSC_FILTER] and _blosc.available():
            self.mode = "direct"
        elif set(ids[:k]) <= {_SHUFFLE_FILTER} and ids[k + 1:] in ([], [_FLETCHER32]):
            self.mode = "checked"
            self._trailer = 4 * len(ids[k + 1:])
        else:
            self.mode = "refused"
        if self.mode not in ("direct", "checked") and fd is not None:  # h5py reads it all: no descriptor needed
            self._fd = None
            os.close(fd)

    def __iter__(self) -> Any:  # unpacks as (file, dataset)
        return iter((self.file, self.dset))

    def __del__(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass

    def close(self) -> None:
        """Close the file (and the raw descriptor used for direct chunk reads). Idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        self.file.close()

    @property
    def direct(self) -> bool:
        """Whether chunks are read and decoded by this package (blosc alone)."""
        return self.mode == "direct"

    def get(self, local: tuple[slice, ...]) -> np.ndarray:
        """``dset[local]`` for step-1 slices of a :attr:`direct` array, as a new array (or a view of one)."""
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
        index = self._index if self._index is not None else self._load_index()
        inside = tuple(slice(s.start - o, s.stop - o) for s, o in zip(local, offset))
        whole = all(s.stop - s.start == c for s, c in zip(inside, chunks))
        entry = index.get(tuple(offset))
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
        """Read ``dset[local]`` into ``buf[out]``; `local` holds per axis a slice (step > 0) or sorted
        unique indices, taken as an outer product."""
        mode = self.mode
        if mode == "direct":
            if all(type(s) is slice and s.step == 1 for s in local):
                self._read_chunks(local, buf, out)
            else:
                self._gather(local, buf, out)
            return
        if mode == "refused":
            raise _blosc.BloscError(
                "its HDF5 filters combine blosc with others in an order whose blosc frames cannot be "
                "validated before decoding; refused"
            )
        if mode == "checked":
            self._validate_region(local)
        if sum(type(s) is not slice for s in local) <= 1:
            buf[out] = self.dset[local]
            return
        # h5py takes one index array at a time: read the arrays' bounding box, then take
        box = tuple(s if type(s) is slice else slice(int(s[0]), int(s[-1]) + 1) for s in local)
        rel = tuple(slice(None) if type(s) is slice else s - s[0] for s in local)
        buf[out] = self.dset[box][_outer(rel)]

    def check_chunks(self) -> tuple[int, int]:
        """Decode every chunk stored in the file, as a read would (validated, never by HDF5's
        blosc filter on trust): ``(chunks stored, chunks of the array)``; the others were never
        written and read as the fill value. Bounded by what the file holds, whatever shape it
        declares. Raises what a read of a damaged chunk raises.

        Examples
        --------
        >>> handle.check_chunks()  # doctest: +SKIP
        (200, 200)
        """
        if self.chunks is None:  # contiguous: HDF5 stores it whole, or not at all
            if self.dset.id.get_storage_size() and math.prod(self.shape):
                self._check_slabs()
            return (1, 1) if math.prod(self.shape) else (0, 0)
        total = math.prod(-(-n // c) for n, c in zip(self.shape, self.chunks))
        if self.mode == "refused":
            self.read(tuple(slice(0, 1, 1) for _ in self.shape), np.empty((1,) * len(self.shape), self.dtype),
                      tuple(slice(None) for _ in self.shape))  # raises, saying why
        if self.mode == "hdf5":
            offsets: list[tuple[int, ...]] = []
            self.dset.id.chunk_iter(lambda c: offsets.append(c.chunk_offset))
        else:
            offsets = list(self._index if self._index is not None else self._load_index())
        run_shared(self._check_all, offsets)
        return len(offsets), total

    def _check_all(self, offsets: Iterator[tuple[int, ...]]) -> None:
        chunks = self.chunks
        assert chunks is not None
        for offset in offsets:
            if self.mode == "direct":
                self._whole(offset)
                continue
            region = tuple(slice(o, min(o + c, n), 1) for o, c, n in zip(offset, chunks, self.shape))
            if self.mode == "checked":
                self._validate_region(region)
            self.dset[region]

    def _check_slabs(self) -> None:
        row = max(1, math.prod(self.shape[1:]) * self.dtype.itemsize)
        step = max(1, (64 << 20) // row)
        for start in range(0, self.shape[0], step):
            self.dset[start:start + step]

    # ------------------------------------------------------------------ chunk index

    def _load_index(self) -> dict[tuple[int, ...], tuple[int, int, int]]:
        index: dict[tuple[int, ...], tuple[int, int, int]] = {}
        dsid = self.dset.id
        try:
            dsid.chunk_iter(lambda c: index.__setitem__(c.chunk_offset, (c.byte_offset, c.size, c.filter_mask)))
        except (AttributeError, RuntimeError):  # HDF5 before 1.12.3 / 1.10.10: ask chunk by chunk
            index = {}
            for i in range(dsid.get_num_chunks()):
                c = dsid.get_chunk_info(i)
                index[c.chunk_offset] = (c.byte_offset, c.size, c.filter_mask)
        if self._fd is None:
            self._fd = open_regular(self.path)
        self._check_index(index, os.fstat(self._fd).st_size)
        self._index = index
        return index

    def _check_index(self, index: dict[tuple[int, ...], tuple[int, int, int]], file_size: int) -> None:
        """Refuse a chunk index that HDF5 would follow anywhere: an entry without an address
        (an unwritten chunk has no entry at all), outside the file, larger than blosc ever
        stores, or overlapping another (two entries aliasing the same bytes)."""
        limit = self._nbytes + 16 + self._trailer
        spans = []
        for offset, (addr, size, mask) in index.items():
            what = None
            if addr is None or addr < 0:
                what = "has no address"
            elif size < 0 or addr + size > file_size:
                what = f"lies at bytes {addr}..{addr + size}, past the end of the file ({file_size} bytes)"
            elif size > (self._nbytes + self._trailer if mask & 1 else limit):
                what = f"has {size} bytes; a chunk of {self._nbytes} bytes is stored in at most {limit}"
            if what is not None:
                where = f"the chunk at {offset}" if offset is not None else "an entry"
                raise _blosc.BloscError(f"the HDF5 chunk index is damaged: {where} {what}")
            spans.append((addr, size, offset))
        spans.sort()
        for (a, n, o), (b, _, p) in zip(spans, spans[1:]):
            if a + n > b:
                raise _blosc.BloscError(f"the HDF5 chunk index is damaged: the chunks at {o} and {p} share bytes {b}..")

    # ------------------------------------------------------------------ whole chunks

    def _whole(self, offset: tuple[int, ...], out: np.ndarray | None = None) -> np.ndarray:
        """The decoded chunk at `offset`: in `out` (C-contiguous, the chunk's shape) if given,
        else in a per-thread buffer. Unwritten chunks hold the fill value."""
        chunk = _scratch(self.chunks, self.dtype) if out is None else out  # type: ignore[arg-type]
        index = self._index if self._index is not None else self._load_index()
        entry = index.get(offset)
        if entry is None:
            chunk[...] = self._fill
            return chunk
        addr, size, mask = entry
        nbytes, fd = self._nbytes, self._fd
        assert fd is not None
        if mask & 1:  # stored without the filter (HDF5 does that when a filter fails)
            if size != nbytes + self._trailer:
                raise _blosc.BloscError(f"chunk at byte {addr} is stored unfiltered in {size} bytes; it holds {nbytes}")
            _read_exactly(fd, _bytes_of(chunk), addr)
            return chunk
        frame, view, _, _, ptr, _ = _part_buffers(nbytes, self.dtype)
        if size > nbytes + 16 + self._trailer:
            raise _blosc.BloscError(f"chunk at byte {addr} has {size} bytes; blosc stores {nbytes} in at most {nbytes + 16}")
        _read_exactly(fd, view[:size], addr)
        size -= self._trailer
        check = self._check
        assert check is not None
        nblocks = check.header(frame, size)[2]
        if nblocks:
            check.offsets(frame, nblocks, size)
        _blosc.decompress_ptr(ptr, chunk, nbytes)
        return chunk

    def _validate_region(self, local: tuple[Any, ...]) -> None:
        """Validate the blosc frame of every chunk `local` touches (``"checked"`` strategy)."""
        index = self._index if self._index is not None else self._load_index()
        chunks, check, fd = self.chunks, self._check, self._fd
        assert chunks is not None and check is not None and fd is not None
        ranges = []
        for s, c in zip(local, chunks):
            lo, hi = (s.start, s.stop - 1) if type(s) is slice else (int(s[0]), int(s[-1]))
            ranges.append(range(lo // c * c, hi // c * c + 1, c))
        nbytes = self._nbytes
        frame, view = _part_buffers(nbytes, self.dtype)[:2]
        for offset in itertools.product(*ranges):
            entry = index.get(offset)
            if entry is None or entry[2] & 1:
                continue
            addr, size, _ = entry
            if size > nbytes + 16 + self._trailer:
                raise _blosc.BloscError(f"chunk at byte {addr} has {size} bytes; blosc stores at most {nbytes + 16}")
            _read_exactly(fd, view[:size], addr)
            nblocks = check.header(frame, size - self._trailer)[2]
            if nblocks:
                check.offsets(frame, nblocks, size - self._trailer)

    def _gather(self, local: tuple[Any, ...], buf: np.ndarray, out: tuple[slice, ...]) -> None:
        """Stepped slices and index arrays: decode each touched chunk once, take what is needed."""
        chunks = self.chunks
        assert chunks is not None
        if self._index is None:
            self._load_index()
        per_axis = []
        for s, o, c in zip(local, out, chunks):
            idx = np.arange(s.start, s.stop, s.step) if type(s) is slice else np.asarray(s)
            k = idx // c
            bounds = [0, *(np.flatnonzero(np.diff(k)) + 1).tolist(), len(idx)]
            per_axis.append([(int(k[i0]) * c, _as_slice(idx[i0:i1] - int(k[i0]) * c), slice(o.start + i0, o.start + i1))
                             for i0, i1 in zip(bounds[:-1], bounds[1:])])
        run_shared(self._gather_all, list(itertools.product(*per_axis)), buf)

    def _gather_all(self, jobs: Iterator[Any], buf: np.ndarray) -> None:
        chunks = self.chunks
        assert chunks is not None
        for job in jobs:
            offset = tuple(j[0] for j in job)
            inner = tuple(j[1] for j in job)
            target = buf[tuple(j[2] for j in job)]
            if target.flags.c_contiguous and all(type(s) is slice and s.step == 1 and s.stop - s.start == c
                                                 for s, c in zip(inner, chunks)):
                self._whole(offset, target)
            else:
                target[...] = self._whole(offset)[_outer(inner)]

    # ------------------------------------------------------------------ step-1 regions

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
        if self._parts_pay(span * self.dtype.itemsize, first):
            # small parts of many chunks (a trace through time): a few µs of decoding each, less
            # than handing work between threads costs (measured: two threads took twice as long)
            if all(len(axis) == 1 or c == 1 for axis, c in zip(per_axis, chunks)):
                self._decode_rows(per_axis, buf)
            else:
                for job in itertools.product(*per_axis):
                    self._decode(job, buf)
            return
        run_shared(self._decode_all, list(itertools.product(*per_axis)), buf)

    def _parts_pay(self, span: int, job: Any) -> bool:
        """Whether decoding `span` bytes of each chunk from its own blosc blocks decodes less
        than half of what whole chunks would (judged from the first chunk's header)."""
        nbytes = self._nbytes
        if 2 * span > nbytes:
            return False
        if not self._nblocks:
            entry = self._index.get(tuple(j[0] for j in job)) if self._index else None
            if entry is None or entry[2] & 1 or entry[1] < 16 or self._fd is None:
                return False
            head = os.pread(self._fd, 16, entry[0])
            if len(head) < 16:
                return False
            _, _, flags, _, _, blocksize, _ = _blosc.HEADER.unpack_from(head)
            if flags & _blosc.MEMCPYED:  # stored as is: any part is one read
                return True
            if not 0 < blocksize <= nbytes:
                return False  # the whole-chunk path says what is wrong
            self._nblocks = -(-nbytes // blocksize)
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

    # ------------------------------------------------------------------ parts of chunks

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
        view, ptr, row = _bytes_of(rows), rows.ctypes.data, n * itemsize
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
        :meth:`_items_into` does one, with less said per chunk; returns the chunks left for
        :meth:`_items_into` (unwritten, stored unfiltered or as is, a different block size,
        a table not as read: it decodes them or says what is wrong). Every header and
        offset table is validated before c-blosc sees it."""
        nblocks, nbytes, itemsize = self._nblocks, self._nbytes, self.dtype.itemsize
        check, fd = self._check, self._fd
        if nblocks < 2 or fd is None or check is None:
            return list(range(len(entries)))
        table = 16 + 4 * nblocks
        frame, view, _, _, base, _ = _part_buffers(nbytes, self.dtype)
        getitem, preadv, header, offsets, span = (_LIB_GETITEM, os.preadv, check.header, check.offsets,
                                                  _blosc.span)
        n = hi - lo
        left: list[int] = []
        blocksize = first = last = 0
        for i, entry in enumerate(entries):
            if entry is None or entry[2] & 1 or not table <= entry[1] <= nbytes + 16:
                left.append(i)
                continue
            addr, size, _ = entry
            if preadv(fd, (view[:table],), addr) != table:
                left.append(i)
                continue
            flags, bsize, nb = header(frame, size)  # raises on anything c-blosc must not see
            if nb != nblocks:
                left.append(i)  # stored as is, or another block size: the careful path
                continue
            if bsize != blocksize:  # the blocks holding the items: the same in every chunk of this size
                blocksize, first, last = bsize, lo * itemsize // bsize, (hi * itemsize - 1) // bsize
            starts = offsets(frame, nblocks, size)
            a, b = span(starts, frame, first, last, size)
            if _pread_into(fd, view[a:b], addr + a) != b - a:
                raise _blosc.BloscError(f"the chunk at byte {addr} is cut short (a truncated file?)")
            if getitem(base, lo, n, dest + i * row) != n * itemsize:
                raise _blosc.BloscError(f"blosc could not decode items {lo}..{hi} of the chunk at byte {addr}")
        return left

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

        Reads the frame's header and block offsets, validates them, then reads the
        compressed bytes of those blocks and decodes the items with ``blosc_getitem``.
        False, having done nothing, for a chunk of one blosc block.
        """
        fd, check = self._fd, self._check
        assert fd is not None and check is not None
        addr, size, mask = entry
        nbytes, itemsize = self._nbytes, self.dtype.itemsize
        n = hi - lo
        if mask & 1:  # stored without the filter: the items are where they are
            if size != nbytes:
                raise _blosc.BloscError(f"chunk at byte {addr} is stored unfiltered in {size} bytes; it holds {nbytes}")
            _read_exactly(fd, dest[: n * itemsize], addr + lo * itemsize)
            return True
        frame, view, _, _, frame_ptr, _ = _part_buffers(nbytes, self.dtype)
        if size > nbytes + 16:
            raise _blosc.BloscError(f"chunk at byte {addr} has {size} bytes; blosc stores {nbytes} in at most {nbytes + 16}")
        have = min(size, 16 + 4 * self._nblocks)
        _read_exactly(fd, view[:have], addr)
        _, blocksize, nblocks = check.header(frame, size)
        if not nblocks:  # stored as is, after the header
            _read_exactly(fd, dest[: n * itemsize], addr + 16 + lo * itemsize)
            return True
        self._nblocks = nblocks
        if nblocks == 1:
            return False
        table = 16 + 4 * nblocks
        if have < table:
            _read_exactly(fd, view[have:table], addr + have)
        starts = check.offsets(frame, nblocks, size)
        a, b = _blosc.span(starts, frame, lo * itemsize // blocksize, (hi * itemsize - 1) // blocksize, size)
        _read_exactly(fd, view[a:b], addr + a)
        _blosc.getitem_ptr(frame_ptr, lo, n, dest_ptr, itemsize)
        return True


def _part_buffers(nbytes: int, dtype: np.dtype) -> tuple[np.ndarray, memoryview, np.ndarray, memoryview, int, int]:
    """Per-thread buffers for chunk reads: the compressed frame and its memoryview (room for
    the largest valid frame and more: c-blosc never reads past it), decoded items and their
    memoryview (bytes), and the addresses of the two arrays."""
    cache = getattr(_SCRATCH, "parts", None)
    if cache is None:
        cache = _SCRATCH.parts = {}
    key = (nbytes, dtype)
    bufs = cache.get(key)
    if bufs is None:
        if len(cache) > 8:
            cache.clear()
        frame = np.zeros(nbytes + 64 + 4 * (nbytes // 128 + 1), np.uint8)
        items = np.empty(nbytes // dtype.itemsize, dtype)
        bufs = cache[key] = (frame, memoryview(frame), items, _bytes_of(items), frame.ctypes.data, items.ctypes.data)
    return bufs


def open_block(
    path: Path, block: tuple[int, ...], root: Path, key: str | None, rdcc_nbytes: int
) -> BlockHandle:
    """Open a block file read-only and find its array (see :func:`_open_readonly` on locking).

    Refuses (:class:`UnsafeDatasetError`) anything that is not a regular file, and an
    array reached through a link, virtual, or stored in external files; a file that is
    missing raises :class:`MissingBlockError`, one that is not HDF5 :class:`CorruptBlockError`.
    """
    try:
        fd, f = _open_same(path, rdcc_nbytes)
    except FileNotFoundError as e:
        raise MissingBlockError(path, block) from e
    except NotRegularFileError as e:
        raise UnsafeDatasetError(f"block {block}: {e}") from None
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
        return BlockHandle(f, dset, fd)
    except BaseException:
        f.close()
        os.close(fd)
        raise


def _open_same(path: Path, rdcc_nbytes: int) -> tuple[int, h5py.File]:
    """A descriptor and an h5py file of the same file at `path`, which a writer may replace
    (rename over) at any moment: the path must name the same file before and after h5py opens it."""
    for _ in range(8):
        fd = open_regular(path)
        try:
            before = os.fstat(fd)
            f = _open_readonly(path, rdcc_nbytes)
        except BaseException:
            os.close(fd)
            raise
        try:
            after = os.stat(path)
        except OSError:
            after = None
        if after is not None and (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino):
            return fd, f
        f.close()
        os.close(fd)
    raise OSError(f"{str(path)!r} kept being replaced while it was opened")


class HandleCache:
    """A small LRU of open block files, per process: handles never cross a fork.

    Thread-safe. ``maxsize`` bounds the cached files; the least recently used is dropped
    first. A handle is closed only when no read uses it: reads take it with
    :meth:`acquire` and give it back with :meth:`release`; one dropped from the cache (by
    the LRU, :meth:`clear`, a dataset's ``close()`` or ``refresh()``) while reads use it
    closes when the last of them releases it, so no read ever sees its file, or a
    descriptor number reused by another file, closed under it.
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

    def acquire(self, index: int, opener: Any) -> BlockHandle:
        """The handle of block `index` (opened with ``opener()`` if it is not cached), in use
        until :meth:`release`."""
        self._check_pid()
        dropped: list[BlockHandle] = []
        with self._lock:
            item = self._items.get(index)
            if item is not None:
                self._items.move_to_end(index)
            else:
                item = opener()
                self._items[index] = item
                while len(self._items) > self.maxsize:
                    old = self._items.popitem(last=False)[1]
                    old.retired = True
                    if not old.users:
                        dropped.append(old)
            item.users += 1
        for old in dropped:
            _close_quietly(old)
        return item

    def release(self, item: BlockHandle) -> None:
        """End a use of `item` begun by :meth:`acquire`."""
        with self._lock:
            item.users -= 1
            close = item.retired and not item.users
        if close:
            _close_quietly(item)

    def get_or_open(self, index: int, opener: Any) -> BlockHandle:
        """The handle of block `index` for metadata only (shape, dtype): no read may use it
        after another thread could :meth:`clear` the cache."""
        item = self.acquire(index, opener)
        self.release(item)
        return item

    def clear(self) -> None:
        """Drop every cached file: close those no read uses now, the others when their reads end."""
        self._check_pid()
        with self._lock:
            items, self._items = list(self._items.values()), OrderedDict()
            idle = []
            for item in items:
                item.retired = True
                if not item.users:
                    idle.append(item)
        for item in idle:
            _close_quietly(item)

    def __len__(self) -> int:
        return len(self._items)


def _close_quietly(handle: BlockHandle) -> None:
    try:
        handle.close()
    except Exception:  # pragma: no cover - closing is best effort
        pass
