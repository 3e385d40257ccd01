"""Crafted block files a review found dangerous: each is refused or read right, never a crash.

The cases that crashed the process before their fix run in a child process, so a crash
fails the test instead of killing the run.
"""

from __future__ import annotations

import gc
import itertools
import json
import os
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest

import split_dataset
from split_dataset.errors import CorruptBlockError, MetadataError
from split_dataset.storage import blosc as B


def _replace_block(root: Path, shape: tuple[int, ...], dtype: str, make) -> str:
    """Save a dataset of one block, then replace its block file by `make(h5py.File, key)`."""
    ds = split_dataset.save(np.zeros(shape, dtype), root, shape, fsync=False, checksums=False)
    with ds.block(0) as b:
        key = b.name
    ds.close()
    os.remove(root / "0000.h5")
    with h5py.File(root / "0000.h5", "w") as f:
        make(f, key)
    return key


def _in_child(code: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout)


def test_plugin_filters_other_than_blosc_are_refused(tmp_path) -> None:
    """hdf5plugin's LZ4 filter trusts a chunk's claimed size: reading through it segfaulted."""
    root = tmp_path / "ds"

    def make(f: h5py.File, key: str) -> None:
        d = f.create_dataset(key, (4, 1024, 1024), np.uint16, chunks=(4, 1024, 1024), **hdf5plugin.LZ4())
        n = 4 * 1024 * 1024 * 2
        d.id.write_direct_chunk((0, 0, 0), struct.pack(">QI", n, n) + struct.pack(">I", n) + b"\0" * 8)

    _replace_block(root, (4, 1024, 1024), "uint16", make)
    out = _in_child(f"""
        import split_dataset
        from split_dataset.errors import CorruptBlockError
        try:
            split_dataset.open({str(root)!r})[0]
        except CorruptBlockError as e:
            print("refused", "plugin filter" in str(e))
        """)
    assert out.returncode == 0 and out.stdout.split() == ["refused", "True"], out


def test_legacy_metadata_through_a_plugin_filter_is_refused(tmp_path) -> None:
    root = tmp_path / "old"
    root.mkdir()
    with h5py.File(root / "0000.h5", "w") as f:
        f.create_dataset("stack", data=np.zeros((2, 4, 4), np.uint8))
        g = f.create_group("stack_metadata")
        d = g.create_dataset("shape_full", (3,), np.int64, chunks=(3,), **hdf5plugin.LZ4())
        d.id.write_direct_chunk((0,), struct.pack(">QI", 1 << 23, 1 << 23) + struct.pack(">I", 1 << 23) + b"\0" * 8)
    out = _in_child(f"""
        import split_dataset
        from split_dataset.errors import MetadataError
        try:
            split_dataset.open({str(root)!r})
        except MetadataError as e:
            print("refused")
        """)
    assert out.returncode == 0 and out.stdout.strip() == "refused", out


@pytest.mark.parametrize("n", [64, 16])
def test_blosc_skipped_bit_is_the_blosc_filters_own(tmp_path, n) -> None:
    """shuffle, then blosc: filter mask 1 means shuffle was skipped; the blosc frame is still validated."""
    root = tmp_path / "ds"
    shape = (4, 1024, 1024) if n == 64 else (4, 2048, 2048)

    def make(f: h5py.File, key: str) -> None:
        d = f.create_dataset(key, shape, np.uint16, chunks=(1,) + shape[1:], shuffle=True,
                             **hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.NOSHUFFLE))
        d[...] = 7
        frame = struct.pack("<BBBBIII", 2, 1, 0x02 | (1 << 5), 2, n, n, n + 16) + bytes(range(256))[:n]
        d.id.write_direct_chunk((0, 0, 0), frame, filter_mask=1)

    _replace_block(root, shape, "uint16", make)
    out = _in_child(f"""
        import split_dataset
        from split_dataset.errors import CorruptBlockError
        ds = split_dataset.open({str(root)!r})
        try:
            ds[0]
        except CorruptBlockError as e:
            print("refused")
        print(int(ds[1].max()))
        """)
    assert out.returncode == 0 and out.stdout.split() == ["refused", "7"], out


def test_chunks_stored_with_blosc_skipped_read_like_h5py(tmp_path) -> None:
    """Incompressible data under shuffle + blosc: HDF5 stores chunks with blosc skipped (mask 2)."""
    root = tmp_path / "ds"
    x = np.random.default_rng(0).integers(0, 65536, (2, 64, 64), dtype=np.uint16)

    def make(f: h5py.File, key: str) -> None:
        f.create_dataset(key, data=x, chunks=(1, 64, 64), shuffle=True, **hdf5plugin.Blosc(cname="lz4"))

    _replace_block(root, x.shape, "uint16", make)
    ds = split_dataset.open(root)
    np.testing.assert_array_equal(ds[:], x)
    np.testing.assert_array_equal(ds[:, 3:9, ::3], x[:, 3:9, ::3])


