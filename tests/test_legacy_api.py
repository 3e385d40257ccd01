"""The split_dataset 0.4 names: ``Blocks``, ``EmptySplitDataset``, ``save_to_split_dataset``.

The first three tests are the old package's own tests, ported unchanged except for
``np.product`` -> ``np.prod`` (and ``tmp_path`` instead of ``tempfile``). The rest pin
the old semantics that scripts (fimpy, sashimi, notebooks) rely on; numpy is the oracle.
"""

from __future__ import annotations

import itertools
import json
import pickle
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import pytest

import split_dataset
from split_dataset import Blocks, EmptySplitDataset, SplitDataset, save_to_split_dataset
from split_dataset.errors import BlockMismatchError, MissingBlockError

METADATA = "stack_metadata.json"


# ----------------------------------------------------------------------------- module-level workers
# (ProcessPoolExecutor pickles functions by reference: they must live at module level)


def _write_block_h5py(root: str, filename: str, block: tuple, shape_full: tuple) -> str:
    """fimpy-style worker: compute the block's data and write it with h5py under ``stack_3D``."""
    full = np.arange(np.prod(shape_full), dtype=np.int32).reshape(shape_full)
    data = full[Blocks.block_to_slices(block)]
    with h5py.File(Path(root) / filename, "w") as f:
        f.create_dataset("stack_3D", data=data)
    return filename


def _write_block_method(empty: EmptySplitDataset, n: int, shape_full: tuple) -> int:
    """Worker that receives the (pickled) EmptySplitDataset and uses ``save_block_data``."""
    full = np.arange(np.prod(shape_full), dtype=np.int32).reshape(shape_full)
    empty.save_block_data(n, full[empty[n]])
    return n


def _read_from_worker(ds: SplitDataset, selection: tuple) -> np.ndarray:
    return ds[selection]


# ----------------------------------------------------------------------------- the old package's tests


def test_SplitDataset(tmp_path):
    dims = [(10, 3, 3, 3), (5, 5, 5), (5, 5), (1, 5, 5, 5)]
    block_sizes = [(2, None, None, None), (1, None, 3), (2, None), (None, 2, 5, 5)]
    all_slices = [
        [(slice(3, 8), slice(None))],
        [(slice(0, 1),), (slice(0, 2), slice(0, 1), slice(None))],
        [slice(0, 2)],
        [
            (slice(0, 1),),
            (slice(0, 2), slice(0, 1), slice(None)),
            (0, slice(0, 2), slice(0, 1)),
        ],
    ]

    for i, (di, bs, slices) in enumerate(zip(dims, block_sizes, all_slices)):
        test_data = np.arange(np.prod(di)).reshape(di)

        sd = save_to_split_dataset(
            test_data,
            block_size=bs,
            root_name=tmp_path,
            prefix=f"te{i:02d}",
        )
        for sl in slices:
            a = sd[sl]
            b = test_data[sl]
            np.testing.assert_equal(
                a,
                b,
                err_msg="Testing "
                + str(di)
                + " "
                + str(sl)
                + " of shape "
                + str(a.shape)
                + " and shape"
                + str(b.shape),
            )


def test_cartesian_blocks():
    test_size = (20, 20)
    a = np.ones(test_size)
    blocks = Blocks(test_size, shape_block=(3, 7), padding=(1, 2))
    for _idx, block in blocks.slices():
        a[block] = 0
    np.testing.assert_array_equal(a, np.zeros(test_size))


def test_dropped_dimension():
    test_size = (5, 15, 20)
    blocks = Blocks(
        test_size, shape_block=(3, 7), padding=(1, 2), crop=((1, 1), (0, 0), (0, 0))
    )
    np.testing.assert_equal(blocks.drop_dim(1).shape_full, (5, 20))


# ----------------------------------------------------------------------------- Blocks geometry

EQUIVALENT_BLOCKS = [
    pytest.param(dict(shape_block=(100, 10, 20, 10)), id="full-shape_block"),
    pytest.param(dict(shape_block=(None, 10, 20)), id="None-and-missing-trailing"),
    pytest.param(dict(dim_split=(1, 2), blocks_number=(2, 2)), id="dim_split+blocks_number"),
    pytest.param(dict(blocks_number=(1, 2, 2, 1)), id="blocks_number-all-axes"),
    pytest.param(dict(dim_split=(1, 2), shape_block=(None, 10, 20)), id="dim_split+shape_block"),
]


