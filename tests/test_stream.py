"""SplitDatasetWriter: appends, flushes, resume, bad input, write errors, SIGKILL at random moments."""

from __future__ import annotations

import errno
import json
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

import split_dataset
from split_dataset import SplitDataset, SplitDatasetWriter
from split_dataset.stream import LOCK_FILENAME, DiskFullError, WriteError, WriterLockedError

FRAME = (3, 8, 6)


def frames(start: int, n: int) -> np.ndarray:
    """Frames whose every voxel encodes the frame number and the position."""
    t = np.arange(start, start + n, dtype=np.uint32)[:, None, None, None]
    pos = np.arange(np.prod(FRAME), dtype=np.uint32).reshape(FRAME)
    return ((t * 7 + pos) % 65536).astype(np.uint16)


def writer(path: Path, **kw) -> SplitDatasetWriter:
    kw.setdefault("fsync", False)
    return SplitDatasetWriter(path, FRAME, np.uint16, kw.pop("frames_per_file", 5), **kw)


@pytest.mark.parametrize("batches", [[1] * 12, [12], [3, 0, 4, 5], [5, 5, 2], [7, 1, 1, 1, 1, 1]], ids=str)
def test_appends_cross_block_boundaries(tmp_path, batches) -> None:
    with writer(tmp_path / "acq") as w:
        t = 0
        for n in batches:
            data = frames(t, n)
            w.append(data[0] if n == 1 else data)
            t += n
        assert w.n_frames == 12 and w.shape == (12, *FRAME)
    ds = w.dataset
    assert ds.shape == (12, *FRAME) and ds.shape_block == (5, *FRAME) and ds.n_blocks == 3
    assert ds.complete is True
    np.testing.assert_array_equal(ds[:], frames(0, 12))


def test_append_copies_the_callers_buffer(tmp_path) -> None:
    buf = frames(0, 1)[0]
    with writer(tmp_path / "acq") as w:
        for t in range(7):
            buf[...] = frames(t, 1)[0]
            w.append(buf)
            buf[...] = 0  # the camera reuses its buffer
    np.testing.assert_array_equal(w.dataset[:], frames(0, 7))


def test_flush_makes_frames_visible_and_refresh_sees_more(tmp_path) -> None:
    w = writer(tmp_path / "acq")
    reader_empty = SplitDataset(tmp_path / "acq")  # valid, empty, from the start
    assert reader_empty.shape == (0, *FRAME) and reader_empty.complete is False
    w.append(frames(0, 7))
    w.flush()
    ds = SplitDataset(tmp_path / "acq")
    assert ds.shape[0] == 7 and ds.complete is False
    np.testing.assert_array_equal(ds[:], frames(0, 7))
    w.append(frames(7, 6))
    w.flush()
    assert ds.refresh().shape[0] == 13
    np.testing.assert_array_equal(ds[:], frames(0, 13))
    w.close()
    assert ds.refresh().complete is True
    assert not list((tmp_path / "acq").glob(".*tmp")) and not (tmp_path / "acq" / LOCK_FILENAME).exists()


def test_metadata_describes_frames_on_disk_after_each_block(tmp_path) -> None:
    w = writer(tmp_path / "acq", frames_per_file=4)
    seen = []
    for t in range(12):
        w.append(frames(t, 1))
        time.sleep(0.002)
        meta = json.loads((tmp_path / "acq" / "stack_metadata.json").read_text())
        seen.append(meta["shape_full"][0])
        assert meta["shape_full"][0] <= t + 1 and meta["complete"] is False
    w.close()
    assert seen == sorted(seen)
    assert json.loads((tmp_path / "acq" / "stack_metadata.json").read_text())["shape_full"][0] == 12


