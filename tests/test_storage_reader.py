"""The chunk reader and the block handle: one case per strategy and per fallback, numpy as the oracle.

Strategies of ``BlockHandle`` (by the HDF5 filter pipeline): direct (blosc alone), checked
(shuffle before blosc, fletcher32 after it, or no callable c-blosc), hdf5 (no blosc),
refused. Inside the direct strategy, ``ChunkReader`` decodes: one chunk; many whole chunks
(threads, or the caller alone); parts of many chunks (the row batch, and its careful
per-chunk path); stepped slices and index arrays (gather); unwritten chunks (fill value);
chunks stored unfiltered (HDF5's filter mask); frames stored as is (MEMCPYED).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin
import numpy as np
import pytest

from split_dataset.errors import BloscError
from split_dataset.storage import blosc as _blosc
from split_dataset.storage import parts, threads
from split_dataset.storage.chunkindex import hdf5_index
from split_dataset.storage.handles import BlockHandle, open_block
from split_dataset.storage.reader import ChunkReader

SHAPE = (6, 2, 40, 48)
CHUNKS = (1, 1, 40, 48)


def _data(kind: str = "smooth") -> np.ndarray:
    rng = np.random.default_rng(0)
    if kind == "noise":
        return (rng.poisson(20, SHAPE) + 80).astype(np.uint16)
    t, z, y, x = np.indices(SHAPE)
    return (1000 + 40 * np.sin(x / 5 + t) + 30 * np.cos(y / 7 + z) + rng.integers(0, 4, SHAPE)).astype(np.uint16)


def _write(path: Path, data: np.ndarray, *, filters: dict[str, Any], written: list[int] | None = None,
           chunks: tuple[int, ...] = CHUNKS) -> Path:
    with h5py.File(path, "w") as f:
        d = f.create_dataset("stack", shape=data.shape, dtype=data.dtype, chunks=chunks, **filters)
        if written is None:
            d[...] = data
        else:
            for k in written:
                t, z = divmod(k, SHAPE[1])
                d[t, z] = data[t, z]
    return path


BLOSC = dict(hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=1))

SELECTIONS = [
    (slice(2, 3, 1), slice(1, 2, 1), slice(0, 40, 1), slice(0, 48, 1)),  # one chunk, whole
    (slice(0, 6, 1), slice(0, 2, 1), slice(0, 40, 1), slice(0, 48, 1)),  # many whole chunks
    (slice(0, 6, 1), slice(1, 2, 1), slice(3, 11, 1), slice(5, 13, 1)),  # parts of many (a trace)
    (slice(1, 2, 1), slice(0, 1, 1), slice(2, 6, 1), slice(30, 40, 1)),  # part of one chunk
    (slice(0, 6, 2), slice(0, 2, 1), slice(0, 40, 3), slice(1, 48, 2)),  # stepped (gather)
    (np.array([0, 3, 5]), slice(0, 2, 1), np.array([1, 2, 30]), slice(0, 48, 1)),  # index arrays (gather)
]


def _read(handle: BlockHandle, local: tuple[Any, ...]) -> np.ndarray:
    shape = tuple(len(range(s.start, s.stop, s.step)) if type(s) is slice else len(s) for s in local)
    buf = np.empty(shape, handle.dtype)
    handle.read(local, buf, tuple(slice(0, n) for n in shape))
    return buf


def _expected(data: np.ndarray, local: tuple[Any, ...]) -> np.ndarray:
    return data[np.ix_(*(np.arange(s.start, s.stop, s.step) if type(s) is slice else s for s in local))]


def _open(path: Path) -> BlockHandle:
    return open_block(path, (0,), path.parent, None, 1 << 20)


@pytest.mark.parametrize("kind", ["smooth", "noise"])
@pytest.mark.parametrize("blocksize", [0, 2048])
def test_direct_strategy_every_selection(tmp_path, kind, blocksize) -> None:
    """blosc alone: read by the chunk reader, in small blosc blocks (parts) or blosc's own."""
    from split_dataset import save

    data = _data(kind)
    codec = _blosc_codec(blocksize)
    ds = save(data, tmp_path / "ds", SHAPE, compression=codec, chunks=CHUNKS, fsync=False)
    handle = ds.block(0)
    assert handle.mode == "direct"
    for local in SELECTIONS:
        np.testing.assert_array_equal(_read(handle, local), _expected(data, local))


def _blosc_codec(blocksize: int) -> Any:
    from split_dataset import Codec

    return Codec("blosc", "lz4", 5, "byte", blocksize)