@pytest.mark.parametrize("kwargs", EQUIVALENT_BLOCKS)
def test_blocks_equivalent_definitions(kwargs):
    b = Blocks((100, 20, 40, 10), **kwargs)
    assert b.shape_block == (100, 10, 20, 10)
    assert b.n_blocks == 4
    assert len(b) == 4
    assert b.padding == (0, 0, 0, 0)
    ref = Blocks((100, 20, 40, 10), shape_block=(100, 10, 20, 10))
    assert [s for _, s in b.slices()] == [s for _, s in ref.slices()]


@pytest.mark.parametrize(
    "shape, kwargs",
    [
        pytest.param((20, 20), dict(shape_block=(3, 7), padding=(1, 2)), id="2d-padded"),
        pytest.param((7, 10), dict(shape_block=(3, 4)), id="2d-uneven"),
        pytest.param((5, 6, 7), dict(shape_block=(2, None, 3), padding=1), id="3d-scalar-padding"),
        pytest.param((9, 8), dict(shape_block=(3, 4), crop=((1, 2), (0, 1))), id="2d-cropped"),
        pytest.param((10, 10), dict(), id="one-block"),
    ],
)
def test_blocks_slices_tile_the_array(shape, kwargs):
    """Every element is in some block; block i (unpadded part) starts at i * shape_block."""
    b = Blocks(shape, **kwargs)
    crop = kwargs.get("crop", ((0, 0),) * len(shape))
    covered = np.zeros(shape, dtype=int)
    as_slices = list(b.slices())
    as_tuples = list(b.slices(as_tuples=True))
    assert len(as_slices) == b.n_blocks == int(np.prod(b.block_starts.shape[:-1]))
    for (idx, sl), (idx_t, tu) in zip(as_slices, as_tuples):
        assert idx == idx_t
        assert Blocks.block_to_slices(tu) == sl
        assert b[b.cartesian_to_linear(idx)] == sl
        assert b[tuple(idx)] == sl
        for axis, (s, c, lo) in enumerate(zip(sl, idx, (c[0] for c in crop))):
            assert s.start == lo + c * b.shape_block[axis]
        covered[sl] += 1
    inner = tuple(slice(lo, n - hi) for n, (lo, hi) in zip(shape, crop))
    assert (covered[inner] >= 1).all()
    outside = np.ones(shape, dtype=bool)
    outside[inner] = False
    assert (covered[outside] == 0).all()


def test_blocks_without_block_shape_is_one_block():
    b = Blocks((10, 10))
    assert b.n_blocks == 1
    assert b.shape_block == (10, 10)
    assert list(b.slices()) == [((0, 0), (slice(0, 10), slice(0, 10)))]


def test_block_to_slices():
    assert Blocks.block_to_slices(((1, 4), (0, 7))) == (slice(1, 4), slice(0, 7))
    a = np.arange(60).reshape(6, 10)
    np.testing.assert_array_equal(a[Blocks.block_to_slices(((1, 4), (2, 7)))], a[1:4, 2:7])


@pytest.mark.parametrize(
    "shape, block",
    [((7, 10), (3, 4)), ((5, 6, 7), (2, 2, 3)), ((4,), (1,)), ((9, 9, 9, 9), (4, 5, 9, 2))],
    ids=["2d", "3d", "1d", "4d"],
)
def test_linear_cartesian_round_trip(shape, block):
    b = Blocks(shape, shape_block=block)
    grid = b.block_starts.shape[:-1]
    for lin in range(b.n_blocks):
        ca = b.linear_to_cartesian(lin)
        assert tuple(int(c) for c in ca) == np.unravel_index(lin, grid)
        assert int(b.cartesian_to_linear(ca)) == lin


