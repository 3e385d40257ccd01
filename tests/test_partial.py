"""Reads that decode only some blosc blocks of a chunk (``blosc_getitem``), against numpy.

The default codec compresses each chunk as at least 4 blosc blocks (8-64 KiB, or blosc's
own blocks in chunks of 1 MiB), so a small window of a chunk (a trace through time)
decodes only the blocks holding it. These tests use
chunks of several blocks (tiny blocks on tiny arrays) so that every path is exercised:
one block or several, uncompressible data that blosc stores as is, blocks out of
order, corrupt offset tables, and the files other blosc writers produce.
"""

from __future__ import annotations

import struct
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import split_dataset
from split_dataset import SplitDataset, storage
from split_dataset.errors import CorruptBlockError
from split_dataset.storage import Codec, parts, threads
from split_dataset.storage import blosc as _blosc

SHAPE = (12, 3, 32, 40)  # 2560-byte uint16 planes
TINY = Codec("blosc", "lz4", 5, "byte", 256)  # 10 blosc blocks per plane


def _smooth(shape, dtype="uint16", seed=0):
    """Compressible data (blosc compresses it, so frames are not stored as is)."""
    rng = np.random.default_rng(seed)
    base = np.add.outer(np.arange(shape[-2]), np.arange(shape[-1])) * 3
    return (base + rng.integers(0, 20, shape)).astype(dtype)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, np.ndarray]:
    x = _smooth(SHAPE)
    path = tmp_path_factory.mktemp("partial") / "ds"
    split_dataset.save(x, path, (5,), compression=TINY, fsync=False).close()
    return path, x


def _frames(path: Path) -> list[bytes]:
    """The raw blosc frame of every chunk of block 0."""
    with h5py.File(path / "0000.h5", "r") as f:
        dset = f[next(iter(f))]
        return [dset.id.read_direct_chunk(dset.id.get_chunk_info(i).chunk_offset)[1]
                for i in range(dset.id.get_num_chunks())]


def test_default_codec_writes_unsplit_blocks_of_a_quarter_chunk(tmp_path):
    x = _smooth((2, 1, 128, 256))  # 64 KiB planes: 4 blocks of 16 KiB each
    split_dataset.save(x, tmp_path / "ds", fsync=False).close()
    for frame in _frames(tmp_path / "ds"):
        _, _, flags, typesize, nbytes, blocksize, cbytes = _blosc.HEADER.unpack_from(frame)
        assert (typesize, nbytes, blocksize, cbytes) == (2, 65536, 16384, len(frame))
        assert flags & 0x10  # blocks not split into byte streams


def test_default_codec_block_sizes_follow_the_chunk(tmp_path):
    x = _smooth((2, 1, 64, 1024))  # 2 KiB rows, 128 KiB planes: 32 KiB blocks
    split_dataset.save(x, tmp_path / "ds", fsync=False).close()
    for frame in _frames(tmp_path / "ds"):
        assert _blosc.HEADER.unpack_from(frame)[5] == 32768
    with SplitDataset(tmp_path / "ds") as ds:
        np.testing.assert_array_equal(ds[:, 0, 30:38, 500:508], x[:, 0, 30:38, 500:508])
        assert ds.metadata["compression"]["blocksize"] == "rows"


def test_default_codec_uses_blosc_blocks_in_1mib_chunks(tmp_path):
    x = _smooth((2, 512, 1024))  # 1 MiB planes: blosc's own 256 KiB blocks, byte-split
    split_dataset.save(x, tmp_path / "ds", fsync=False).close()
    for frame in _frames(tmp_path / "ds"):
        _, _, flags, _, nbytes, blocksize, _ = _blosc.HEADER.unpack_from(frame)
        assert nbytes == 1 << 20 and _blosc_own_block(blocksize) and not flags & 0x10
    with SplitDataset(tmp_path / "ds") as ds:
        np.testing.assert_array_equal(ds[:, 300:308, 500:508], x[:, 300:308, 500:508])
        np.testing.assert_array_equal(ds[1], x[1])


def _blosc_own_block(blocksize: int) -> bool:
    """blosc's own block for lz4 level 5 on 16-bit items: 256 KiB (c-blosc 1.x), a quarter of the chunk at most."""
    return blocksize <= 1 << 18


