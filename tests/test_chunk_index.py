"""Adversarial tests of ``chunk_index.bin`` (issue 12): parser fuzzing, hostile files, stale
blocks, races, writers, correctness against numpy, the ``split-dataset index`` command.

Oracle everywhere: an index that fails a check is ignored with a ChunkIndexWarning and the
data reads exactly as without it; one that passes may only change how fast the right data
comes back, or make a read raise a SplitDatasetError naming the block. Never a crash, a
hang, or wrong pixels from damage. Crafted files that lie consistently (a valid trailer
over swapped chunk records) cannot be told from the truth; they are counted, not required.

The default run takes a sample; ``pytest -m full`` runs the long versions.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from adversarial import indexfuzz as fz
from conftest import LEGACY, LEGACY_CASES, save_fast
from hypothesis import given
from hypothesis import strategies as st

import split_dataset
from split_dataset import SplitDataset, build_chunk_index
from split_dataset.cli import main as cli_main
from split_dataset.errors import (
    ChunkIndexError,
    ChunkIndexWarning,
    CorruptBlockError,
    SplitDatasetError,
    WriterLockedError,
)
from split_dataset.storage.indexfile import CHUNK_INDEX_FILENAME, read_index, read_index_bytes

# ------------------------------------------------------------------------------------------ helpers


def _index(root: Path) -> Path:
    return root / CHUNK_INDEX_FILENAME


def _indexed_handles(ds: SplitDataset) -> dict[int, bool]:
    """Block -> whether its cached handle was opened from the index (no HDF5 file)."""
    return {k: h.file is None for k, h in ds._handles._items.items()}


def _read_all_checked(ds: SplitDataset, x: np.ndarray) -> None:
    got = ds[:]
    assert got.dtype == x.dtype and got.shape == x.shape
    np.testing.assert_array_equal(got, x)


def _child(code: str, timeout: float = 60) -> dict[str, Any]:
    """Run `code` in a fresh interpreter; it prints one JSON object as its last line."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, cwd=Path(__file__).parent)
    assert proc.returncode == 0, f"child died ({proc.returncode}): {proc.stderr[-2000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _block_copy(tmp_path: Path, x: np.ndarray, block: tuple[int, ...], **kw: Any) -> Path:
    """A second dataset with the same layout as ``save(x)``: its blocks fit the first one's grid."""
    other = tmp_path / f"other{len(list(tmp_path.iterdir()))}"
    save_fast(x, other, block, **kw)
    return other


# ------------------------------------------------------------------------------------------ 1. fuzzing

#: fuzz findings that are known and accepted (none now: the findings of the first runs were fixed:
#: ValueError escaping read_index_bytes, numpy warnings leaking, a whitespace fill crashing open)
KNOWN: list[tuple[re.Pattern[str], str]] = []


def _unknown(problems: dict[str, list[str]]) -> dict[str, list[str]]:
    return {k: v for k, v in problems.items()
            if not all(any(p.search(m) for p, _ in KNOWN) for m in v)}


@pytest.fixture(scope="module")
def fuzz_sets(tmp_path_factory) -> list[fz.Dataset]:
    return fz.build(tmp_path_factory.mktemp("indexfuzz"))


def _fuzz(datasets: list[fz.Dataset], tmp: Path, *, flips: int, seed: int, header_sets: int, n_sels: int
          ) -> dict[str, Any]:
    cases = []
    for k, d in enumerate(datasets):
        rng = np.random.default_rng(seed + k)
        cases += [(d, c) for c in fz.raw_cases(d.index, rng, flips)]
        if k < header_sets:
            cases += [(d, c) for c in fz.header_cases(d.index)]
        cases += [(d, c) for c in fz.table_cases(d.index, rng)]
    problems, stats = fz.run_batches(datasets, cases, tmp, n_sels=n_sels, seed=seed)
    unknown = _unknown(problems)
    assert not unknown, f"{len(unknown)} of {stats['cases']} cases:\n" + "\n".join(
        f"{k}: {v[:3]}" for k, v in list(unknown.items())[:40])
    # the fuzzer reached both sides: refused files and crafted files that were used for reads
    assert stats["rejected"] > 0 and stats["used"] > 0, stats
    # wrong pixels only where the file lied consistently, or redirected a partial decode
    assert all(":block.chunks" in w or ":entry" in w or ":block[0]" in w for w in stats["wrong_lie"])
    return stats


def test_index_fuzz_quick(fuzz_sets, tmp_path):
    _fuzz(fuzz_sets, tmp_path, flips=10, seed=1, header_sets=1, n_sels=4)


@pytest.mark.full
@pytest.mark.parametrize("seed", [2, 3])
def test_index_fuzz_full(fuzz_sets, tmp_path, seed):
    _fuzz(fuzz_sets, tmp_path, flips=400, seed=seed * 100, header_sets=len(fuzz_sets), n_sels=12)


def test_every_raw_flip_and_truncation_is_refused(fuzz_sets):
    """The trailer checksum catches every unsealed change (checked in-process: refusal is pure parsing)."""
    d = fuzz_sets[0]
    rng = np.random.default_rng(5)
    n = 0
    for label, _, data in fz.raw_cases(d.index, rng, 300):
        with pytest.raises(ChunkIndexError):
            read_index_bytes(data, label)
        n += 1
    assert n > 300