@pytest.mark.parametrize(
    "start, end",
    [((2, 0), (7, 10)), ((3, 4), (6, 8)), ((0, 0), (1, 1)), ((6, 9), (7, 10)), ((3, 0), (4, 10))],
    ids=["spanning", "block-aligned", "first-element", "last-element", "one-row-on-boundary"],
)
def test_blocks_to_take_reassembles_numpy_slice(start, end):
    """Reading the returned blocks at the returned offsets gives ``a[start:end]``."""
    a = np.arange(70).reshape(7, 10)
    b = Blocks(a.shape, shape_block=(3, 4))
    ranges, s_idx, e_idx = b.blocks_to_take(start, end)
    pieces = {}
    for idx in itertools.product(*(range(s, e) for s, e in ranges)):
        block = a[b[tuple(idx)]]
        sel = tuple(
            slice(si if c == s else 0, ei if c == e - 1 else None)
            for c, (s, e), si, ei in zip(idx, ranges, s_idx, e_idx)
        )
        pieces[idx] = block[sel]
    rows = [np.concatenate([pieces[(i, j)] for j in range(*ranges[1])], axis=1) for i in range(*ranges[0])]
    np.testing.assert_array_equal(np.concatenate(rows, axis=0), a[start[0]:end[0], start[1]:end[1]])


@pytest.mark.parametrize(
    "block, dims, expected",
    [
        pytest.param(4, None, [0, 1, 2, 3, 5, 6, 7, 8], id="centre-all-8"),
        pytest.param(0, None, [1, 3, 4], id="corner"),
        pytest.param(4, 0, [1, 7], id="centre-dims-0"),
        pytest.param(4, [1], [3, 5], id="centre-dims-1"),
        pytest.param(8, [0, 1], [4, 5, 7], id="last-corner-both-dims"),
    ],
)
def test_neighbour_blocks(block, dims, expected):
    b = Blocks((9, 9), shape_block=(3, 3))
    assert sorted(int(i) for i in b.neighbour_blocks(block, dims=dims)) == expected


def test_neighbour_blocks_of_single_block_is_empty():
    assert len(Blocks((4, 4), shape_block=(4, 4)).neighbour_blocks(0)) == 0


@pytest.mark.parametrize(
    "coords, expected",
    [
        pytest.param((0, 0), [0, 0], id="origin"),
        pytest.param((3, 6), [1, 2], id="exactly-on-block-starts"),
        pytest.param((2, 5), [0, 1], id="just-before-starts"),
        pytest.param((8, 8), [2, 2], id="last-element"),
        pytest.param((4, 3), [1, 1], id="inside"),
    ],
)
def test_block_containing_coords(coords, expected):
    b = Blocks((9, 9), shape_block=(3, 3))
    got = [int(c) for c in b.block_containing_coords(coords)]
    assert got == expected
    # the block found really contains the coordinates
    sl = b[tuple(got)]
    assert all(s.start <= c < s.stop for s, c in zip(sl, coords))


@pytest.mark.parametrize(
    "shape, kwargs",
    [
        pytest.param((20, 20), dict(shape_block=(3, 7), padding=(1, 2)), id="padded"),
        pytest.param((5, 15, 20), dict(shape_block=(3, 7), padding=(1, 2), crop=((1, 1), (0, 0), (0, 0))), id="cropped"),
        pytest.param((6, 4), dict(shape_block=(2, None)), id="plain"),
    ],
)
def test_serialize_round_trip(shape, kwargs):
    b = Blocks(shape, **kwargs)
    d = b.serialize()
    assert set(d) >= {"shape_full", "shape_block", "crop_start", "crop_end", "padding"}
    d2 = json.loads(json.dumps(d))  # it is meant to be stored as JSON
    b2 = Blocks.deserialize(d2)
    assert tuple(b2.shape_full) == tuple(b.shape_full)
    assert tuple(b2.shape_block) == tuple(b.shape_block)
    assert tuple(b2.padding) == tuple(b.padding)
    assert [s for _, s in b2.slices()] == [s for _, s in b.slices()]


# ----------------------------------------------------------------------------- EmptySplitDataset


SHAPE_3D = (7, 6, 5)


