"""The ``split-dataset`` command line: info, verify, convert, export-vds, demo; exit codes and bad input.

Commands run in-process through ``split_dataset.cli.main`` (stdout/stderr captured), a
couple through a subprocess (``python -m split_dataset``, the console script). numpy is
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
import hdf5plugin  # noqa: F401  (the blosc filter, to read blocks and virtual datasets with h5py)
import numpy as np
import pytest

import split_dataset
from split_dataset import SplitDataset
from split_dataset.cli import main
from split_dataset.convert import convert, open_source, parse_spec
from split_dataset.storage import read_checksums, sha256_file
from split_dataset.verify import info, verify

from conftest import LEGACY, LEGACY_CASES, save_fast

SHAPE = (23, 3, 16, 16)  # 5 files of 5 frames, the last one holds 3
X = np.random.default_rng(0).integers(0, 1000, SHAPE, dtype=np.uint16)
META = dict(resolution=(0.5, 5.0, 0.6, 0.6), units=("s", "um", "um", "um"), frame_interval=0.5,
            attrs={"fish": "F0", "n": [1, 2], "nested": {"a": 1, "b": [1.5, "x"]}, "ok": True})


def make(path: Path, x: np.ndarray = X, block=(5,), **kwargs) -> Path:
    save_fast(x, path, block, **kwargs).close()
    return path


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ----------------------------------------------------------------------------- help, entry points


@pytest.mark.parametrize("argv", [[], ["info"], ["verify"], ["convert"], ["export-vds"], ["demo"]],
                         ids=["top", "info", "verify", "convert", "export-vds", "demo"])
def test_help_on_every_command(capsys, argv) -> None:
    code, out, err = run(capsys, *argv, "--help")
    assert code == 0 and err == ""
    assert out.startswith(f"usage: split-dataset {' '.join(argv)}".rstrip())
    assert "exit codes:" in out and "  2    usage error or bad input" in out


def test_usage_errors_exit_2(capsys) -> None:
    code, out, err = run(capsys)
    assert code == 2 and "required: COMMAND" in err
    code, out, err = run(capsys, "frobnicate")
    assert code == 2 and "invalid choice: 'frobnicate'" in err
    code, out, err = run(capsys, "convert", "only-one")
    assert code == 2 and "required: DST" in err


def test_python_m_and_console_script(tmp_path) -> None:
    out = subprocess.run([sys.executable, "-m", "split_dataset", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("usage: split-dataset ")
    script = Path(sys.executable).parent / "split-dataset"
    if not script.exists():
        pytest.skip("the console script is not installed in this environment")
    ok = subprocess.run([str(script), "verify", str(LEGACY / "tzyx_uint16")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "checksums not available" in ok.stdout
    bad = subprocess.run([str(script), "info", str(tmp_path / "nope")], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.count("\n") == 1 and bad.stderr.startswith("split-dataset: error: ")


# ----------------------------------------------------------------------------- info


def test_info_json_and_text(tmp_path, capsys) -> None:
    root = make(tmp_path / "ds", **META)
    code, out, err = run(capsys, "info", root, "--json")
    assert code == 0 and err == ""
    d = json.loads(out)
    assert set(d) == {"path", "shape", "shape_in_metadata", "dtype", "shape_block", "chunks", "padding", "n_blocks",
                      "n_blocks_present", "missing_blocks", "codec", "nbytes", "bytes_on_disk", "compression_ratio",
                      "axis_order", "resolution", "units", "frame_interval", "frame_rate", "attrs", "complete",
                      "checksums", "warnings"}
    on_disk = sum((root / f"{i:04d}.h5").stat().st_size for i in range(5))
    assert (d["shape"], d["dtype"], d["shape_block"], d["n_blocks"]) == ([23, 3, 16, 16], "uint16", [5, 3, 16, 16], 5)
    assert d["bytes_on_disk"] == on_disk and d["nbytes"] == X.nbytes
    assert d["compression_ratio"] == pytest.approx(X.nbytes / on_disk, rel=1e-3)
    assert d["codec"] == {"name": "blosc", "cname": "lz4", "clevel": 5, "shuffle": "byte", "blocksize": "rows"}
    assert d["resolution"] == [0.5, 5.0, 0.6, 0.6] and d["units"] == ["s", "um", "um", "um"]
    assert (d["frame_interval"], d["frame_rate"], d["axis_order"]) == (0.5, 2.0, "tzyx")
    assert d["attrs"] == META["attrs"] and d["complete"] is True and d["checksums"] is True

    code, out, err = run(capsys, "info", root)
    assert code == 0
    lines = dict(line.split(None, 1) for line in out.splitlines() if not line.startswith("frame rate"))
    assert lines["shape"] == "23 × 3 × 16 × 16 (tzyx), uint16"
    assert lines["blocks"] == "5 × 3 × 16 × 16, 5 files"
    assert lines["codec"] == "blosc lz4, level 5, byte shuffle"
    assert lines["resolution"] == "t 0.5 s, z 5 um, y 0.6 um, x 0.6 um"
    assert lines["complete"] == "yes"
    assert "frame rate  2 Hz" in out


def test_info_of_an_old_dataset_reads_the_codec_from_the_blocks(capsys) -> None:
    d = info(LEGACY / "tzyx_uint16")
    assert d["codec"] == {"name": "blosc", "cname": "blosclz", "clevel": 9, "shuffle": "byte"}
    assert d["chunks"] is not None and d["complete"] is None and d["checksums"] is False
    code, out, _ = run(capsys, "info", LEGACY / "tzyx_uint16")
    assert code == 0 and "not recorded by the writer" in out and "resolution  not recorded" in out


def test_info_of_a_stopped_acquisition(tmp_path, capsys) -> None:
    w = split_dataset.SplitDatasetWriter(tmp_path / "acq", (3, 4), "uint16", frames_per_file=4, fsync=False)
    w.append(np.ones((10, 3, 4), "uint16"))
    w.abort()
    d = info(tmp_path / "acq")
    assert d["complete"] is False and d["shape"] == [10, 3, 4]
    (tmp_path / "acq" / "0001.h5").unlink()
    code, out, err = run(capsys, "info", tmp_path / "acq")
    assert code == 0 and "complete    no" in out
    assert "shape       4 × 3 × 4 (zyx), uint16; the metadata describes 10 × 3 × 4" in out
    assert out.splitlines()[-1].startswith("warning") and "block files hold 4" in out


# ----------------------------------------------------------------------------- verify


def test_verify_a_whole_dataset(tmp_path, capsys) -> None:
    root = make(tmp_path / "ds")
    calls = []
    report = verify(root, progress=lambda done, total: calls.append((done, total)))
    assert report.ok and report.checksums_available and report.n_checked == report.n_blocks == 5
    assert calls[0] == (0, 5) and calls[-1] == (5, 5)
    code, out, err = run(capsys, "verify", root)
    assert code == 0 and err == ""
    assert out.splitlines()[-1].startswith("OK: ") and out.splitlines()[-1].endswith(
        "all 5 SHA-256 checksums match SHA256SUMS")


def test_verify_legacy_dataset_without_checksums(capsys) -> None:
    report = verify(LEGACY / "tzyx_uint16")
    assert report.ok and not report.checksums_available and report.n_checked == 5
    code, out, _ = run(capsys, "verify", LEGACY / "tzyx_uint16")
    assert code == 0 and "checksums not available" in out


@pytest.mark.parametrize("name", sorted(LEGACY_CASES))
def test_verify_every_legacy_fixture(name) -> None:
    report = verify(LEGACY_CASES[name])
    assert report.ok, report.problems
    assert report.n_checked == report.n_blocks > 0


def _flip_byte_in_chunk(path: Path) -> None:
    """Flip one bit in the middle of the stored (compressed) bytes of the block's first chunk."""
    with h5py.File(path, "r") as f:
        chunk = f["stack_4D"].id.get_chunk_info(0)
    offset = chunk.byte_offset + chunk.size // 2
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0x10]))


