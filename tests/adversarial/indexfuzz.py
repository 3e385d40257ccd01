"""Fuzzer of ``chunk_index.bin``: build datasets, craft hostile index files, run them in a child.

The parent (tests/test_chunk_index.py) builds a few small datasets, takes each one's
valid ``chunk_index.bin`` apart (:func:`decode`), and derives hostile variants from it:
raw bit flips and truncations (the trailer checksum must catch them), and files whose
fields were edited and then re-encoded with a correct trailer (:func:`encode`), so the
structural validation itself is what is tested. Each variant is a case for
``python indexfuzz.py SPEC.json OUT.jsonl``, run in a child process so that a crash or a
hang fails a test instead of pytest; a ``{"begin": id}`` line precedes each case.

Per case the child writes the bytes as the dataset's ``chunk_index.bin``, then:

- ``read_index_bytes`` must raise :class:`ChunkIndexError` or return an index;
- ``read_index`` (the file) likewise;
- ``SplitDataset(root)`` must warn :class:`ChunkIndexWarning` when the file was refused,
  and every read (``ds[:]``, stepped, index arrays, masks, a trace, whole-chunk regions)
  must return exactly the numpy data, or raise a :class:`SplitDatasetError` subclass.

Case kinds: ``strict`` (the oracle above), ``lie`` (a crafted index that is internally
consistent but describes other bytes than the file holds: swapped records, a chunk
left out, another chunk shape; wrong pixels cannot be detected there and are only counted, anything else is
still required), ``redirect`` (addresses changed but checksums kept: whole-chunk reads
must be right or raise; partial decodes are unverified by design and only counted).
"""

from __future__ import annotations

import json
import os
import struct
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HEAD = struct.Struct("<8sII")
MAGIC = b"\x89SDX\r\n\x1a\n"


# ---------------------------------------------------------------------------------------- format

@dataclass
class Parts:
    header: dict[str, Any]
    blocks: np.ndarray
    entries: np.ndarray


def decode(data: bytes) -> Parts:
    from split_dataset.storage.indexfile import ENTRY_DTYPE, block_dtype

    _, _, hlen = HEAD.unpack_from(data)
    header = json.loads(data[HEAD.size:HEAD.size + hlen])
    bdt = block_dtype(header["ndim"])
    pos = HEAD.size + hlen
    blocks = np.frombuffer(data, bdt, header["blocks"], pos).copy()
    entries = np.frombuffer(data, ENTRY_DTYPE, header["entries"], pos + blocks.nbytes).copy()
    return Parts(header, blocks, entries)


def seal(body: bytes) -> bytes:
    """`body` plus a correct XXH3-64 trailer."""
    import xxhash

    return body + struct.pack("<Q", xxhash.xxh3_64_intdigest(body))


def encode(header: Any, blocks: np.ndarray, entries: np.ndarray, *, text: bytes | None = None,
           hlen: int | None = None, version: int = 1, magic: bytes = MAGIC, counts: bool = True) -> bytes:
    """An index file of these parts, with a correct trailer. ``counts``: set the header's
    ``blocks``/``entries`` from the tables (when `header` is a dict)."""
    if text is None:
        if counts and isinstance(header, dict):
            header = {**header, "blocks": len(blocks), "entries": len(entries)}
        text = json.dumps(header, sort_keys=True).encode()
        text += b" " * (-len(text) % 8)
    body = HEAD.pack(magic, version, len(text) if hlen is None else hlen) + text + blocks.tobytes() + entries.tobytes()
    return seal(body)


def encode_parts(p: Parts, **kw: Any) -> bytes:
    return encode(p.header, p.blocks, p.entries, **kw)


# ---------------------------------------------------------------------------------------- datasets

@dataclass
class Dataset:
    name: str
    root: Path
    npy: Path
    index: bytes  # the valid chunk_index.bin as written
    whole: list[str]  # selections (Python expressions) reading whole chunks only