def test_valid_index_round_trips(fuzz_sets):
    for d in fuzz_sets:
        p = fz.decode(d.index)
        assert fz.encode_parts(p) == d.index  # the fuzzer's encoder is the format's
        index = read_index_bytes(d.index, "x", "")
        assert index.n_blocks == len(p.blocks) and len(index.entries) == len(p.entries)


@pytest.mark.parametrize("edit", ["fill", "bigint"])
def test_read_index_bytes_raises_only_chunk_index_error(fuzz_sets, edit):
    d = fuzz_sets[0]
    p = fz.decode(d.index)
    if edit == "fill":
        data = fz.encode({**p.header, "fill": "zz" * 2}, p.blocks, p.entries)
    else:
        text = json.dumps(p.header).encode()[:-1] + b', "entries": ' + b"9" * 5000 + b"}"
        data = fz.encode(None, p.blocks, p.entries, text=text + b" " * (-len(text) % 8))
    with pytest.raises(ChunkIndexError):
        read_index_bytes(data, "x")


@pytest.mark.parametrize("fill", ["    ", "00  ", " 00 "])
def test_fill_hex_with_whitespace_is_refused(tmp_path, fill):
    x = np.arange(6 * 4 * 5, dtype=np.uint16).reshape(6, 4, 5)
    root = tmp_path / "ds"
    save_fast(x, root, (3,))
    p = fz.decode(_index(root).read_bytes())
    _index(root).write_bytes(fz.encode({**p.header, "fill": fill}, p.blocks, p.entries))
    with pytest.warns(ChunkIndexWarning):
        ds = SplitDataset(root)
    _read_all_checked(ds, x)


@pytest.mark.parametrize("edit", ["count", "dtype"])
def test_no_stray_warnings(tmp_path, edit):
    x = np.arange(6 * 4 * 5, dtype=np.uint16).reshape(6, 4, 5)
    root = tmp_path / "ds"
    save_fast(x, root, (3,))
    p = fz.decode(_index(root).read_bytes())
    if edit == "count":
        p.blocks["count"][0] = 2**64 - 1
        data = fz.encode_parts(p)
    else:
        data = fz.encode({**p.header, "dtype": "a"}, p.blocks, p.entries)
    _index(root).write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("always", ChunkIndexWarning)
        with pytest.warns(ChunkIndexWarning):
            ds = SplitDataset(root)
    _read_all_checked(ds, x)