def _truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


def _wrong_shape(path: Path) -> None:
    path.unlink()
    with h5py.File(path, "w") as f:
        f["stack_4D"] = np.zeros((4, 3, 16, 16), np.uint16)


def _wrong_dtype(path: Path) -> None:
    path.unlink()
    with h5py.File(path, "w") as f:
        f["stack_4D"] = np.zeros((5, 3, 16, 16), np.float32)


def _garbage(path: Path) -> None:
    path.write_bytes(np.random.default_rng(1).integers(0, 256, path.stat().st_size, dtype=np.uint8).tobytes())


@pytest.mark.parametrize(
    "damage, compression, kinds",
    [
        pytest.param(_flip_byte_in_chunk, None, ["checksum"], id="flipped-byte-raw"),
        pytest.param(_flip_byte_in_chunk, "blosc-lz4", ["checksum"], id="flipped-byte-blosc"),
        pytest.param(_truncate, "blosc-lz4", ["corrupt", "checksum"], id="truncated"),
        pytest.param(Path.unlink, "blosc-lz4", ["missing"], id="missing"),
        pytest.param(_wrong_shape, "blosc-lz4", ["mismatch", "checksum"], id="wrong-shape"),
        pytest.param(_wrong_dtype, "blosc-lz4", ["mismatch", "checksum"], id="wrong-dtype"),
        pytest.param(_garbage, "blosc-lz4", ["corrupt", "checksum"], id="random-bytes"),
    ],
)
def test_verify_names_the_damaged_block(tmp_path, capsys, damage, compression, kinds) -> None:
    root = make(tmp_path / "ds", compression=compression)
    damage(root / "0002.h5")
    if damage is _flip_byte_in_chunk:  # the point: the damaged block still decodes, to other values
        with h5py.File(root / "0002.h5", "r") as f:
            decoded = f["stack_4D"][:]
        assert decoded.shape == (5, 3, 16, 16) and not np.array_equal(decoded, X[10:15])
    report = verify(root)
    assert not report.ok
    assert report.damaged_files == ["0002.h5"]
    assert sorted(p.kind for p in report.problems) == sorted(kinds)
    assert report.n_checked == (5 if kinds == ["checksum"] else 4)  # a block of the wrong shape or dtype is not decoded
    code, out, err = run(capsys, "verify", root)
    assert code == 1 and err == ""
    assert [line.split(":")[0] for line in out.splitlines()[:-1]] == ["0002.h5"] * len(kinds)
    summary = out.splitlines()[-1]
    assert summary.startswith("DAMAGED: ")
    if "checksum" in kinds:  # the summary tells the truth about checksums
        assert summary.endswith("1 checksum problem: 1 block differs from its SHA-256 in SHA256SUMS"), summary
    else:
        assert "checksum problem" not in summary and "all 5" not in summary, summary


