"""SplitDataset on real files: numpy as the oracle, attributes, handles, pickling, fork, refresh."""

from __future__ import annotations

import json
import multiprocessing as mp
import pickle
import tempfile
from pathlib import Path

import hypothesis.extra.numpy as npst
import numpy as np
import pytest
from conftest import LEGACY_CASES, save_fast
from hypothesis import given, settings
from hypothesis import strategies as st
from test_indexing import one_array_index

import split_dataset
from split_dataset import SplitDataset


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> tuple[np.ndarray, SplitDataset]:
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 60000, (23, 3, 17, 19), dtype=np.uint16)
    ds = save_fast(arr, tmp_path_factory.mktemp("ds") / "stack", (5, 2, 8, 19))
    return arr, ds


@st.composite
def datasets(draw, max_dims: int = 4):
    shape = draw(npst.array_shapes(min_dims=1, max_dims=max_dims, min_side=1, max_side=9))
    block = tuple(draw(st.integers(1, s + 1)) for s in shape)
    dtype = draw(st.sampled_from([np.uint8, np.uint16, np.int16, np.float32, np.float64, np.int32]))
    arr = np.arange(int(np.prod(shape))).reshape(shape).astype(dtype)
    return arr, block


def _check(ds: SplitDataset, arr: np.ndarray, sel) -> None:
    try:
        expected = arr[sel]
    except Exception as e:
        with pytest.raises(type(e)):
            ds[sel]
        return
    got = ds[sel]
    assert np.shape(got) == np.shape(expected)
    assert np.asarray(got).dtype == np.asarray(expected).dtype
    np.testing.assert_array_equal(got, expected)


@settings(max_examples=60)
@given(data=st.data(), case=datasets())
def test_indexing_on_files_matches_numpy(data, case) -> None:
    arr, block = case
    with tempfile.TemporaryDirectory() as tmp:
        ds = save_fast(arr, Path(tmp) / "ds", block)
        for _ in range(5):
            sel = data.draw(npst.basic_indices(arr.shape, allow_newaxis=True, allow_ellipsis=True))
            _check(ds, arr, sel)
        sel = data.draw(one_array_index(arr.shape))
        _check(ds, arr, sel)
        ds.close()


@pytest.mark.parametrize(
    "sel",
    [3, -1, np.int64(2), slice(None, None, 2), slice(None, None, -1), ..., (..., 0), (5, 1, slice(2, 9, 3)),
     [22, 0, 7, 7], (slice(None), None, 2, [18, 0]), (0, slice(None), 3, [1, 2]), np.arange(23) % 3 == 0,
     (slice(20, 2, -4), slice(None), slice(None), slice(None, None, -5))],
    ids=["int", "neg-int", "np-int", "step", "reverse", "ellipsis", "ellipsis-int", "mixed", "list",
         "newaxis-list", "advanced-apart", "mask", "neg-steps"],
)
def test_selected_patterns(stack, sel) -> None:
    arr, ds = stack
    _check(ds, arr, sel)


def test_old_package_quirks_are_fixed(stack) -> None:
    arr, ds = stack
    assert ds[3].shape == arr[3].shape == (3, 17, 19)  # 0.4.4 kept the axis
    assert ds[::2].shape == (12, 3, 17, 19)  # 0.4.4 ignored the step
    assert ds[5:2].shape == (0, 3, 17, 19)  # 0.4.4 raised
    with pytest.raises(IndexError, match="out of bounds for axis 0 with size 23"):
        ds[23]


def test_attributes(stack) -> None:
    arr, ds = stack
    assert ds.shape == ds.shape_full == arr.shape
    assert (ds.dtype, ds.ndim, ds.size, ds.nbytes, len(ds)) == (arr.dtype, 4, arr.size, arr.nbytes, 23)
    assert ds.shape_block == ds.chunks == (5, 2, 8, 19)
    assert ds.n_blocks == 5 * 2 * 3 * 1
    assert ds.files.shape == (5, 2, 3, 1)
    assert ds.files[1, 1, 2, 0] == ds.root / f"{np.ravel_multi_index((1, 1, 2, 0), (5, 2, 3, 1)):04d}.h5"
    assert all(p.is_file() for p in ds.files.flat)
    assert ds.axis_order == "tzyx" and ds.resolution == (1.0, 1.0, 1.0, 1.0)
    assert ds.metadata["shape_full"] == [23, 3, 17, 19]
    assert ds.complete is True
    np.testing.assert_array_equal(np.asarray(ds), arr)
    assert np.asarray(ds, dtype=np.float32).dtype == np.float32
    assert "SplitDataset" in repr(ds)