def test_parts_decode_with_getitem_and_the_careful_path(tmp_path, monkeypatch) -> None:
    """A trace goes through the row batch; chunks it leaves (another block size) take the careful path."""
    from split_dataset import save

    data = _data("noise")
    ds = save(data, tmp_path / "ds", SHAPE, compression=_blosc_codec(1024), chunks=CHUNKS, fsync=False)
    handle = ds.block(0)
    calls = {"careful": 0}
    careful = ChunkReader._items_into

    def counted(self: ChunkReader, *a: Any) -> bool:
        calls["careful"] += 1
        return careful(self, *a)

    monkeypatch.setattr(ChunkReader, "_items_into", counted)
    local = SELECTIONS[2]
    np.testing.assert_array_equal(_read(handle, local), _expected(data, local))
    assert calls["careful"] == 0  # the first chunk's header told the batch the block count
    handle.reader._nblocks = 3  # as if another chunk size had been seen last: all go the careful way
    np.testing.assert_array_equal(_read(handle, local), _expected(data, local))
    assert calls["careful"] > 1


def test_whole_chunks_on_one_thread(tmp_path, monkeypatch) -> None:
    """SPLIT_DATASET_THREADS=1: run_shared's serial branch."""
    from split_dataset import save

    data = _data()
    ds = save(data, tmp_path / "ds", SHAPE, chunks=CHUNKS, fsync=False)
    monkeypatch.setattr(threads, "POOL_THREADS", 1)
    for local in SELECTIONS[:2] + SELECTIONS[4:]:
        np.testing.assert_array_equal(_read(ds.block(0), local), _expected(data, local))


def test_unwritten_chunks_read_as_the_fill_value(tmp_path) -> None:
    data = _data()
    path = _write(tmp_path / "b.h5", data, filters=dict(BLOSC, fillvalue=7), written=[0, 3, 11])
    handle = _open(path)
    assert handle.mode == "direct"
    with h5py.File(path) as f:
        truth = f["stack"][...]
    for local in SELECTIONS:
        np.testing.assert_array_equal(_read(handle, local), _expected(truth, local))
    assert handle.check_chunks() == (3, 12)


def test_unfiltered_and_memcpyed_chunks(tmp_path) -> None:
    """A chunk stored with HDF5's filter mask set (the filter skipped) and one blosc stored as is."""
    data = _data("noise")
    path = _write(tmp_path / "b.h5", data, filters=BLOSC)
    with h5py.File(path, "r+") as f:
        d = f["stack"]
        d.id.write_direct_chunk((1, 0, 0, 0), np.ascontiguousarray(data[1:2, 0:1]).tobytes(), filter_mask=1)
        frame = _blosc.compress(np.ascontiguousarray(data[2:3, 1:2]), "lz4", 0, 1)  # level 0: as is
        assert frame[2] & _blosc.MEMCPYED
        d.id.write_direct_chunk((2, 1, 0, 0), frame.tobytes())
    handle = _open(path)
    for local in SELECTIONS:
        np.testing.assert_array_equal(_read(handle, local), _expected(data, local))


@pytest.mark.parametrize("filters, mode", [
    (dict(BLOSC, fletcher32=True), "checked"),
    (dict(compression="gzip", shuffle=True), "hdf5"),
    ({}, "hdf5"),
])
def test_other_pipelines(tmp_path, filters, mode) -> None:
    data = _data()
    handle = _open(_write(tmp_path / "b.h5", data, filters=filters))
    assert handle.mode == mode
    for local in SELECTIONS:
        np.testing.assert_array_equal(_read(handle, local), _expected(data, local))
    assert handle.check_chunks()[0] == 12


def test_contiguous_array(tmp_path) -> None:
    data = _data()
    with h5py.File(tmp_path / "b.h5", "w") as f:
        f["stack"] = data
    handle = _open(tmp_path / "b.h5")
    assert handle.mode == "hdf5" and handle.chunks is None
    for local in SELECTIONS:
        np.testing.assert_array_equal(_read(handle, local), _expected(data, local))


def test_checked_when_c_blosc_cannot_be_called(tmp_path, monkeypatch) -> None:
    data = _data()
    path = _write(tmp_path / "b.h5", data, filters=BLOSC)
    monkeypatch.setattr(_blosc, "_LIB", None)
    handle = _open(path)
    assert handle.mode == "checked"
    for local in SELECTIONS:
        np.testing.assert_array_equal(_read(handle, local), _expected(data, local))


def test_checked_strategy_validates_before_hdf5_decodes(tmp_path) -> None:
    """shuffle then blosc: a damaged frame is refused before HDF5's blosc filter sees it."""
    data = _data()
    path = _write(tmp_path / "b.h5", data, filters=dict(BLOSC, shuffle=True))
    with h5py.File(path) as f:
        assert [f["stack"].id.get_create_plist().get_filter(i)[0] for i in range(2)] == [2, 32001]
        info = f["stack"].id.get_chunk_info(0)
    with open(path, "r+b") as f:  # typesize 3 in the first chunk's header
        f.seek(info.byte_offset + 3)
        f.write(bytes([3]))
    handle = _open(path)
    assert handle.mode == "checked"
    with pytest.raises(BloscError, match="items of 3 bytes"):
        _read(handle, (slice(0, 1, 1), slice(0, 1, 1), slice(0, 40, 1), slice(0, 48, 1)))
    np.testing.assert_array_equal(_read(handle, SELECTIONS[0]), _expected(data, SELECTIONS[0]))  # another chunk