def test_reader_sees_blocks_renamed_before_the_metadata(tmp_path) -> None:
    w = writer(tmp_path / "acq", frames_per_file=4)
    w.append(frames(0, 8))
    w.flush()
    meta_path = tmp_path / "acq" / "stack_metadata.json"
    stale = json.loads(meta_path.read_text())
    stale["shape_full"][0] = 4  # as if the writer died between a block's rename and the metadata
    meta_path.write_text(json.dumps(stale))
    ds = SplitDataset(tmp_path / "acq")
    assert ds.shape[0] == 8
    np.testing.assert_array_equal(ds[:], frames(0, 8))
    w.close()


def test_resume_with_mode_a(tmp_path) -> None:
    with writer(tmp_path / "acq", attrs={"fish": 1}) as w:
        w.append(frames(0, 7))
    with writer(tmp_path / "acq", mode="a", attrs={"part": 2}) as w:
        assert w.n_frames == 7
        w.append(frames(7, 6))
    ds = w.dataset
    assert ds.shape[0] == 13 and ds.attrs == {"fish": 1, "part": 2}
    np.testing.assert_array_equal(ds[:], frames(0, 13))


def test_resume_keeps_the_keys_it_does_not_own(tmp_path) -> None:
    """mode="a" rebuilt the metadata from scratch: an added "operator" key and the crops were lost."""
    path = tmp_path / "acq"
    with writer(path, attrs={"fish": 1}, resolution=(0.5, 2, 0.3, 0.3)) as w:
        w.append(frames(0, 7))
    meta_path = path / "stack_metadata.json"
    doc = json.loads(meta_path.read_text())
    doc.update(operator="jd", setup={"laser": [488, 561]}, crop_start=[0, 1, 2, 0], crop_end=[0, 0, 1, 3])
    meta_path.write_text(json.dumps(doc))
    with writer(path, mode="a", attrs={"part": 2}) as w:
        w.flush()
        during = json.loads(meta_path.read_text())
        w.append(frames(7, 6))
    after = json.loads(meta_path.read_text())
    for got in (during, after):
        assert got["operator"] == "jd" and got["setup"] == {"laser": [488, 561]}
        assert got["crop_start"] == [0, 1, 2, 0] and got["crop_end"] == [0, 0, 1, 3]
        assert got["resolution"] == [0.5, 2, 0.3, 0.3] and got["attrs"] == {"fish": 1, "part": 2}
    assert after["shape_full"][0] == 13 and after["complete"] is True
    assert list(after)[:2] == ["operator", "setup"]  # unknown keys first, as read (docs/format.md §5)
    np.testing.assert_array_equal(SplitDataset(path)[:], frames(0, 13))


def test_mode_a_on_a_new_folder_starts_a_dataset(tmp_path) -> None:
    with writer(tmp_path / "new", mode="a") as w:
        w.append(frames(0, 2))
    assert w.dataset.shape[0] == 2


def test_mode_a_refuses_another_layout(tmp_path) -> None:
    with writer(tmp_path / "acq") as w:
        w.append(frames(0, 3))
    with pytest.raises(ValueError, match="cannot append"):
        SplitDatasetWriter(tmp_path / "acq", (3, 8, 7), np.uint16, 5, mode="a")
    with pytest.raises(ValueError, match="blocks of 5"):
        SplitDatasetWriter(tmp_path / "acq", FRAME, np.uint16, 6, mode="a")
    assert not (tmp_path / "acq" / LOCK_FILENAME).exists()


def test_existing_folder_refused(tmp_path) -> None:
    with writer(tmp_path / "acq") as w:
        w.append(frames(0, 3))
    before = {p.name: p.read_bytes() for p in (tmp_path / "acq").iterdir()}
    with pytest.raises(FileExistsError, match="not empty"):
        writer(tmp_path / "acq")
    assert {p.name: p.read_bytes() for p in (tmp_path / "acq").iterdir()} == before
    with writer(tmp_path / "acq", overwrite=True) as w:
        w.append(frames(100, 1))
    assert w.dataset.shape[0] == 1


