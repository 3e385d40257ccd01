"""The ``split-dataset`` command line: info, verify, convert, export-vds, demo; exit codes and bad input.

Commands run in-process through ``split_dataset.cli.main`` (stdout/stderr captured), a
couple through a subprocess (``python -m split_dataset``, the console script). numpy is
the oracle for every array that comes out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (the blosc filter, to read blocks and virtual datasets with h5py)
import numpy as np
import pytest
from conftest import LEGACY, LEGACY_CASES, save_fast

import split_dataset
from split_dataset import SplitDataset
from split_dataset.cli import main
from split_dataset.storage import read_checksums, sha256_file
from split_dataset.verify import info, verify

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
    code, _out, err = run(capsys, "convert", "only-one")
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
                      "checksums", "chunk_index", "frames", "warnings"}
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
    code, out, _err = run(capsys, "info", tmp_path / "acq")
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
    assert [line.split(":")[0] for line in out.splitlines()[:-1] if not line.startswith("note:")] == ["0002.h5"] * len(kinds)
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



def test_ctrl_c_exits_130(tmp_path, capsys, monkeypatch) -> None:
    import split_dataset.convert as conv

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(conv, "convert", interrupted)
    code, _out, err = run(capsys, "convert", make(tmp_path / "src"), tmp_path / "out")
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
        (E.SourceError("'x.tif': unknown source type"), 2),
        (E.CorruptSourceError(Path("/data/foreign.h5"), "/data: the blosc frame's nbytes is 2147483647"), 1),
        (E.ChunkIndexError("'/data/x/chunk_index.bin': its checksum does not match its content"), 1),
        (E.VirtualRefsError("'/data/x/0004.h5': in-file chunks (1, 6, 10), expected (2, 6, 10)"), 2),
        (E.RemoteError("https://host/ds/0003.h5", "reading byte ranges failed after 5 tries: HTTP status 503"), 1),
        (RecursionError("maximum recursion depth exceeded while decoding a JSON array"), 1),
        (MemoryError(), 1),
        (OverflowError("int too large to convert to float"), 1),
    ]


def test_every_package_error_is_one_line_with_its_exit_code(capsys, monkeypatch) -> None:
    import split_dataset.errors as E
    import split_dataset.verify as ver

    cases = _errors()
    covered = {type(e) for e, _ in cases}
    classes = {getattr(E, n) for n in E.__all__}
    assert {c for c in classes if not issubclass(c, Warning)} <= covered, "a new error class needs a case here"
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
    code, out, _err = run(capsys, "info", root)
    assert code == 0 and '"fish": "F0"' in out


def test_info_shows_a_foreign_codec_description(capsys) -> None:
    from split_dataset.cli import _codec

    assert _codec({"filters": 5}) == '{"filters": 5}'
    assert _codec({"filters": ["shuffle", "lzf"]}) == "shuffle, lzf"
    assert _codec("lzf") == "lzf" and _codec(None) == "unknown"


def test_checksum_summary_never_claims_a_checksum_it_could_not_compute(tmp_path, capsys, monkeypatch) -> None:
    """A block whose SHA-256 cannot be computed: not 'all 5 ... match', but how many were verified."""
    import split_dataset.verify as ver

    root = make(tmp_path / "ds")
    real = ver.sha256_file

    def unreadable(path: Path) -> str:
        if path.name == "0002.h5":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(ver, "sha256_file", unreadable)
    report = verify(root)
    assert report.n_checksums_matched == 4 and not report.checksums_verified
    assert [(p.file, p.kind) for p in report.problems] == [("0002.h5", "corrupt")]
    code, out, _ = run(capsys, "verify", root)
    assert code == 1
    summary = out.splitlines()[-1]
    assert "all 5" not in summary and summary.endswith(
        "4 of the 5 SHA-256 checksums verified (the others could not be computed)"), summary


def test_checksum_summary_of_a_refused_sha256sums(tmp_path, capsys) -> None:
    root = make(tmp_path / "ds")
    os.replace(root / "SHA256SUMS", tmp_path / "sums")
    os.symlink(tmp_path / "sums", root / "SHA256SUMS")
    code, out, _ = run(capsys, "verify", root)
    assert code == 1 and out.startswith("SHA256SUMS: corrupt: is a symbolic link")
    assert out.splitlines()[-1].endswith("checksums not checked (SHA256SUMS was refused, see above)")