def test_empty_selection_opens_no_file(stack) -> None:
    _arr, ds = stack
    ds.close()
    assert ds[3:3].shape == (0, 3, 17, 19)
    assert ds[:, :, []].shape == (23, 3, 0, 19)
    assert len(ds._handles) == 0


def test_reads_only_touched_blocks(stack) -> None:
    _arr, ds = stack
    ds.close()
    ds[7, 0, 0:3]
    assert len(ds._handles) == 1
    ds[7:11, 1]
    # t 7..10 spans time blocks 1 and 2; z=1 is in z-block 0; y spans 3 blocks; (1, 0, 0, 0) was open
    assert len(ds._handles) == 2 * 3


def test_handle_cache_is_bounded(tmp_path) -> None:
    arr = np.arange(40 * 4).reshape(40, 4).astype(np.int32)
    save_fast(arr, tmp_path / "ds", (1, 4))
    ds = SplitDataset(tmp_path / "ds", cache_size=3)
    np.testing.assert_array_equal(ds[:], arr)
    assert len(ds._handles) == 3
    ds.close()
    assert len(ds._handles) == 0
    np.testing.assert_array_equal(ds[10:12], arr[10:12])  # reopens after close
    with SplitDataset(tmp_path / "ds") as ds2:
        assert len(ds2._handles) == 1  # opening reads the last block's header only
        ds2[0]
        assert len(ds2._handles) == 2
    assert len(ds2._handles) == 0


def test_pickles_as_path_without_handles(stack) -> None:
    arr, ds = stack
    ds[0]
    blob = pickle.dumps(ds)
    assert len(blob) < 4000
    ds2 = pickle.loads(blob)
    assert len(ds2._handles) == 0
    np.testing.assert_array_equal(ds2[4:9, 2], arr[4:9, 2])


def _read_in_child(ds: SplitDataset, q) -> None:
    q.put(ds[:, 1].sum(dtype=np.int64))


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_reads_after_fork_and_spawn(stack, method) -> None:
    arr, ds = stack
    ds[:]  # the parent holds open handles
    ctx = mp.get_context(method)
    q = ctx.Queue()
    p = ctx.Process(target=_read_in_child, args=(ds, q))
    p.start()
    result = q.get(timeout=60)
    p.join(60)
    assert result == arr[:, 1].sum(dtype=np.int64)


def test_refresh_sees_new_blocks(tmp_path) -> None:
    arr = np.arange(12 * 3).reshape(12, 3).astype(np.uint16)
    ds = save_fast(arr, tmp_path / "ds", (4, 3))
    meta = json.loads((tmp_path / "ds" / "stack_metadata.json").read_text())
    save_fast(np.concatenate([arr, arr + 100]), tmp_path / "ds2", (4, 3))
    # simulate a writer adding blocks: copy the new blocks, then the new metadata
    for i in range(3, 6):
        (tmp_path / "ds" / f"{i:04d}.h5").write_bytes((tmp_path / "ds2" / f"{i:04d}.h5").read_bytes())
    meta["shape_full"] = [24, 3]
    (tmp_path / "ds" / "stack_metadata.json").write_text(json.dumps(meta))
    assert ds.shape == (12, 3)
    assert ds.refresh().shape == (24, 3)
    np.testing.assert_array_equal(ds[12:], arr + 100)