def test_codec_blocksize_values():
    rows = Codec.parse({"name": "blosc", "cname": "lz4", "blocksize": "rows"})
    assert rows.block_bytes(100) == 8192
    assert [rows.block_bytes(512, n << 10, 2) for n in (16, 32, 64, 128, 256, 512)] == [
        8192, 8192, 16384, 32768, 65536, 65536]
    assert rows.block_bytes(4096, 1 << 20, 2) == (0 if _blosc.available() else 65536)
    assert rows.block_bytes(8192, 1 << 20, 4) == 65536  # blosc's own 512 KiB blocks would be half the chunk
    assert Codec.parse({"name": "blosc", "cname": "zstd", "blocksize": 4096}).block_bytes(10**6) == 4096
    assert Codec.parse("blosc").block_bytes(512) == 0
    for bad in (-1, 64, "big", 1.5):
        with pytest.raises(ValueError, match="blocksize"):
            Codec.parse({"name": "blosc", "cname": "lz4", "blocksize": bad})


def test_legacy_blosc_codec_keeps_blosc_defaults(tmp_path):
    """'blosc' (the old default) after small-block writes still gets c-blosc's own layout."""
    x = _smooth((2, 1, 128, 256))
    split_dataset.save(x, tmp_path / "a", fsync=False).close()
    split_dataset.save(x, tmp_path / "b", compression="blosc", fsync=False).close()
    for frame in _frames(tmp_path / "b"):
        _, _, flags, _, _, blocksize, _ = _blosc.HEADER.unpack_from(frame)
        assert blocksize == 65536 and not flags & 0x10


@settings(max_examples=150)
@given(data=st.data())
def test_windows_match_numpy(tiny, data):
    path, x = tiny
    ds = SplitDataset(path)
    sel = []
    for n in SHAPE:
        kind = data.draw(st.sampled_from(["int", "window", "all"]))
        if kind == "int":
            sel.append(data.draw(st.integers(-n, n - 1)))
        elif kind == "window":
            a = data.draw(st.integers(0, n - 1))
            sel.append(slice(a, data.draw(st.integers(a + 1, min(n, a + 9)))))
        else:
            sel.append(slice(None))
    np.testing.assert_array_equal(ds[tuple(sel)], x[tuple(sel)])


@pytest.mark.parametrize("sel", [
    np.s_[:, 1, 5:13, 7:15],  # the 8x8 trace
    np.s_[:, :, 31, 39],  # one pixel through time, every plane
    np.s_[3:11, 2, 0:2, :],  # whole rows
    np.s_[:, 0, 16:17, 0:1],
    np.s_[4, 1, 2:6, 30:40],  # inside one block file, one chunk
])
def test_traces_match_numpy(tiny, sel):
    path, x = tiny
    with SplitDataset(path) as ds:
        np.testing.assert_array_equal(ds[sel], x[sel])


def test_trace_decodes_only_some_blocks(tiny, monkeypatch):
    """The window is decoded with getitem, never by decompressing whole chunks."""
    path, x = tiny
    calls = {"getitem": 0, "decompress": 0}
    getitem, getitem_ptr, decompress = parts._LIB_GETITEM, _blosc.getitem_ptr, _blosc.decompress_ptr

    def count(name, fn):
        def counted(*a):
            calls[name] += 1
            return fn(*a)
        return counted

    monkeypatch.setattr(parts, "_LIB_GETITEM", count("getitem", getitem))
    monkeypatch.setattr(_blosc, "getitem_ptr", count("getitem", getitem_ptr))
    monkeypatch.setattr(_blosc, "decompress_ptr", count("decompress", decompress))
    with SplitDataset(path) as ds:
        np.testing.assert_array_equal(ds[:, 1, 5:13, 7:15], x[:, 1, 5:13, 7:15])
    assert calls == {"getitem": SHAPE[0], "decompress": 0}