def test_damaged_index_warns_and_reads_right(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.integers(0, 4000, (9, 3, 20, 21), dtype=np.uint16)
    root = tmp_path / "ds"
    save_fast(x, root, (4,), chunks=(1, 2, 8, 8))
    good = _index(root).read_bytes()
    for data in (good[:-1], good[:40], b"", good[:100] + b"\xff" + good[101:], b"\0" * len(good)):
        _index(root).write_bytes(data)
        with pytest.warns(ChunkIndexWarning, match="chunk_index.bin"):
            ds = SplitDataset(root)
        assert ds._view[4] is None
        _read_all_checked(ds, x)
        np.testing.assert_array_equal(ds[::2, 1, 3:17:3], x[::2, 1, 3:17:3])
        assert not any(_indexed_handles(ds).values())
    # an index of another array of the same folder (other dtype): ignored without a warning
    _index(root).write_bytes(good)
    p = fz.decode(good)
    _index(root).write_bytes(fz.encode({**p.header, "dtype": "<i2"}, p.blocks, p.entries))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = SplitDataset(root)
    assert ds._view[4] is None
    _read_all_checked(ds, x)


# ------------------------------------------------------------------------------------------ 2. hostile files

X = np.arange(8 * 3 * 10 * 12, dtype=np.uint16).reshape(8, 3, 10, 12)


@pytest.fixture
def ds_root(tmp_path) -> Path:
    root = tmp_path / "ds"
    save_fast(X, root, (3,), chunks=(1, 2, 5, 12))
    return root


_PROBE = """
import json, sys, time, warnings, numpy as np
sys.path.insert(0, ".")
import split_dataset
from split_dataset.errors import SplitDatasetError
x = np.load({npy!r})
t = time.perf_counter()
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    try:
        ds = split_dataset.SplitDataset({root!r})
        ok = bool(np.array_equal(ds[:], x)) and bool(np.array_equal(ds[::2, 1], x[::2, 1]))
        used = ds._view[4] is not None
        out = {{"outcome": "ok" if ok else "WRONG", "used": used}}
    except Exception as e:
        out = {{"outcome": ("pkg:" if isinstance(e, SplitDatasetError) else "other:") + type(e).__name__ + ":" + str(e)}}
out["warnings"] = [f"{{m.category.__name__}}: {{m.message}}" for m in w]
out["seconds"] = time.perf_counter() - t
print(json.dumps(out))
"""


def _probe(root: Path, tmp_path: Path, x: np.ndarray = X, timeout: float = 30) -> dict[str, Any]:
    npy = tmp_path / "x.npy"
    np.save(npy, x)
    return _child(_PROBE.format(npy=str(npy), root=str(root)), timeout)


def _assert_ignored_with_warning(result: dict[str, Any], match: str) -> None:
    assert result["outcome"] == "ok" and not result["used"], result
    assert any("ChunkIndexWarning" in w and re.search(match, w) for w in result["warnings"]), result


def test_symlink_to_another_datasets_index(ds_root, tmp_path):
    """A symbolic link is never followed (it could lead to another dataset's index): ignored
    with a warning, every block read through HDF5, right; the index command replaces the link
    and never writes through it."""
    other = _block_copy(tmp_path, X[::-1].copy(), (3,), chunks=(1, 2, 5, 12))
    _index(ds_root).unlink()
    _index(ds_root).symlink_to(_index(other))
    _assert_ignored_with_warning(_probe(ds_root, tmp_path), "symbolic link")
    before = _index(other).read_bytes()
    build_chunk_index(ds_root, fsync=False)
    assert _index(other).read_bytes() == before
    assert not _index(ds_root).is_symlink()
    ds = SplitDataset(ds_root)
    _read_all_checked(ds, X)
    assert all(_indexed_handles(ds).values())


def test_another_datasets_index_copied_in(ds_root, tmp_path):
    """A valid index of another dataset (same array name and dtype) copied over this one's: its
    block records do not describe these files, so every block reads through HDF5, right."""
    other = _block_copy(tmp_path, X[::-1].copy(), (3,), chunks=(1, 2, 5, 12))
    shutil.copyfile(_index(other), _index(ds_root))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = SplitDataset(ds_root)
    assert ds._view[4] is not None
    _read_all_checked(ds, X)
    assert not any(_indexed_handles(ds).values())


@pytest.mark.parametrize("kind", ["dev-zero", "dangling", "loop", "directory", "fifo"])
def test_index_that_is_not_a_regular_file(ds_root, tmp_path, kind):
    target = _index(ds_root)
    target.unlink()
    if kind == "dev-zero":
        target.symlink_to("/dev/zero")
    elif kind == "dangling":
        target.symlink_to(tmp_path / "nowhere")
    elif kind == "loop":
        target.symlink_to(target)
    elif kind == "directory":
        target.mkdir()
        (target / "x").write_bytes(b"x")
    else:
        os.mkfifo(target)
    result = _probe(ds_root, tmp_path, timeout=30)  # a FIFO must not block the open
    _assert_ignored_with_warning(result, "chunk_index.bin")
    if kind != "directory":  # the index command replaces whatever is there (a folder stays: refused below)
        build_chunk_index(ds_root, fsync=False)
        assert target.is_file() and not target.is_symlink()
        assert read_index(ds_root) is not None


def test_sparse_3gib_index_is_refused_without_reading_it(ds_root, tmp_path):
    with open(_index(ds_root), "wb") as f:
        f.truncate(3 << 30)
    result = _probe(ds_root, tmp_path)
    _assert_ignored_with_warning(result, "bytes")
    assert result["seconds"] < 5, result


_READ_SIZES = """
import json, os, sys, warnings
sys.path.insert(0, ".")
import split_dataset
largest = [0]
real = os.preadv
def spy(fd, bufs, offset, *a):
    largest[0] = max(largest[0], sum(len(memoryview(b)) for b in bufs))
    return real(fd, bufs, offset, *a)
os.preadv = spy
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    ds = split_dataset.SplitDataset({root!r})
print(json.dumps({{"largest": largest[0], "warned": [str(m.message)[:200] for m in w]}}))
"""


def test_junk_index_is_refused_from_its_header(ds_root):
    with open(_index(ds_root), "wb") as f:
        f.truncate(256 << 20)
    result = _child(_READ_SIZES.format(root=str(ds_root)))
    assert any("magic" in w for w in result["warned"]), result
    assert result["largest"] < 1 << 20, result


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_index(ds_root, tmp_path):
    _index(ds_root).chmod(0)
    try:
        _assert_ignored_with_warning(_probe(ds_root, tmp_path), "cannot be opened")
    finally:
        _index(ds_root).chmod(0o644)


# ------------------------------------------------------------------------------------------ 3. stale blocks


def _replace_block(root: Path, name: str, source: Path) -> None:
    """Replace block `name` of `root` atomically by a copy of `source` (a new inode)."""
    tmp = root / f".{name}.new"
    shutil.copyfile(source, tmp)
    os.replace(tmp, root / name)


def test_block_replaced_after_indexing_reads_through_hdf5(ds_root, tmp_path):
    y = X + 1000
    other = _block_copy(tmp_path, y, (3,), chunks=(1, 2, 5, 12))
    _replace_block(ds_root, "0001.h5", other / "0001.h5")
    ds = SplitDataset(ds_root)
    want = X.copy()
    want[3:6] = y[3:6]
    _read_all_checked(ds, want)
    handles = _indexed_handles(ds)
    assert handles == {0: True, 1: False, 2: True}, handles


def _flip_payload_keep_identity(path: Path, offset: int) -> None:
    st = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x10]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino)