def test_verify_names_every_problem_at_once(tmp_path, capsys) -> None:
    root = make(tmp_path / "ds")
    (root / "0001.h5").unlink()
    _truncate(root / "0003.h5")
    _wrong_shape(root / "0004.h5")
    code, out, _ = run(capsys, "verify", root, "--json")
    assert code == 1
    d = json.loads(out)
    assert d["ok"] is False and d["checksums_available"] is True and d["n_blocks"] == 5
    named = {(p["file"], p["kind"]) for p in d["problems"]}
    assert {("0001.h5", "missing"), ("0003.h5", "corrupt"), ("0004.h5", "mismatch")} <= named
    assert {f for f, _ in named} == {"0001.h5", "0003.h5", "0004.h5"}


def test_verify_flags_a_block_without_checksum_line(tmp_path) -> None:
    root = make(tmp_path / "ds")
    sums = read_checksums(root)
    del sums["0003.h5"]
    (root / "SHA256SUMS").write_text("".join(f"{d}  {n}\n" for n, d in sums.items()))
    report = verify(root)
    assert [(p.file, p.kind) for p in report.problems] == [("0003.h5", "no-checksum")]


def test_verify_a_truncated_acquisition(tmp_path, capsys) -> None:
    root = make(tmp_path / "ds")
    for name in ("0003.h5", "0004.h5"):
        (root / name).unlink()
    code, out, _ = run(capsys, "verify", root)
    assert code == 1
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("00")] == ["0003.h5", "0004.h5"]
    assert "15" in next(line for line in out.splitlines() if line.startswith("note: the metadata describes 23"))