def _reorder_blocks(path):
    """Rewrite every chunk of every block file with its blosc blocks stored in reverse order
    (what multithreaded c-blosc may do), offsets updated: the same frames, still valid."""
    import h5py

    for f in sorted(path.glob("*.h5")):
        with h5py.File(f, "r+") as h:
            dset = h["stack_4D"] if "stack_4D" in h else h[next(iter(h))]
            for i in range(dset.id.get_num_chunks()):
                info = dset.id.get_chunk_info(i)
                mask, frame = dset.id.read_direct_chunk(info.chunk_offset)
                flags, nbytes, bsize = frame[2], *struct.unpack_from("<II", frame, 4)
                if flags & _blosc.MEMCPYED:
                    continue
                n = -(-nbytes // bsize)
                starts = struct.unpack_from(f"<{n}I", frame, 16)
                ends = sorted(starts)[1:] + [len(frame)]
                ends = [ends[sorted(starts).index(a)] for a in starts]
                body, new = b"", []
                pos = 16 + 4 * n
                for k in reversed(range(n)):
                    new.append((k, pos + len(body)))
                    body += frame[starts[k]:ends[k]]
                table = [0] * n
                for k, off in new:
                    table[k] = off
                dset.id.write_direct_chunk(info.chunk_offset, frame[:16] + struct.pack(f"<{n}I", *table) + body,
                                           mask)


def test_blocks_out_of_order_are_read_in_part(tiny, tmp_path):
    src, x = tiny
    import shutil

    path = tmp_path / "reordered"
    shutil.copytree(src, path)
    _reorder_blocks(path)
    with SplitDataset(path) as ds:
        np.testing.assert_array_equal(ds[:, 1, 5:13, 7:15], x[:, 1, 5:13, 7:15])
        np.testing.assert_array_equal(ds[4, 1, 2:6, 30:40], x[4, 1, 2:6, 30:40])
        np.testing.assert_array_equal(ds[:], x)


def test_block_span_order_and_bounds():
    frame = b"\0" * 16 + struct.pack("<4I", 32, 50, 70, 90)
    starts = _blosc.FrameCheck.offsets(frame, 4, 100)
    assert _blosc.span(starts, frame, 1, 2, 100) == (50, 90)
    assert _blosc.span(starts, frame, 3, 3, 100) == (90, 100)
    shuffled = b"\0" * 16 + struct.pack("<4I", 32, 70, 50, 90)  # stored out of order
    starts = _blosc.FrameCheck.offsets(shuffled, 4, 100)
    assert _blosc.span(starts, shuffled, 0, 2, 100) == (32, 90)
    assert _blosc.span(starts, shuffled, 1, 1, 100) == (70, 90)
    for bad, cbytes in ((table, 80) for table in [frame]):  # a block past the frame's end
        with pytest.raises(_blosc.BloscError):
            _blosc.FrameCheck.offsets(bad, 4, cbytes)
    for table in (struct.pack("<4I", 8, 50, 70, 90), struct.pack("<4I", 32, 50, 50, 90),
                  struct.pack("<4I", 36, 50, 70, 90)):  # inside the table, twice the same, a gap after it
        with pytest.raises(_blosc.BloscError):
            _blosc.FrameCheck.offsets(b"\0" * 16 + table, 4, 100)


def test_uncompressible_frames_read_in_part(tmp_path):
    """Random bytes: blosc stores frames as is (flag 0x02); parts are read straight from disk."""
    x = np.random.default_rng(3).integers(0, 256, (6, 2, 40, 64), dtype=np.uint8)
    split_dataset.save(x, tmp_path / "ds", (4,), compression=TINY, fsync=False).close()
    assert any(_blosc.HEADER.unpack_from(f)[2] & _blosc.MEMCPYED for f in _frames(tmp_path / "ds"))
    with SplitDataset(tmp_path / "ds") as ds:
        for sel in (np.s_[:, 1, 3:9, 10:20], np.s_[2, 0, 39, :], np.s_[:, :, 20, 5]):
            np.testing.assert_array_equal(ds[sel], x[sel])


@pytest.mark.parametrize("dtype", ["uint8", "int32", "float32", "float64"])
def test_other_dtypes(tmp_path, dtype):
    x = _smooth((7, 2, 30, 33), dtype)
    split_dataset.save(x, tmp_path / "ds", (3,), compression=TINY, fsync=False).close()
    with SplitDataset(tmp_path / "ds") as ds:
        for sel in (np.s_[:, 1, 3:9, 10:20], np.s_[:, :, 29, 32], np.s_[5, 0, 1:3, 2:30]):
            np.testing.assert_array_equal(ds[sel], x[sel])


def _damaged(tmp_path: Path, chunk: int, at: int, data: bytes) -> tuple[Path, np.ndarray]:
    """A dataset whose block 0 has `data` written `at` bytes into the frame of `chunk`."""
    x = _smooth((4, 1, 32, 40))
    split_dataset.save(x, tmp_path / "ds", compression=TINY, fsync=False).close()
    path = tmp_path / "ds" / "0000.h5"
    with h5py.File(path, "r") as f:
        info = f[next(iter(f))].id.get_chunk_info(chunk)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + at)
        fh.write(data)
    return tmp_path / "ds", x


def test_corrupt_offset_table_raises_corrupt_block(tmp_path):
    root, x = _damaged(tmp_path, 2, 16, b"\xff" * 40)  # every block offset of chunk 2 past the frame's end
    with SplitDataset(root) as ds:
        np.testing.assert_array_equal(ds[:2, 0, 5:9, 3:7], x[:2, 0, 5:9, 3:7])
        with pytest.raises(CorruptBlockError, match="0000.h5"):
            ds[:, 0, 5:9, 3:7]
        with pytest.raises(CorruptBlockError, match="0000.h5"):
            ds[2, 0, 5:9, 3:7]