def test_empty_split_dataset_fimpy_workers_write_with_h5py(tmp_path):
    """fimpy's pattern: iterate slices(as_tuples=True), each process writes root/files[i]."""
    empty = EmptySplitDataset(tmp_path, "out", shape_full=SHAPE_3D, shape_block=(3, 4, None), resolution=(2, 0.5, 0.5))
    jobs = list(empty.slices(as_tuples=True))
    with ProcessPoolExecutor(2) as ex:
        done = list(
            ex.map(
                _write_block_h5py,
                [str(empty.root)] * len(jobs),
                [empty.files[empty.cartesian_to_linear(idx)] for idx, _ in jobs],
                [blk for _, blk in jobs],
                [SHAPE_3D] * len(jobs),
            )
        )
    assert sorted(done) == sorted(empty.files)
    assert not (empty.root / METADATA).exists()  # nothing describes the blocks before finalize
    ds = empty.finalize()
    assert (empty.root / METADATA).is_file()
    expected = np.arange(np.prod(SHAPE_3D), dtype=np.int32).reshape(SHAPE_3D)
    assert ds.shape == SHAPE_3D and ds.dtype == np.int32
    np.testing.assert_array_equal(ds[:], expected)
    np.testing.assert_array_equal(ds[2:6, 3], expected[2:6, 3])
    assert tuple(ds.resolution) == (2, 0.5, 0.5)
    # a second open sees the same
    np.testing.assert_array_equal(SplitDataset(empty.root)[:], expected)


def test_empty_split_dataset_workers_use_save_block_data(tmp_path):
    empty = EmptySplitDataset(tmp_path, "out", shape_full=SHAPE_3D, shape_block=(2, None, None))
    with ProcessPoolExecutor(2) as ex:
        done = list(ex.map(_write_block_method, [empty] * empty.n_blocks, range(empty.n_blocks),
                           [SHAPE_3D] * empty.n_blocks))
    assert sorted(done) == list(range(empty.n_blocks))
    ds = empty.finalize()
    np.testing.assert_array_equal(ds[:], np.arange(np.prod(SHAPE_3D), dtype=np.int32).reshape(SHAPE_3D))


def test_empty_split_dataset_in_process_save_block_data(tmp_path):
    x = np.random.default_rng(0).integers(0, 60000, (6, 4, 8, 8), dtype=np.uint16)
    empty = EmptySplitDataset(tmp_path, "out", shape_full=x.shape, shape_block=(2, None, None, None))
    assert empty.root == tmp_path / "out" and empty.root.is_dir()
    assert empty.files == ["0000.h5", "0001.h5", "0002.h5"]
    for i, (_, sl) in enumerate(empty.slices()):
        empty.save_block_data(i, x[sl])
    ds = empty.finalize()
    np.testing.assert_array_equal(ds[:], x)
    np.testing.assert_array_equal(ds[::-1, 2, ::3], x[::-1, 2, ::3])


@pytest.mark.parametrize("missing", [0, 1, 2], ids=["first", "middle", "last"])
def test_finalize_with_missing_block_raises_and_writes_no_metadata(tmp_path, missing):
    x = np.arange(6 * 4, dtype=np.uint8).reshape(6, 4)
    empty = EmptySplitDataset(tmp_path, "out", shape_full=x.shape, shape_block=(2, 4))
    for i, (_, sl) in enumerate(empty.slices()):
        if i != missing:
            empty.save_block_data(i, x[sl])
    name = f"{missing:04d}.h5"
    with pytest.raises(MissingBlockError, match=name) as info:
        empty.finalize()
    assert isinstance(info.value, FileNotFoundError)
    assert info.value.block == (missing, 0)
    assert not (empty.root / METADATA).exists()


def test_save_block_data_wrong_shape_names_block(tmp_path):
    empty = EmptySplitDataset(tmp_path, "out", shape_full=(7, 4, 5), shape_block=(3, None, None))
    with pytest.raises(BlockMismatchError, match=r"block 1\b.*\(3, 4, 5\).*\(2, 4, 5\)") as info:
        empty.save_block_data(1, np.zeros((2, 4, 5)))
    assert isinstance(info.value, ValueError)
    assert not (empty.root / "0001.h5").exists()
    # the short last block has its own, smaller, shape
    with pytest.raises(BlockMismatchError, match=r"block 2\b"):
        empty.save_block_data(2, np.zeros((3, 4, 5)))
    empty.save_block_data(2, np.zeros((1, 4, 5)))