def test_partial_reads_never_use_bytes_of_another_chunk(tmp_path) -> None:
    """Block offsets that pass the table checks but overlap a stream: refused, not another chunk's pixels."""
    root = tmp_path / "ds"
    shape = (2, 256, 256)

    def frame(seed: int) -> tuple[np.ndarray, bytearray]:
        a = np.zeros((1, 256, 256), np.uint16)
        a[0, :16] = np.random.default_rng(seed).integers(0, 65535, (16, 256), dtype=np.uint16)
        return a, bytearray(B.compress(a, "lz4", 5, 0, 8192).tobytes())

    a0, f0 = frame(1)
    a1, f1 = frame(2)
    _, _, _, _, nb, bs, _ = B.HEADER.unpack_from(f0)
    nblocks = -(-nb // bs)
    starts = list(struct.unpack_from(f"<{nblocks}I", f0, 16))
    starts[1] = starts[0] + 8
    struct.pack_into(f"<{nblocks}I", f0, 16, *starts)

    def make(f: h5py.File, key: str) -> None:
        d = f.create_dataset(key, shape, np.uint16, chunks=(1, 256, 256),
                             **hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.NOSHUFFLE))
        d.id.write_direct_chunk((0, 0, 0), bytes(f0))
        d.id.write_direct_chunk((1, 0, 0), bytes(f1))

    _replace_block(root, shape, "uint16", make)
    ds = split_dataset.open(root)
    with pytest.raises(CorruptBlockError):
        ds[0, 15, 0:8]
    np.testing.assert_array_equal(ds[1, 3, 0:8], a1[0, 3, 0:8])
    with pytest.raises(CorruptBlockError):
        ds[0, 15, 0:8]


def test_an_unreadable_array_type_is_corrupt_and_closes_its_descriptor_once(tmp_path) -> None:
    root = tmp_path / "ds"
    other = tmp_path / "other.bin"
    other.write_bytes(b"0123456789")

    def make(f: h5py.File, key: str) -> None:
        h5py.h5d.create(f.id, key.encode(), h5py.h5t.UNIX_D32LE.copy(), h5py.h5s.create_simple((2, 4, 4)))

    _replace_block(root, (2, 4, 4), "uint8", make)
    with pytest.raises((CorruptBlockError, MetadataError)):
        split_dataset.open(root)[0]
    victim = os.open(other, os.O_RDONLY)
    try:
        gc.collect()
        assert os.pread(victim, 4, 0) == b"0123"  # not closed behind our back
    finally:
        os.close(victim)


def test_a_huge_declared_chunk_is_refused_at_once(tmp_path) -> None:
    root = tmp_path / "ds"

    def make(f: h5py.File, key: str) -> None:
        f.create_dataset(key, (2, 16, 16), np.uint16, chunks=(1, 32767, 32767), maxshape=(2, None, None),
                         **hdf5plugin.Blosc(cname="lz4"))

    _replace_block(root, (2, 16, 16), "uint16", make)
    t0 = time.perf_counter()
    with pytest.raises(CorruptBlockError, match="far larger"):
        split_dataset.open(root)[0, 0, :4]
    assert time.perf_counter() - t0 < 5


def test_legacy_metadata_with_many_hard_links_is_bounded(tmp_path) -> None:
    root = tmp_path / "old"
    root.mkdir()
    with h5py.File(root / "0000.h5", "w") as f:
        f.create_dataset("stack", data=np.zeros((2, 4, 4), np.uint8))
        levels = [f.create_group("stack_metadata")] + [f.create_group(f"hidden/g{i}") for i in range(1, 9)]
        levels[0].attrs["shape_full"] = (2, 4, 4)
        levels[0].attrs["shape_block"] = (2, 4, 4)
        for a, b in itertools.pairwise(levels):
            for i in range(4):
                a[f"c{i}"] = b  # 4**8 paths through 9 groups
    t0 = time.perf_counter()
    with pytest.raises(MetadataError, match="too many"):
        split_dataset.open(root)
    assert time.perf_counter() - t0 < 5


def test_legacy_metadata_title_that_is_not_a_length(tmp_path) -> None:
    root = tmp_path / "old"
    root.mkdir()
    with h5py.File(root / "0000.h5", "w") as f:
        f.create_dataset("stack", data=np.zeros((2, 4, 4), np.uint8))
        f.create_group("stack_metadata").attrs["TITLE"] = b"list:abc"
    with pytest.raises(MetadataError, match="0000.h5"):
        split_dataset.open(root)


def test_items_over_255_bytes_read_in_part(tmp_path) -> None:
    """blosc stores a type size of 1 for such items: partial reads must not count in items."""
    root = tmp_path / "ds"
    a = np.array([str(i).encode() * 3 for i in range(4 * 64 * 64)], "S300").reshape(4, 64, 64)

    def make(f: h5py.File, key: str) -> None:
        f.create_dataset(key, data=a, chunks=(1, 64, 64), **hdf5plugin.Blosc(cname="lz4", shuffle=0))

    _replace_block(root, a.shape, "uint8", make)
    meta = json.loads((root / "stack_metadata.json").read_text())
    meta["dtype"] = "|S300"
    (root / "stack_metadata.json").write_text(json.dumps(meta))
    ds = split_dataset.open(root)
    for sel in [np.s_[0], np.s_[0, 5, 0:4], np.s_[:, 5, 7], np.s_[0, :2, :3]]:
        np.testing.assert_array_equal(ds[sel], a[sel])
