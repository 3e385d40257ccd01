"""The dask adapter: lazy arrays, tokens, schedulers (threads, processes, distributed), parallel writes."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

from conftest import save_fast  # noqa: E402

import split_dataset  # noqa: E402
from split_dataset import Blocks, EmptySplitDataset, SplitDataset  # noqa: E402


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    arr = np.random.default_rng(0).integers(0, 4000, (23, 3, 17, 19), dtype=np.uint16)
    ds = save_fast(arr, tmp_path_factory.mktemp("dask") / "raw", (5, 2))
    return arr, ds


@pytest.fixture(scope="module")
def cluster_client():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        yield client


def test_one_chunk_per_block_file(stack) -> None:
    arr, ds = stack
    x = ds.to_dask()
    assert x.chunks == ((5, 5, 5, 5, 3), (2, 1), (17,), (19,))
    assert x.dtype == arr.dtype and x.shape == arr.shape
    np.testing.assert_array_equal(x.compute(), arr)
    y = da.from_array(ds, chunks=ds.shape_block)
    np.testing.assert_array_equal(y[::-3, 1].compute(), arr[::-3, 1])
    np.testing.assert_array_equal(split_dataset.to_dask(ds.root)[4:9].compute(), arr[4:9])


def test_graph_is_small_and_holds_no_data_or_handles(stack) -> None:
    arr, ds = stack
    ds[:]  # the dataset has open handles: they must not enter the graph
    x = ds.to_dask()
    blob = pickle.dumps(dict(x.__dask_graph__()))
    assert len(blob) < 20_000 < arr.nbytes
    assert b"h5py" not in blob


def test_tokens_are_deterministic(stack, tmp_path) -> None:
    arr, ds = stack
    assert ds.to_dask().name == ds.to_dask().name == SplitDataset(ds.root).to_dask().name
    other = save_fast(arr, tmp_path / "other", (5, 2))
    assert other.to_dask().name != ds.to_dask().name
    assert dask.base.tokenize(ds) != dask.base.tokenize(other)
    assert ds.to_dask(chunks=(10, 3, 17, 19)).name != ds.to_dask().name


@pytest.mark.parametrize("scheduler", ["threads", "processes", "synchronous"])
def test_local_schedulers(stack, scheduler) -> None:
    arr, ds = stack
    x = ds.to_dask()
    total = (x.astype(np.int64) * 2).sum(axis=(0, 2)).compute(scheduler=scheduler)
    np.testing.assert_array_equal(total, (arr.astype(np.int64) * 2).sum(axis=(0, 2)))


def test_distributed_read_and_write(stack, cluster_client, tmp_path) -> None:
    arr, ds = stack
    x = ds.to_dask()
    assert int(x.sum(dtype=np.int64).compute()) == int(arr.sum(dtype=np.int64))
    out = split_dataset.save(x[:, :, ::-1] + 1, tmp_path / "out", shape_block=(7, 3))
    assert out.shape_block == (7, 3, 17, 19)
    np.testing.assert_array_equal(out[:], arr[:, :, ::-1] + 1)
    from split_dataset.storage import read_checksums, sha256_file

    sums = read_checksums(out.root)  # gathered from the workers' tasks
    assert sorted(sums) == [p.name for p in out.files.flat]
    assert all(sha256_file(out.root / n) == d for n, d in sums.items())


def test_save_dask_rechunks_and_writes_metadata_last(tmp_path) -> None:
    x = da.arange(20 * 6 * 5, chunks=37).reshape(20, 6, 5).astype(np.float32)
    ds = split_dataset.save(x, tmp_path / "ds", shape_block=(6, 4), attrs={"a": 1})
    assert ds.shape_block == (6, 4, 5) and ds.n_blocks == 8 and ds.attrs == {"a": 1}
    np.testing.assert_array_equal(ds[:], np.arange(600).reshape(20, 6, 5).astype(np.float32))
    regular = da.zeros((10, 4), chunks=(3, 4), dtype=np.uint8)
    assert split_dataset.save(regular, tmp_path / "reg").shape_block == (3, 4)  # its own chunks


@pytest.mark.parametrize("checksums", [True, False])
def test_save_of_a_dask_array_follows_checksums(tmp_path, checksums) -> None:
    x = da.arange(40, chunks=10).reshape(20, 2).astype(np.uint16)
    ds = split_dataset.save(x, tmp_path / "ds", fsync=False, checksums=checksums)
    assert (ds.root / "SHA256SUMS").exists() is checksums
    np.testing.assert_array_equal(ds[:], np.arange(40).reshape(20, 2))


def _fail_on_block_2(block, block_info=None):
    if block_info[0]["chunk-location"][0] == 2:
        raise RuntimeError("task failed")
    return block


def test_failed_task_leaves_no_metadata(tmp_path) -> None:
    x = da.zeros((20, 4), chunks=(5, 4), dtype=np.uint16).map_blocks(_fail_on_block_2, dtype=np.uint16)
    with pytest.raises(RuntimeError, match="task failed"):
        split_dataset.save(x, tmp_path / "ds", shape_block=(5, 4))
    assert not (tmp_path / "ds" / "stack_metadata.json").exists()
    with pytest.raises(ValueError, match="not a split dataset"):
        SplitDataset(tmp_path / "ds")


def test_dff_pipeline_as_in_the_readme(stack, tmp_path) -> None:
    arr, ds = stack
    x = split_dataset.open(ds.root).to_dask()
    f0 = x.mean(axis=0).compute()  # one volume: computed first, so the blocks stream once
    dff = ((x - f0) / f0).astype(np.float32)
    out = split_dataset.save(dff, tmp_path / "dff")
    expected = ((arr - arr.mean(axis=0)) / arr.mean(axis=0)).astype(np.float32)
    np.testing.assert_allclose(out[:], expected, rtol=1e-5)
    # the same with map_blocks: each task turns one raw block into one output block
    whole_volumes = x.rechunk((5, 3, 17, 19))  # each block holds whole volumes, as f0 does
    dff2 = whole_volumes.map_blocks(lambda b: ((b - f0) / f0).astype(np.float32), dtype=np.float32)
    out2 = split_dataset.save(dff2, tmp_path / "dff2")
    assert out2.shape_block == (5, 3, 17, 19)
    np.testing.assert_allclose(out2[:], expected, rtol=1e-5)


def _fill_block(dataset: SplitDataset, block, out_file: str) -> None:
    import h5py

    data = dataset[Blocks.block_to_slices(block)].astype(np.float32) * 2
    with h5py.File(out_file, "w") as f:
        f["stack_4D"] = data


def test_old_blockwise_pattern_with_dask_workers(stack, tmp_path) -> None:
    arr, ds = stack
    new = EmptySplitDataset(root=tmp_path, name="doubled", shape_full=ds.shape, shape_block=(4, 3, 17, 19))
    tasks = [dask.delayed(_fill_block)(ds, block, str(new.root / new.files[i]))
             for i, (_, block) in enumerate(new.slices(as_tuples=True))]
    dask.compute(*tasks, scheduler="processes")
    np.testing.assert_array_equal(new.finalize()[:], arr.astype(np.float32) * 2)


def test_import_without_dask() -> None:
    code = (
        "import sys; sys.modules['dask'] = None; sys.modules['dask.array'] = None\n"
        "import numpy as np, split_dataset, tempfile, os\n"
        "ds = split_dataset.save(np.zeros((4, 4)), os.path.join(tempfile.mkdtemp(), 'd'), (2,))\n"
        "try:\n    ds.to_dask()\nexcept ImportError as e:\n    print('ImportError:', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert 'pip install "split_dataset[dask]"' in out.stdout


def test_dask_save_like_keeps_the_physical_metadata(tmp_path) -> None:
    """The reported case: a derived dask result lost resolution and attrs."""
    raw = split_dataset.save(np.arange(120, dtype="uint16").reshape(6, 4, 5), tmp_path / "raw", (2,), fsync=False,
                             resolution=(0.5, 0.6, 0.7), units=("s", "um", "um"), frame_interval=0.5,
                             attrs={"fish": "F0"})
    x = raw.to_dask()
    out = split_dataset.save(x.astype("float32") / 2, tmp_path / "half", like=raw, fsync=False)
    assert out.resolution == (0.5, 0.6, 0.7) and out.frame_interval == 0.5 and out.attrs == {"fish": "F0"}
    mean = split_dataset.save(x.mean(axis=0), tmp_path / "mean", like=raw.root, fsync=False)
    assert mean.resolution == (0.6, 0.7) and mean.units == ("um", "um") and mean.frame_interval is None


def test_save_dispatch_lives_in_the_package(tmp_path, monkeypatch) -> None:
    """split_dataset.save sends dask arrays to save_dask; split_dataset.writer.save imports no dask
    code and writes them like any array, one block at a time."""
    import split_dataset.dask_adapter as adapter
    import split_dataset.writer as writer

    calls = []
    real = adapter.save_dask
    monkeypatch.setattr(adapter, "save_dask", lambda *a, **kw: (calls.append(a[2]), real(*a, **kw))[1])
    x = da.arange(24, chunks=6, dtype="uint16").reshape(6, 4)
    ds = split_dataset.save(x, tmp_path / "par", fsync=False)
    assert calls == [None]
    np.testing.assert_array_equal(ds[:], np.arange(24, dtype="uint16").reshape(6, 4))
    one = writer.save(x, tmp_path / "seq", (4,), fsync=False)
    assert len(calls) == 1  # not dispatched
    np.testing.assert_array_equal(one[:], np.arange(24, dtype="uint16").reshape(6, 4))
    assert sorted(one.metadata) == sorted(ds.metadata)


def test_import_does_not_import_dask() -> None:
    code = "import sys, split_dataset, split_dataset.writer, split_dataset.stream; print('dask' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr
