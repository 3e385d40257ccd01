"""convert and export-vds: round trips between every kind, metadata carried across, block shapes
and codecs, bad input, staged writes that leave nothing behind, HDF5 sources read with every
blosc frame validated.

Some cases run through the command line (``split_dataset.cli.main``), as users do. numpy is
the oracle for every array that comes out.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest
from conftest import LEGACY, LEGACY_CASES
from test_cli import META, X, _truncate, listing, make, run

import split_dataset
from split_dataset import SplitDataset
from split_dataset.cli import main
from split_dataset.convert import convert, open_source, parse_spec
from split_dataset.verify import verify

# ----------------------------------------------------------------------------- convert: round trips


def _to_h5(x: np.ndarray, path: Path, key: str = "data", **attrs) -> str:
    with h5py.File(path, "w") as f:
        d = f.create_dataset(key, data=x, chunks=(1,) + x.shape[1:])
        d.attrs.update(attrs)
    return f"{path}:/{key}"


def _to_zarr(x: np.ndarray, path: Path) -> str:
    zarr = pytest.importorskip("zarr")
    z = zarr.create_array(store=str(path), shape=x.shape, chunks=(4,) + x.shape[1:], dtype=x.dtype)
    z[:] = x
    return str(path)


def _read(spec: str) -> np.ndarray:
    with open_source(spec) as src:
        return src[...]


SOURCES = {
    "split": lambda x, d: str(make(d / "src", x)),
    "hdf5": lambda x, d: _to_h5(x, d / "src.h5"),
    "npy": lambda x, d: (np.save(d / "src.npy", x), str(d / "src.npy"))[1],
    "zarr": lambda x, d: _to_zarr(x, d / "src.zarr"),
}
DESTINATIONS = {"split": "dst", "hdf5": "dst.h5:/out/stack", "npy": "dst.npy", "zarr": "dst.zarr"}


@pytest.mark.parametrize("dst_kind", sorted(DESTINATIONS))
@pytest.mark.parametrize("src_kind", sorted(SOURCES))
def test_convert_round_trip(tmp_path, capsys, src_kind, dst_kind) -> None:
    x = np.random.default_rng(2).integers(0, 4000, (11, 2, 12, 10), dtype=np.uint16)
    src = SOURCES[src_kind](x, tmp_path)
    dst = str(tmp_path / DESTINATIONS[dst_kind])
    code, out, err = run(capsys, "convert", src, dst, "-q")
    assert code == 0, err
    assert out.startswith(f"wrote {dst} (")
    assert parse_spec(dst).kind == dst_kind
    np.testing.assert_array_equal(_read(dst), x)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith((".tmp", ".old"))]


@pytest.mark.parametrize(
    "dst, shape_block, compression, check",
    [
        pytest.param("out", "4,-1,8", "blosc-zstd",
                     lambda p: SplitDataset(p).shape_block == (4, 2, 8, 10)
                     and SplitDataset(p).metadata["compression"]["cname"] == "zstd", id="split"),
        pytest.param("out.h5", "4,1,12,10", "none",
                     lambda p: h5py.File(p)["stack"].chunks == (4, 1, 12, 10)
                     and h5py.File(p)["stack"].compression is None, id="hdf5-chunks"),
        pytest.param("out.h5", None, None,
                     lambda p: h5py.File(p)["stack"].chunks == (1, 1, 12, 10)
                     and h5py.File(p)["stack"].compression == "gzip", id="hdf5-default-gzip-planes"),
        pytest.param("out.h5", None, "none",
                     lambda p: h5py.File(p)["stack"].chunks is None, id="hdf5-contiguous"),
        pytest.param("out.zarr", "4", "gzip",
                     lambda p: __import__("zarr").open(p, mode="r").chunks == (4, 2, 12, 10), id="zarr-chunks"),
    ],
)
def test_convert_block_shape_and_codec(tmp_path, capsys, dst, shape_block, compression, check) -> None:
    x = np.random.default_rng(3).integers(0, 4000, (11, 2, 12, 10), dtype=np.uint16)
    src = make(tmp_path / "src", x, (5,))
    argv = ["convert", src, tmp_path / dst]
    argv += ["--shape-block", shape_block] if shape_block else []
    argv += ["--compression", compression] if compression else []
    code, _, err = run(capsys, *argv)
    assert code == 0, err
    assert check(str(tmp_path / dst))
    np.testing.assert_array_equal(_read(str(tmp_path / dst)), x)


def test_split_to_split_keeps_the_source_blocks_by_default(tmp_path) -> None:
    make(tmp_path / "src", block=(7, 1))
    convert(tmp_path / "src", tmp_path / "dst")
    out = SplitDataset(tmp_path / "dst")
    assert out.shape_block == (7, 1, 16, 16)
    np.testing.assert_array_equal(out[:], X)
    assert verify(tmp_path / "dst").ok


@pytest.mark.parametrize("via", ["out.h5:/a/b", "out.zarr"], ids=["hdf5", "zarr"])
def test_convert_carries_metadata_across(tmp_path, via) -> None:
    if via.endswith(".zarr"):
        pytest.importorskip("zarr")
    make(tmp_path / "src", **META)
    convert(tmp_path / "src", f"{tmp_path}/{via}")
    result = convert(f"{tmp_path}/{via}", tmp_path / "back")
    assert set(result.carried) == {"resolution", "units", "axis_order", "frame_interval", "attrs"}
    back = SplitDataset(tmp_path / "back")
    assert back.resolution == META["resolution"] and back.units == META["units"]
    assert back.frame_interval == 0.5 and back.axis_order == "tzyx"
    assert back.attrs == META["attrs"]
    np.testing.assert_array_equal(back[:], X)


def test_hdf5_attributes_become_attrs(tmp_path) -> None:
    tables = pytest.importorskip("tables")
    x = np.arange(6 * 4 * 5, dtype=np.float32).reshape(6, 4, 5)
    with tables.open_file(str(tmp_path / "pt.h5"), "w") as f:  # PyTables adds CLASS, TITLE, VERSION
        arr = f.create_carray("/", "volume", obj=x, title="a title")
        arr.attrs.element_size_um = np.array([2.0, 0.5, 0.5])
        arr.attrs.experimenter = "ana"
        arr.attrs.gain = np.float64(1.5)
        arr.attrs.roi = np.array([0, 0, 64, 64])
    with open_source(tmp_path / "pt.h5") as src:  # the only dataset in the file
        assert src.spec.inner == "/volume"
        assert src.attrs == {"element_size_um": [2.0, 0.5, 0.5], "experimenter": "ana", "gain": 1.5,
                             "roi": [0, 0, 64, 64]}
        assert src.resolution == (2.0, 0.5, 0.5) and src.units == ("um", "um", "um")
    convert(tmp_path / "pt.h5", tmp_path / "ds")
    ds = SplitDataset(tmp_path / "ds")
    assert ds.attrs["experimenter"] == "ana" and "CLASS" not in ds.attrs and "TITLE" not in ds.attrs
    assert ds.resolution == (2.0, 0.5, 0.5)
    np.testing.assert_array_equal(ds[:], x)


def test_ilastik_export_with_axistags(tmp_path, capsys) -> None:
    x = np.random.default_rng(4).random((12, 70, 66, 1), dtype=np.float32)
    tags = {"axes": [{"key": k, "typeFlags": 2, "resolution": 0, "description": ""} for k in "tyxc"]}
    spec = _to_h5(x, tmp_path / "project_export.h5", "exported_data", axistags=json.dumps(tags))
    code, _out, err = run(capsys, "convert", spec, tmp_path / "probs", "--shape-block", "10,64,64,1")
    assert code == 0, err
    ds = SplitDataset(tmp_path / "probs")
    assert ds.axis_order == "tyxc" and ds.shape_block == (10, 64, 64, 1) and ds.n_blocks == 8
    assert ds.attrs["axistags"] == tags
    np.testing.assert_array_equal(ds[:], x)


class Recording:
    """An array-like over `x` that records the size of every read."""

    def __init__(self, x: np.ndarray) -> None:
        self.x, self.shape, self.dtype, self.reads = x, x.shape, x.dtype, []

    def __getitem__(self, selection):
        out = self.x[selection]
        self.reads.append(out.nbytes)
        return out


@pytest.mark.parametrize("dst, largest", [("ds", 1 << 20), ("out.h5", 1 << 20), ("out.npy", 1 << 20),
                                          ("out.zarr", 1 << 20)], ids=["split", "hdf5", "npy", "zarr"])
def test_convert_streams_block_by_block(tmp_path, monkeypatch, dst, largest) -> None:
    import split_dataset.convert as conv
    from split_dataset.convert import sinks

    if dst.endswith(".zarr"):
        pytest.importorskip("zarr")
    monkeypatch.setattr(sinks, "REGION_BYTES", 1 << 20)  # regions of 1 MiB for HDF5, .npy and zarr destinations
    x = np.random.default_rng(5).integers(0, 60000, (64, 128, 256), dtype=np.uint16)  # 4 MiB
    np.save(tmp_path / "big.npy", x)
    recording = Recording(np.load(tmp_path / "big.npy", mmap_mode="r"))
    source = conv.Source(recording, parse_spec(tmp_path / "big.npy"))
    block = "16" if dst == "ds" else ("16,128,256" if dst.endswith(".zarr") else None)  # 1 MiB blocks
    convert(source, str(tmp_path / dst), shape_block=block)
    assert max(recording.reads) <= largest and sum(recording.reads) == x.nbytes  # each byte read once
    np.testing.assert_array_equal(_read(str(tmp_path / dst)), x)


def test_convert_progress_reaches_the_total(tmp_path) -> None:
    calls = []
    convert(make(tmp_path / "src"), tmp_path / "dst", shape_block=4, progress=lambda d, t: calls.append((d, t)))
    assert calls[0] == (0, 6) and calls[-1] == (6, 6)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


# ----------------------------------------------------------------------------- convert: bad input


def _bad_h5(d: Path) -> str:
    with h5py.File(d / "two.h5", "w") as f:
        f["a"] = np.zeros((3, 3))
        f["g/b"] = np.zeros((3, 3))
    return str(d / "two.h5")


@pytest.mark.parametrize(
    "argv, message",
    [
        pytest.param(lambda d: [d / "notes.tif", d / "out"], "unknown source type", id="unknown-source-type"),
        pytest.param(lambda d: [d / "nothing", d / "out"], "no such file or folder", id="missing-source"),
        pytest.param(lambda d: [_bad_h5(d) + ":/exported_data", d / "out"], "no dataset '/exported_data'",
                     id="missing-inner-path"),
        pytest.param(lambda d: [_bad_h5(d), d / "out"], "holds 2 datasets", id="ambiguous-hdf5"),
        pytest.param(lambda d: [_bad_h5(d) + ":/g", d / "out"], "is a group", id="hdf5-group"),
        pytest.param(lambda d: [d / "src", d / "out", "--shape-block", "5,3,16,16,1"], "has 5 entries",
                     id="block-too-many-axes"),
        pytest.param(lambda d: [d / "src", d / "out", "--shape-block", "0"], "positive integer", id="block-zero"),
        pytest.param(lambda d: [d / "src", d / "out", "--shape-block", "ten"], "integers separated by commas",
                     id="block-not-numbers"),
        pytest.param(lambda d: [d / "src", d / "out.h5", "--shape-block", "5,3,16,16,1"], "has 5 entries",
                     id="chunks-too-many-axes"),
        pytest.param(lambda d: [d / "src", d / "out", "--compression", "lzma"], "unknown compression", id="codec"),
        pytest.param(lambda d: [d / "src", d / "out.npy", "--compression", "gzip"], "cannot be compressed",
                     id="npy-compressed"),
        pytest.param(lambda d: [d / "src", d / "out.tif"], "unsupported destination type", id="tif-destination"),
        pytest.param(lambda d: [d / "src", d / "exists.h5"], "already exists", id="destination-file-exists"),
        pytest.param(lambda d: [d / "src", d / "src"], "overlap", id="same-path"),
        pytest.param(lambda d: [d / "src", d / "other"], "already exists", id="destination-folder-exists"),
        pytest.param(lambda d: [d / "src", d / "other", "--overwrite"], "neither a split dataset nor a zarr",
                     id="overwrite-refuses-a-foreign-folder"),
    ],
)
def test_convert_bad_input(tmp_path, capsys, argv, message) -> None:
    make(tmp_path / "src")
    (tmp_path / "notes.tif").write_bytes(b"II*\x00 not really a tiff")
    (tmp_path / "exists.h5").write_bytes(b"keep me")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "thesis.tex").write_text("keep me")
    args = [str(a) for a in argv(tmp_path)]
    before = listing(tmp_path)
    snapshot = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    code, out, err = run(capsys, "convert", *args)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("split-dataset: error: ") and message in err
    assert listing(tmp_path) == before  # nothing half-written, no temporary file left behind
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == snapshot


@pytest.mark.parametrize("dst", ["out", "out.h5", "out.npy", "out.zarr", "new/sub/out.h5"],
                         ids=["split", "hdf5", "npy", "zarr", "new-parents"])
def test_failure_while_writing_leaves_nothing(tmp_path, capsys, dst) -> None:
    if dst.endswith(".zarr"):
        pytest.importorskip("zarr")
    root = make(tmp_path / "src")
    _truncate(root / "0003.h5")  # reading the source fails at frame 15, half-way through
    before = listing(tmp_path)
    block = [] if dst.endswith(".npy") else ["--shape-block", "5"]
    code, out, err = run(capsys, "convert", root, tmp_path / dst, *block)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "0003.h5" in err
    assert listing(tmp_path) == before


@pytest.mark.parametrize("dst", ["out", "out.h5", "out.npy"], ids=["split", "hdf5", "npy"])
def test_overwrite_replaces_a_destination(tmp_path, capsys, dst) -> None:
    make(tmp_path / "old", np.zeros((4, 3, 16, 16), np.uint16), (2,))
    convert(tmp_path / "old", tmp_path / dst)
    code, _, err = run(capsys, "convert", make(tmp_path / "src"), tmp_path / dst)
    assert code == 2 and "--overwrite" in err
    code, _, err = run(capsys, "convert", tmp_path / "src", tmp_path / dst, "--overwrite")
    assert code == 0, err
    np.testing.assert_array_equal(_read(str(tmp_path / dst)), X)
    assert listing(tmp_path) == sorted(["old", "src", dst])


def test_convert_into_an_empty_folder(tmp_path) -> None:
    (tmp_path / "out").mkdir()
    convert(make(tmp_path / "src"), tmp_path / "out")
    np.testing.assert_array_equal(SplitDataset(tmp_path / "out")[:], X)


# ----------------------------------------------------------------------------- export-vds


def _read_vds(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as f:
        assert f["stack"].is_virtual
        return f["stack"][:]


@pytest.mark.parametrize(
    "case, out_name",
    [
        pytest.param("padded", "vds.h5", id="padded-beside"),
        pytest.param("zyx_float32_2axes", "vds.h5", id="2-axes-beside"),
        pytest.param("tzyx_uint16", "DATASET.h5", id="beside-with-the-folder-name"),
        pytest.param("yx_int32", "exports/vds.h5", id="sibling-folder"),
    ],
)
def test_export_vds_moves_with_the_folder(tmp_path, capsys, monkeypatch, case, out_name) -> None:
    here = tmp_path / "here"
    shutil.copytree(LEGACY_CASES[case], here / "DATASET")
    out = here / out_name
    out.parent.mkdir(exist_ok=True)
    code, _stdout, err = run(capsys, "export-vds", here / "DATASET", out)
    assert code == 0, err
    expected = np.load(LEGACY / f"{case}.expected.npy")
    shutil.move(str(here), str(tmp_path / "moved"))  # folder and file move together
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with h5py.File(tmp_path / "moved" / out_name, "r") as f:
        sources = {s.file_name for s in f["stack"].virtual_sources()}
    assert all(not os.path.isabs(s) for s in sources)
    np.testing.assert_array_equal(_read_vds(tmp_path / "moved" / out_name), expected)


@pytest.mark.parametrize("out_name", ["ds/stack.h5", "ds/0001.h5", "ds/stack_metadata.json", "ds", "."])
def test_export_vds_refuses_an_output_overlapping_the_dataset(tmp_path, capsys, monkeypatch, out_name) -> None:
    root = make(tmp_path / "ds")
    monkeypatch.chdir(tmp_path)
    before = {p: p.read_bytes() for p in root.iterdir()}
    code, out, err = run(capsys, "export-vds", root, out_name)
    assert code == 2 and out == "" and err.count("\n") == 1 and "overlap" in err, err
    assert {p: p.read_bytes() for p in root.iterdir()} == before


def test_export_vds_carries_metadata_and_refuses_an_existing_file(tmp_path, capsys) -> None:
    root = make(tmp_path / "ds", **META)
    out = tmp_path / "ds.h5"
    assert run(capsys, "export-vds", root, out)[0] == 0
    with h5py.File(out, "r") as f:
        a = f["stack"].attrs
        assert list(a["resolution"]) == [0.5, 5.0, 0.6, 0.6] and a["axis_order"] == "tzyx"
        assert a["fish"] == "F0" and json.loads(a["nested"]) == META["attrs"]["nested"]
    code, _, err = run(capsys, "export-vds", root, out)
    assert code == 2 and "already exists" in err
    assert run(capsys, "export-vds", root, out, "--overwrite")[0] == 0


def test_export_vds_with_missing_blocks(tmp_path, capsys) -> None:
    root = make(tmp_path / "ds")
    (root / "0002.h5").unlink()
    code, out, err = run(capsys, "export-vds", root, tmp_path / "ds.h5")
    assert code == 1 and "0002.h5" in err and "--fill" in err
    assert err.count("\n") == 2 and "warning" in err.splitlines()[0]  # the reader's warning, then the error
    assert not (tmp_path / "ds.h5").exists()
    code, _out, err = run(capsys, "export-vds", root, tmp_path / "ds.h5", "--fill", "7")
    assert code == 0
    expected = X.copy()
    expected[10:15] = 7
    np.testing.assert_array_equal(_read_vds(tmp_path / "ds.h5"), expected)


def test_zarr_group_paths(tmp_path) -> None:
    pytest.importorskip("zarr")
    convert(make(tmp_path / "src", **META), f"{tmp_path}/g.zarr:/acq/raw", shape_block="5,1")
    with open_source(tmp_path / "g.zarr") as src:  # a group holding one array: that array
        assert src.spec.inner == "/acq/raw" and src.chunks == (5, 1, 16, 16)
        assert src.axis_order == "tzyx" and src.attrs == META["attrs"]
        np.testing.assert_array_equal(src[...], X)
    code = main(["convert", f"{tmp_path}/g.zarr:/acq/nothing", str(tmp_path / "out")])
    assert code == 2 and not (tmp_path / "out").exists()


def test_a_virtual_dataset_is_a_source_too(tmp_path) -> None:
    root = make(tmp_path / "ds", **META)
    split_dataset.convert.export_vds(root, tmp_path / "ds.h5")
    out = convert(tmp_path / "ds.h5", tmp_path / "copy")  # the file's one dataset, /stack
    assert out.carried == ("resolution", "units", "axis_order", "frame_interval", "attrs")
    copy = SplitDataset(tmp_path / "copy")
    np.testing.assert_array_equal(copy[:], X)
    assert copy.attrs == META["attrs"] and copy.resolution == META["resolution"]


@pytest.mark.parametrize("dst", ["out", "out.h5", "out.npy"], ids=["split", "hdf5", "npy"])
def test_interrupted_convert_leaves_nothing(tmp_path, monkeypatch, dst) -> None:
    from split_dataset.convert import sinks

    monkeypatch.setattr(sinks, "REGION_BYTES", 4 << 10)
    root = make(tmp_path / "src")
    before = listing(tmp_path)

    def interrupt(done: int, total: int) -> None:
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convert(root, tmp_path / dst, shape_block=None if dst.endswith(".npy") else 5, progress=interrupt)
    assert listing(tmp_path) == before


# ----------------------------------------------------------------------------- damaged HDF5 sources


@pytest.mark.parametrize("pipeline", ["blosc", "shuffle+blosc", "blosc+fletcher32"])
def test_damaged_blosc_header_in_an_hdf5_source_is_refused_not_decoded(tmp_path, pipeline) -> None:
    """A foreign HDF5 file whose blosc chunk header lies: convert raises CorruptSourceError naming the
    file; c-blosc never sees the frame. Out of process: a crash in c-blosc fails the test, not the run."""
    path = tmp_path / "foreign.h5"
    x = np.arange(6 * 32 * 32, dtype=np.uint16).reshape(6, 32, 32)
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=x, chunks=(1, 32, 32), shuffle="shuffle" in pipeline,
                         fletcher32="fletcher32" in pipeline, **hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=1))
    with h5py.File(path, "r") as f:
        offset = f["data"].id.get_chunk_info(2).byte_offset
    raw = bytearray(path.read_bytes())
    raw[offset + 4 : offset + 8] = (2**31 - 1).to_bytes(4, "little")  # blosc nbytes: huge
    raw[offset + 12 : offset + 16] = (40).to_bytes(4, "little")  # cbytes: implausibly small
    path.write_bytes(bytes(raw))
    code = (
        "from split_dataset.convert import convert\n"
        "from split_dataset.errors import CorruptSourceError, CorruptBlockError\n"
        "try:\n"
        f"    convert({str(path) + ':/data'!r}, {str(tmp_path / 'out')!r})\n"
        "except CorruptSourceError as e:\n"
        "    assert isinstance(e, CorruptBlockError)\n"
        "    print('refused:', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("refused: ") and str(path) in out.stdout and "/data" in out.stdout, out.stdout
    assert not (tmp_path / "out").exists()
    assert listing(tmp_path) == ["foreign.h5"]
    cli = subprocess.run([sys.executable, "-m", "split_dataset", "convert", f"{path}:/data", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 1 and cli.stdout == "" and cli.stderr.count("\n") == 1 and str(path) in cli.stderr


def test_an_hdf5_source_is_read_through_the_storage_layer(tmp_path) -> None:
    """Blosc chunks are decoded by the package's reader (never HDF5's filter); indexing is numpy's."""
    path = tmp_path / "foreign.h5"
    x = np.random.default_rng(3).integers(0, 1000, (7, 5, 9), dtype=np.uint16)
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=x, chunks=(2, 5, 4), **hdf5plugin.Blosc(cname="zstd", clevel=3, shuffle=2))
    with open_source(f"{path}:/data") as src:
        assert src.array._handle.mode == "direct"
        for sel in [(), (3,), (slice(None, None, -2), 1), (..., [8, 0, 3]), (np.array([True] * 3 + [False] * 4),),
                    (-1, slice(1, 4), slice(None, None, 3))]:
            np.testing.assert_array_equal(src[sel], x[sel])
    convert(f"{path}:/data", tmp_path / "ds")
    np.testing.assert_array_equal(SplitDataset(tmp_path / "ds")[:], x)


