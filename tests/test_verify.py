"""verify: writer notes, the truth about checksums, open() failures, decoding only through the reader
and only what the metadata justifies; export-vds never overwrites the dataset it maps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest
from test_locks import killed_holder

import split_dataset
from split_dataset import SplitDatasetWriter
from split_dataset.convert import export_vds
from split_dataset.errors import BlockMismatchError
from split_dataset.verify import verify

X = np.arange(10 * 4 * 6, dtype=np.uint16).reshape(10, 4, 6)


def make(path: Path, **kw) -> split_dataset.SplitDataset:
    return split_dataset.save(X, path, (4,), fsync=False, **kw)


def test_note_of_a_live_writer(tmp_path) -> None:
    w = SplitDatasetWriter(tmp_path / "acq", (4, 6), np.uint16, 4, fsync=False)
    w.append(X[:5])
    w.flush()
    report = verify(tmp_path / "acq")
    assert report.ok and any(f"process {os.getpid()}" in n and "may still be growing" in n for n in report.notes)
    w.close()
    assert not any("writer" in n for n in verify(tmp_path / "acq").notes)


def test_note_of_a_dead_writer_says_it_is_gone_and_how_to_resume(tmp_path) -> None:
    make(tmp_path / "ds")
    pid = killed_holder(tmp_path / "ds")
    notes = verify(tmp_path / "ds").notes
    assert not any("may still be growing" in n for n in notes), notes
    gone = [n for n in notes if "no longer runs" in n]
    assert len(gone) == 1 and f"process {pid} on " in gone[0] and 'mode="a"' in gone[0], notes


def test_report_tells_the_truth_about_checksums(tmp_path) -> None:
    make(tmp_path / "ds")
    report = verify(tmp_path / "ds")
    assert report.checksums_verified and report.n_checksums_matched == 3
    assert report.to_dict()["checksums_verified"] is True and report.to_dict()["checksums_matched"] == 3
    with h5py.File(tmp_path / "other.h5", "w") as f:  # a block that decodes but is not the one recorded
        f.create_dataset("stack_3D", data=X[4:8] + 1)
    os.replace(tmp_path / "other.h5", tmp_path / "ds" / "0001.h5")
    report = verify(tmp_path / "ds")
    assert [p.kind for p in report.problems] == ["checksum"]
    assert report.checksums_available and not report.checksums_verified and report.n_checksums_matched == 2
    assert report.to_dict()["checksums_verified"] is False


def test_an_exception_opening_the_dataset_is_a_problem(tmp_path, monkeypatch) -> None:
    import split_dataset.verify as v

    make(tmp_path / "ds")

    def refuse(*a, **k):
        raise BlockMismatchError("block (1, 0, 0) in '0001.h5': expected (4, 4, 6) uint16, got (4, 4, 7) uint16")

    monkeypatch.setattr(v, "SplitDataset", refuse)
    report = verify(tmp_path / "ds")
    assert not report.ok
    assert [(p.kind, "BlockMismatchError" in p.message) for p in report.problems] == [("open", True)]


def test_blosc_blocks_are_decoded_by_the_package_reader_not_hdf5s_filter(tmp_path, monkeypatch) -> None:
    make(tmp_path / "ds")
    calls = []
    real = h5py.Dataset.__getitem__

    def spy(self, *a, **k):
        calls.append(self.name)
        return real(self, *a, **k)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    report = verify(tmp_path / "ds")
    assert report.ok and report.n_checked == 3
    assert calls == []


def test_blocks_are_decoded_chunk_by_chunk_through_check_chunks(tmp_path, monkeypatch) -> None:
    """Every stored chunk decoded once, through BlockHandle.check_chunks (bounded by the file), no slab reads."""
    from split_dataset.storage import BlockHandle

    make(tmp_path / "ds")
    checked, reads = [], []
    real = BlockHandle.check_chunks

    def spy(self):
        result = real(self)
        checked.append((self.path.name, result))
        return result

    monkeypatch.setattr(BlockHandle, "check_chunks", spy)
    monkeypatch.setattr(BlockHandle, "read", lambda *a: reads.append(a))
    assert verify(tmp_path / "ds").ok
    assert sorted(checked) == [("0000.h5", (4, 4)), ("0001.h5", (4, 4)), ("0002.h5", (2, 2))]
    assert reads == []


def test_a_block_declaring_a_huge_shape_that_the_metadata_also_claims(tmp_path) -> None:
    """Metadata and block both claim 2**40 frames, no chunk written: reported at once, nothing decoded."""
    path = tmp_path / "ds"
    split_dataset.save(np.zeros((10, 4, 6), np.uint16), path, (10,), fsync=False, checksums=False)
    os.remove(path / "0000.h5")
    with h5py.File(path / "0000.h5", "w") as f:
        f.create_dataset("stack_3D", shape=(2**40, 4, 6), dtype="uint16", chunks=(1, 4, 6),
                         **hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=1))
    meta = json.loads((path / "stack_metadata.json").read_text())
    meta.update(shape_full=[2**40, 4, 6], shape_block=[2**40, 4, 6])
    (path / "stack_metadata.json").write_text(json.dumps(meta))
    t0 = time.perf_counter()
    report = verify(path)
    assert time.perf_counter() - t0 < 10
    assert [(p.file, p.kind) for p in report.problems] == [("0000.h5", "corrupt")], report.problems
    assert f"only 0 of the {2**40} chunks it needs are stored" in report.problems[0].message


def test_a_block_declaring_a_huge_shape_is_reported_not_decoded(tmp_path) -> None:
    path = tmp_path / "ds"
    make(path, checksums=False)
    os.remove(path / "0001.h5")
    with h5py.File(path / "0001.h5", "w") as f:  # 1.4 KB on disk, 2^46 elements declared
        f.create_dataset("stack_3D", shape=(2**40, 4, 6), dtype="uint16", chunks=(1, 4, 6))
    assert (path / "0001.h5").stat().st_size < 10_000
    t0 = time.perf_counter()
    report = verify(path)
    assert time.perf_counter() - t0 < 10
    assert {p.file for p in report.problems} == {"0001.h5"}, report.problems
    assert any(p.kind == "mismatch" and "not decoded" in p.message for p in report.problems), report.problems
    assert report.n_checked == 2


def test_a_block_of_another_dtype_is_not_decoded(tmp_path) -> None:
    path = tmp_path / "ds"
    make(path, checksums=False)
    os.remove(path / "0001.h5")
    with h5py.File(path / "0001.h5", "w") as f:
        f.create_dataset("stack_3D", data=X[4:8].astype("float64"))
    report = verify(path)
    assert next(p.kind for p in report.problems if p.file == "0001.h5") == "mismatch"
    assert report.n_checked == 2


def test_a_fifo_in_place_of_a_block_is_never_opened(tmp_path) -> None:
    path = tmp_path / "ds"
    make(path)
    os.remove(path / "0001.h5")
    os.mkfifo(path / "0001.h5")
    code = f"from split_dataset.verify import verify; r = verify({str(path)!r}); print([(p.file, p.kind) for p in r.problems])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "('0001.h5', 'corrupt')" in out.stdout, out.stderr


def test_damaged_blosc_header_does_not_crash_verify(tmp_path) -> None:
    """Run out of process: a segfault in a C decoder would otherwise take the test run with it."""
    path = tmp_path / "ds"
    make(path)
    raw = bytearray((path / "0001.h5").read_bytes())
    with h5py.File(path / "0001.h5", "r") as f:
        offset = f["stack_3D"].id.get_chunk_info(0).byte_offset
    raw[offset + 4 : offset + 8] = (2**31 - 1).to_bytes(4, "little")  # blosc nbytes: huge
    raw[offset + 12 : offset + 16] = (40).to_bytes(4, "little")  # cbytes: implausibly small
    (path / "0001.h5").write_bytes(bytes(raw))
    code = f"from split_dataset.verify import verify; r = verify({str(path)!r}); print(sorted({{p.kind for p in r.problems}}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "corrupt" in out.stdout or "checksum" in out.stdout


# ----------------------------------------------------------------------------- export-vds overlaps


@pytest.mark.parametrize("target", ["0000.h5", "stack_metadata.json", ".", "sub/x.h5", "SHA256SUMS", ".."])
def test_export_vds_refuses_to_overwrite_its_own_dataset(tmp_path, target) -> None:
    path = tmp_path / "ds"
    make(path)
    before = {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()}
    out = (path / target) if target != ".." else tmp_path
    with pytest.raises(ValueError, match="overlap"):
        export_vds(path, out, overwrite=True)
    assert {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()} == before
    assert verify(path).ok


def test_export_vds_beside_the_dataset_still_works(tmp_path) -> None:
    path = tmp_path / "ds"
    make(path)
    export_vds(path, tmp_path / "ds.h5")
    export_vds(path, tmp_path / "ds.h5", overwrite=True)
    with h5py.File(tmp_path / "ds.h5") as f:
        np.testing.assert_array_equal(f["stack"][:], X)


def test_metadata_is_never_rewritten_by_verify(tmp_path) -> None:
    make(tmp_path / "ds")
    before = (tmp_path / "ds" / "stack_metadata.json").read_bytes()
    verify(tmp_path / "ds")
    assert (tmp_path / "ds" / "stack_metadata.json").read_bytes() == before
    assert json.loads(before)["complete"] is True


def test_a_chunk_that_is_not_stored_is_reported_not_read_as_fill(tmp_path) -> None:
    """A chunk missing from a block's index reads as the fill value, silently: verify must say so."""
    path = tmp_path / "ds"
    make(path, checksums=False)
    os.remove(path / "0001.h5")
    with h5py.File(path / "0001.h5", "w") as f:
        d = f.create_dataset("stack_3D", shape=(4, 4, 6), dtype="uint16", chunks=(1, 4, 6))
        d[:3] = X[4:7]  # the last frame's chunk is never written
    report = verify(path)
    assert [(p.file, p.kind) for p in report.problems] == [("0001.h5", "corrupt")]
    assert "not stored" in report.problems[0].message and "(3, 0, 0)" in report.problems[0].message
    assert report.n_checked == 2


