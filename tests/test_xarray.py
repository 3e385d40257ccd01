"""The xarray backend (engine="split_dataset"), against a real xarray: dims, coordinates and
units, values equal to numpy for .isel/.sel, chunks, a dask.distributed computation, and
the legacy fixtures."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest

xr = pytest.importorskip("xarray")
pytest.importorskip("dask.array")

from conftest import LEGACY, LEGACY_CASES, save_fast  # noqa: E402

import split_dataset  # noqa: E402
from split_dataset.xarray_backend import VARIABLE, SplitDatasetBackendEntrypoint  # noqa: E402

ENGINE = "split_dataset"


@pytest.fixture(scope="module")
def tzyx(tmp_path_factory):
    """4-D with resolution, units, frame interval and attrs; blocks of 7 time points x 2 planes."""
    arr = np.random.default_rng(0).integers(0, 4000, (30, 4, 20, 24), dtype=np.uint16)
    path = tmp_path_factory.mktemp("xr") / "tzyx"
    save_fast(arr, path, (7, 2), resolution=(0.5, 5.0, 0.6, 0.6), units=("s", "um", "um", "um"),
              frame_interval=0.25, attrs={"fish": "F0", "n": [1, 2], "resolution": "overridden"})
    return arr, path


@pytest.fixture(scope="module")
def zyx(tmp_path_factory):
    """3-D without any physical metadata."""
    arr = np.random.default_rng(1).standard_normal((9, 20, 11)).astype(np.float32)
    path = tmp_path_factory.mktemp("xr") / "zyx"
    save_fast(arr, path, (4, 8))
    return arr, path


def test_engine_is_registered_and_described() -> None:
    engines = xr.backends.list_engines()
    assert isinstance(engines[ENGINE], SplitDatasetBackendEntrypoint)
    entry = SplitDatasetBackendEntrypoint()
    assert entry.description and entry.url.startswith("https://")
    assert set(entry.open_dataset_parameters) == {"filename_or_obj", "drop_variables", "prefix", "chunk_index"}


def test_importing_split_dataset_does_not_import_xarray() -> None:
    code = "import sys, split_dataset; sys.exit('xarray' in sys.modules or 'split_dataset.xarray_backend' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_4d_dims_coords_units_attrs(tzyx) -> None:
    arr, path = tzyx
    with xr.open_dataset(path, engine=ENGINE) as ds:
        assert list(ds.data_vars) == [VARIABLE] == ["data"]
        v = ds[VARIABLE]
        assert v.dims == ("t", "z", "y", "x") and v.shape == arr.shape and v.dtype == arr.dtype
        np.testing.assert_allclose(ds.t.values, np.arange(30) * 0.25)  # frame_interval wins over resolution[0]
        np.testing.assert_allclose(ds.z.values, np.arange(4) * 5.0)
        np.testing.assert_allclose(ds.y.values, np.arange(20) * 0.6)
        np.testing.assert_allclose(ds.x.values, np.arange(24) * 0.6)
        assert all(ds[d].dtype == np.float64 for d in "tzyx")
        assert ds.t.attrs == {"units": "s"} and ds.z.attrs == ds.x.attrs == {"units": "um"}
        expected = {"fish": "F0", "n": [1, 2], "axis_order": "tzyx", "resolution": [0.5, 5.0, 0.6, 0.6],
                    "units": ["s", "um", "um", "um"], "shape_block": [7, 2, 20, 24], "frame_interval": 0.25}
        assert ds.attrs == expected and v.attrs == expected
        assert v.encoding["preferred_chunks"] == {"t": 7, "z": 2, "y": 20, "x": 24}
        assert all(type(ds.xindexes[d]).__name__ == "_StepIndex" for d in "tzyx")  # lazy coordinates


def test_3d_without_physical_metadata(zyx) -> None:
    arr, path = zyx
    with xr.open_dataset(path, engine=ENGINE) as ds:
        assert ds[VARIABLE].dims == ("z", "y", "x")
        for d, n in zip("zyx", arr.shape):
            np.testing.assert_array_equal(ds[d].values, np.arange(n, dtype=np.float64))
            assert ds[d].attrs == {}
        assert ds.attrs == {"axis_order": "zyx", "resolution": [1.0, 1.0, 1.0], "units": ["", "", ""],
                            "shape_block": [4, 8, 11]}
        np.testing.assert_array_equal(ds[VARIABLE].values, arr)


def test_frame_interval_without_units_and_resolution_without_frame_interval(tmp_path) -> None:
    arr = np.arange(5 * 3 * 4, dtype=np.int16).reshape(5, 3, 4)
    save_fast(arr, tmp_path / "tyx", (2,), frame_interval=2.0)  # a stack of 2-D frames: tyx
    with xr.open_dataset(tmp_path / "tyx", engine=ENGINE) as ds:
        assert ds[VARIABLE].dims == ("t", "y", "x") and ds.attrs["frame_interval"] == 2.0
        np.testing.assert_array_equal(ds.t.values, [0.0, 2.0, 4.0, 6.0, 8.0])
        assert ds.t.attrs == {"units": "s"} and ds.y.attrs == {}
    save_fast(arr[None], tmp_path / "tzyx", (1, 2), resolution=(3.0, 2.0, 0.5, 0.5))
    with xr.open_dataset(tmp_path / "tzyx", engine=ENGINE) as ds:
        assert "frame_interval" not in ds.attrs
        np.testing.assert_array_equal(ds.t.values, [0.0])  # resolution[0], unit unknown
        np.testing.assert_array_equal(ds.z.values, [0.0, 2.0, 4.0, 6.0, 8.0])
        assert ds.t.attrs == ds.z.attrs == {}


def test_repeated_axis_letters_give_distinct_dims(tmp_path) -> None:
    save_fast(np.zeros((2, 3, 4), "uint8"), tmp_path / "d", (1,), axis_order="xyx")
    with xr.open_dataset(tmp_path / "d", engine=ENGINE) as ds:
        assert ds[VARIABLE].dims == ("x0", "y", "x2")


def test_a_long_time_axis_is_not_materialised(tmp_path) -> None:
    save_fast(np.zeros((100_000, 1, 1), "uint8"), tmp_path / "long", (50_000,), frame_interval=0.1,
              chunks=(50_000, 1, 1))
    with xr.open_dataset(tmp_path / "long", engine=ENGINE) as ds:
        index = ds.xindexes["t"]
        assert type(index).__name__ == "_StepIndex" and index.size == 100_000
        assert not ds.t.variable._in_memory
        sub = ds.sel(t=slice(100, 100.5))
        np.testing.assert_allclose(sub.t.values, [100.0, 100.1, 100.2, 100.3, 100.4, 100.5])
        assert float(ds.t[-1]) == pytest.approx(9999.9)


@pytest.mark.parametrize("isel", [
    {"t": 3},
    {"t": -1, "z": 0},
    {"t": slice(2, 29, 5), "y": slice(None, None, -3)},
    {"t": [5, 0, 5, 29], "x": [23, 1]},
    {"z": slice(1, 3), "y": 7, "x": slice(3, 20, 4)},
    {"t": np.array([True, False] * 15)},
    {"t": slice(40, 50)},
])
def test_isel_equals_numpy(tzyx, isel) -> None:
    arr, path = tzyx
    with xr.open_dataset(path, engine=ENGINE) as ds:
        got = ds[VARIABLE].isel(isel)
        expected = arr
        for axis, dim in reversed(list(enumerate("tzyx"))):
            if dim in isel:
                expected = np.take(expected, np.arange(arr.shape[axis])[isel[dim]], axis=axis)
        np.testing.assert_array_equal(got.values, expected)
        assert got.dims == tuple(d for d in "tzyx" if not isinstance(isel.get(d), int))


def test_sel_on_physical_coordinates(tzyx) -> None:
    arr, path = tzyx
    with xr.open_dataset(path, engine=ENGINE) as ds:
        v = ds[VARIABLE]
        sub = v.sel(x=slice(0, 3.0))  # both ends included, as on a pandas index
        np.testing.assert_allclose(sub.x.values, [0.0, 0.6, 1.2, 1.8, 2.4, 3.0])
        np.testing.assert_array_equal(sub.values, arr[..., :6])
        np.testing.assert_array_equal(v.sel(x=slice(0, 10.0)).values, arr[..., :17])
        np.testing.assert_array_equal(v.sel(x=slice(1.0, None), y=slice(None, 1.3)).values, arr[:, :, :3, 2:])
        np.testing.assert_array_equal(v.sel(t=1.75, z=10.0).values, arr[7, 2])  # exact labels
        np.testing.assert_array_equal(v.sel(z=[15.0, 0.0]).values, arr[:, [3, 0]])
        np.testing.assert_array_equal(v.sel(t=1.8, y=5.0, method="nearest").values, arr[7, :, 8])
        np.testing.assert_array_equal(v.sel(t=100.0, method="nearest").values, arr[29])  # clipped to the end
        np.testing.assert_array_equal(v.sel(t=slice(1.0, 2.0), z=5.0).sel(x=1.2).values, arr[4:9, 1, :, 2])
        with pytest.raises(KeyError):
            v.sel(x=1.0)  # not a coordinate value
        with pytest.raises(KeyError):
            v.sel(z=20.0)  # beyond the axis
        with pytest.raises(KeyError):
            v.sel(t=1.8, method="nearest", tolerance=0.01)
        assert v.sel(x=slice(100, 200)).sizes["x"] == 0
        # isel keeps the lazy index, and sel still works on what it returns
        stepped = v.isel(x=slice(2, 20, 3))
        np.testing.assert_allclose(stepped.x.values, np.arange(2, 20, 3) * 0.6)
        np.testing.assert_array_equal(stepped.sel(x=slice(3.0, 7.0)).values, arr[..., [5, 8, 11]])


def test_open_dataarray_and_drop_variables(tzyx) -> None:
    arr, path = tzyx
    with xr.open_dataarray(path, engine=ENGINE) as a:
        assert a.name == VARIABLE and a.attrs["axis_order"] == "tzyx" and a.x.attrs == {"units": "um"}
        np.testing.assert_array_equal(a[2:4, 1].values, arr[2:4, 1])
    with xr.open_dataset(path, engine=ENGINE, drop_variables=VARIABLE) as ds:
        assert list(ds.data_vars) == [] and ds.sizes == {"t": 30, "z": 4, "y": 20, "x": 24}
    with xr.open_dataset(path, engine=ENGINE, drop_variables=["x", "t"]) as ds:
        assert set(ds.coords) == {"z", "y"} and ds[VARIABLE].dims == ("t", "z", "y", "x")
        np.testing.assert_array_equal(ds[VARIABLE].isel(x=3).values, arr[..., 3])


def test_keywords_reach_the_reader(tmp_path) -> None:
    arr = np.arange(24, dtype=np.uint8).reshape(4, 6)
    path = tmp_path / "prefixed"
    save_fast(arr, path, (2,), checksums=False)
    for block in sorted(path.glob("0*.h5")):  # a prefix, as some acquisition programs write
        block.rename(path / f"stack_{block.name}")
    (path / "chunk_index.bin").unlink(missing_ok=True)
    with xr.open_dataset(path, engine=ENGINE, prefix="stack_", chunk_index=False) as ds:
        np.testing.assert_array_equal(ds[VARIABLE].values, arr)
    with pytest.warns(split_dataset.errors.TruncatedDatasetWarning):  # no block has that prefix
        with xr.open_dataset(path, engine=ENGINE, prefix="other_") as ds:
            assert ds.sizes["dim_0" if "dim_0" in ds.sizes else "y"] == 0


def test_chunks_follow_the_blocks(tzyx) -> None:
    arr, path = tzyx
    with xr.open_dataset(path, engine=ENGINE, chunks={}) as ds:
        x = ds[VARIABLE].data
        assert x.chunks == ((7, 7, 7, 7, 2), (2, 2), (20,), (24,))
        assert x.chunks == split_dataset.open(path).to_dask().chunks
        np.testing.assert_array_equal(ds[VARIABLE].isel(t=slice(5, 20)).mean("t").values, arr[5:20].mean(0))


def test_pickles_as_a_path(tzyx) -> None:
    arr, path = tzyx
    with xr.open_dataset(path, engine=ENGINE) as ds:
        payload = pickle.dumps(ds)
        assert len(payload) < 20_000  # no pixel data
        np.testing.assert_array_equal(pickle.loads(payload)[VARIABLE].values, arr)


def test_a_reduction_on_a_distributed_cluster(tzyx) -> None:
    distributed = pytest.importorskip("distributed")
    arr, path = tzyx
    # a worker process: the graph travels pickled (the backend array as the dataset's path)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster, distributed.Client(cluster):
        with xr.open_dataset(path, engine=ENGINE, chunks={}) as ds:
            v = ds[VARIABLE].astype(np.float64)
            got = (v.mean("t") - v.sel(x=slice(0, 6.0)).max(("t", "y", "x"))).compute()
            expected = arr.astype(np.float64).mean(0) - arr[..., :11].max((0, 2, 3))[:, None, None]
            np.testing.assert_allclose(got.values, expected)
            assert got.dims == ("z", "y", "x")


def test_guess_can_open(tzyx, tmp_path) -> None:
    _, path = tzyx
    entry = SplitDatasetBackendEntrypoint()
    assert entry.guess_can_open(path) and entry.guess_can_open(str(path))
    assert entry.guess_can_open(LEGACY_CASES["old_no_json"])  # blocks without JSON
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "notes.txt").write_text("x")
    (tmp_path / "folder" / "0001 copy.h5").write_text("x")
    assert not entry.guess_can_open(tmp_path / "folder")
    assert not entry.guess_can_open(path / "0000.h5") and not entry.guess_can_open(path / "stack_metadata.json")
    assert not entry.guess_can_open(tmp_path / "missing") and not entry.guess_can_open("\0bad")
    assert not entry.guess_can_open(b"bytes") and not entry.guess_can_open(object())
    (tmp_path / "locked").mkdir(mode=0)
    try:
        assert entry.guess_can_open(tmp_path / "locked") is False
    finally:
        (tmp_path / "locked").chmod(0o755)
    # xarray picks the engine by itself
    with xr.open_dataset(path) as ds:
        assert VARIABLE in ds


@pytest.mark.parametrize("name", sorted(LEGACY_CASES))
def test_legacy_fixtures(name, legacy_copy) -> None:
    path = legacy_copy(name)
    expected = np.load(LEGACY / f"{name}.expected.npy")
    native = split_dataset.open(path)
    with xr.open_dataset(path, engine=ENGINE, chunks={}) as ds:
        v = ds[VARIABLE]
        assert v.dims == tuple(native.axis_order) and v.shape == expected.shape and v.dtype == expected.dtype
        assert v.data.chunks == native.to_dask().chunks
        np.testing.assert_array_equal(v.values, expected)
        for axis, dim in enumerate(v.dims):
            np.testing.assert_allclose(ds[dim].values, np.arange(expected.shape[axis]) * native.resolution[axis])
            assert ds[dim].attrs == ({"units": native.units[axis]} if native.units[axis] else {})