#: (name, shape, block shape, chunks, dtype, kind of data, whole-chunk selections)
DATASETS: list[tuple[str, tuple[int, ...], tuple[int, ...], tuple[int, ...] | None, str, str, list[str]]] = [
    # chunks not dividing the blocks, a short last block
    ("u16_4d", (10, 3, 17, 19), (4, 3, 17, 19), (1, 2, 8, 8), "uint16", "smooth",
     ["[0:4, 0:2, 0:16, 0:16]", "[4:5, 0:2, 8:16, 0:8]"]),
    # incompressible: blosc stores the frames as is (MEMCPYED)
    ("u8_noise", (6, 40, 33), (3, 40, 33), (1, 20, 33), "uint8", "noise", ["[:]", "[2]", "[3:6, 20:40]"]),
    ("f32_1d", (1000,), (256,), (64,), "float32", "smooth", ["[0:768]", "[64:128]"]),
    ("i64_3d", (8, 12, 10), (4, 6, 10), (2, 3, 5), "int64", "mixed", ["[:]", "[0:2, 0:3, 5:10]"]),
]


def _data(shape: tuple[int, ...], dtype: str, kind: str, rng: np.random.Generator) -> np.ndarray:
    dt = np.dtype(dtype)
    if kind == "noise":
        return rng.integers(0, 256, shape, dtype=np.uint8).astype(dt)
    base = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape) % 997
    if kind == "mixed":
        base = base + rng.integers(0, 50, shape)
    return base.astype(dt)


def build(tmp: Path) -> list[Dataset]:
    import split_dataset

    rng = np.random.default_rng(12)
    out = []
    for name, shape, block, chunks, dtype, kind, whole in DATASETS:
        x = _data(shape, dtype, kind, rng)
        root = tmp / name
        split_dataset.save(x, root, block, chunks=chunks, fsync=False, checksums=False)
        npy = tmp / f"{name}.npy"
        np.save(npy, x)
        out.append(Dataset(name, root, npy, (root / "chunk_index.bin").read_bytes(), whole))
    return out


# ---------------------------------------------------------------------------------------- cases

Case = tuple[str, str, bytes]  # (label, kind, file bytes)


def _entry_nbytes(p: Parts, i: int) -> int:
    """Bytes of a decoded chunk of entry `i`'s block."""
    owner = int(np.searchsorted(p.blocks["first"].astype(np.int64), i, side="right")) - 1
    return int(np.prod(p.blocks["chunks"][owner])) * np.dtype(p.header["dtype"]).itemsize


