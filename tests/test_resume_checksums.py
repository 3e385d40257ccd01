"""mode="a" reconciles SHA256SUMS after a kill; nothing is ever written through a symbolic link."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from test_stream import FRAME, frames

from split_dataset import SplitDataset, SplitDatasetWriter
from split_dataset.errors import UnsafeDatasetError
from split_dataset.metadata import Metadata
from split_dataset.storage import CHECKSUM_FILENAME, METADATA_FILENAME, read_checksums, sha256_file
from split_dataset.verify import verify
from split_dataset.writer import BlockSink, prepare_folder

TESTS = str(Path(__file__).parent)


def writer(path: Path, **kw) -> SplitDatasetWriter:
    kw.setdefault("fsync", False)
    return SplitDatasetWriter(path, FRAME, np.uint16, 4, **kw)


def killed_after_rename(path: Path, n_before: int, n_after: int) -> None:
    """What a SIGKILL between a block's rename (and metadata) and its SHA256SUMS line leaves."""
    with writer(path) as w:
        w.append(frames(0, n_before))
    meta = Metadata.from_dict(SplitDataset(path).metadata)
    sink = BlockSink(path, meta, __import__("split_dataset").storage.Codec.parse("blosc-lz4"), fsync=False,
                     checksums=False)
    for index in range(n_before // 4, -(-n_after // 4)):
        lo, hi = index * 4, min(index * 4 + 4, n_after)
        sink.write_unchecked(index, frames(lo, hi - lo))
    sink.write_metadata(meta.replace(shape=(n_after,) + FRAME, complete=False))


@pytest.mark.parametrize("n_before, n_after", [(6, 8), (6, 12), (8, 10), (2, 3)], ids=str)
def test_resume_repairs_checksums_a_kill_left_stale(tmp_path, n_before, n_after) -> None:
    path = tmp_path / "acq"
    killed_after_rename(path, n_before, n_after)
    assert not verify(path).ok  # stale or missing lines: what the kill left
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about: every block decodes
        with writer(path, mode="a") as w:
            assert w.n_frames == n_after
    report = verify(path)
    assert report.ok and report.checksums_verified, report.problems
    np.testing.assert_array_equal(SplitDataset(path)[:], frames(0, n_after))


def test_resume_without_appending_repairs_too(tmp_path) -> None:
    """A full last block is never rewritten by the resumed writer: the reconciliation alone fixes it."""
    path = tmp_path / "acq"
    killed_after_rename(path, 6, 8)
    w = writer(path, mode="a")
    w.close()
    assert read_checksums(path)["0001.h5"] == sha256_file(path / "0001.h5")
    assert verify(path).ok


def _break(p: Path) -> None:
    data = bytearray(p.read_bytes())
    for k in range(len(data) - 400, len(data) - 40):  # chunk payload (the file ends with the chunks)
        data[k] ^= 0xFF
    p.write_bytes(bytes(data))


def test_resume_never_blesses_a_block_that_does_not_decode(tmp_path) -> None:
    path = tmp_path / "acq"
    killed_after_rename(path, 6, 12)  # blocks 1 and 2 have stale / no lines
    _break(path / "0002.h5")
    before = read_checksums(path)
    with pytest.warns(RuntimeWarning, match="0002.h5.*does not decode"):
        w = writer(path, mode="a")
    w.abort()
    sums = read_checksums(path)
    assert "0002.h5" not in sums or sums["0002.h5"] == before.get("0002.h5")
    assert sums["0001.h5"] == sha256_file(path / "0001.h5")  # the good one was repaired
    report = verify(path)
    assert not report.ok and report.damaged_files == ["0002.h5"]


def test_resume_keeps_a_disagreeing_line_of_an_old_block(tmp_path) -> None:
    """Old blocks are never rewritten by a writer: a changed one is damage, kept for verify to report."""
    path = tmp_path / "acq"
    with writer(path) as w:
        w.append(frames(0, 20))
    recorded = read_checksums(path)["0000.h5"]
    _break(path / "0000.h5")
    with writer(path, mode="a") as w:
        w.append(frames(20, 1))
    assert read_checksums(path)["0000.h5"] == recorded
    assert [p.kind for p in verify(path).problems if p.file == "0000.h5"].count("checksum") == 1


def test_resume_of_a_dataset_without_sha256sums(tmp_path) -> None:
    path = tmp_path / "acq"
    with writer(path, checksums=False) as w:
        w.append(frames(0, 10))
    assert not (path / CHECKSUM_FILENAME).exists()
    with writer(path, mode="a") as w:
        w.append(frames(10, 3))
    report = verify(path)
    assert report.ok and report.checksums_verified, report.problems


# ----------------------------------------------------------------------------- symlinks


def test_resume_refuses_a_symlinked_sha256sums(tmp_path) -> None:
    path = tmp_path / "acq"
    with writer(path) as w:
        w.append(frames(0, 6))
    outside = tmp_path / "outside.txt"
    outside.write_text((path / CHECKSUM_FILENAME).read_text())
    (path / CHECKSUM_FILENAME).unlink()
    (path / CHECKSUM_FILENAME).symlink_to(outside)
    before = outside.read_text()
    with pytest.raises(UnsafeDatasetError, match="symbolic link"):
        writer(path, mode="a")
    assert outside.read_text() == before
    assert not (path / ".split_dataset.writer.lock").exists()


def test_a_symlink_swapped_in_while_writing_is_not_written_through(tmp_path) -> None:
    path = tmp_path / "acq"
    w = writer(path)
    w.append(frames(0, 4))
    w.flush()
    outside = tmp_path / "outside.txt"
    outside.write_text("precious\n")
    (path / CHECKSUM_FILENAME).unlink()
    (path / CHECKSUM_FILENAME).symlink_to(outside)
    w.append(frames(4, 4))
    with pytest.raises(Exception, match="symbolic link"):
        w.close()
    assert outside.read_text() == "precious\n"


def test_overwrite_removes_links_not_their_targets(tmp_path) -> None:
    path = tmp_path / "acq"
    with writer(path) as w:
        w.append(frames(0, 8))
    outside = {n: tmp_path / f"outside_{n}" for n in (METADATA_FILENAME, CHECKSUM_FILENAME, "0001.h5")}
    for name, target in outside.items():
        target.write_bytes((path / name).read_bytes())
        (path / name).unlink()
        (path / name).symlink_to(target)
    before = {n: t.read_bytes() for n, t in outside.items()}
    prepare_folder(path, overwrite=True)
    assert sorted(p.name for p in path.iterdir()) == []
    assert {n: t.read_bytes() for n, t in outside.items()} == before
    with writer(path, overwrite=True) as w:
        w.append(frames(0, 5))
    assert {n: t.read_bytes() for n, t in outside.items()} == before


# ----------------------------------------------------------------------------- real kills

CHILD = r"""
import sys, numpy as np, random
sys.path.insert(0, {tests!r})
from test_stream import frames, FRAME
from split_dataset import SplitDatasetWriter
random.seed({seed})
w = SplitDatasetWriter({path!r}, FRAME, np.uint16, 4, fsync=False, mode="a")
t = w.n_frames
print(t, flush=True)
while True:
    n = random.choice([1, 1, 2, 3, 5])
    w.append(frames(t, n))
    t += n
    if random.random() < 0.3:
        w.flush()
        print(t, flush=True)
"""


def kill_resume_verify(tmp_path: Path, seed: int, kills: int = 3) -> None:
    """SIGKILL a writer at random moments, resume each time: verify is happy after every clean close."""
    path = tmp_path / "acq"
    rng = np.random.default_rng(seed)
    for k in range(kills):
        code = CHILD.format(tests=TESTS, seed=seed * 100 + k, path=str(path))
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        lines: list[str] = []
        ready = threading.Event()

        def read(proc=proc, lines=lines, ready=ready) -> None:
            for line in proc.stdout:
                lines.append(line)
                ready.set()

        threading.Thread(target=read, daemon=True).start()
        assert ready.wait(60)
        time.sleep(float(rng.uniform(0.02, 0.4)))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # no block may look damaged after a kill
            with SplitDatasetWriter(path, FRAME, np.uint16, 4, fsync=False, mode="a") as w:
                n = w.n_frames
        assert n >= int(lines[-1])
        report = verify(path)
        assert report.ok and report.checksums_verified, report.problems
        np.testing.assert_array_equal(SplitDataset(path)[:], frames(0, n))


@pytest.mark.parametrize("seed", range(2))
def test_sigkill_then_resume_leaves_checksums_right(tmp_path, seed) -> None:
    kill_resume_verify(tmp_path, seed, kills=2)


@pytest.mark.full
@pytest.mark.parametrize("seed", range(2, 20))
def test_sigkill_then_resume_leaves_checksums_right_full(tmp_path, seed) -> None:
    kill_resume_verify(tmp_path, seed, kills=3)


def test_resume_with_checksums_off_keeps_an_existing_sha256sums_right(tmp_path) -> None:
    path = tmp_path / "acq"
    with writer(path) as w:
        w.append(frames(0, 6))  # a partial last block, replaced by the resumed writer
    with writer(path, mode="a", checksums=False) as w:
        w.append(frames(6, 5))
    report = verify(path)
    assert report.ok and report.checksums_verified, report.problems