@pytest.mark.parametrize(
    "bad_block, make_bad",
    [
        pytest.param(1, lambda d: d[:, :3], id="middle-wrong-width"),
        pytest.param(1, lambda d: d.astype(np.float32), id="middle-wrong-dtype"),
        pytest.param(4, lambda d: np.concatenate([d, d[:1]]), id="last-too-long"),
        pytest.param(4, lambda d: d[:2], id="last-too-short"),
    ],
)
def test_finalize_refuses_wrong_shaped_block_written_by_worker(tmp_path, bad_block, make_bad):
    x = np.arange(23 * 4 * 5, dtype=np.uint16).reshape(23, 4, 5)
    empty = EmptySplitDataset(tmp_path, "out", shape_full=x.shape, shape_block=(5, None, None))
    for i, (_, tu) in enumerate(empty.slices(as_tuples=True)):
        data = x[Blocks.block_to_slices(tu)]
        if i == bad_block:
            data = make_bad(data)
        with h5py.File(empty.root / empty.files[i], "w") as f:
            f["stack_3D"] = data
    with pytest.raises(BlockMismatchError, match=f"{bad_block:04d}.h5"):
        empty.finalize()
    assert not (empty.root / METADATA).exists()


def test_empty_split_dataset_existing_directory_warns(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.warns(UserWarning, match="xisting directory"):
        EmptySplitDataset(tmp_path, "out", shape_full=(4, 4), shape_block=(2, 4))


# ----------------------------------------------------------------------------- SplitDataset via processes


def test_split_dataset_pickles_to_worker_process(tmp_path):
    x = np.random.default_rng(1).normal(size=(9, 5, 6)).astype(np.float32)
    ds = save_to_split_dataset(x, tmp_path, block_size=(4, 2, None), prefix="ds")
    ds[0]  # open some handles in the parent first: they must not travel
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone[:], x)
    selections = [(slice(None),), (slice(2, 7), 3), (8,), (slice(None, None, -2), slice(1, 5), 0)]
    with ProcessPoolExecutor(2) as ex:
        results = list(ex.map(_read_from_worker, [ds] * len(selections), selections))
    for sel, got in zip(selections, results):
        np.testing.assert_array_equal(got, x[sel])
    np.testing.assert_array_equal(ds[:], x)  # the parent still reads after forking


# ----------------------------------------------------------------------------- save_to_split_dataset


@pytest.mark.parametrize(
    "crop, padding, block",
    [
        pytest.param(((1, 1), (0, 1), (0, 0)), (1, 1, 0), (3, 2, None), id="crop+padding"),
        pytest.param(((2, 0), (1, 1), (0, 2)), 0, (2, None, 3), id="crop-only"),
        pytest.param(None, (1, 0, 0), (3, None, None), id="padding-only"),
    ],
)
def test_save_to_split_dataset_crop_and_padding(tmp_path, crop, padding, block):
    x = np.arange(7 * 4 * 5, dtype=np.int64).reshape(7, 4, 5)
    ds = save_to_split_dataset(x, tmp_path / "r", block_size=block, crop=crop, padding=padding)
    expected_root = tmp_path / "r" / ("_cropped" if crop is not None else "")
    assert Path(ds.root) == expected_root.resolve()
    crop = crop or ((0, 0),) * 3
    expected = x[tuple(slice(lo, n - hi) for n, (lo, hi) in zip(x.shape, crop))]
    assert ds.shape == expected.shape
    np.testing.assert_array_equal(ds[:], expected)
    np.testing.assert_array_equal(ds[1:-1, ::-1, 2], expected[1:-1, ::-1, 2])
    pad = (padding,) * 3 if isinstance(padding, int) else padding
    assert tuple(ds.padding) == tuple(pad)
    meta = json.loads((ds.root / METADATA).read_text())
    assert meta["shape_full"] == list(expected.shape)
    assert meta["padding"] == list(pad)
    # each stored block holds its padded region
    ds.close()  # HDF5 refuses a second open of a file with other locking flags in one process
    for idx, sl in ds.slices():
        with h5py.File(ds.files[idx], "r") as f:
            (key,) = [k for k in f if k.startswith("stack")]
            np.testing.assert_array_equal(f[key][()], expected[sl])