def test_verify_unreadable_metadata_and_not_a_dataset(tmp_path, capsys) -> None:
    root = make(tmp_path / "ds")
    (root / "stack_metadata.json").write_text('{"shape_full": [23, 3')
    code, out, err = run(capsys, "verify", root)
    assert code == 1 and out.startswith("stack_metadata.json: metadata: ")
    (tmp_path / "empty").mkdir()
    for path in (tmp_path / "empty", tmp_path / "nowhere"):
        code, out, err = run(capsys, "verify", path)
        assert code == 2 and out == ""
        assert err.count("\n") == 1 and err.startswith("split-dataset: error: ") and str(path) in err


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
    code, out, err = run(capsys, "convert", spec, tmp_path / "probs", "--shape-block", "10,64,64,1")
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

    if dst.endswith(".zarr"):
        pytest.importorskip("zarr")
    monkeypatch.setattr(conv, "_REGION_BYTES", 1 << 20)  # regions of 1 MiB for HDF5, .npy and zarr destinations
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
    code, stdout, err = run(capsys, "export-vds", here / "DATASET", out)
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
    code, out, err = run(capsys, "export-vds", root, tmp_path / "ds.h5", "--fill", "7")
    assert code == 0
    expected = X.copy()
    expected[10:15] = 7
    np.testing.assert_array_equal(_read_vds(tmp_path / "ds.h5"), expected)


# ----------------------------------------------------------------------------- demo


def test_demo_writes_reads_and_reruns(tmp_path, capsys) -> None:
    out = tmp_path / "demo_output"
    code, stdout, err = run(capsys, "demo", out, "--time-points", "12", "-q")
    assert code == 0, err
    assert "read back: the mean over time" in stdout
    assert "shape       12 × 8 × 256 × 256 (tzyx), uint16" in stdout and "complete    yes" in stdout
    ds = SplitDataset(out)
    assert ds.shape == (12, 8, 256, 256) and ds.n_blocks == 2 and ds.frame_rate == 2.0
    assert ds.units == ("s", "um", "um", "um") and ds.attrs["created_by"] == "split-dataset demo"
    volume = ds[3]
    assert volume.max() > 5 * np.median(volume)  # bright cells on a dim background
    assert verify(out).ok
    digest = sha256_file(out / "0000.h5")
    code, stdout, err = run(capsys, "demo", out, "--time-points", "12", "-q")  # again: replaces its own output
    assert code == 0, err
    assert sha256_file(out / "0000.h5") == digest  # deterministic
    other = tmp_path / "precious"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    code, stdout, err = run(capsys, "demo", other, "--time-points", "2")
    assert code == 2 and "--overwrite" in err and listing(other) == ["notes.txt"]


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
    import split_dataset.convert as conv

    monkeypatch.setattr(conv, "_REGION_BYTES", 4 << 10)
    root = make(tmp_path / "src")
    before = listing(tmp_path)

    def interrupt(done: int, total: int) -> None:
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convert(root, tmp_path / dst, shape_block=None if dst.endswith(".npy") else 5, progress=interrupt)
    assert listing(tmp_path) == before