# ----------------------------------------------------------------------------- a running acquisition


def test_newest_blocks_of_a_live_writer_without_checksum_are_a_note(tmp_path) -> None:
    """While a writer holds the folder, the blocks after the last one in SHA256SUMS are a note."""
    w = SplitDatasetWriter(tmp_path / "acq", (4, 6), np.uint16, 2, fsync=False)
    try:
        w.append(X[:7])
        w.flush()
        root = tmp_path / "acq"
        sums = (root / "SHA256SUMS").read_text().splitlines()
        assert len(sums) >= 3
        (root / "SHA256SUMS").write_text("\n".join(sums[:1]) + "\n")  # as if the writer had not appended yet
        report = verify(root)
        assert report.ok, report.problems
        assert report.n_checksums_pending == len(sums) - 1 and not report.checksums_verified
        assert any("newest block(s)" in n and "0001.h5" in n for n in report.notes), report.notes
        (root / "SHA256SUMS").write_text("\n".join(sums[2:]) + "\n")  # an older block without a line: a problem
        report = verify(root)
        assert [(p.file, p.kind) for p in report.problems] == [("0000.h5", "no-checksum"), ("0001.h5", "no-checksum")]
        assert report.n_checksums_pending == 0
    finally:
        w.close()
    (tmp_path / "acq" / "SHA256SUMS").write_text("")  # no writer any more: missing lines are problems again
    report = verify(tmp_path / "acq")
    assert {p.kind for p in report.problems} == {"no-checksum"} and report.n_checksums_pending == 0


# ----------------------------------------------------------------------------- SHA256SUMS that is not a file


def test_a_symlinked_sha256sums_is_a_problem_and_not_followed(tmp_path, monkeypatch) -> None:
    import split_dataset.verify as v

    path = tmp_path / "ds"
    make(path)
    elsewhere = tmp_path / "SHA256SUMS.elsewhere"
    os.replace(path / "SHA256SUMS", elsewhere)
    os.symlink(elsewhere, path / "SHA256SUMS")
    monkeypatch.setattr(v, "read_checksums", lambda root: pytest.fail("followed the link"))
    report = verify(path)
    assert [(p.file, p.kind) for p in report.problems] == [("SHA256SUMS", "corrupt")]
    assert "symbolic link" in report.problems[0].message
    assert not report.checksums_available and not report.checksums_verified
    assert not any("older writer" in n for n in report.notes)
    assert report.n_checked == 3