def test_in_place_change_with_restored_mtime_is_caught_by_checksums(tmp_path):
    rng = np.random.default_rng(7)
    x = rng.integers(0, 60000, (6, 2, 32, 32), dtype=np.uint16)  # incompressible: stored as is
    root = tmp_path / "ds"
    save_fast(x, root, (3,), chunks=(1, 1, 32, 32))
    index = read_index(root)
    rec = index.record(1)
    entry = rec.entries[3]
    # a payload byte well inside a stored chunk (past its 16-byte blosc header)
    _flip_payload_keep_identity(root / "0001.h5", int(entry["addr"]) + 100)
    ds = SplitDataset(root)
    with pytest.raises(CorruptBlockError, match="0001.h5") as e:
        ds[:]
    assert "checksum" in str(e.value)
    t, z = divmod(int(entry["chunk"]), 2)  # chunk number -> (t, z) in the block's (3, 2, 1, 1) grid
    with pytest.raises(CorruptBlockError, match="0001.h5"):
        SplitDataset(root)[3 + t, z]  # the one chunk, whole
    with pytest.raises(CorruptBlockError, match="0001.h5"):
        SplitDataset(root)[::2, :, ::3]  # stepped reads decode whole chunks: verified too
    # the other blocks, and the other chunks of the block, read right
    ds = SplitDataset(root)
    np.testing.assert_array_equal(ds[0:3], x[0:3])
    np.testing.assert_array_equal(ds[3 + (t + 1) % 3], x[3 + (t + 1) % 3])
    # without the index the damage goes through HDF5 and blosc: the flip is not noticed
    # (the gap issue 12 describes); with it, the whole-chunk read above refused it
    got = SplitDataset(root, chunk_index=False)[3 + t, z]
    assert not np.array_equal(got, x[3 + t, z])