@pytest.mark.parametrize("name", sorted(LEGACY_CASES))
def test_legacy_fixture_reads_expected(name) -> None:
    expected = np.load(Path(__file__).parent / "data" / "legacy" / f"{name}.expected.npy")
    ds = split_dataset.open(LEGACY_CASES[name])
    assert ds.shape == expected.shape and ds.dtype == expected.dtype
    np.testing.assert_array_equal(ds[...], expected)
    np.testing.assert_array_equal(ds[::-2, ..., 1:], expected[::-2, ..., 1:])
    np.testing.assert_array_equal(ds[-1], expected[-1])


def test_legacy_dialects_metadata() -> None:
    acq = split_dataset.open(LEGACY_CASES["acquisition__original"])
    assert acq.resolution == (1.0, 5.0, 0.6, 0.6)  # voxel_size is (z, y, x)
    assert acq.metadata["crop"] == [0, 0, 16, 16]  # a camera ROI, kept but not applied
    assert split_dataset.open(LEGACY_CASES["yx_int32"]).axis_order == "yx"  # old writers said "zyx"
    assert split_dataset.open(LEGACY_CASES["empty_filled"]).resolution == (1.0, 2.0, 0.5, 0.5)
    old = split_dataset.open(LEGACY_CASES["old_no_json"])
    assert (old.shape, old.shape_block) == ((8, 5, 5), (4, 5, 5))
    padded = split_dataset.open(LEGACY_CASES["padded"])
    assert padded.padding == (1, 1, 0) and padded.files.shape == (3, 2, 1)


def test_prefixed_block_files(tmp_path) -> None:
    arr = np.arange(30).reshape(10, 3).astype(np.int16)
    save_fast(arr, tmp_path / "ds", (4, 3))
    for p in sorted((tmp_path / "ds").glob("*.h5")):
        p.rename(p.with_name("stack_" + p.name))
    np.testing.assert_array_equal(SplitDataset(tmp_path / "ds")[:], arr)  # the one prefix is found
    np.testing.assert_array_equal(SplitDataset(tmp_path / "ds", prefix="stack_")[:], arr)
    np.testing.assert_array_equal(SplitDataset(tmp_path / "ds", prefix="stack")[:], arr)


def test_open_accepts_the_metadata_file(stack) -> None:
    arr, ds = stack
    assert SplitDataset(ds.root / "stack_metadata.json").shape == arr.shape


def test_oindex(stack) -> None:
    arr, ds = stack
    np.testing.assert_array_equal(ds.oindex[[3, 1], 0, [5, 0, 2]], arr[np.ix_([3, 1], [0], [5, 0, 2], range(19))][:, 0])


def test_block_opened_elsewhere_in_this_process(stack) -> None:
    import h5py

    arr, ds = stack
    ds.close()
    with h5py.File(ds.files.flat[0], "r", locking=False):  # user code without locks first
        np.testing.assert_array_equal(ds[0], arr[0])
    ds.close()
    ds[0]  # now we hold it: the user's default open must still work
    with h5py.File(ds.files.flat[0], "r") as f:
        assert f["stack_4D"].shape[0] == 5


def test_chunks_stored_without_the_filter_are_read(tmp_path) -> None:
    """HDF5 skips the (optional) blosc filter for incompressible chunks and flags them; both kinds read."""
    import h5py
    import hdf5plugin

    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (4, 64, 64), dtype=np.uint8)
    arr[2:] = 7  # compressible chunks in the same block
    (tmp_path / "ds").mkdir()
    with h5py.File(tmp_path / "ds" / "0000.h5", "w") as f:
        f.create_dataset("stack", data=arr, chunks=(1, 64, 64), **hdf5plugin.Blosc(cname="blosclz", clevel=9))
    with h5py.File(tmp_path / "ds" / "0000.h5", "r") as f:
        masks = [f["stack"].id.read_direct_chunk((t, 0, 0))[0] for t in range(4)]
    assert masks[0] & 1 and not masks[3] & 1
    (tmp_path / "ds" / "stack_metadata.json").write_text(json.dumps({"shape_full": [4, 64, 64], "shape_block": [4, 64, 64]}))
    ds = SplitDataset(tmp_path / "ds")
    np.testing.assert_array_equal(ds[:], arr)
    np.testing.assert_array_equal(ds[1, 3:9], arr[1, 3:9])