def raw_cases(data: bytes, rng: np.random.Generator, n_flips: int) -> Iterator[Case]:
    """Bit flips and truncations without a fixed trailer: the checksum must refuse them all."""
    n = len(data)
    hlen = HEAD.unpack_from(data)[2]
    p = decode(data)
    table = HEAD.size + hlen
    ends = {0, 1, 7, 8, 12, 15, 16, 17, table - 1, table, table + 1, n - 9, n - 8, n - 7, n - 1}
    ends |= {table + k * p.blocks.dtype.itemsize for k in range(len(p.blocks) + 1)}
    start = table + p.blocks.nbytes
    ends |= {start + k * 32 for k in range(0, len(p.entries) + 1, max(1, len(p.entries) // 8))}
    for end in sorted(e for e in ends if 0 <= e < n):
        yield f"truncate@{end}", "strict", data[:end]
    yield "append-1", "strict", data + b"\0"
    yield "append-8", "strict", data + b"\0" * 8
    yield "double", "strict", data + data
    for _ in range(n_flips):
        k = int(rng.integers(0, n * 8))
        b = bytearray(data)
        b[k // 8] ^= 1 << (k % 8)
        yield f"flip@{k // 8}.{k % 8}", "strict", bytes(b)
    for _ in range(max(1, n_flips // 4)):  # bursts
        k = int(rng.integers(0, n - 4))
        b = bytearray(data)
        b[k:k + 4] = rng.integers(0, 256, 4, dtype=np.uint8).tobytes()
        yield f"burst@{k}", "strict", bytes(b)


_EXTREME_INTS: list[Any] = [0, -1, 1, 33, 2**31, 2**32 + 1, 2**63, 2**64 + 5, 10**40, 1.0, 1.5, "3", None, True,
                            [], {}, float("nan")]


def header_cases(data: bytes) -> Iterator[Case]:
    """Header fields out of range or of the wrong type, with a correct trailer."""
    p = decode(data)
    h = p.header
    for key in ("ndim", "blocks", "entries"):
        for v in _EXTREME_INTS:
            try:
                yield f"header.{key}={v!r}", "strict", encode({**h, key: v}, p.blocks, p.entries, counts=False)
            except ValueError:  # json.dumps of nan: allowed by default; keep going
                continue
    for key in ("checksum", "prefix", "data_key", "dtype", "fill"):
        for v in (5, None, [], {"a": 1}, True, 1.5):
            yield f"header.{key}={v!r}", "strict", encode({**h, key: v}, p.blocks, p.entries)
        h2 = dict(h)
        del h2[key]
        yield f"header.-{key}", "strict", encode(h2, p.blocks, p.entries)
    for v in ("O", "V0", "<U4", ">u2", ">" + h["dtype"][1:], "M8[foo]", "(2,)u2", "u2,u2", "", "xx", "V65537",
              "S70000", "f16", "c8", "b1", "?", "<m8[ns]", "u1", "i1", "<f8", "V8", "a", "\u00e9",
              "[('a', '<u2')]", "object", "int", "float", "V2"):
        yield f"header.dtype={v!r}", "strict", encode({**h, "dtype": v}, p.blocks, p.entries)
    itemsize = len(h["fill"]) // 2
    for v in ("", "zz" * itemsize, "\u00e9\u00e9" * itemsize, "00" * (itemsize + 1), "0" * (2 * itemsize - 1),
              "ff" * itemsize, "7f" + "00" * (itemsize - 1), " " * 2 * itemsize, "0x" * itemsize):
        yield f"header.fill={v!r}", "strict", encode({**h, "fill": v}, p.blocks, p.entries)
    for v in ("x", "x_", "_", "\ud800", "../", "0000"):
        yield f"header.prefix={v!r}", "strict", encode({**h, "prefix": v}, p.blocks, p.entries)
    for v in ("other", "/stack", "", "\x00"):
        yield f"header.data_key={v!r}", "strict", encode({**h, "data_key": v}, p.blocks, p.entries)
    for v in ("md5", "XXH3-64", "xxh3_64", ""):
        yield f"header.checksum={v!r}", "strict", encode({**h, "checksum": v}, p.blocks, p.entries)
    yield "header.extra", "strict", encode({**h, "zzz": [1, 2, {"x": None}], "format": 7}, p.blocks, p.entries)
    for doc in ([], 5, "s", None, [h]):
        yield f"header=json:{type(doc).__name__}", "strict", encode(doc, p.blocks, p.entries)
    # text that is not what json.dumps would give
    def text_case(label: str, t: bytes) -> Case:
        t = t + b" " * (-len(t) % 8)
        return label, "strict", encode(None, p.blocks, p.entries, text=t)
    base = json.dumps(h).encode()
    yield text_case("text.not-utf8", base[:-1] + b', "x": "\xff\xfe"}')
    yield text_case("text.latin1", base.replace(b'"prefix"', b'"pr\xe9fix"'))
    yield text_case("text.bom", b"\xef\xbb\xbf" + base)
    yield text_case("text.nul", base + b"\x00")
    yield text_case("text.nan", base[:-1] + b', "ndim": NaN}')
    yield text_case("text.infinity", base[:-1] + b', "blocks": Infinity}')
    yield text_case("text.bigint", base[:-1] + b', "entries": ' + b"9" * 5000 + b"}")
    yield text_case("text.dupkeys", base[:-1] + b', "ndim": 2}')
    yield text_case("text.deep-array", b"[" * 30000 + b"]" * 30000)
    yield text_case("text.deep-object", b'{"a":' * 10000 + b"1" + b"}" * 10000)
    yield text_case("text.deep-in-field", base[:-1] + b', "x": ' + b"[" * 20000 + b"]" * 20000 + b"}")
    yield text_case("text.empty", b"")
    yield text_case("text.spaces", b" " * 64)
    yield text_case("text.trailing", base + b" 5")
    yield text_case("text.u-escape", base[:-1] + b', "prefix": "\\ud800\\udfff\\u0000"}')
    # header length / version / magic (the trailer correct)
    table = p.blocks.tobytes() + p.entries.tobytes()
    text = json.dumps(h, sort_keys=True).encode()
    text += b" " * (-len(text) % 8)
    for hl in (0, 1, 7, len(text) - 8, len(text) + 8, len(text) + 4, 1 << 16, (1 << 16) + 8, 2**32 - 8, 2**32 - 1):
        yield f"hlen={hl}", "strict", seal(HEAD.pack(MAGIC, 1, hl) + text + table)
    for ver in (0, 2, 2**31, 2**32 - 1):
        yield f"version={ver}", "strict", seal(HEAD.pack(MAGIC, ver, len(text)) + text + table)
    yield "magic", "strict", seal(HEAD.pack(b"\x89HDF\r\n\x1a\n", 1, len(text)) + text + table)
    yield "empty", "strict", b""
    yield "trailer-only", "strict", seal(b"")
    yield "head-only", "strict", seal(HEAD.pack(MAGIC, 1, 0))


def _set(p: Parts, table: str, field: str, row: int, value: Any, col: int | None = None) -> Parts | None:
    q = Parts(dict(p.header), p.blocks.copy(), p.entries.copy())
    arr = q.blocks if table == "blocks" else q.entries
    if not len(arr):
        return None
    try:
        if col is None:
            arr[field][row] = value
        else:
            arr[field][row, col] = value
    except (OverflowError, ValueError):
        return None
    return q


def table_cases(data: bytes, rng: np.random.Generator) -> Iterator[Case]:
    """Edited block and chunk tables, re-encoded with a correct trailer."""
    p = decode(data)
    nb, ne = len(p.blocks), len(p.entries)
    last_b = nb - 1
    ndim = p.header["ndim"]

    def out(label: str, q: Parts | None, kind: str = "strict") -> Iterator[Case]:
        if q is not None:
            yield label, kind, encode_parts(q)

    u64max = 2**64 - 1
    # block records
    for v in (0, 1, 99, 2**40 - 1, 2**40, u64max):
        yield from out(f"block.num[0]={v}", _set(p, "blocks", "block", 0, v))
    if nb > 1:
        q = Parts(dict(p.header), p.blocks.copy(), p.entries.copy())
        q.blocks["block"][[0, 1]] = q.blocks["block"][[1, 0]]
        yield from out("block.num.swapped", q)  # unsorted, entries as before: records lie about their block
        q = Parts(dict(p.header), p.blocks[[1, 0, *range(2, nb)]].copy(), p.entries.copy())
        yield from out("block.rows.swapped", q)
        yield from out("block.num.dup", _set(p, "blocks", "block", 1, int(p.blocks["block"][0])))
    for v in (0, 1, 100, int(p.blocks["size"][0]) - 1, int(p.blocks["size"][0]) + 1, 2**62, u64max):
        yield from out(f"block.size[0]={v}", _set(p, "blocks", "size", 0, v))
    for v in (0, -1, -(2**63), 2**63 - 1, int(p.blocks["mtime_ns"][0]) + 1):
        yield from out(f"block.mtime[0]={v}", _set(p, "blocks", "mtime_ns", 0, v))
    for v in (0, u64max, int(p.blocks["ino"][0]) + 1):
        yield from out(f"block.ino[0]={v}", _set(p, "blocks", "ino", 0, v))
    for v in (1, 2**63, u64max, int(p.blocks["first"][last_b]) + 1):
        yield from out(f"block.first[-1]={v}", _set(p, "blocks", "first", last_b, v))
    for v in (0, int(p.blocks["count"][0]) + 1, int(p.blocks["count"][0]) - 1, 2**63, u64max):
        yield from out(f"block.count[0]={v}", _set(p, "blocks", "count", 0, v))
    for v in (-2, -1, 0, 1, 2, 3, 100, -32768):
        yield from out(f"block.shuffle[0]={v}", _set(p, "blocks", "shuffle", 0, v))
    for v in (-2, -1, 0, 1, 2, 3, 4, 5, 6, 32767):
        yield from out(f"block.compressor[0]={v}", _set(p, "blocks", "compressor", 0, v))
    yield from out("block.reserved", _set(p, "blocks", "reserved", 0, 0xDEADBEEF))
    shape0 = [int(s) for s in p.blocks["shape"][0]]
    chunks0 = [int(c) for c in p.blocks["chunks"][0]]
    for ax in range(ndim):
        for v in (0, 1, shape0[ax] - 1, shape0[ax] + 1, 2 * shape0[ax], 2**31, 2**40 - 1, 2**40, 2**63, u64max):
            yield from out(f"block.shape[0][{ax}]={v}", _set(p, "blocks", "shape", 0, v, ax))
        # another chunk shape moves the stored chunks to other places of the grid: those it
        # leaves empty read as the fill value, undetectably (no frame there to check): a lie
        for v in (0, 1, chunks0[ax] - 1, chunks0[ax] + 1, shape0[ax], 2 * chunks0[ax], 2**20, 2**31, 2**40, u64max):
            yield from out(f"block.chunks[0][{ax}]={v}", _set(p, "blocks", "chunks", 0, v, ax), "lie")
    # chunk shape permuted (same bytes per chunk): an undetectable lie about the layout
    if ndim > 1 and len(set(chunks0)) > 1:
        q = Parts(dict(p.header), p.blocks.copy(), p.entries.copy())
        q.blocks["chunks"][0] = chunks0[::-1]
        yield from out("block.chunks[0].reversed", q, "lie")
    # every block's chunks = its shape (one chunk each) with the first entry only
    q = Parts(dict(p.header), p.blocks.copy(), p.entries.copy())
    q.blocks["chunks"] = q.blocks["shape"]
    yield from out("block.chunks=shape", q, "lie")
    # huge shapes everywhere
    q = Parts(dict(p.header), p.blocks.copy(), p.entries.copy())
    q.blocks["shape"] = 2**40 - 1
    yield from out("block.shape=all-huge", q)
    # a block without any chunk (valid: reads as the fill value) is a lie
    if ne:
        c0 = int(p.blocks["count"][0])
        q = Parts(dict(p.header), p.blocks.copy(), p.entries[c0:].copy())
        q.blocks["count"][0] = 0
        q.blocks["first"] = np.concatenate([[0], np.cumsum(q.blocks["count"])[:-1]])
        yield from out("block[0].no-chunks", q, "lie")
        # one chunk left out
        q = Parts(dict(p.header), p.blocks.copy(), np.delete(p.entries, 0))
        q.blocks["count"][0] -= 1
        q.blocks["first"] = np.concatenate([[0], np.cumsum(q.blocks["count"])[:-1]])
        yield from out("entry[0].left-out", q, "lie")
        # a block record left out entirely (its reads go through HDF5: must be right)
        q = Parts(dict(p.header), p.blocks[1:].copy(), p.entries[c0:].copy())
        q.blocks["first"] -= c0
        yield from out("block[0].left-out", q)
    # chunk entries
    if not ne:
        return
    fsize = int(p.blocks["size"][0])
    nbytes0 = _entry_nbytes(p, 0)
    size0 = int(p.entries["size"][0])
    for v in (1, 2**20, 2**62, u64max, int(p.entries["chunk"][-1]) + 1):
        yield from out(f"entry.chunk[0]={v}", _set(p, "entries", "chunk", 0, v))
    if ne > 1 and int(p.blocks["count"][0]) > 1:
        yield from out("entry.chunk[1]=chunk[0]", _set(p, "entries", "chunk", 1, int(p.entries["chunk"][0])))
        q = Parts(dict(p.header), p.blocks.copy(), p.entries.copy())
        q.entries["chunk"][[0, 1]] = q.entries["chunk"][[1, 0]]
        yield from out("entry.chunk.swapped", q)
        # addresses/sizes/checksums of two chunks swapped: consistent, the wrong pixels undetectable
        q = Parts(dict(p.header), p.blocks.copy(), p.entries.copy())
        for f in ("addr", "size", "hash"):
            q.entries[f][[0, 1]] = q.entries[f][[1, 0]]
        yield from out("entry.records.swapped", q, "lie")
        # addresses and sizes swapped, checksums kept: whole-chunk reads must notice
        q = Parts(dict(p.header), p.blocks.copy(), p.entries.copy())
        for f in ("addr", "size"):
            q.entries[f][[0, 1]] = q.entries[f][[1, 0]]
        yield from out("entry.addr+size.swapped", q, "redirect")
        yield from out("entry.addr[0]=addr[1]", _set(p, "entries", "addr", 0, int(p.entries["addr"][1])))
        yield from out("entry.addr[1]=addr[0]+1", _set(p, "entries", "addr", 1, int(p.entries["addr"][0]) + 1))
    addr0 = int(p.entries["addr"][0])
    for v in (0, 1, 8, 16, 512, addr0 - 1, addr0 + 1, addr0 + 3, fsize - size0, fsize - size0 + 1, fsize, fsize + 1,
              2**62 - 1, 2**62, 2**63, u64max):
        if v >= 0:
            yield from out(f"entry.addr[0]={v}", _set(p, "entries", "addr", 0, v), "redirect")
    for v in (0, 1, 15, 16, 17, size0 - 1, size0 + 1, nbytes0, nbytes0 + 16, nbytes0 + 17, 2**31, 2**32 - 1):
        yield from out(f"entry.size[0]={v}", _set(p, "entries", "size", 0, v), "redirect")
    for v in (1, 2, 3, 0x80000000, 2**32 - 1):
        yield from out(f"entry.mask[0]={v}", _set(p, "entries", "mask", 0, v))
    q = Parts(dict(p.header), p.blocks.copy(), p.entries.copy())
    q.entries["mask"] = 1
    q.entries["size"] = [_entry_nbytes(p, i) for i in range(ne)]
    yield from out("entry.all-raw", q, "redirect")
    for v in (0, u64max, int(p.entries["hash"][0]) ^ 1):
        yield from out(f"entry.hash[0]={v}", _set(p, "entries", "hash", 0, v))
    q = Parts(dict(p.header), p.blocks.copy(), p.entries.copy())
    q.entries["hash"] = rng.integers(0, 2**63, ne, dtype=np.uint64)
    yield from out("entry.hash.all-random", q)
    # random single-field edits anywhere in the tables
    fields = [("blocks", f) for f in ("block", "size", "first", "count", "shuffle", "compressor")]
    fields += [("entries", f) for f in ("chunk", "addr", "size", "mask")]
    for k in range(40):
        table, field = fields[int(rng.integers(len(fields)))]
        arr = p.blocks if table == "blocks" else p.entries
        row = int(rng.integers(len(arr)))
        old = int(arr[field][row])
        v = old + int(rng.choice([-1, 1, -8, 8, 1 << int(rng.integers(0, 40))]))
        yield from out(f"random{k}.{table}.{field}[{row}]={v}", _set(p, table, field, row, v),
                       "redirect" if table == "entries" and field in ("addr", "size") else "strict")


def all_cases(data: bytes, seed: int, n_flips: int) -> list[Case]:
    rng = np.random.default_rng(seed)
    return [*raw_cases(data, rng, n_flips), *header_cases(data), *table_cases(data, rng)]


# ---------------------------------------------------------------------------------------- the child

def _selections(shape: tuple[int, ...], rng: np.random.Generator, n: int) -> list[str]:
    sels = ["[:]", "[::2]", "[::-1]", "[1::3]", "[..., ::2]", "[[0, -1]]"]
    for _ in range(n):
        items: list[str] = []
        for s in shape:
            r = rng.random()
            if r >= 0.5 and r < 0.7 and any(i.startswith("[") for i in items):
                r = 0.8  # one index array per selection: several would broadcast together
            if r < 0.25:
                items.append(str(int(rng.integers(0, s))))
            elif r < 0.5:
                a = int(rng.integers(0, s))
                items.append(f"{a}:{int(rng.integers(a + 1, s + 1))}:{int(rng.integers(1, 4))}")
            elif r < 0.7:
                k = int(rng.integers(1, min(s, 5) + 1))
                items.append(str(sorted(rng.choice(s, k, replace=False).tolist())))
            else:
                items.append(":")
        sels.append("[" + ", ".join(items) + "]")
    mask = (rng.random(shape[0]) < 0.5).tolist()
    sels.append(f"[np.array({mask})]")
    sels.append("[(" + "0, " * (len(shape) - 1) + ")]" if len(shape) > 1 else "[0]")
    sels.append("[:, " + ", ".join("0" for _ in shape[1:]) + "]" if len(shape) > 1 else "[3:9]")  # a trace
    return sels


def _classify(e: BaseException) -> str:
    from split_dataset.errors import SplitDatasetError

    kind = "pkg" if isinstance(e, SplitDatasetError) else "other"
    return f"{kind}:{type(e).__name__}:{' '.join(str(e).split())[:240]}"


def run_case(case: dict[str, Any], cache: dict[str, Any]) -> dict[str, Any]:
    import split_dataset
    from split_dataset.errors import ChunkIndexError
    from split_dataset.storage.indexfile import read_index, read_index_bytes

    root = Path(case["root"])
    if case["npy"] not in cache:
        cache[case["npy"]] = np.load(case["npy"])
    x = cache[case["npy"]]
    data = bytes.fromhex(case["data"])
    result: dict[str, Any] = {"id": case["id"]}
    try:
        read_index_bytes(data, "fuzz", None)
        result["bytes"] = "accepted"
    except ChunkIndexError:
        result["bytes"] = "rejected"
    except Exception as e:
        result["bytes"] = _classify(e)
    from split_dataset.storage import indexfile

    # read_index caches validated files by (device, inode, size, mtime): a replaced file may reuse
    # the inode of the one before and, within the clock's granularity, its mtime; parse each case
    getattr(indexfile, "_CACHE", {}).clear()
    target = root / "chunk_index.bin"
    tmp = root / ".chunk_index.fuzz"
    tmp.write_bytes(data)
    os.replace(tmp, target)
    try:
        read_index(root)
        result["file"] = "accepted"
    except ChunkIndexError:
        result["file"] = "rejected"
    except Exception as e:
        result["file"] = _classify(e)
    reads: dict[str, str] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = split_dataset.SplitDataset(root)
        except Exception as e:
            result["open"] = _classify(e)
            ds = None
        if ds is not None:
            result["open"] = "ok"
            result["used"] = ds._view[4] is not None
            sels = case["whole"] + case["sels"]
            if result["file"] == "rejected":  # read through HDF5 as without an index: a few reads suffice
                sels = [sels[0], case["sels"][0]]
            for sel in sels:
                key = ("W" if sel in case["whole"] else "") + sel
                try:
                    got = eval("ds" + sel, {"ds": ds, "np": np})
                    want = eval("x" + sel, {"x": x, "np": np})
                    ok = np.shape(got) == np.shape(want) and np.asarray(got).dtype == want.dtype and np.array_equal(
                        got, want, equal_nan=True)
                    reads[key] = "ok" if ok else "WRONG"
                except Exception as e:
                    reads[key] = _classify(e)
            ds.close()
    result["warned"] = sorted({w.category.__name__ for w in caught})
    result["reads"] = reads
    return result


def main(spec_path: str, out_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    cache: dict[str, Any] = {}
    with open(out_path, "w") as out:
        for case in spec["cases"]:
            out.write(json.dumps({"begin": case["id"]}) + "\n")
            out.flush()
            out.write(json.dumps(run_case(case, cache)) + "\n")
            out.flush()
        # leave each dataset with its valid index again
        for root, data in spec.get("restore", {}).items():
            Path(root, "chunk_index.bin").write_bytes(bytes.fromhex(data))


# ---------------------------------------------------------------------------------------- the parent

def judge(case: Case, result: dict[str, Any]) -> list[str]:
    """Problems with one case's result (empty: fine)."""
    label, kind, _ = case
    bad = []
    for step in ("bytes", "file"):
        if result[step] not in ("accepted", "rejected"):
            bad.append(f"{step}: {result[step]}")
    if result["bytes"] != result["file"] and not bad:
        # read_index's prefix is None here, as in read_index_bytes: both must agree
        bad.append(f"read_index_bytes {result['bytes']} but read_index {result['file']}")
    if result["open"] != "ok":
        bad.append(f"open: {result['open']}")
        return bad
    warned = "ChunkIndexWarning" in result["warned"]
    if result["file"] == "rejected" and not warned:
        bad.append("refused index without ChunkIndexWarning")
    if result["file"] == "accepted" and warned:
        bad.append("ChunkIndexWarning for an accepted index")
    others = [w for w in result["warned"] if w != "ChunkIndexWarning"]
    if others:
        bad.append(f"other warnings {others}")
    for sel, outcome in result["reads"].items():
        whole = sel.startswith("W")
        if outcome == "ok":
            continue
        if outcome.startswith("pkg:"):
            if result["file"] == "rejected" or not result["used"]:
                bad.append(f"ds{sel.lstrip('W')}: {outcome} with the index ignored")
            continue
        if outcome == "WRONG" and (kind == "lie" or (kind == "redirect" and not whole)):
            continue  # counted by the caller
        bad.append(f"ds{sel.lstrip('W')}: {outcome}")
    return bad


def _run_one(d: Dataset, cases: list[Case], sels: list[str], tmp: Path, tag: str, timeout: float
             ) -> tuple[list[tuple[Case, dict[str, Any]]], str | None]:
    """One child over `cases` of dataset `d`: (case, result) pairs, and why it died (None: it did not)."""
    import subprocess

    spec = {"cases": [{"id": i, "root": str(d.root), "npy": str(d.npy), "data": c[2].hex(), "whole": d.whole,
                       "sels": sels} for i, c in enumerate(cases)], "restore": {str(d.root): d.index.hex()}}
    spec_path, out_path = tmp / f"spec-{tag}.json", tmp / f"out-{tag}.jsonl"
    spec_path.write_text(json.dumps(spec))
    why = None
    try:
        proc = subprocess.run([sys.executable, __file__, str(spec_path), str(out_path)], capture_output=True,
                              text=True, timeout=timeout)
        if proc.returncode != 0:
            why = f"exit {proc.returncode}: {proc.stderr[-800:]}"
    except subprocess.TimeoutExpired:
        why = f"hung (> {timeout} s)"
    lines = [json.loads(line) for line in out_path.read_text().splitlines()] if out_path.exists() else []
    done = {r["id"]: r for r in lines if "begin" not in r}
    begun = [r["begin"] for r in lines if "begin" in r]
    if why is not None:
        culprit = begun[-1] if begun and begun[-1] not in done else None
        why = f"case {cases[culprit][0] if culprit is not None else '?'}: child {why}"
        (d.root / "chunk_index.bin").write_bytes(d.index)  # it may have died before restoring it
    return [(cases[i], r) for i, r in sorted(done.items())], why


def run_batches(datasets: list[Dataset], cases: list[tuple[Dataset, Case]], tmp: Path, *, batch: int = 400,
                timeout: float = 300, n_sels: int = 6, seed: int = 0, workers: int = 2
                ) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """Run `cases` in child processes (one dataset per child at a time, `workers` at once);
    returns (problems by case label, stats)."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(seed)
    sels = {d.name: _selections(tuple(np.load(d.npy, mmap_mode="r").shape), rng, n_sels) for d in datasets}
    jobs = []
    for d in datasets:
        mine = [c for dd, c in cases if dd is d]
        jobs.append((d, [mine[k:k + batch] for k in range(0, len(mine), batch)]))

    def work(job: tuple[Dataset, list[list[Case]]]) -> list[Any]:
        d, batches = job
        return [(d, *_run_one(d, b, sels[d.name], tmp, f"{d.name}-{k}", timeout)) for k, b in enumerate(batches)]

    problems: dict[str, list[str]] = {}
    stats: dict[str, Any] = {"cases": 0, "accepted": 0, "rejected": 0, "other": 0, "used": 0, "wrong_lie": [],
                             "wrong_partial": [], "pkg_errors": 0}
    with ThreadPoolExecutor(workers) as ex:
        for results in ex.map(work, jobs):
            for d, pairs, why in results:
                if why is not None:
                    problems[f"{d.name}:child"] = [why]
                for case, r in pairs:
                    stats["cases"] += 1
                    outcome = r["file"] if r["file"] in ("accepted", "rejected") else "other"
                    stats[outcome] += 1
                    stats["used"] += bool(r.get("used"))
                    for sel, res in r["reads"].items():
                        if res == "WRONG":
                            kind = "wrong_lie" if case[1] == "lie" else "wrong_partial"
                            stats[kind].append(f"{d.name}:{case[0]}:ds{sel.lstrip('W')}")
                        elif res.startswith("pkg:"):
                            stats["pkg_errors"] += 1
                    bad = judge(case, r)
                    if bad:
                        problems[f"{d.name}:{case[0]}"] = bad
    return problems, stats


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main(sys.argv[1], sys.argv[2])