def test_save_to_split_dataset_from_split_dataset(tmp_path):
    x = np.arange(10 * 6, dtype=np.uint16).reshape(10, 6)
    src = save_to_split_dataset(x, tmp_path, block_size=(3, None), prefix="a")
    dst = save_to_split_dataset(src, tmp_path, prefix="b")  # block_size taken from the source
    assert dst.shape_block == (3, 6)
    np.testing.assert_array_equal(dst[:], x)


# ----------------------------------------------------------------------------- old SplitDataset attributes


def test_old_split_dataset_attributes(tmp_path):
    x = np.random.default_rng(2).integers(0, 1000, (9, 20, 11), dtype=np.uint16)
    empty = EmptySplitDataset(tmp_path, "old", shape_full=x.shape, shape_block=(4, 8, None), resolution=(3, 0.5, 0.5))
    for i, (_, sl) in enumerate(empty.slices()):
        empty.save_block_data(i, x[sl])
    empty.finalize()
    ds = SplitDataset(tmp_path / "old")
    grid = (3, 3, 1)
    assert ds.files.shape == grid
    assert Path(ds.files[1, 2, 0]).name == "0005.h5"
    for idx in np.ndindex(grid):
        assert Path(ds.files[idx]).name == f"{int(np.ravel_multi_index(idx, grid)):04d}.h5"
        assert Path(ds.files[idx]).is_file()
    assert ds.shape_block == (4, 8, 11)
    assert ds.shape_full == ds.shape == x.shape
    assert Path(ds.root) == (tmp_path / "old").resolve()
    assert tuple(ds.resolution) == (3, 0.5, 0.5)
    assert ds.n_blocks == 9
    assert ds.ndim == 3 and ds.dtype == np.uint16
    assert ds.block_starts.shape == grid + (3,)
    np.testing.assert_array_equal(ds.block_starts[1, 2, 0], [4, 16, 0])
    slices = list(ds.slices())
    assert len(slices) == 9
    for idx, sl in slices:
        np.testing.assert_array_equal(ds[sl], x[sl])
        assert Path(ds.files[idx]).name == f"{int(np.ravel_multi_index(idx, grid)):04d}.h5"


def test_top_level_exports():
    for name in ("Blocks", "EmptySplitDataset", "save_to_split_dataset", "SplitDataset"):
        assert hasattr(split_dataset, name), name


def test_empty_split_dataset_records_sha256sums(tmp_path):
    """Every writer records SHA256SUMS, EmptySplitDataset too (blocks written by workers included)."""
    from split_dataset.storage import read_checksums, sha256_file
    from split_dataset.verify import verify

    x = np.arange(6 * 4, dtype=np.uint8).reshape(6, 4)
    empty = EmptySplitDataset(tmp_path, "out", shape_full=x.shape, shape_block=(2, 4))
    empty.save_block_data(0, x[0:2])
    for i in (1, 2):
        with h5py.File(empty.root / empty.files[i], "w") as f:  # as a worker process would
            f["stack"] = x[2 * i : 2 * i + 2]
    ds = empty.finalize()
    sums = read_checksums(ds.root)
    assert sums == {name: sha256_file(ds.root / name) for name in empty.files}
    report = verify(ds.root)
    assert report.ok and report.checksums_verified, report.problems
    assert "compression" not in ds.metadata and "chunks" not in ds.metadata and ds.metadata["data_key"] == "stack"


def test_save_to_split_dataset_records_sha256sums(tmp_path):
    from split_dataset.storage import read_checksums

    ds = save_to_split_dataset(np.zeros((5, 3), "u2"), tmp_path, block_size=(2, None), prefix="p")
    assert sorted(read_checksums(ds.root)) == ["0000.h5", "0001.h5", "0002.h5"]
