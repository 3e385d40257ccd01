"""save(): round trips, metadata, codecs, array-likes, bad input, atomicity."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from conftest import save_fast

import split_dataset
from split_dataset import Codec, SplitDataset
from split_dataset.writer import default_shape_block


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "int32", "float32", "float64", "bool", "complex64"])
def test_round_trip_dtypes(tmp_path, dtype) -> None:
    arr = (np.arange(7 * 5 * 3).reshape(7, 5, 3) % 7).astype(dtype)
    ds = save_fast(arr, tmp_path / "ds", (3, 2))
    assert ds.dtype == arr.dtype
    np.testing.assert_array_equal(ds[:], arr)


@pytest.mark.parametrize("compression", [None, "none", "gzip", "blosc", "blosc-lz4", "blosc-zstd", "blosc-blosclz",
                                         {"name": "blosc", "cname": "zstd", "clevel": 3, "shuffle": "bit"}])
def test_codecs(tmp_path, compression) -> None:
    arr = np.random.default_rng(0).integers(0, 500, (6, 32, 32), dtype=np.uint16)
    ds = save_fast(arr, tmp_path / "ds", (4,), compression=compression)
    np.testing.assert_array_equal(ds[:], arr)
    assert ds.metadata["compression"] == Codec.parse(compression).describe()


def test_unknown_codec_is_value_error(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown compression 'lzma'"):
        save_fast(np.zeros(3), tmp_path / "ds", None, compression="lzma")
    with pytest.raises(ValueError, match="unknown blosc compressor 'snappy2'"):
        save_fast(np.zeros(3), tmp_path / "ds", None, compression="blosc-snappy2")
    assert not (tmp_path / "ds").exists()


def test_metadata_has_classic_and_new_keys(tmp_path) -> None:
    arr = np.zeros((10, 4, 6, 8), np.uint16)
    save_fast(arr, tmp_path / "ds", (4,), resolution=(0.5, 2, 0.3, 0.3), attrs={"fish": "F1", "n": [1, 2]})
    meta = json.loads((tmp_path / "ds" / "stack_metadata.json").read_text())
    assert meta["shape_full"] == [10, 4, 6, 8] and meta["shape_block"] == [4, 4, 6, 8]
    assert meta["crop_start"] == meta["crop_end"] == meta["padding"] == [0, 0, 0, 0]
    assert meta["resolution"] == [0.5, 2, 0.3, 0.3] and meta["axis_order"] == "tzyx"
    assert meta["dtype"] == "<u2" and meta["data_key"] == "stack_4D" and meta["complete"] is True
    assert meta["n_blocks"] == 3 and meta["format_version"] == 1
    ds = SplitDataset(tmp_path / "ds")
    assert ds.attrs == {"fish": "F1", "n": [1, 2]}
    assert ds.resolution == (0.5, 2.0, 0.3, 0.3)


@pytest.mark.parametrize("ndim, order", [(1, "x"), (2, "yx"), (3, "zyx"), (4, "tzyx"), (5, "tczyx")])
def test_default_axis_order_has_the_right_length(tmp_path, ndim, order) -> None:
    ds = save_fast(np.zeros((2,) * ndim, np.uint8), tmp_path / "ds", None)
    assert ds.axis_order == order


def test_block_files_layout(tmp_path) -> None:
    arr = np.arange(20 * 3 * 64 * 48, dtype=np.uint16).reshape(20, 3, 64, 48)
    ds = save_fast(arr, tmp_path / "ds", (8,))
    # the dataset keeps 0002.h5 open: h5py.File on it must still work in this process
    assert sorted(p.name for p in ds.root.iterdir()) == ["0000.h5", "0001.h5", "0002.h5", "SHA256SUMS",
                                                          "chunk_index.bin", "stack_metadata.json"]
    with h5py.File(ds.root / "0002.h5", "r") as f:
        assert list(f) == ["stack_4D"]
        d = f["stack_4D"]
        assert d.shape == (4, 3, 64, 48)
        assert d.chunks == (1, 1, 64, 48)  # one image plane per chunk
        assert "32001" in d._filters
        assert d.attrs["CLASS"] == b"CARRAY" and f.attrs["CLASS"] == b"GROUP"


def test_default_shape_block_rule() -> None:
    assert default_shape_block((200, 10, 256, 256), 2) == (51, 10, 256, 256)
    assert default_shape_block((5, 10, 256, 256), 2) == (5, 10, 256, 256)
    assert default_shape_block((3, 8192, 8192), 2) == (1, 4096, 8192)


def test_shape_block_with_none_and_short(tmp_path) -> None:
    arr = np.zeros((6, 5, 4), np.int16)
    assert save_fast(arr, tmp_path / "a", (2, None, 3)).shape_block == (2, 5, 3)
    assert save_fast(arr, tmp_path / "b", (2,)).shape_block == (2, 5, 4)
    assert save_fast(arr, tmp_path / "c", (100, 100, 100)).shape_block == (6, 5, 4)


@pytest.mark.parametrize("bad", [(0,), (-1, 2), (2.5,), (1, 1, 1, 1)], ids=str)
def test_bad_shape_block_is_value_error(tmp_path, bad) -> None:
    with pytest.raises(ValueError, match="shape_block"):
        save_fast(np.zeros((4, 4, 4)), tmp_path / "ds", bad)


def test_bad_dtype_is_type_error(tmp_path) -> None:
    with pytest.raises(TypeError, match="dtype object"):
        save_fast(np.array([None, 1], dtype=object), tmp_path / "ds", None)
    with pytest.raises(TypeError, match="dtype <U1"):
        save_fast(np.array(["a"]), tmp_path / "ds2", None)


def test_existing_folder_refused_and_untouched(tmp_path) -> None:
    first = save_fast(np.ones((4, 4), np.uint8), tmp_path / "ds", (2,))
    before = {p.name: p.read_bytes() for p in first.root.iterdir()}
    with pytest.raises(FileExistsError, match="not empty"):
        save_fast(np.zeros((8, 4), np.uint8), tmp_path / "ds", (2,))
    assert {p.name: p.read_bytes() for p in first.root.iterdir()} == before
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        save_fast(np.zeros(3), tmp_path / "file", None)


def test_overwrite_replaces_only_the_dataset(tmp_path) -> None:
    save_fast(np.ones((10, 4), np.uint8), tmp_path / "ds", (2,))
    (tmp_path / "ds" / "notes.txt").write_text("keep me")
    ds = save_fast(np.zeros((4, 4), np.int16), tmp_path / "ds", (2,), overwrite=True)
    assert ds.shape == (4, 4) and ds.dtype == np.int16
    assert sorted(p.name for p in ds.root.iterdir()) == ["0000.h5", "0001.h5", "SHA256SUMS",
                                                          "chunk_index.bin", "notes.txt", "stack_metadata.json"]


def test_empty_folder_is_fine(tmp_path) -> None:
    (tmp_path / "ds").mkdir()
    assert save_fast(np.zeros(3), tmp_path / "ds", None).shape == (3,)


def test_no_temporary_files_left(tmp_path) -> None:
    ds = save_fast(np.zeros((9, 3)), tmp_path / "ds", (2,))
    assert not [p for p in ds.root.iterdir() if p.name.startswith(".")]


def test_array_likes(tmp_path) -> None:
    arr = np.arange(11 * 6 * 5, dtype=np.float32).reshape(11, 6, 5)
    with h5py.File(tmp_path / "src.h5", "w") as f:
        f["x"] = arr
    with h5py.File(tmp_path / "src.h5", "r") as f:
        np.testing.assert_array_equal(save_fast(f["x"], tmp_path / "from_h5", (4,))[:], arr)
    np.save(tmp_path / "m.npy", arr)
    mm = np.load(tmp_path / "m.npy", mmap_mode="r")
    np.testing.assert_array_equal(save_fast(mm, tmp_path / "from_mm", (3, 2))[:], arr)
    ds = save_fast(arr, tmp_path / "from_np", (5,))
    np.testing.assert_array_equal(save_fast(ds, tmp_path / "from_sd", (2, 6, 5))[:], arr)
    np.testing.assert_array_equal(save_fast(arr.tolist(), tmp_path / "from_list", None)[:], arr.astype(np.float64))
    zarr = pytest.importorskip("zarr")
    z = zarr.create_array(store=str(tmp_path / "z.zarr"), shape=arr.shape, chunks=(4, 6, 5), dtype=arr.dtype)
    z[:] = arr
    np.testing.assert_array_equal(save_fast(z, tmp_path / "from_zarr", (4,))[:], arr)


def test_zero_length_axis(tmp_path) -> None:
    ds = save_fast(np.zeros((0, 3, 4), np.uint16), tmp_path / "ds", (5,))
    assert ds.shape == (0, 3, 4) and ds.n_blocks == 0 and ds[:].shape == (0, 3, 4)


def test_padding_round_trip(tmp_path) -> None:
    from split_dataset.writer import BlockSink, make_metadata

    arr = np.arange(11 * 6 * 5).reshape(11, 6, 5).astype(np.uint16)
    meta = make_metadata(arr.shape, arr.dtype, (4, 3, 5), Codec.parse(None), padding=(1, 1, 0))
    (tmp_path / "p").mkdir()
    sink = BlockSink(tmp_path / "p", meta, Codec.parse(None), fsync=False)
    for i, coords in enumerate(sink.grid.iter_coords()):
        sink.write(i, arr[sink.grid.block_slices(coords)])
    sink.write_metadata()
    ds = SplitDataset(tmp_path / "p")
    assert ds.files.shape == (3, 2, 1)
    np.testing.assert_array_equal(ds[:], arr)
    np.testing.assert_array_equal(ds[::-1, 2:5], arr[::-1, 2:5])


def test_open_is_save_inverse_with_doc_example(tmp_path) -> None:
    x = np.random.default_rng(0).integers(0, 1000, (23, 3, 17, 19), dtype=np.uint16)
    ds = split_dataset.save(x, tmp_path / "ds", shape_block=(5,))
    assert ds.n_blocks == 5
    np.testing.assert_array_equal(split_dataset.open(tmp_path / "ds")[:], x)


@pytest.mark.parametrize("compression", ["blosc-lz4", "blosc-zstd", "gzip", None])
def test_edge_chunks_read_by_hdf5_and_pytables(tmp_path, compression) -> None:
    tables = pytest.importorskip("tables")
    arr = np.random.default_rng(3).integers(0, 2**16, (5, 7, 11), dtype=np.uint16)
    ds = save_fast(arr, tmp_path / "ds", (5,), chunks=(2, 3, 5), compression=compression)
    ds.close()
    with h5py.File(ds.root / "0000.h5", "r") as f:  # HDF5's own filter pipeline decodes our chunks
        assert f["stack_3D"].chunks == (2, 3, 5)
        np.testing.assert_array_equal(f["stack_3D"][...], arr)
    with tables.open_file(str(ds.root / "0000.h5")) as f:
        np.testing.assert_array_equal(f.root.stack_3D[...], arr)
    np.testing.assert_array_equal(SplitDataset(ds.root)[:], arr)


def test_without_direct_blosc_hdf5_pipeline_is_used(tmp_path, monkeypatch) -> None:
    from split_dataset.storage import blosc as _blosc

    arr = np.random.default_rng(5).integers(0, 3000, (9, 2, 20, 30), dtype=np.uint16)
    fast = save_fast(arr, tmp_path / "fast", (4,), chunks=(1, 1, 7, 30))
    monkeypatch.setattr(_blosc, "_LIB", None)
    assert not _blosc.available()
    slow = save_fast(arr, tmp_path / "slow", (4,), chunks=(1, 1, 7, 30))
    for ds in (SplitDataset(fast.root), slow):
        np.testing.assert_array_equal(ds[:], arr)
        np.testing.assert_array_equal(ds[3:7, 1, 5:18], arr[3:7, 1, 5:18])


def test_checksums_check_with_sha256sum(tmp_path) -> None:
    import shutil
    import subprocess

    from split_dataset.storage import read_checksums, sha256_file

    ds = save_fast(np.arange(60, dtype=np.uint16).reshape(12, 5), tmp_path / "ds", (5,))
    sums = read_checksums(ds.root)
    assert sorted(sums) == ["0000.h5", "0001.h5", "0002.h5"]
    assert all(sums[n] == sha256_file(ds.root / n) for n in sums)
    if shutil.which("sha256sum"):
        out = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=ds.root, capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr


def test_physical_metadata(tmp_path) -> None:
    ds = save_fast(np.zeros((4, 2, 3, 3), np.uint16), tmp_path / "ds", (2,), resolution=(0.5, 5, 0.6, 0.6),
                   units=("s", "um", "um", "um"), frame_interval=0.5)
    again = SplitDataset(ds.root)
    assert again.units == ("s", "um", "um", "um") and again.frame_interval == 0.5 and again.frame_rate == 2.0
    assert again.resolution == (0.5, 5.0, 0.6, 0.6)
    plain = save_fast(np.zeros((4, 3)), tmp_path / "plain", None)
    assert plain.units == ("", "") and plain.frame_interval is None and plain.frame_rate is None
    with pytest.raises(ValueError, match="units must have 2"):
        save_fast(np.zeros((4, 3)), tmp_path / "bad", None, units=("um",))
    with pytest.raises(ValueError, match="frame_interval"):
        save_fast(np.zeros((4, 3)), tmp_path / "bad2", None, frame_interval=-1)
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad2").exists()


def test_acquisition_voxel_size_is_micrometres() -> None:
    from conftest import LEGACY_CASES

    ds = SplitDataset(LEGACY_CASES["acquisition__original"])
    assert ds.resolution == (1.0, 5.0, 0.6, 0.6) and ds.units == ("", "um", "um", "um")


def test_save_flushes_every_block_before_the_metadata(tmp_path, monkeypatch) -> None:
    from split_dataset import storage
    from split_dataset.write import sink as writer  # where blocks and the metadata are written

    events: list[str] = []
    real_fsync, real_json = writer.fsync_file, writer.write_json_atomic
    monkeypatch.setattr(writer, "fsync_file", lambda p: (events.append(f"fsync {p.name}"), real_fsync(p))[1])
    monkeypatch.setattr(writer, "write_json_atomic",
                        lambda p, d, **kw: (events.append(f"write {p.name}"), real_json(p, d, **kw))[1])
    arr = np.arange(10 * 4, dtype=np.uint16).reshape(10, 4)
    ds = split_dataset.save(arr, tmp_path / "ds", (3,))  # fsync=True: blocks flushed in the background
    assert sorted(e for e in events if e.startswith("fsync")) == [f"fsync {i:04d}.h5" for i in range(4)]
    assert events[-1] == "write stack_metadata.json"
    np.testing.assert_array_equal(ds[:], arr)
    assert storage.read_checksums(ds.root).keys() == {f"{i:04d}.h5" for i in range(4)}


# ----------------------------------------------------------------------------- like=


@pytest.fixture
def physical_source(tmp_path) -> SplitDataset:
    x = np.zeros((6, 3, 4, 5), "uint16")
    return save_fast(x, tmp_path / "raw", (2,), resolution=(0.5, 5.0, 0.6, 0.7), units=("s", "um", "um", "um"),
                     frame_interval=0.5, attrs={"fish": "F0", "n": 3})


def test_like_copies_the_physical_metadata(tmp_path, physical_source) -> None:
    out = save_fast(np.ones((6, 3, 4, 5), "float32"), tmp_path / "dff", (3,), like=physical_source)
    assert out.resolution == (0.5, 5.0, 0.6, 0.7) and out.units == ("s", "um", "um", "um")
    assert out.axis_order == "tzyx" and out.frame_interval == 0.5 and out.attrs == {"fish": "F0", "n": 3}
    by_path = save_fast(np.ones((6, 3, 4, 5), "uint8"), tmp_path / "mask", None, like=physical_source.root)
    assert by_path.resolution == physical_source.resolution


def test_explicit_arguments_win_over_like(tmp_path, physical_source) -> None:
    out = save_fast(np.ones((6, 3, 4, 5), "float32"), tmp_path / "dff", None, like=physical_source,
                    resolution=(1, 2, 3, 4), frame_interval=2.0, attrs={"n": 4, "what": "dF/F"})
    assert out.resolution == (1, 2, 3, 4) and out.frame_interval == 2.0
    assert out.units == ("s", "um", "um", "um")  # not given: from like
    assert out.attrs == {"fish": "F0", "n": 4, "what": "dF/F"}  # merged, explicit keys win


def test_like_with_fewer_axes_takes_the_trailing_ones(tmp_path, physical_source) -> None:
    mean = save_fast(np.ones((3, 4, 5), "float32"), tmp_path / "mean", None, like=physical_source)
    assert mean.resolution == (5.0, 0.6, 0.7) and mean.axis_order == "zyx" and mean.units == ("um",) * 3
    assert mean.frame_interval is None  # axis 0 is no longer time


def test_like_maps_axes_by_letter_when_axis_order_is_given(tmp_path, physical_source) -> None:
    mip = save_fast(np.ones((6, 4, 5), "uint16"), tmp_path / "mip", None, like=physical_source, axis_order="tyx")
    assert mip.resolution == (0.5, 0.6, 0.7) and mip.units == ("s", "um", "um") and mip.frame_interval == 0.5
    with pytest.raises(ValueError, match="no value for axis 'c'"):
        save_fast(np.ones((6, 4, 5), "uint16"), tmp_path / "bad", None, like=physical_source, axis_order="cyx")
    with pytest.raises(ValueError, match="pass axis_order"):
        save_fast(np.ones((2, 6, 3, 4, 5), "uint16"), tmp_path / "bad2", None, like=physical_source)
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad2").exists()


# ----------------------------------------------------------------------------- attrs are JSON, checked first


@pytest.mark.parametrize("bad, exc", [
    pytest.param({"gain": float("nan")}, ValueError, id="nan"),
    pytest.param({"gain": [1.0, float("inf")]}, ValueError, id="inf-in-list"),
    pytest.param({"n": 2**70}, ValueError, id="int-beyond-64-bits"),
    pytest.param({"s": {1, 2}}, TypeError, id="set"),
])
def test_save_refuses_attrs_that_are_not_json_before_writing(tmp_path, bad, exc) -> None:
    """save(attrs=...) follows the rules of ds.attrs[...] = ...: nothing is written (was NaN in the JSON)."""
    with pytest.raises(exc):
        split_dataset.save(np.zeros((4, 3), "u1"), tmp_path / "ds", attrs=bad, fsync=False)
    assert not (tmp_path / "ds").exists()
    with pytest.raises(exc):
        split_dataset.SplitDatasetWriter(tmp_path / "acq", (3,), "u1", 2, attrs=bad, fsync=False)
    assert not (tmp_path / "acq").exists()


def test_save_attrs_become_plain_json(tmp_path) -> None:
    ds = save_fast(np.zeros((4, 3), "u1"), tmp_path / "ds", None, attrs={"gain": np.float32(1.5), "roi": (0, 64)})
    assert json.loads((ds.root / "stack_metadata.json").read_text())["attrs"] == {"gain": 1.5, "roi": [0, 64]}


# ----------------------------------------------------------------------------- leftovers of a crash


def test_temporary_files_of_a_crash_do_not_make_the_folder_non_empty(tmp_path) -> None:
    """Only our own `.<name>.<12 hex>.tmp` files: they are removed, and save() goes ahead."""
    root = tmp_path / "ds"
    root.mkdir()
    leftovers = [".0001.h5.3f2a9c0d1e7b.tmp", ".stack_metadata.json.0123456789ab.tmp", ".SHA256SUMS.abcdefabcdef.tmp"]
    for name in leftovers:
        (root / name).write_bytes(b"partial")
    ds = save_fast(np.ones((6, 2), "u1"), root, (4,))
    assert sorted(p.name for p in root.iterdir()) == ["0000.h5", "0001.h5", "SHA256SUMS", "chunk_index.bin",
                                                      "stack_metadata.json"]
    np.testing.assert_array_equal(ds[:], np.ones((6, 2), "u1"))


@pytest.mark.parametrize("name", ["notes.tmp", ".0001.h5.tmp", ".0001.h5.NOTHEX000000.tmp", "0001.h5.3f2a9c0d1e7b.tmp"])
def test_other_files_still_make_the_folder_non_empty(tmp_path, name) -> None:
    root = tmp_path / "ds"
    root.mkdir()
    (root / name).write_text("someone's")
    with pytest.raises(FileExistsError, match="not empty"):
        save_fast(np.ones((6, 2), "u1"), root, (4,))
    assert sorted(p.name for p in root.iterdir()) == [name]


def test_overwrite_removes_temporary_files_of_ours_only(tmp_path) -> None:
    root = tmp_path / "ds"
    save_fast(np.ones((6, 2), "u1"), root, (4,))
    (root / ".0002.h5.3f2a9c0d1e7b.tmp").write_bytes(b"partial")
    (root / "notes.txt").write_text("kept")
    (root / ".tmpdir.3f2a9c0d1e7b.tmp").mkdir()  # a folder by that name is not ours
    save_fast(np.zeros((3, 2), "u1"), root, (4,), overwrite=True)
    assert sorted(p.name for p in root.iterdir()) == [".tmpdir.3f2a9c0d1e7b.tmp", "0000.h5", "SHA256SUMS",
                                                       "chunk_index.bin", "notes.txt", "stack_metadata.json"]


# ----------------------------------------------------------------------------- one pipeline


def test_write_options_are_the_keywords_of_every_writer(tmp_path) -> None:
    from split_dataset.write import WriteOptions
    from split_dataset.writer import write_array

    opts = WriteOptions.from_keywords(compression="gzip", resolution=(2, 0.5), units=("s", "um"), fsync=False,
                                      attrs={"fish": 1})
    ds = write_array(np.arange(12, dtype="u2").reshape(6, 2), tmp_path / "a", (4,), opts)
    ref = split_dataset.save(np.arange(12, dtype="u2").reshape(6, 2), tmp_path / "b", (4,), compression="gzip",
                             resolution=(2, 0.5), units=("s", "um"), fsync=False, attrs={"fish": 1})
    assert ds.metadata == ref.metadata
    with pytest.raises(ValueError, match="resolution must have 2 entries"):
        opts.replace(resolution=(1, 2, 3)).metadata((6, 2), "u2", None)