def test_refused_pipeline(tmp_path) -> None:
    """blosc followed by a filter whose output cannot be checked (gzip): refused, never decoded."""
    data = _data()
    path = tmp_path / "b.h5"
    with h5py.File(path, "w") as f:
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_chunk(CHUNKS)
        dcpl.set_filter(32001, h5py.h5z.FLAG_OPTIONAL, (2, 2, 2, 0, 5, 1, 1))
        dcpl.set_deflate(4)
        space = h5py.h5s.create_simple(SHAPE)
        h5py.h5d.create(f.id, b"stack", h5py.h5t.NATIVE_UINT16, space, dcpl=dcpl)
        f["stack"][...] = data
    handle = _open(path)
    assert handle.mode == "refused"
    with pytest.raises(BloscError, match="refused"):
        _read(handle, SELECTIONS[0])


class _InMemory:
    """A ByteSource over bytes held in memory, counting requests: what a remote source would be."""

    def __init__(self, data: bytes) -> None:
        self.name, self.data, self.requests = "memory", data, 0

    def size(self) -> int:
        return len(self.data)

    def pread(self, view: memoryview, offset: int) -> int:
        self.requests += 1
        chunk = self.data[offset:offset + len(view)]
        view[: len(chunk)] = chunk
        return len(chunk)

    def read_exactly(self, view: memoryview, offset: int) -> None:
        if self.pread(view, offset) != len(view):
            raise BloscError("cut short")

    def read_many(self, requests: Any) -> None:
        for view, offset in requests:
            self.read_exactly(view, offset)

    def close(self) -> None:
        pass


def test_the_byte_seam_takes_any_source(tmp_path) -> None:
    """The chunk reader asks nothing of a file but bytes at offsets: an in-memory source reads the same."""
    data = _data("noise")
    path = _write(tmp_path / "b.h5", data, filters=BLOSC)
    with h5py.File(path) as f:
        index = hdf5_index(f["stack"])
        check = _blosc.FrameCheck(int(np.prod(CHUNKS)) * 2, 2, 1, 1)
    source = _InMemory(path.read_bytes())
    reader = ChunkReader(source, lambda: index, CHUNKS, np.dtype("uint16"), check)
    for local in SELECTIONS:
        shape = tuple(len(range(s.start, s.stop, s.step)) if type(s) is slice else len(s) for s in local)
        buf = np.empty(shape, np.uint16)
        reader.read(local, buf, tuple(slice(0, n) for n in shape))
        np.testing.assert_array_equal(buf, _expected(data, local))
    before = source.requests
    reader.read(SELECTIONS[0], np.empty((1, 1, 40, 48), np.uint16), (slice(0, 1), slice(0, 1), slice(0, 40), slice(0, 48)))
    assert source.requests - before == 1  # one whole chunk: one request


def test_getitem_is_used_for_parts(tmp_path, monkeypatch) -> None:
    from split_dataset import save

    data = _data("noise")
    ds = save(data, tmp_path / "ds", SHAPE, compression=_blosc_codec(1024), chunks=CHUNKS, fsync=False)
    n = {"getitem": 0}
    real = parts._LIB_GETITEM

    def counted(*a: Any) -> int:
        n["getitem"] += 1
        return int(real(*a))

    monkeypatch.setattr(parts, "_LIB_GETITEM", counted)
    np.testing.assert_array_equal(_read(ds.block(0), SELECTIONS[2]), _expected(data, SELECTIONS[2]))
    assert n["getitem"] == SHAPE[0]  # one getitem per chunk, no whole-chunk decode
    with ds.block(0) as b:
        assert os.path.exists(b.path)
    ds.block(1 % ds.n_blocks).close()
    np.testing.assert_array_equal(ds[0], data[0])  # closing a handle of block() never touches the dataset's


def test_a_frame_changed_in_place_after_a_read_is_validated_again(tmp_path) -> None:
    """Validation is remembered per frame only for the same header bytes: a header changed while the
    file is open (a writer of another tool, bit rot) is checked again before c-blosc sees it."""
    import subprocess
    import sys
    import textwrap

    from split_dataset import save

    data = _data("noise")
    ds = save(data, tmp_path / "ds", SHAPE, chunks=CHUNKS, fsync=False)
    with ds.block(0) as b:
        addr = b.dset.id.get_chunk_info(0).byte_offset
    code = textwrap.dedent(f"""
        import split_dataset
        from split_dataset.errors import CorruptBlockError
        ds = split_dataset.open({str(tmp_path / "ds")!r})
        ds[0, 0]; ds[:, :, 3:9, 5:13]  # validated, remembered
        with open({str(tmp_path / "ds" / "0000.h5")!r}, "r+b") as f:
            f.seek({addr} + 3)
            f.write(bytes([3]))  # typesize 3 for a uint16 array
        for sel in ((0, 0), (slice(None), slice(None), slice(3, 9), slice(5, 13))):
            try:
                ds[sel]
                print("read")
            except CorruptBlockError:
                print("refused")
        """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.split()[0] == "refused", out
