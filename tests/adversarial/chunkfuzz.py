"""Chunk-header fuzzer: build datasets, plan damaged-chunk cases, run them in subprocesses.

The parent never decodes damaged data itself: every damaged case runs in a child
process (``runner.py``) so a segfault/abort or a hang fails a test instead of pytest.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin  # noqa: F401
import numpy as np

import split_dataset
from split_dataset.storage import Codec

RUNNER = Path(__file__).with_name("runner.py")
HEADER = struct.Struct("<BBBBIII")
SHAPE = (4, 2, 256, 128)  # (t, z, y, x) uint16: 64 KiB chunks, 8 blosc blocks of 8 KiB by default
SHAPE_BLOCK = (2, 2, 256, 128)  # two block files, four chunks each
ROW_BYTES = SHAPE[-1] * 2
MEMCPY_FRAME = (3, 0)  # an incompressible frame: blosc stores it MEMCPYED

CODECS: dict[str, Any] = {
    "lz4-8k": "blosc-lz4",
    "blosclz9": "blosc",
    "lz4-auto": Codec("blosc", "lz4", 5, "byte", 0),
    "zstd": "blosc-zstd",
}

FIELDS = {"version": (0, 1), "versionlz": (1, 1), "flags": (2, 1), "typesize": (3, 1),
          "nbytes": (4, 4), "blocksize": (8, 4), "cbytes": (12, 4)}
EXTREMES_U8 = [0, 1, 3, 66, 130, 255]
EXTREMES_U32 = [0, 1, 3, 66, 130, 255, 2**31 - 1, 2**31, 2**32 - 1]


def make_array(kind: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "noise":  # camera noise
        x = rng.poisson(100, SHAPE).astype(np.uint16)
    else:  # smooth
        t, z, y, xx = np.indices(SHAPE)
        x = (1000 + 300 * np.sin(y / 17.0 + t) * np.cos(xx / 23.0 - z) + 5 * t).astype(np.uint16)
    x[MEMCPY_FRAME] = rng.integers(0, 1 << 16, SHAPE[2:], dtype=np.uint16)
    return x


@dataclass
class Chunk:
    file: str  # block file path
    t: int
    z: int  # global frame of this chunk
    addr: int
    size: int
    header: tuple[int, ...]

    @property
    def memcpyed(self) -> bool:
        return bool(self.header[2] & 2)

    @property
    def nblocks(self) -> int:
        return 0 if self.memcpyed else -(-self.header[4] // max(self.header[5], 1))


@dataclass
class Dataset:
    name: str
    root: Path
    npy: Path
    pristine: Path
    chunks: list[Chunk] = field(default_factory=list)


def build(base: Path, codec_name: str, kind: str) -> Dataset:
    name = f"{codec_name}-{kind}"
    root = base / name
    x = make_array(kind)
    split_dataset.save(x, root, SHAPE_BLOCK, compression=CODECS[codec_name], fsync=False, checksums=False)
    npy = base / f"{name}.npy"
    np.save(npy, x)
    pristine = base / f"{name}.pristine"
    shutil.copytree(root, pristine)
    ds = Dataset(name, root, npy, pristine)
    for bi, block in enumerate(sorted(root.glob("*.h5"))):
        raw = block.read_bytes()
        with h5py.File(block, "r") as f:
            dset = f["stack_4D"]
            for i in range(dset.id.get_num_chunks()):
                ci = dset.id.get_chunk_info(i)
                t = bi * SHAPE_BLOCK[0] + ci.chunk_offset[0]
                z = ci.chunk_offset[1]
                ds.chunks.append(Chunk(str(block), t, z, ci.byte_offset, ci.size,
                                       HEADER.unpack_from(raw, ci.byte_offset)))
    assert any(c.memcpyed for c in ds.chunks), "the incompressible frame was not stored MEMCPYED"
    return ds


def restore(ds: Dataset) -> None:
    for p in ds.pristine.iterdir():
        shutil.copyfile(p, ds.root / p.name)


def reads_for(chunk: Chunk) -> list[tuple[str, str]]:
    """Every read path, aimed at the damaged chunk's frame (t, z)."""
    t, z = chunk.t, chunk.z
    reads = [
        ("frame", f"ds[{t}, {z}]"),
        ("volume", f"ds[{t}]"),
        ("trace", f"ds[:, {z}, 0:8, 0:8]"),
        ("corner", "ds[0, 0, -8:, -8:]"),
        ("corner-t", f"ds[{t}, {z}, -8:, -8:]"),
        ("stepped-t", "ds[::2]"),
        ("stepped-t1", "ds[1::2]"),
        ("stepped-yx", "ds[:, :, ::2, ::2]"),
        ("list", "ds[[0, 2]]"),
        ("list-t", f"ds[[{t}, 0]]"),
        ("mask", "ds[np.array([True, False, True, True])]"),
        ("all", "ds[:]"),
        ("straddle", f"ds[:, {z}, 28:36, 0:8]"),
        ("window-t", f"ds[{t}, {z}, 100:108, 3:11]"),
    ]
    bs = chunk.header[5]
    rows = max(1, bs // ROW_BYTES) if 0 < bs < (1 << 24) else SHAPE[2]
    for k, r in enumerate(range(0, SHAPE[2], rows)):
        if k >= 8:
            break
        reads.append((f"trace-b{k}", f"ds[:, {z}, {r}:{r + 8}, 0:8]"))
        reads.append((f"part-b{k}", f"ds[{t}, {z}, {r}:{r + 8}, :]"))
    return reads


def _case(ds: Dataset, chunk: Chunk, cid: str, patches: list[tuple[int, bytes]], *, strict: bool,
          must_flag: bool, truncate: int | None = None, cls: str = "") -> dict:
    return {
        "id": cid, "cls": cls, "root": str(ds.root), "npy": str(ds.npy), "file": chunk.file,
        "patches": [(o, b.hex()) for o, b in patches], "truncate": truncate, "reads": reads_for(chunk),
        "strict": strict, "must_flag": must_flag,
    }


def header_cases(ds: Dataset, chunk: Chunk, full: bool) -> list[dict]:
    raw = Path(chunk.file).read_bytes()
    out = []
    tag = "memcpy" if chunk.memcpyed else "comp"
    for fname, (off, width) in FIELDS.items():
        orig = int.from_bytes(raw[chunk.addr + off: chunk.addr + off + width], "little")
        if width == 1:
            values = set(EXTREMES_U8) | {orig - 1, orig + 1}
        else:
            values = set(EXTREMES_U32) | {orig - 1, orig + 1, orig * 2, orig // 2}
        if fname == "blocksize":
            values |= {12288, 10240, 40960, 8193, 8191, 16384, 4096, 65536, 65537}
        if fname == "cbytes":
            values |= {chunk.size + 1, chunk.size - 1, chunk.size + 100, chunk.size - 16, 16}
        if fname == "nbytes":
            values |= {orig + 2, orig - 2}
        if fname == "flags":
            values |= {orig ^ 0x01, orig ^ 0x02, orig ^ 0x04, orig ^ 0x08, orig ^ 0x10}
            values |= {(orig & 0x1F) | (c << 5) for c in range(8)}
        if fname == "typesize":
            values |= {4, 8}
        values = sorted(v for v in values if 0 <= v < (1 << (8 * width)) and v != orig)
        if not full:
            keep = {0, 255, 2**32 - 1, orig + 1, orig - 1, orig ^ 0x02, 3, 130, 12288, 8193, 40960, chunk.size + 1,
                    chunk.size - 1, (orig & 0x1F) | (4 << 5)}
            values = [v for v in values if v in keep]
        for v in values:
            benign = fname == "versionlz" or (fname == "version" and v in (1, 2))
            # a frame stored as is never uses its block size: a plausible one cannot be told from the real one
            benign |= chunk.memcpyed and fname == "blocksize" and 0 < v <= chunk.header[4]
            # bit 4 (blocks split into per-byte streams) says how compressed blocks are laid out: a
            # frame stored as is has none, and other writers set it either way
            benign |= chunk.memcpyed and fname == "flags" and v ^ orig == 0x10
            out.append(_case(ds, chunk, f"{ds.name}:{tag}:{fname}={v}",
                             [(chunk.addr + off, v.to_bytes(width, "little"))],
                             strict=True, must_flag=not benign, cls=f"header:{fname}"))
    return out


def offset_cases(ds: Dataset, chunk: Chunk, full: bool) -> list[dict]:
    if chunk.memcpyed:
        return []
    raw = Path(chunk.file).read_bytes()
    n = chunk.nblocks
    base = chunk.addr + 16
    offs = [struct.unpack_from("<I", raw, base + 4 * k)[0] for k in range(n)]
    out = []
    ks = range(n) if full else sorted({0, n // 2, n - 1})
    for k in ks:
        values = {0, 16, 16 + 4 * n - 1, chunk.size, chunk.size + 1, 2**32 - 1, offs[k] + 1, offs[k] - 1}
        if k + 1 < n:
            values |= {offs[k + 1]}  # duplicate of the next
        if k > 0:
            values |= {offs[k - 1]}  # duplicate of the previous
        if not full:
            values = {0, chunk.size + 1, 2**32 - 1, offs[k] + 1} | ({offs[k + 1]} if k + 1 < n else set())
        for v in sorted(values):
            if v == offs[k] or not 0 <= v < 2**32:
                continue
            out.append(_case(ds, chunk, f"{ds.name}:offset[{k}]={v}", [(base + 4 * k, struct.pack("<I", v))],
                             strict=True, must_flag=True, cls="offsets"))
        if k + 1 < n:  # out of order: swap with the next
            # Two equal-sized blocks swapped make another valid frame (multithreaded c-blosc stores
            # blocks in any order, so readers must accept unordered offsets): undetectable without
            # a checksum, so wrong values are counted (like payload flips), not failed, unless the
            # swap involves the shorter last block.
            detectable = k + 2 == n and chunk.header[4] % max(chunk.header[5], 1) != 0
            out.append(_case(ds, chunk, f"{ds.name}:offset[{k}]<->[{k + 1}]",
                             [(base + 4 * k, struct.pack("<I", offs[k + 1])),
                              (base + 4 * k + 4, struct.pack("<I", offs[k]))],
                             strict=detectable, must_flag=detectable, cls="offsets:swap"))
    return out


def index_cases(ds: Dataset, chunk: Chunk, full: bool) -> list[dict]:
    """Damage the chunk's entry in the HDF5 chunk index (v1 B-tree key: size u32, filter mask u32,
    5 offsets u64, then the child address u64): what ``chunk_iter`` hands the direct reader."""
    raw = Path(chunk.file).read_bytes()
    pat = struct.pack("<Q", chunk.addr)
    pos = [i for i in range(len(raw) - 8) if raw.startswith(pat, i)
           and struct.unpack_from("<I", raw, i - 48)[0] == chunk.size]
    if len(pos) != 1:
        return []
    key = pos[0] - 48
    fsize = len(raw)
    others = [c for c in ds.chunks if c.file == chunk.file and c.addr != chunk.addr]
    out = []
    sizes = {0, 1, 15, 16, 17, chunk.size - 1, chunk.size + 1, chunk.size + 4096, 2**31, 2**32 - 1}
    if not full:
        sizes = {0, 15, chunk.size - 1, chunk.size + 1, 2**32 - 1}
    for v in sorted(sizes):
        out.append(_case(ds, chunk, f"{ds.name}:index.size={v}", [(key, struct.pack("<I", v))],
                         strict=True, must_flag=True, cls="index:size"))
    for v in (1, 2**32 - 1):
        out.append(_case(ds, chunk, f"{ds.name}:index.mask={v}", [(key + 4, struct.pack("<I", v))],
                         strict=True, must_flag=True, cls="index:mask"))
    addrs = {chunk.addr + 1, chunk.addr - 1, chunk.addr + 16, fsize, fsize - 10, 2**63, 2**64 - 1, 0}
    if not full:
        addrs = {chunk.addr + 1, fsize, 2**63, 2**64 - 1, 0}
    for v in sorted(addrs):
        out.append(_case(ds, chunk, f"{ds.name}:index.addr={v}", [(pos[0], struct.pack("<Q", v))],
                         strict=True, must_flag=True, cls="index:addr"))
    for o in others:  # the entry points at another chunk: a valid frame of other pixels
        same = o.size == chunk.size  # then only a checksum can tell (counted, not failed)
        out.append(_case(ds, chunk, f"{ds.name}:index.addr=chunk@{o.addr}", [(pos[0], struct.pack("<Q", o.addr))],
                         strict=not same, must_flag=not same, cls="index:alias-same-size" if same else "index:alias"))
    return out


def truncation_cases(ds: Dataset, chunk: Chunk) -> list[dict]:
    size = os.path.getsize(chunk.file)
    ends = {chunk.addr + chunk.size - 1, chunk.addr + 20, chunk.addr + 8, chunk.addr, size // 2, size - 1, 2048, 100, 0}
    return [_case(ds, chunk, f"{ds.name}:truncate@{e}", [], truncate=e, strict=True, must_flag=True, cls="truncate")
            for e in sorted(ends) if e < size]


def bitflip_cases(ds: Dataset, chunk: Chunk, n: int, rng: random.Random) -> list[dict]:
    raw = Path(chunk.file).read_bytes()
    table = 16 + (0 if chunk.memcpyed else 4 * chunk.nblocks)
    out = []
    for _ in range(n):
        pos = rng.randrange(chunk.size)
        bit = rng.randrange(8)
        byte = raw[chunk.addr + pos] ^ (1 << bit)
        region = "header" if pos < 16 else "offsets" if pos < table else "payload"
        strict = region != "payload"
        out.append(_case(ds, chunk, f"{ds.name}:flip@{pos}.{bit}({region})",
                         [(chunk.addr + pos, bytes([byte]))], strict=strict, must_flag=strict, cls=f"flip:{region}"))
    return out


# ----------------------------------------------------------------------------- running


@dataclass
class Outcome:
    case: dict
    result: dict | None  # None: crashed or hung
    death: str = ""  # "signal 11", "exit 1", "timeout"


def _run_batch(cases: list[dict], workdir: Path, timeout: float) -> tuple[list[dict], str | None, str]:
    """Run cases in one child; (results, id of the case it died in or None, how it died)."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec = workdir / f"spec-{os.getpid()}-{id(cases)}.json"
    out = spec.with_suffix(".jsonl")
    spec.write_text(json.dumps({"cases": cases}))
    out.write_text("")
    env = dict(os.environ, PYTHONFAULTHANDLER="1")
    death = ""
    # `timeout` bounds each case, not the batch: the child is killed when its output has not
    # grown for that long (a hang in C code cannot be interrupted from inside the child)
    with open(workdir / f"{spec.stem}.stderr", "w+b") as errf:
        proc = subprocess.Popen([sys.executable, str(RUNNER), str(spec), str(out)], stdout=subprocess.DEVNULL,
                                stderr=errf, env=env)
        last_size, last_change = -1, time.monotonic()
        while proc.poll() is None:
            time.sleep(0.05)
            size = out.stat().st_size
            if size != last_size:
                last_size, last_change = size, time.monotonic()
            elif time.monotonic() - last_change > timeout:
                proc.kill()
                proc.wait()
                death = "timeout"
                break
        if not death and proc.returncode < 0:
            death = f"signal {signal.Signals(-proc.returncode).name}"
        elif not death and proc.returncode:
            errf.seek(0)
            death = f"exit {proc.returncode}: {errf.read().decode(errors='replace')[-300:]}"
    results, begun = [], None
    for line in out.read_text().splitlines():
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "begin" in doc:
            begun = doc["begin"]
        else:
            results.append(doc)
            begun = None
    return results, (begun if death else None), death


def run_cases(ds: Dataset, cases: list[dict], workdir: Path, batch_timeout: float = 60.0,
              single_timeout: float = 60.0) -> list[Outcome]:
    """Run the cases of one dataset in child processes, sequentially (they damage its files in place).

    When a child dies (signal, hang), the case it was in is rerun alone to confirm the
    culprit, the files are restored and the remaining cases continue in a new child.
    """
    by_id = {c["id"]: c for c in cases}
    outcomes: list[Outcome] = []
    todo = list(cases)
    while todo:
        results, died_in, death = _run_batch(todo, workdir, batch_timeout)
        done = {r["id"] for r in results}
        outcomes += [Outcome(by_id[r["id"]], r) for r in results]
        if not death:
            todo = [c for c in todo if c["id"] not in done]
            if todo:  # the child ended early without dying: treat the first left as the culprit
                died_in, death = todo[0]["id"], "exited early"
            else:
                break
        restore(ds)
        if died_in is None:  # died between cases (at start-up?): rerun each left one alone
            left = [c for c in todo if c["id"] not in done]
            for c in left:
                r, _d_in, d = _run_batch([c], workdir, single_timeout)
                restore(ds)
                outcomes.append(Outcome(c, r[0] if r else None, d))
            break
        culprit = by_id[died_in]
        r, _, d = _run_batch([culprit], workdir, single_timeout)  # confirm it alone
        restore(ds)
        outcomes.append(Outcome(culprit, r[0] if r and not d else None, d or f"(alone: passed; in batch: {death})"))
        todo = [c for c in todo if c["id"] not in done and c["id"] != died_in]
    return outcomes


def judge(outcomes: list[Outcome]) -> tuple[list[str], dict[str, Any]]:
    """Failures (one line each: ``cls | id: outcome[reads]; ...``) and statistics of silent
    wrong values from payload flips."""
    failures: list[str] = []
    stats: dict[str, Any] = {"cases": len(outcomes), "counted": {}}
    for o in outcomes:
        c = o.case
        if o.result is None:
            failures.append(f"{c['cls']} | {c['id']}: CHILD DIED ({o.death})")
            continue
        reads = o.result["reads"]
        bad: dict[str, list[str]] = {}
        if "in batch: signal" in o.death or "in batch: exit" in o.death:
            # the child died in this case after earlier ones but not alone: memory corrupted earlier?
            bad.setdefault(f"CHILD DIED in a batch, not alone {o.death}", [])
        wrong_here = False
        for name, res in reads.items():
            if res in ("ok", "pkg"):
                continue
            if res.startswith("wrong"):
                wrong_here = True
                if not c["strict"]:
                    continue
                res = "wrong values"
            bad.setdefault(res, []).append(name)
        if not c["strict"]:  # undetectable without a checksum: count silent wrong values
            n_wrong = stats.setdefault("counted", {}).setdefault(c["cls"], [0, 0])
            n_wrong[0] += 1
            n_wrong[1] += wrong_here
        if "verify" in o.result:
            v, cli = o.result["verify"], o.result["cli"]
            raised = any(res == "pkg" for res in reads.values())
            if v.startswith(("other", "pkg")):
                bad.setdefault(f"verify raised {v}", [])
            elif v == "ok" and (c["must_flag"] or raised):
                bad.setdefault("verify says ok", [])
            if cli.startswith("other") or cli.endswith(":traceback"):
                bad.setdefault(f"cli {cli}", [])
            elif (v != "ok") != (cli != "exit:0"):
                bad.setdefault(f"cli {cli} but verify {v}", [])
        if bad:
            parts = [f"{k} [{','.join(v)}]" if v else k for k, v in bad.items()]
            failures.append(f"{c['cls']} | {c['id']}: " + "; ".join(parts))
    return failures, stats


def summarize(failures: list[str], limit: int = 40) -> str:
    """Group failures by case class and outcome kind, then list the first few."""
    import re

    groups: dict[str, int] = {}
    for f in failures:
        cls, _, rest = f.partition(" | ")
        what = rest.partition(": ")[2]
        kinds = sorted({re.sub(r"\[.*?\]", "", w).split(":")[0].strip()[:40] for w in what.split("; ")})
        key = f"{cls} -> {' / '.join(kinds)}"
        groups[key] = groups.get(key, 0) + 1
    lines = [f"{len(failures)} failing cases"] + [f"  {n:5d}  {k}" for k, n in sorted(groups.items())]
    lines += ["first cases:"] + [f"  {f[:500]}" for f in failures[:limit]]
    return "\n".join(lines)


def dump(failures: list[str]) -> None:
    """Append every failure line to the file named by ``SPLIT_FUZZ_DUMP`` (for reports)."""
    path = os.environ.get("SPLIT_FUZZ_DUMP")
    if path:
        with open(path, "a") as f:
            f.writelines(line + "\n" for line in failures)