def test_copied_dataset_reads_right_then_is_indexed_again(ds_root, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(ds_root, copy)  # copy2: same sizes and mtimes, new inodes
    ds = SplitDataset(copy)
    assert ds._view[4] is not None  # the index is valid; its block records are not
    _read_all_checked(ds, X)
    assert not any(_indexed_handles(ds).values())
    s = build_chunk_index(copy, fsync=False)
    assert (s.indexed, s.reused, s.n_blocks) == (3, 0, 3)
    ds = SplitDataset(copy)
    _read_all_checked(ds, X)
    assert _indexed_handles(ds) == {0: True, 1: True, 2: True}
    # run again: every record kept
    s = build_chunk_index(copy, fsync=False)
    assert (s.indexed, s.reused) == (3, 3)


def test_hardlinked_block_keeps_its_record(ds_root, tmp_path):
    """A hard link is the same file (same inode, size, mtime): the record stays valid."""
    copy = tmp_path / "linked"
    copy.mkdir()
    for p in ds_root.iterdir():
        os.link(p, copy / p.name)
    ds = SplitDataset(copy)
    _read_all_checked(ds, X)
    assert all(_indexed_handles(ds).values())


# --- races: a block replaced between the index load and the read, at each step of open_indexed

def _two_versions(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray, Path]:
    """Dataset `root` (x, indexed) and a folder holding block 1 of another array y."""
    x = np.arange(9 * 2 * 16 * 16, dtype=np.uint16).reshape(9, 2, 16, 16)
    y = (x * 7 + 3).astype(np.uint16)
    root = tmp_path / "race"
    save_fast(x, root, (3,), chunks=(1, 1, 16, 16))
    other = _block_copy(tmp_path, y, (3,), chunks=(1, 1, 16, 16))
    return root, x, y, other


@pytest.mark.parametrize("when", ["before-open", "after-open", "after-fstat"])
def test_replacement_while_a_block_is_opened_from_the_index(tmp_path, monkeypatch, when):
    from split_dataset.storage import indexbuild

    root, x, y, other = _two_versions(tmp_path)
    ds = SplitDataset(root)  # the index is loaded now
    real_open, real_fstat = os.open, os.fstat
    fired = []

    def swap() -> None:
        if not fired:
            fired.append(True)
            _replace_block(root, "0001.h5", other / "0001.h5")

    class Shim:
        def __getattr__(self, name: str) -> Any:
            return getattr(os, name)

        @staticmethod
        def open(path: Any, *a: Any) -> int:
            if when == "before-open" and str(path).endswith("0001.h5"):
                swap()
            fd = real_open(path, *a)
            if when == "after-open" and str(path).endswith("0001.h5"):
                swap()
            return fd

        @staticmethod
        def fstat(fd: int) -> os.stat_result:
            st = real_fstat(fd)
            if when == "after-fstat" and fired == [] and st.st_size == os.stat(root / "0001.h5").st_size:
                swap()
            return st

    monkeypatch.setattr(indexbuild, "os", Shim())
    got = ds[3:6]
    assert fired
    if when == "before-open":  # the new file: its identity does not match, HDF5 reads it
        np.testing.assert_array_equal(got, y[3:6])
    else:  # the descriptor holds the old file, which it reads whole and right
        np.testing.assert_array_equal(got, x[3:6])
    monkeypatch.undo()
    ds.close()
    np.testing.assert_array_equal(ds[3:6], y[3:6])  # reopened: the new file, through HDF5


def _race(tmp_path: Path, seconds: float, readers: int = 3) -> dict[str, int]:
    """Block 1 is replaced again and again (``os.replace`` of a fresh copy: a new file each
    time, as writers do) by x's or y's version, while readers read frames of it from datasets
    whose index was loaded before (the first reads use the index). Every frame must be x's
    or y's, whole, and no read may fail."""
    root, x, y, other = _two_versions(tmp_path)
    keep_x, keep_y = tmp_path / "x1.h5", tmp_path / "y1.h5"
    shutil.copyfile(root / "0001.h5", keep_x)
    shutil.copyfile(other / "0001.h5", keep_y)
    stop = threading.Event()
    counts = {"x": 0, "y": 0, "swaps": 0}
    bad: list[str] = []
    lock = threading.Lock()

    def swapper() -> None:
        k = 0
        while not stop.is_set():
            _replace_block(root, "0001.h5", keep_y if k % 2 == 0 else keep_x)
            k += 1
            # a replacement every 2 ms; at 0.3 ms opening through HDF5 sometimes gives up ("kept
            # being replaced while it was opened", after 8 tries): an honest error, not a wrong read
            time.sleep(0.002)
        counts["swaps"] = k

    def reader(seed: int) -> None:
        rng = np.random.default_rng(seed)
        ds = SplitDataset(root, cache_size=1)
        while not stop.is_set():
            t = int(rng.integers(3, 6))
            sel = [(t,), (slice(t, t + 1),), (t, int(rng.integers(0, 2)), slice(None), slice(2, 9)),
                   (slice(3, 6, 2),)][int(rng.integers(0, 4))]
            try:
                got = ds[sel]
            except Exception as e:
                with lock:
                    bad.append(f"{sel}: {type(e).__name__}: {e}")
                continue
            finally:
                ds.close()  # the next read opens block 1 again, with the index loaded long ago
            if np.array_equal(got, x[sel]):
                key = "x"
            elif np.array_equal(got, y[sel]):
                key = "y"
            else:
                with lock:
                    bad.append(f"{sel}: neither x nor y")
                continue
            with lock:
                counts[key] += 1

    threads = [threading.Thread(target=swapper)] + [threading.Thread(target=reader, args=(i,))
                                                    for i in range(readers)]
    for th in threads:
        th.start()
    time.sleep(seconds)
    stop.set()
    for th in threads:
        th.join(60)
    assert not bad, f"{len(bad)} bad reads of {sum(counts.values())}: {bad[:10]}"
    assert counts["x"] and counts["y"], counts
    return counts


def test_aba_swap_while_hdf5_opens_a_block(tmp_path, monkeypatch):
    from split_dataset.storage import hdf5

    x = np.arange(9 * 2 * 16 * 16, dtype=np.uint16).reshape(9, 2, 16, 16)
    root = tmp_path / "aba"
    save_fast(x, root, (3,), chunks=(1, 1, 16, 16))
    y = np.random.default_rng(0).integers(0, 60000, x.shape, dtype=np.uint16)  # another layout
    other = _block_copy(tmp_path, y, (3,), chunks=(1, 1, 16, 16))
    block = root / "0001.h5"
    keep_a, keep_b = tmp_path / "a.h5", tmp_path / "b.h5"
    os.link(block, keep_a)
    shutil.copyfile(other / "0001.h5", keep_b)
    real = hdf5.open_readonly

    swaps = []

    def swapping(path: Any, *a: Any) -> Any:
        if Path(path).name == "0001.h5" and len(swaps) < limit:
            swaps.append(1)
            os.replace(keep_b, block)  # B while h5py opens it ...
            try:
                return real(path, *a)
            finally:
                os.link(block, keep_b)
                os.replace(keep_a, block)  # ... A again afterwards
                os.link(block, keep_a)
        return real(path, *a)

    monkeypatch.setattr(hdf5, "open_readonly", swapping)
    limit = 1  # swapped during the first open only: open_same notices (HDF5's descriptor is B's) and retries
    ds = SplitDataset(root, chunk_index=False)
    got = ds[3:6]
    assert np.array_equal(got, x[3:6]) and len(swaps) == 1
    ds.close()
    limit, swaps[:] = 100, []  # swapped during every open: an honest error, never B's chunk index over A
    ds = SplitDataset(root, chunk_index=False)
    with pytest.raises(CorruptBlockError, match="kept being replaced"):
        ds[3:6]


def test_replacement_race_quick(tmp_path):
    _race(tmp_path, 1.5)


@pytest.mark.full
def test_replacement_race_full(tmp_path):
    _race(tmp_path, 30, readers=4)


# ------------------------------------------------------------------------------------------ 4. writers


def _all_records_match(root: Path, n_blocks: int, prefix: str = "") -> None:
    index = read_index(root, prefix)
    assert index is not None and index.n_blocks == n_blocks
    for r in index.records():
        name = split_dataset.storage.block_name(r.block, prefix)
        assert r.matches(os.stat(root / name)), name


def test_save_writes_the_index(tmp_path):
    x = np.random.default_rng(0).integers(0, 999, (11, 3, 9, 7), dtype=np.uint16)
    root = tmp_path / "ds"
    save_fast(x, root, (4,), chunks=(1, 2, 4, 7))
    _all_records_match(root, 3)
    ds = SplitDataset(root)
    _read_all_checked(ds, x)
    assert all(_indexed_handles(ds).values())


def test_dask_save_writes_the_index(tmp_path):
    da = pytest.importorskip("dask.array")
    x = np.random.default_rng(1).random((10, 6, 8)).astype(np.float32)
    root = tmp_path / "ds"
    split_dataset.save(da.from_array(x, chunks=(3, 6, 8)), root, (3,), fsync=False)
    _all_records_match(root, 4)
    _read_all_checked(SplitDataset(root), x)


def test_empty_split_dataset_finalize_writes_the_index(tmp_path):
    e = split_dataset.EmptySplitDataset(tmp_path, "out", shape_full=(7, 5, 6), shape_block=(3, 5, 6))
    x = np.arange(7 * 5 * 6, dtype=np.int64).reshape(7, 5, 6)
    for i, (_, sl) in enumerate(e.slices()):
        e.save_block_data(i, x[sl])
    assert not _index(e.root).exists()
    ds = e.finalize()
    _all_records_match(e.root, 3)
    _read_all_checked(ds, x)


def test_streaming_writer_and_resume(tmp_path):
    root = tmp_path / "acq"
    frames = np.random.default_rng(2).integers(0, 500, (40, 2, 12, 10), dtype=np.uint16)
    with split_dataset.SplitDatasetWriter(root, (2, 12, 10), "uint16", frames_per_file=10, fsync=False) as w:
        for f in frames[:25]:
            w.append(f)
    first = read_index(root)
    assert first is not None and first.n_blocks == 3
    _all_records_match(root, 3)
    _read_all_checked(SplitDataset(root), frames[:25])
    with split_dataset.SplitDatasetWriter(root, (2, 12, 10), "uint16", frames_per_file=10, mode="a",
                                          fsync=False) as w:
        for f in frames[25:]:
            w.append(f)
    second = read_index(root)
    assert second is not None and second.n_blocks == 4
    _all_records_match(root, 4)
    for b in (0, 1):  # untouched blocks keep their records
        r1, r2 = first.record(b), second.record(b)
        assert (r1.ino, r1.mtime_ns, r1.size) == (r2.ino, r2.mtime_ns, r2.size)
        assert r1.entries.tobytes() == r2.entries.tobytes()
    r1, r2 = first.record(2), second.record(2)  # the partial block was rewritten: its record follows
    assert r2.shape[0] == 10 and r1.shape[0] == 5 and len(r2.entries) > len(r1.entries)
    ds = SplitDataset(root)
    _read_all_checked(ds, frames)
    assert all(_indexed_handles(ds).values())


def test_convert_writes_the_index(tmp_path):
    from split_dataset.convert import convert

    x = np.random.default_rng(3).integers(-50, 50, (9, 4, 5), dtype=np.int16)
    npy = tmp_path / "x.npy"
    np.save(npy, x)
    convert(npy, tmp_path / "from_npy", shape_block=(4,))
    _all_records_match(tmp_path / "from_npy", 3)
    convert(tmp_path / "from_npy", tmp_path / "from_split", shape_block=(2,))
    _all_records_match(tmp_path / "from_split", 5)
    _read_all_checked(SplitDataset(tmp_path / "from_split"), x)


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_no_index_for_codecs_read_through_hdf5(tmp_path, compression):
    x = np.arange(6 * 4 * 5, dtype=np.uint16).reshape(6, 4, 5)
    root = tmp_path / "ds"
    save_fast(x, root, (3,), compression=compression)
    assert not _index(root).exists()
    s = build_chunk_index(root, fsync=False)
    assert s.indexed == 0 and len(s.skipped) == 2 and not _index(root).exists()
    _read_all_checked(SplitDataset(root), x)


def test_overwrite_replaces_or_removes_the_index(tmp_path):
    x = np.arange(6 * 4 * 5, dtype=np.uint16).reshape(6, 4, 5)
    root = tmp_path / "ds"
    save_fast(x, root, (3,))
    assert _index(root).exists()
    save_fast(x + 1, root, (2,), overwrite=True)
    _all_records_match(root, 3)
    _read_all_checked(SplitDataset(root), x + 1)
    save_fast(x + 2, root, (3,), compression="gzip", overwrite=True)
    assert not _index(root).exists()
    _read_all_checked(SplitDataset(root), x + 2)


_KILLED_WRITER = """
import numpy as np, os, sys, signal, time
import split_dataset
w = split_dataset.SplitDatasetWriter({root!r}, (2, 16, 16), "uint16", frames_per_file=4, fsync=False)
for t in range(10 ** 6):
    w.append(np.full((2, 16, 16), t % 65536, "uint16"))
    if t == {report}:
        print("ready", flush=True)
    time.sleep(0.0005)
"""


@pytest.mark.parametrize("report", [2, 9, 30])
def test_killed_writer_leaves_a_readable_dataset_that_can_be_indexed(tmp_path, report):
    root = tmp_path / "acq"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER.format(root=str(root), report=report)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)

    def check() -> SplitDataset:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # truncated / missing-block warnings are expected here
            ds = SplitDataset(root)
        got = ds[:]
        want = (np.arange(ds.shape[0]) % 65536).astype(np.uint16)
        np.testing.assert_array_equal(got, np.broadcast_to(want[:, None, None, None], got.shape))
        return ds

    ds = check()
    assert ds.shape[0] >= min(report + 1, 4) // 4 * 4
    s = build_chunk_index(root, fsync=False)  # the dead writer's lock is not a live writer
    assert s.indexed == s.n_blocks == ds.n_blocks, s
    ds = check()
    assert all(_indexed_handles(ds).values())