def test_ctrl_c_exits_130(tmp_path, capsys, monkeypatch) -> None:
    import split_dataset.convert as conv

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(conv, "convert", interrupted)
    code, out, err = run(capsys, "convert", make(tmp_path / "src"), tmp_path / "out")
    assert code == 130 and err == "split-dataset: error: interrupted\n"


# ----------------------------------------------------------------------------- one-line errors


def _errors() -> list:
    from split_dataset import errors as E

    p = Path("/data/fish1/raw/0003.h5")
    return [
        (E.SplitDatasetError("something went wrong"), 1),
        (E.InvalidIndexError("index 1.5 is a float"), 2),
        (E.NotASplitDatasetError("'/data/x' is not a split dataset"), 2),
        (E.MetadataError("'/data/x/stack_metadata.json': shape_full must be a list"), 1),
        (E.MissingBlockError(p, (3, 0)), 1),
        (E.CorruptBlockError(p, (3, 0), "truncated"), 1),
        (E.BlockMismatchError(f"{str(p)!r}: expected shape (5, 3)"), 1),
        (E.UnsafeDatasetError(f"{str(p)!r} is an external link"), 1),
        (E.NotRegularFileError(f"{str(p)!r} is a FIFO, not a regular file; refused"), 1),
        (E.WriteError("writing block 3 failed", frames_safe=15), 1),
        (E.DiskFullError("no space left for block 4", frames_safe=20, err=28), 1),
        (E.WriterLockedError("'/data/x' is being written by process 12 on host"), 2),
        (RecursionError("maximum recursion depth exceeded while decoding a JSON array"), 1),
        (MemoryError(), 1),
        (OverflowError("int too large to convert to float"), 1),
    ]


def test_every_package_error_is_one_line_with_its_exit_code(capsys, monkeypatch) -> None:
    import split_dataset.errors as E
    import split_dataset.verify as ver

    cases = _errors()
    covered = {type(e) for e, _ in cases}
    assert {getattr(E, n) for n in E.__all__} <= covered, "a new error class needs a case here"
    for error, expected in cases:
        def raising(*args, _e=error, **kwargs):
            raise _e

        monkeypatch.setattr(ver, "info", raising)
        monkeypatch.setattr(ver, "verify", raising)
        for command in ("info", "verify"):
            code, out, err = run(capsys, command, "/data/fish1/raw")
            assert (code, out) == (expected, ""), (error, code)
            assert err.count("\n") == 1 and err.startswith("split-dataset: error: "), (error, err)
            assert "Traceback" not in err
            text = str(error)
            assert (text and text in err) or type(error) is MemoryError, (error, err)


def test_a_bug_keeps_its_traceback(monkeypatch) -> None:
    import split_dataset.verify as ver

    def buggy(*args, **kwargs):
        raise AttributeError("'NoneType' object has no attribute 'shape'")

    monkeypatch.setattr(ver, "info", buggy)
    with pytest.raises(AttributeError):
        main(["info", "somewhere"])


def _run_cli(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "split_dataset", *map(str, argv)], capture_output=True, text=True,
                          timeout=120)