@pytest.mark.parametrize(
    "bad, exc, match",
    [
        (np.zeros(FRAME, np.float32), TypeError, "expected dtype uint16, got float32"),
        (np.zeros(FRAME, np.int16), TypeError, "nothing is cast"),
        (np.zeros((3, 8, 7), np.uint16), ValueError, r"expected a frame \(3, 8, 6\).*got \(3, 8, 7\)"),
        (np.zeros((2, 3, 8), np.uint16), ValueError, "got"),
        (np.zeros((1, 1, 3, 8, 6), np.uint16), ValueError, "got"),
    ],
    ids=["float", "int16", "wrong-shape", "wrong-batch", "too-many-dims"],
)
def test_bad_input_raises_before_writing(tmp_path, bad, exc, match) -> None:
    with writer(tmp_path / "acq") as w:
        w.append(frames(0, 4))
        with pytest.raises(exc, match=match):
            w.append(bad)
        assert w.n_frames == 4
        w.append(frames(4, 2))
    np.testing.assert_array_equal(w.dataset[:], frames(0, 6))


def test_bad_constructor_arguments(tmp_path) -> None:
    with pytest.raises(ValueError, match="frames_per_file"):
        SplitDatasetWriter(tmp_path / "a", FRAME, np.uint16, 0)
    with pytest.raises(ValueError, match="frame_shape"):
        SplitDatasetWriter(tmp_path / "b", (0, 4), np.uint16, 2)
    with pytest.raises(TypeError, match="dtype"):
        SplitDatasetWriter(tmp_path / "c", FRAME, object, 2)
    with pytest.raises(ValueError, match="mode"):
        SplitDatasetWriter(tmp_path / "d", FRAME, np.uint16, 2, mode="r")


def test_one_writer_at_a_time(tmp_path) -> None:
    w = writer(tmp_path / "acq")
    w.append(frames(0, 5))
    w.flush()
    with pytest.raises(WriterLockedError, match="being written by process"):
        writer(tmp_path / "acq", mode="a")
    with pytest.raises(WriterLockedError):  # not even overwrite=True may remove a live writer's blocks
        writer(tmp_path / "acq", overwrite=True)
    assert SplitDataset(tmp_path / "acq").shape[0] == 5
    w.close()
    with writer(tmp_path / "acq", mode="a"):
        pass


def test_stale_lock_of_a_dead_writer_is_taken_over(tmp_path) -> None:
    with writer(tmp_path / "acq") as w:
        w.append(frames(0, 2))
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    (tmp_path / "acq" / LOCK_FILENAME).write_text(f"{socket.gethostname()} {proc.stdout.strip()}")
    with writer(tmp_path / "acq", mode="a") as w:
        w.append(frames(2, 1))
    assert w.dataset.shape[0] == 3


def test_disk_full_keeps_what_is_safe(tmp_path, monkeypatch) -> None:
    w = writer(tmp_path / "acq", frames_per_file=4)
    w.append(frames(0, 8))
    w.flush()
    real = os.replace

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    w.append(frames(8, 4))
    with pytest.raises(DiskFullError, match="8 frames are safe") as info:
        w.flush()
    assert info.value.frames_safe == 8 and info.value.errno == errno.ENOSPC
    with pytest.raises(WriteError):
        w.append(frames(12, 1))
    monkeypatch.setattr(os, "replace", real)
    with pytest.raises(WriteError):
        w.close()
    assert not [p for p in (tmp_path / "acq").iterdir() if p.name.endswith(".tmp")]
    ds = SplitDataset(tmp_path / "acq")
    assert ds.shape[0] == 8
    np.testing.assert_array_equal(ds[:], frames(0, 8))


def test_backpressure_drops_nothing(tmp_path, monkeypatch) -> None:
    from split_dataset.writer import BlockSink

    slow = BlockSink.stage

    def slow_write(self, index, arr, *rest):
        time.sleep(0.05)
        return slow(self, index, arr, *rest)

    monkeypatch.setattr(BlockSink, "stage", slow_write)
    w = writer(tmp_path / "acq", frames_per_file=2, queue_depth=1)
    t0 = time.perf_counter()
    w.append(frames(0, 12))  # 6 blocks, one buffer in flight: append has to wait
    assert time.perf_counter() - t0 > 0.1
    w.close()
    np.testing.assert_array_equal(w.dataset[:], frames(0, 12))