# ------------------------------------------------------------------------------------------ 5. correctness


@st.composite
def _case(draw) -> tuple[np.ndarray, tuple[int, ...], tuple[int, ...]]:
    ndim = draw(st.integers(1, 5))
    limit = {1: 300, 2: 30, 3: 12, 4: 8, 5: 5}[ndim]
    shape = tuple(draw(st.integers(1, limit)) for _ in range(ndim))
    block = tuple(draw(st.integers(1, s)) for s in shape)
    chunks = tuple(draw(st.integers(1, b + 2)) for b in block)  # not dividing; larger than the block too
    dtype = draw(st.sampled_from(["uint8", "uint16", "float32", "int64"]))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["noise", "smooth", "zeros"]))
    if kind == "noise":
        x = rng.integers(0, 250, shape).astype(dtype)
    elif kind == "smooth":
        x = (np.arange(int(np.prod(shape))).reshape(shape) % 101).astype(dtype)
    else:
        x = np.zeros(shape, dtype)
    return x, block, chunks


def _selection(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[Any, ...]:
    items: list[Any] = []
    used_array = False
    for n in shape:
        r = rng.random()
        if r < 0.2:
            items.append(int(rng.integers(-n, n)))
        elif r < 0.55:
            a, b = sorted(int(v) for v in rng.integers(-n - 1, n + 2, 2))
            step = int(rng.choice([1, 1, 2, 3, -1, -2, 7]))
            items.append(slice(a, b, step) if step > 0 else slice(b, a, step))
        elif r < 0.75 and not used_array:
            used_array = True
            if rng.random() < 0.5:
                items.append(rng.integers(-n, n, int(rng.integers(1, 6))))
            else:
                items.append(rng.random(n) < 0.5)
        else:
            items.append(slice(None))
    return tuple(items)


def _check_correct(tmp: Path, x: np.ndarray, block: tuple[int, ...], chunks: tuple[int, ...], n_sel: int,
                   seed: int) -> None:
    root = tmp / f"c{seed}"
    save_fast(x, root, block, chunks=chunks, checksums=False)
    assert _index(root).exists()
    fast = SplitDataset(root)
    slow = SplitDataset(root, chunk_index=False)
    assert fast._view[4] is not None
    np.testing.assert_array_equal(fast[:], x)
    rng = np.random.default_rng(seed)
    for _ in range(n_sel):
        sel = _selection(rng, x.shape)
        want = x[sel]
        got = fast[sel]
        assert np.shape(got) == want.shape and np.asarray(got).dtype == x.dtype, sel
        np.testing.assert_array_equal(got, want, err_msg=str(sel))
        np.testing.assert_array_equal(slow[sel], want, err_msg=str(sel))
    assert all(_indexed_handles(fast).values())
    shutil.rmtree(root)


@given(_case())
def test_reads_with_the_index_match_numpy(tmp_path, case):
    x, block, chunks = case
    _check_correct(tmp_path, x, block, chunks, 12, int(x.size))


@pytest.mark.full
@given(_case())
def test_reads_with_the_index_match_numpy_full(tmp_path, case):
    x, block, chunks = case
    _check_correct(tmp_path, x, block, chunks, 80, int(x.size) + 1)


test_reads_with_the_index_match_numpy = __import__("hypothesis").settings(max_examples=25)(
    test_reads_with_the_index_match_numpy)
test_reads_with_the_index_match_numpy_full = __import__("hypothesis").settings(max_examples=400)(
    test_reads_with_the_index_match_numpy_full)


def test_padded_blocks(tmp_path):
    """A dataset with padding (overlapping blocks, as the old package wrote them)."""
    e = split_dataset.EmptySplitDataset(tmp_path, "pad", shape_full=(10, 6, 8), shape_block=(4, 6, 8), padding=1)
    x = np.random.default_rng(4).integers(0, 3000, (10, 6, 8), dtype=np.uint16)
    for i, (_, sl) in enumerate(e.slices()):
        e.save_block_data(i, x[sl])
    ds = e.finalize()
    _all_records_match(e.root, e.n_blocks)
    _read_all_checked(ds, x)
    rng = np.random.default_rng(0)
    slow = SplitDataset(e.root, chunk_index=False)
    for _ in range(40):
        sel = _selection(rng, x.shape)
        np.testing.assert_array_equal(ds[sel], x[sel])
        np.testing.assert_array_equal(slow[sel], x[sel])


# ------------------------------------------------------------------------------------------ 6. CLI


def _cli(capsys, *argv: Any) -> tuple[int, str, str]:
    code = cli_main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_index_text_and_json(ds_root, capsys):
    _index(ds_root).unlink()
    code, out, err = _cli(capsys, "index", ds_root)
    assert code == 0 and "3 of 3 blocks" in out and "0 unchanged records kept" in out, (out, err)
    code, out, _ = _cli(capsys, "index", ds_root, "--json")
    doc = json.loads(out)
    assert code == 0 and doc["indexed"] == 3 and doc["reused"] == 3 and doc["skipped"] == {}
    assert doc["n_chunks"] == len(read_index(ds_root).entries) and doc["bytes"] == _index(ds_root).stat().st_size
    code, out, _ = _cli(capsys, "index", ds_root, "--rebuild", "--json")
    assert code == 0 and json.loads(out)["reused"] == 0


def test_cli_index_errors(tmp_path, capsys):
    code, _, err = _cli(capsys, "index", tmp_path / "missing")
    assert code == 2 and err.startswith("split-dataset: error:")
    (tmp_path / "empty").mkdir()
    code, _, err = _cli(capsys, "index", tmp_path / "empty")
    assert code == 2 and "not a split dataset" in err
    code, _, _ = _cli(capsys, "index")
    assert code == 2


def test_cli_index_refused_while_a_writer_holds_the_folder(tmp_path, capsys):
    root = tmp_path / "acq"
    w = split_dataset.SplitDatasetWriter(root, (4, 4), "uint16", frames_per_file=2, fsync=False)
    try:
        for t in range(5):
            w.append(np.full((4, 4), t, "uint16"))
        w.flush()
        with pytest.raises(WriterLockedError):
            build_chunk_index(root, fsync=False)
        code, _, err = _cli(capsys, "index", root)
        assert code == 2 and "writer" in err.lower(), err
        assert not _index(root).exists()
    finally:
        w.close()
    assert read_index(root) is not None


@pytest.mark.parametrize("name", sorted(LEGACY_CASES))
def test_cli_index_on_legacy_fixtures(legacy_copy, capsys, name):
    root = legacy_copy(name)
    expected = np.load(LEGACY / f"{name}.expected.npy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        before = SplitDataset(root)[:]
    np.testing.assert_array_equal(before, expected)
    code, out, err = _cli(capsys, "index", root, "--json")
    assert code == 0, (out, err)
    doc = json.loads(out)
    assert doc["indexed"] + len(doc["skipped"]) == doc["n_blocks"], doc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = SplitDataset(root)
        after = ds[:]
    np.testing.assert_array_equal(after, expected)
    if doc["indexed"]:
        assert any(_indexed_handles(ds).values())
        assert read_index(root) is not None
    else:
        assert not _index(root).exists()
    code, out, _ = _cli(capsys, "index", root, "--json")  # again: every record kept
    assert code == 0 and json.loads(out)["reused"] == doc["indexed"]


def test_cli_index_with_a_prefix_dataset(tmp_path, capsys):
    """Blocks named with a prefix: the index is written for it and used."""
    x = np.arange(6 * 4 * 5, dtype=np.uint16).reshape(6, 4, 5)
    root = tmp_path / "ds"
    save_fast(x, root, (3,))
    for p in root.glob("*.h5"):
        p.rename(root / f"cam_{p.name}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = SplitDataset(root)
    assert ds._view[4] is None  # the old index describes prefix "": ignored
    _read_all_checked(ds, x)
    code, out, err = _cli(capsys, "index", root, "--json")
    assert code == 0 and json.loads(out)["indexed"] == 2, (out, err)
    ds = SplitDataset(root)
    _read_all_checked(ds, x)
    assert all(_indexed_handles(ds).values())


def test_index_errors_are_package_errors():
    assert issubclass(ChunkIndexError, SplitDatasetError)


def test_pickled_dataset_keeps_using_the_index(ds_root):
    import pickle

    ds = SplitDataset(ds_root)
    ds[0]
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._view[4] is not None
    _read_all_checked(clone, X)
    assert all(_indexed_handles(clone).values())


def test_build_skips_a_damaged_block_and_names_it(ds_root):
    _index(ds_root).unlink()
    block = ds_root / "0001.h5"
    with open(block, "r+b") as f:
        f.truncate(block.stat().st_size - 300)
    s = build_chunk_index(ds_root, fsync=False)
    assert s.indexed == 2 and list(s.skipped) == ["0001.h5"], s
    ds = SplitDataset(ds_root)
    np.testing.assert_array_equal(ds[0:3], X[0:3])
    np.testing.assert_array_equal(ds[6:8], X[6:8])
    with pytest.raises(CorruptBlockError, match="0001.h5"):
        ds[3:6]


def test_every_single_bit_flip_in_a_chunk_is_caught_with_the_index(tmp_path):
    """README: without the index many single-bit flips in a chunk's stored bytes decode to wrong
    pixels silently; with it, a whole-chunk read of every one of them raises."""
    rng = np.random.default_rng(1)
    root = tmp_path / "ds"
    data = (rng.poisson(2.0, (4, 2, 64, 64)) + 100).astype("u2")
    save_fast(data, root, (4,))
    record = read_index(root).record(0)
    path = root / "0000.h5"
    original, st = path.read_bytes(), os.stat(path)
    silent = 0
    for _ in range(40):
        entry = record.entries[rng.integers(len(record.entries))]
        pos = int(entry["addr"]) + int(rng.integers(int(entry["size"])))
        damaged = bytearray(original)
        damaged[pos] ^= 1 << int(rng.integers(8))
        with open(path, "r+b") as f:
            f.write(damaged)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # the same size, time and inode
        with pytest.raises(CorruptBlockError, match="checksum"):
            SplitDataset(root)[:]
        try:
            silent += not np.array_equal(SplitDataset(root, chunk_index=False)[:], data)
        except CorruptBlockError:
            pass
    assert silent > 0  # the gap the index closes (58 % of 300 flips on 256x256 planes, measured)
