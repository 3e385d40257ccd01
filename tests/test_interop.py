"""Interoperability with the flammkuchen / PyTables tools that wrote and read the old files.

What ``split_dataset.save`` writes must load with ``flammkuchen.load`` and
``tables.open_file``; files written by PyTables in the flammkuchen layout (what
``fl.save`` produced; ``fl.save`` itself is broken on NumPy 2) must read with
``split_dataset.SplitDataset``. numpy is the oracle.
"""

from __future__ import annotations

import json
from pathlib import Path

import flammkuchen as fl
import numpy as np
import pytest
import tables

import split_dataset
from split_dataset import SplitDataset

COMPRESSIONS = [None, "gzip", "blosc", "blosc-lz4", "blosc-zstd", "blosc-blosclz"]
DTYPES = ["uint8", "uint16", "int16", "float32", "float64"]
#: (shape, shape_block) covering 1-D to 4-D, edge blocks and splits on two axes
GEOMETRIES = [
    pytest.param((11,), (4,), id="1d"),
    pytest.param((9, 7), (4, None), id="2d"),
    pytest.param((5, 6, 7), (2, 4, None), id="3d-2axes"),
    pytest.param((7, 3, 8, 9), (3,), id="4d"),
]


def _data(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.normal(0, 100, shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)


def _save(x, path, block, compression):
    ds = split_dataset.save(x, path, block, compression=compression, fsync=False)
    ds.close()  # let other HDF5 readers open the files
    return ds


# ----------------------------------------------------------------------------- our files, their readers


@pytest.mark.parametrize("compression", COMPRESSIONS, ids=lambda c: str(c))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, block", GEOMETRIES)
def test_flammkuchen_loads_every_block(tmp_path, compression, dtype, shape, block):
    x = _data(shape, dtype)
    ds = _save(x, tmp_path / "ds", block, compression)
    key = f"stack_{len(shape)}D"
    n = 0
    for idx, sl in ds.slices():
        loaded = fl.load(str(ds.files[idx]))
        assert list(loaded) == [key]
        got = loaded[key]
        assert isinstance(got, np.ndarray)
        assert got.dtype == x.dtype
        np.testing.assert_array_equal(got, x[sl])
        # the single-key form that the old reader used, with a selection
        part = fl.load(str(ds.files[idx]), "/" + key, sel=fl.aslice[:1])
        np.testing.assert_array_equal(part, x[sl][:1])
        n += 1
    assert n == ds.n_blocks == np.prod(ds.files.shape)


@pytest.mark.parametrize("compression", COMPRESSIONS, ids=lambda c: str(c))
@pytest.mark.parametrize("dtype", DTYPES)
def test_pytables_reads_every_block(tmp_path, compression, dtype):
    x = _data((7, 3, 8, 9), dtype, seed=1)
    ds = _save(x, tmp_path / "ds", (3, 2), compression)
    for idx, sl in ds.slices():
        with tables.open_file(str(ds.files[idx]), "r") as h:
            node = h.get_node("/stack_4D")
            assert node.dtype == x.dtype
            np.testing.assert_array_equal(node[:], x[sl])
            np.testing.assert_array_equal(node[1:, :, 2], x[sl][1:, :, 2])  # partial reads too
            if compression is not None:
                assert node.filters.complevel > 0
                expected_lib = "zlib" if compression == "gzip" else "blosc"
                assert node.filters.complib.startswith(expected_lib)


def test_metadata_json_readable_by_old_reader_keys(tmp_path):
    """The classic keys the 0.4 reader and sashimi/napari plugins use are there, as plain lists."""
    x = _data((7, 3, 8, 9), "uint16")
    _save(x, tmp_path / "ds", (3,), "blosc")
    meta = json.loads((tmp_path / "ds" / "stack_metadata.json").read_text())
    assert meta["shape_full"] == [7, 3, 8, 9]
    assert meta["shape_block"] == [3, 3, 8, 9]
    for k in ("crop_start", "crop_end", "padding"):
        assert meta[k] == [0, 0, 0, 0]
    assert len(meta["resolution"]) == 4
    assert meta["axis_order"] == "tzyx"


# ----------------------------------------------------------------------------- their files, our reader


def _write_pytables_dataset(root: Path, x: np.ndarray, block0: int, kind: str, key: str) -> None:
    """Block files as flammkuchen (PyTables) wrote them: root group + one array node."""
    root.mkdir()
    filters = tables.Filters(complib="blosc", complevel=9, shuffle=True)
    for i, start in enumerate(range(0, x.shape[0], block0)):
        part = x[start : start + block0]
        with tables.open_file(str(root / f"{i:04d}.h5"), "w") as h:
            if kind == "carray":
                h.create_carray(h.root, key, obj=part, filters=filters)
            else:
                h.create_array(h.root, key, obj=part)
    meta = {
        "shape_full": list(x.shape),
        "shape_block": [block0] + list(x.shape[1:]),
        "crop_start": [0] * x.ndim,
        "crop_end": [0] * x.ndim,
        "padding": [0] * x.ndim,
        "resolution": [1] * x.ndim,
        "axis_order": "tzyx" if x.ndim == 4 else "zyx",
    }
    (root / "stack_metadata.json").write_text(json.dumps(meta))


PYTABLES_CASES = [
    pytest.param("carray", "stack_4D", "uint16", (13, 2, 16, 16), 5, id="carray-blosc-stack_4D-uint16"),
    pytest.param("carray", "stack_4D", "float32", (9, 3, 5, 7), 4, id="carray-blosc-stack_4D-float32"),
    pytest.param("carray", "stack_3D", "int16", (10, 6, 5), 3, id="carray-blosc-stack_3D-int16"),
    pytest.param("array", "stack", "uint8", (6, 4, 8, 8), 2, id="array-stack-uint8"),
    pytest.param("array", "stack", "float64", (7, 5), 3, id="array-stack-float64"),
]


@pytest.mark.parametrize("kind, key, dtype, shape, block0", PYTABLES_CASES)
def test_split_dataset_reads_pytables_written_files(tmp_path, kind, key, dtype, shape, block0):
    x = _data(shape, dtype, seed=2)
    root = tmp_path / "pt"
    _write_pytables_dataset(root, x, block0, kind, key)
    ds = SplitDataset(root)
    assert ds.shape == x.shape
    assert ds.dtype == x.dtype
    assert ds.n_blocks == -(-shape[0] // block0)
    np.testing.assert_array_equal(ds[:], x)
    np.testing.assert_array_equal(np.asarray(ds), x)
    sel = (slice(None, None, -2), 1) + (slice(1, None),) * (x.ndim - 2)
    np.testing.assert_array_equal(ds[sel], x[sel])
    np.testing.assert_array_equal(ds[-1], x[-1])
    np.testing.assert_array_equal(ds[block0 - 1 : block0 + 1], x[block0 - 1 : block0 + 1])  # across files


def test_split_dataset_reads_pytables_files_with_float_metadata(tmp_path):
    """Numbers in stack_metadata.json may be floats (FORMAT.md)."""
    x = _data((8, 4, 6), "uint16", seed=3)
    root = tmp_path / "pt"
    _write_pytables_dataset(root, x, 3, "carray", "stack_3D")
    meta = json.loads((root / "stack_metadata.json").read_text())
    meta["shape_full"] = [float(v) for v in meta["shape_full"]]
    meta["shape_block"] = [float(v) for v in meta["shape_block"]]
    (root / "stack_metadata.json").write_text(json.dumps(meta))
    ds = SplitDataset(root)
    assert ds.shape == (8, 4, 6) and ds.shape_block == (3, 4, 6)
    np.testing.assert_array_equal(ds[:], x)


def test_round_trip_pytables_to_split_dataset_to_flammkuchen(tmp_path):
    """Read a PyTables dataset, re-save it with ``save``, load the blocks back with flammkuchen."""
    x = _data((13, 2, 16, 16), "uint16", seed=4)
    _write_pytables_dataset(tmp_path / "pt", x, 5, "carray", "stack_4D")
    src = SplitDataset(tmp_path / "pt")
    out = _save(src, tmp_path / "out", (4,), "blosc")
    pieces = [fl.load(str(out.files[idx]))["stack_4D"] for idx, _ in out.slices()]
    np.testing.assert_array_equal(np.concatenate(pieces), x)