def test_pipelined_commits_keep_the_order_and_the_metadata_behind_the_blocks(tmp_path, monkeypatch) -> None:
    """Block k+1 is staged while block k is committed: a slow commit (the window widened on
    purpose) must never let the metadata claim frames whose block is not in place, nor a
    later block be renamed before an earlier one."""
    from split_dataset.writer import BlockSink

    real = BlockSink.commit
    order: list[int] = []
    seen: list[tuple[int, int]] = []
    root = tmp_path / "acq"

    def slow_commit(self, index, staged):
        time.sleep(0.03)
        path = real(self, index, staged)
        order.append(index)
        return path

    def watch(stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                claimed = json.loads((root / "stack_metadata.json").read_text())["shape_full"][0]
            except (OSError, ValueError, KeyError):
                continue
            on_disk = sum(1 for i in range(64) if (root / f"{i:04d}.h5").exists())
            seen.append((claimed, on_disk))

    monkeypatch.setattr(BlockSink, "commit", slow_commit)
    stop = threading.Event()
    w = writer(root, frames_per_file=2, queue_depth=2)
    t = threading.Thread(target=watch, args=(stop,))
    t.start()
    try:
        for i in range(0, 16, 2):
            w.append(frames(i, 2))
        w.close()
    finally:
        stop.set()
        t.join()
    assert order == list(range(8))
    assert seen and all(claimed <= 2 * on_disk for claimed, on_disk in seen)
    np.testing.assert_array_equal(SplitDataset(root)[:], frames(0, 16))


def test_a_failed_commit_stops_the_writer_with_what_is_safe(tmp_path, monkeypatch) -> None:
    from split_dataset.writer import BlockSink

    real = BlockSink.commit

    def failing(self, index, staged):
        if index == 2:
            from split_dataset.storage.hdf5 import discard_block

            discard_block(staged)
            raise OSError(errno.EIO, "I/O error")
        return real(self, index, staged)

    monkeypatch.setattr(BlockSink, "commit", failing)
    w = writer(tmp_path / "acq", frames_per_file=2)
    with pytest.raises(WriteError) as info:
        for i in range(0, 12, 2):
            w.append(frames(i, 2))
            w.flush()
    assert info.value.frames_safe == 4
    with pytest.raises(WriteError):  # the writer stays failed
        w.abort()
    names = sorted(p.name for p in (tmp_path / "acq").iterdir() if p.suffix == ".h5")
    assert names == ["0000.h5", "0001.h5"]  # nothing after the failed block, no temporary file left
    assert not [p for p in (tmp_path / "acq").iterdir() if p.name.endswith(".tmp")]
    np.testing.assert_array_equal(SplitDataset(tmp_path / "acq")[:], frames(0, 4))


def test_readers_ignore_temporary_files(tmp_path) -> None:
    with writer(tmp_path / "acq") as w:
        w.append(frames(0, 5))
    (tmp_path / "acq" / ".0001.h5.abcdef.tmp").write_bytes(b"partial garbage")
    assert SplitDataset(tmp_path / "acq").shape[0] == 5


# ----------------------------------------------------------------------------- SIGKILL

CHILD = r"""
import sys, numpy as np, random
sys.path.insert(0, {tests!r})
from test_stream import frames, FRAME
from split_dataset import SplitDatasetWriter
random.seed({seed})
w = SplitDatasetWriter({path!r}, FRAME, np.uint16, 4, fsync=False)
print(0, flush=True)
t = 0
while True:
    n = random.choice([1, 1, 2, 3, 5])
    w.append(frames(t, n))
    t += n
    if random.random() < 0.3:
        w.flush()
        print(t, flush=True)
"""


@pytest.mark.parametrize("seed", range(12))
def test_sigkill_at_random_moments_loses_no_flushed_frame(tmp_path, seed) -> None:
    path = tmp_path / "acq"
    code = CHILD.format(tests=str(Path(__file__).parent), seed=seed, path=str(path))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert ready.wait(60), "the writer process did not start"
    time.sleep(0.05 + 0.07 * (seed % 6))  # kill at a different moment each run
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    reader.join(5)
    flushed = int(lines[-1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = SplitDataset(path)
    assert ds.shape[0] >= flushed
    np.testing.assert_array_equal(ds[:], frames(0, ds.shape[0]))  # nothing unreadable, nothing wrong
    for p in path.iterdir():  # nothing unreadable under a final name
        if p.suffix == ".h5":
            assert p.name[0] != "."
    # and the acquisition can go on
    with SplitDatasetWriter(path, FRAME, np.uint16, 4, mode="a", fsync=False) as w:
        n = w.n_frames
        w.append(frames(n, 3))
    np.testing.assert_array_equal(w.dataset[:], frames(0, n + 3))


def test_top_level_export() -> None:
    assert split_dataset.SplitDatasetWriter is SplitDatasetWriter


def test_checksums_follow_the_blocks(tmp_path) -> None:
    from split_dataset.storage import read_checksums, sha256_file

    w = writer(tmp_path / "acq", frames_per_file=4)
    w.append(frames(0, 6))
    w.flush()  # 0001.h5 is a 2-frame partial block
    first = read_checksums(tmp_path / "acq")
    assert sorted(first) == ["0000.h5", "0001.h5"]
    w.append(frames(6, 5))
    w.close()  # 0001.h5 replaced by the full block, 0002.h5 added
    sums = read_checksums(tmp_path / "acq")
    assert sorted(sums) == ["0000.h5", "0001.h5", "0002.h5"]
    assert sums["0001.h5"] != first["0001.h5"]
    for name, digest in sums.items():
        assert sha256_file(tmp_path / "acq" / name) == digest
    lines = (tmp_path / "acq" / "SHA256SUMS").read_text().splitlines()
    assert len(lines) == 3  # no stale line for the replaced block: sha256sum -c passes


def test_writer_physical_metadata_survives_resume(tmp_path) -> None:
    with writer(tmp_path / "acq", resolution=(1, 5, 0.6, 0.6), units=("s", "um", "um", "um"),
                frame_interval=0.1) as w:
        w.append(frames(0, 2))
    with writer(tmp_path / "acq", mode="a") as w:
        w.append(frames(2, 2))
    ds = w.dataset
    assert ds.units == ("s", "um", "um", "um") and ds.frame_interval == 0.1 and ds.resolution[1] == 5.0


LIVE_CHILD = r"""
import sys, time, numpy as np
sys.path.insert(0, {tests!r})
from test_stream import frames, FRAME
from split_dataset import SplitDatasetWriter
with SplitDatasetWriter({path!r}, FRAME, np.uint16, 4, fsync=False) as w:
    print("ready", flush=True)
    for t in range(0, 60, 3):
        w.append(frames(t, 3))
        w.flush()
        time.sleep(0.01)
"""


def test_reader_follows_a_live_writer_in_another_process(tmp_path) -> None:
    """A viewer reopens/refreshes while the writer runs: always a valid prefix, never a partial block."""
    path = tmp_path / "acq"
    code = LIVE_CHILD.format(tests=str(Path(__file__).parent), path=str(path))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    ds = SplitDataset(path)
    seen = []
    while proc.poll() is None or not seen or seen[-1] < 60:
        ds.refresh()
        n = ds.shape[0]
        seen.append(n)
        if n:
            np.testing.assert_array_equal(ds[:], frames(0, n))  # every visible frame is whole and right
        if proc.poll() is not None and n == 60:
            break
        time.sleep(0.005)
    assert proc.wait(30) == 0
    assert seen == sorted(seen) and seen[-1] == 60 and len(set(seen)) > 3
    assert ds.refresh().complete is True