def _read_json_raises_metadata_error(meta: Path) -> bool:
    """Whether ``storage.read_json`` turns what ``json.loads`` raises on `meta` into MetadataError."""
    from split_dataset.errors import MetadataError
    from split_dataset.storage import read_json

    try:
        read_json(meta)
    except MetadataError:
        return True
    except (ValueError, RecursionError):
        return False
    return True


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda t: t.replace('"shape_full": [23', '"shape_full": [1' + "0" * 5000), id="5000-digit-shape"),
        pytest.param(lambda t: t.replace('"frame_interval": 0.5', '"frame_interval": 1' + "0" * 5000),
                     id="5000-digit-interval"),
        pytest.param(lambda t: t.replace('"resolution": [0.5', '"resolution": [NaN'), id="nan-resolution"),
        pytest.param(lambda t: t.replace('"shape_block": [5', '"shape_block": [true'), id="bool-block"),
        pytest.param(lambda t: t.replace('"shape_block": [5', '"shape_block": [5.5'), id="float-block"),
        pytest.param(lambda t: t.replace('"attrs": {', '"attrs": ["x", {'), id="attrs-not-object"),
        pytest.param(lambda t: t.replace('"shape_full": [23', '"shape_full": [-23'), id="negative-shape"),
        pytest.param(lambda t: t.replace('"dtype": "<u2"', '"dtype": "(1000000000,)i8"'), id="absurd-dtype"),
    ],
)
def test_malformed_metadata_from_the_command_line(tmp_path, edit) -> None:
    """The adversarial tester's cases, through the real entry point: one line naming the file, exit 1."""
    root = make(tmp_path / "ds", **META)
    meta = root / "stack_metadata.json"
    text = json.dumps(json.loads(meta.read_text()))
    changed = edit(text)
    assert changed != text
    meta.write_text(changed)
    for command in ("info", "verify"):
        out = _run_cli(command, root)
        assert "Traceback" not in out.stderr, out.stderr
        if not _read_json_raises_metadata_error(meta):
            assert out.returncode in (1, 2) and out.stderr.count("\n") == 1, out.stderr  # one line even so
            pytest.xfail("storage.read_json does not turn json.loads' ValueError into MetadataError yet (the lead's change)")
        if command == "info":
            assert out.returncode == 1 and out.stdout == "", out
            assert out.stderr.count("\n") == 1 and "stack_metadata.json" in out.stderr, out.stderr
            assert len(out.stderr) < 600
        else:  # verify reports the metadata as the damaged file
            assert out.returncode == 1 and out.stdout.startswith("stack_metadata.json: metadata: "), out
            assert len(out.stdout) < 2000 and out.stdout.splitlines()[-1].startswith("DAMAGED: ")


def test_deeply_nested_metadata_from_the_command_line(tmp_path) -> None:
    from split_dataset.errors import MetadataError
    from split_dataset.storage import read_json

    root = make(tmp_path / "ds")
    meta = root / "stack_metadata.json"
    meta.write_text('{"shape_full": [23, 3, 16, 16], "shape_block": [5, 3, 16, 16], "attrs": '
                    + "[" * 100_000 + "]" * 100_000 + "}")
    out = _run_cli("info", root)
    assert out.returncode == 1 and "Traceback" not in out.stderr and out.stderr.count("\n") == 1, out.stderr
    try:
        read_json(meta)
    except MetadataError:
        pass
    except RecursionError:
        pytest.xfail("storage.read_json does not turn RecursionError into MetadataError yet (the lead's change)")
    assert "stack_metadata.json" in out.stderr, out.stderr


def test_info_json_of_attrs_that_are_a_mapping(tmp_path, capsys, monkeypatch) -> None:
    """``info --json`` prints whatever mapping ``ds.attrs`` is (a dict today, a DatasetAttrs once wired)."""
    import split_dataset.verify as ver
    from split_dataset.attrs import DatasetAttrs

    root = make(tmp_path / "ds", **META)
    real = ver.info
    monkeypatch.setattr(ver, "info", lambda path: {**real(path), "attrs": DatasetAttrs(root)})
    code, out, err = run(capsys, "info", "--json", root)
    assert code == 0 and json.loads(out)["attrs"] == META["attrs"]
    code, out, err = run(capsys, "info", root)
    assert code == 0 and '"fish": "F0"' in out


def test_info_shows_a_foreign_codec_description(capsys) -> None:
    from split_dataset.cli import _codec

    assert _codec({"filters": 5}) == '{"filters": 5}'
    assert _codec({"filters": ["shuffle", "lzf"]}) == "shuffle, lzf"
    assert _codec("lzf") == "lzf" and _codec(None) == "unknown"