def test_a_virtual_source_over_a_damaged_block_is_refused_not_decoded(tmp_path) -> None:
    """convert from export-vds's output: HDF5 decodes the sources itself, so their frames are validated first."""
    import textwrap

    from split_dataset.convert import export_vds

    x = (np.random.default_rng(0).poisson(20, (8, 2, 32, 32)) + 100).astype(np.uint16)
    root = tmp_path / "ds"
    split_dataset.save(x, root, (4,), fsync=False)
    export_vds(root, tmp_path / "all.h5")
    np.testing.assert_array_equal(convert(f"{tmp_path / 'all.h5'}:/stack", tmp_path / "copy.npy").shape, x.shape)
    with h5py.File(root / "0001.h5") as f:
        d = f[next(iter(f))]
        addr = d.id.get_chunk_info(0).byte_offset
    with open(root / "0001.h5", "r+b") as f:  # typesize 3 for a uint16 array
        f.seek(addr + 3)
        f.write(bytes([3]))
    code = textwrap.dedent(f"""
        from split_dataset.convert import convert
        from split_dataset.errors import CorruptBlockError
        try:
            convert({str(tmp_path / 'all.h5') + ':/stack'!r}, {str(tmp_path / 'copy2.npy')!r})
        except CorruptBlockError as e:
            print("refused", "0001.h5" in str(e))
        """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.split() == ["refused", "True"], out