def test_wrong_frame_header_raises_corrupt_block(tmp_path):
    root, _x = _damaged(tmp_path, 1, 4, struct.pack("<I", 12345))  # another uncompressed size
    with SplitDataset(root) as ds:
        for sel in (np.s_[1, 0, 5:9, 3:7], np.s_[:, 0, 5:9, 3:7], np.s_[1, 0]):
            with pytest.raises(CorruptBlockError):
                ds[sel]


def test_split_blocks_from_other_writers(tmp_path):
    """Chunks HDF5's own blosc filter wrote (64 KiB split blocks) read in part too."""
    x = _smooth((3, 1, 256, 300))
    path = tmp_path / "ds"
    split_dataset.save(x, path, compression="blosc-lz4", fsync=False).close()
    import hdf5plugin

    with h5py.File(path / "0000.h5", "r+") as f:
        key = next(iter(f))
        del f[key]
        f.create_dataset(key, data=x, chunks=(1, 1, 256, 300), **hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=1))
    with SplitDataset(path) as ds:
        handle = ds._handle(0)
        np.testing.assert_array_equal(ds[:, 0, 200:208, 5:13], x[:, 0, 200:208, 5:13])
        np.testing.assert_array_equal(ds[1, 0, 2:4, 290:300], x[1, 0, 2:4, 290:300])
        assert handle.reader._nblocks >= 2  # 150 KiB planes in blocks of 64 KiB or more


def test_large_frames_read_by_other_tools(tmp_path):
    """Multi-block chunks of the default codec load with h5py, flammkuchen and PyTables."""
    import flammkuchen as fl
    import tables

    x = _smooth((3, 2, 100, 130))
    ds = split_dataset.save(x, tmp_path / "ds", (2,), fsync=False)
    ds.close()
    for idx, sl in ds.slices():
        path = str(ds.files[idx])
        with h5py.File(path, "r") as f:
            np.testing.assert_array_equal(f["stack_4D"][:], x[sl])
        np.testing.assert_array_equal(fl.load(path)["stack_4D"], x[sl])
        with tables.open_file(path, "r") as h:
            np.testing.assert_array_equal(h.get_node("/stack_4D")[:, 1, 40:48], x[sl][:, 1, 40:48])


def test_thread_buffers_are_reused(tiny):
    path, _ = tiny
    with SplitDataset(path) as ds:
        ds[:, 1, 5:13, 7:15]
        bufs = threads.part_buffers(ds._handle(0).reader._nbytes, np.dtype("uint16"))
        ds[:, 2, 1:3, 7:15]
        assert threads.part_buffers(ds._handle(0).reader._nbytes, np.dtype("uint16"))[0] is bufs[0]


# ----------------------------------------------------------------------------- the shared work queue


def test_run_shared_processes_every_item_once(monkeypatch):
    import threading

    monkeypatch.setattr(storage, "POOL_THREADS", 3)
    seen: list[tuple[int, str]] = []
    lock = threading.Lock()

    def work(queue, tag):
        for item in queue:
            with lock:
                seen.append((item, threading.current_thread().name))

    for n in (0, 1, 2, 50):
        seen.clear()
        threads.run_shared(work, list(range(n)), "x")
        assert sorted(i for i, _ in seen) == list(range(n))


def test_run_shared_raises_a_helpers_error(monkeypatch):
    import threading

    monkeypatch.setattr(storage, "POOL_THREADS", 2)
    started = threading.Event()

    def work(queue):
        if threading.current_thread() is threading.main_thread():
            assert started.wait(5)  # let the helper take an item first
            for _ in queue:
                pass
            return
        started.set()
        for item in queue:
            raise ValueError(f"item {item}")

    with pytest.raises(ValueError, match="item"):
        threads.run_shared(work, list(range(10)))


def test_run_shared_does_not_wait_for_helpers_that_never_start(monkeypatch):
    """The caller finishes the items alone when the pool is busy elsewhere."""
    import threading

    monkeypatch.setattr(storage, "POOL_THREADS", 2)
    release = threading.Event()
    blockers = [threads.pool().submit(release.wait, 5) for _ in range(threads._pool_threads() + 2)]
    try:
        done: list[int] = []
        threads.run_shared(lambda q: done.extend(q), list(range(20)))
        assert done == list(range(20))
    finally:
        release.set()
        for b in blockers:
            b.result()
