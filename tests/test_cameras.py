"""Several cameras, one dataset each: ``split_dataset.open_cameras`` against numpy, and cameras written
by two threads or two processes at their own pace while readers follow each camera and the stack.

Frame k of camera c holds ``100 * c + k`` plus a fixed pattern and was taken at ``when(c, k)``;
camera 1 drops some frames (its frame ids skip them), so matching by time differs from
matching by index, and numpy (a brute-force nearest-time search) is the oracle.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import split_dataset
from split_dataset import SplitDataset, SplitDatasetWriter, follow, open_cameras
from split_dataset.cameras import CameraMismatchError, NoFrameTimesError

FRAME = (4, 6)
T0 = 1_700_000_000.0
PATTERN = np.arange(24, dtype=np.uint16).reshape(FRAME)


def image(c: int, k: int) -> np.ndarray:
    return PATTERN + np.uint16(100 * c + k)


def when(c: int, k: int) -> float:
    """Camera c's frame k: 10 frames/s, camera 1 3 ms later, with a little jitter."""
    return T0 + 0.1 * k + 0.003 * c + 0.001 * ((7 * k + c) % 3)


def writer(path: Path, fpf: int, **kwargs) -> SplitDatasetWriter:
    return SplitDatasetWriter(path, FRAME, np.uint16, fpf, fsync=False, **kwargs)


def write_camera(path: Path, c: int, n: int, fpf: int, drop=(), pause: float = 0.0, flush_every: int = 0) -> None:
    """Camera c's frames 0..n-1 but `drop`, with their times and ids."""
    with writer(path, fpf) as w:
        for k in range(n):
            if k in drop:
                continue
            w.append(image(c, k), timestamps=when(c, k), frame_ids=k)
            if flush_every and k % flush_every == flush_every - 1:
                w.flush()
            if pause:
                time.sleep(pause)


def numpy_camera(c: int, n: int, drop=()) -> tuple[np.ndarray, np.ndarray]:
    ks = [k for k in range(n) if k not in drop]
    return np.stack([image(c, k) for k in ks]), np.array([when(c, k) for k in ks])


def nearest(times: np.ndarray, t: float) -> int:
    return int(np.argmin(np.abs(times - t)))  # the first of equals: the earlier frame


def time_oracle(cams: list[tuple[np.ndarray, np.ndarray]], tolerance: float | None) -> tuple[np.ndarray, np.ndarray]:
    """(index (T, C), unmatched frames of camera 0) by brute force."""
    rows, unmatched = [], []
    for k, t in enumerate(cams[0][1]):
        row = [k] + [nearest(times, t) for _, times in cams[1:]]
        if tolerance is not None and any(abs(cams[c][1][row[c]] - t) > tolerance for c in range(1, len(cams))):
            unmatched.append(k)
        else:
            rows.append(row)
    return np.array(rows, np.int64).reshape(-1, len(cams)), np.array(unmatched, np.int64)


def stacked(cams: list[tuple[np.ndarray, np.ndarray]], index: np.ndarray) -> np.ndarray:
    return np.stack([cams[c][0][index[:, c]] for c in range(len(cams))], axis=1)


SELECTIONS = [
    (3,), (-1,), (slice(2, 7),), (slice(None, None, -3),), ([1, 5, 2, 2],), (Ellipsis, 1), (slice(None), 1),
    (4, 0, slice(1, 3)), (slice(None), slice(None), 2), (slice(1, 4), slice(None, None, -1), slice(None), 0),
    (Ellipsis, 2, 1), (slice(0, 0),), (np.int64(2), [1]), (slice(None), [1, 0], -1, slice(None, None, 2)),
]


@pytest.fixture
def acq(tmp_path) -> Path:
    """acq/cam0 (12 frames, blocks of 5), acq/cam1 (15 frames but 3, 7 and 8 dropped, blocks of 4)."""
    write_camera(tmp_path / "acq" / "cam0", 0, 12, 5)
    write_camera(tmp_path / "acq" / "cam1", 1, 15, 4, drop=(3, 7, 8))
    return tmp_path / "acq"


def test_index_alignment_against_numpy(acq) -> None:
    cams = [numpy_camera(0, 12), numpy_camera(1, 15, drop=(3, 7, 8))]
    stack = open_cameras(acq)
    expected = np.stack([cams[0][0][:12], cams[1][0][:12]], axis=1)
    assert stack.shape == expected.shape == (12, 2, 4, 6) and stack.dtype == np.uint16 and len(stack) == 12
    for sel in SELECTIONS:
        np.testing.assert_array_equal(stack[sel], expected[sel], err_msg=str(sel))
        assert stack[sel].shape == expected[sel].shape, sel
    np.testing.assert_array_equal(np.asarray(stack), expected)
    np.testing.assert_array_equal(stack[np.arange(12) % 3 == 0], expected[::3])
    np.testing.assert_array_equal(stack.frame_times, np.stack([cams[0][1][:12], cams[1][1][:12]], axis=1))
    np.testing.assert_array_equal(stack.index, np.repeat(np.arange(12)[:, None], 2, axis=1))
    assert stack.unmatched.tolist() == [] and stack.names == ("cam0", "cam1") and stack.complete
    # frame 3 onwards of camera 1 is one frame late: the offsets show it
    assert np.abs(stack.time_offsets[:3, 1]).max() < 0.01 and stack.time_offsets[3, 1] > 0.09
    pytest.importorskip("dask")
    np.testing.assert_array_equal(stack.to_dask().compute(), expected)
    np.testing.assert_array_equal(stack.to_dask(chunks=(2, 4, 6))[5:9, 1].compute(), expected[5:9, 1])


@pytest.mark.parametrize("tolerance", [None, 0.02, 0.004])
def test_time_alignment_against_numpy(acq, tolerance) -> None:
    cams = [numpy_camera(0, 12), numpy_camera(1, 15, drop=(3, 7, 8))]
    index, unmatched = time_oracle(cams, tolerance)
    stack = open_cameras([acq / "cam0", SplitDataset(acq / "cam1")], align="time", tolerance=tolerance)
    np.testing.assert_array_equal(stack.index, index)
    np.testing.assert_array_equal(stack.unmatched, unmatched)
    expected = stacked(cams, index)
    assert stack.shape == expected.shape
    for sel in SELECTIONS:
        if stack.shape[0] == 0 and sel and not isinstance(sel[0], slice) and sel[0] is not Ellipsis:
            continue
        np.testing.assert_array_equal(stack[sel], expected[sel], err_msg=str(sel))
    np.testing.assert_array_equal(stack.frame_times[:, 1], cams[1][1][index[:, 1]])
    if tolerance is not None:
        assert np.abs(stack.time_offsets).max() <= tolerance
    if tolerance == 0.02:  # frames 3, 7 and 8 of camera 0 have no partner within 20 ms
        assert unmatched.tolist() == [3, 7, 8] and len(stack) == 9
    if tolerance is None:
        assert len(stack) == 12 and unmatched.tolist() == []
    pytest.importorskip("dask")
    np.testing.assert_array_equal(stack.to_dask().compute(), expected)


def test_a_parent_folder_means_its_dataset_subfolders(acq, tmp_path) -> None:
    write_camera(acq / ".hidden", 2, 3, 2)
    (acq / "notes").mkdir()
    (acq / "readme.txt").write_text("two cameras")
    (acq / "cam0").rename(acq / "cam_b")
    (acq / "cam1").rename(acq / "cam_a")
    stack = open_cameras(acq)
    assert stack.names == ("cam_a", "cam_b") and stack.n_cameras == 2
    assert stack[0, 0, 0, 0] == 100 and "CameraStack" in repr(stack)
    with pytest.raises(ValueError, match="is itself a split dataset"):
        open_cameras(acq / "cam_a")
    with pytest.raises(ValueError, match="holds no split dataset"):
        open_cameras(acq / "notes")
    with pytest.raises(FileNotFoundError):
        open_cameras(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="no camera"):
        open_cameras([])


def test_mismatched_cameras_are_refused(tmp_path, acq) -> None:
    split_dataset.save(np.zeros((3, 4, 5), np.uint16), tmp_path / "narrow", (2,), fsync=False)
    split_dataset.save(np.zeros((3, 4, 6), np.uint8), tmp_path / "bytes", (2,), fsync=False)
    with pytest.raises(CameraMismatchError, match=r"\(4, 5\) uint16.*same shape and dtype"):
        open_cameras([acq / "cam0", tmp_path / "narrow"])
    with pytest.raises(CameraMismatchError, match="uint8"):
        open_cameras([acq / "cam0", tmp_path / "bytes"])
    split_dataset.save(np.zeros((3, 4, 6), np.uint16), tmp_path / "untimed", (2,), fsync=False)
    with pytest.raises(NoFrameTimesError, match="untimed.*align='index'"):
        open_cameras([acq / "cam0", tmp_path / "untimed"], align="time")
    assert np.isnan(open_cameras([acq / "cam0", tmp_path / "untimed"]).frame_times[:, 1]).all()
    with pytest.raises(ValueError, match="tolerance applies to align='time'"):
        open_cameras(acq, tolerance=0.1)
    with pytest.raises(ValueError, match="align must be"):
        open_cameras(acq, align="nearest")
    stack = open_cameras(acq)
    with pytest.raises(IndexError, match="frame index 12 is out of range"):
        stack[12]
    with pytest.raises(IndexError, match="camera index -3"):
        stack[0, -3]
    with pytest.raises(IndexError, match="newaxis"):
        stack[None]
    with pytest.raises(IndexError, match="integers and slices"):
        stack[0, 0, [1, 2]]
    with pytest.raises(IndexError, match="too many indices"):
        stack[0, 0, 0, 0, 0]


# ----------------------------------------------------------------------------- live: threads and processes


class Turns:
    """Makes threads take turns in a fixed order (the interleaving is the test's, not the scheduler's)."""

    def __init__(self, order: list[int]) -> None:
        self.order, self.step = order, 0
        self.cond = threading.Condition()

    def wait(self, who: int) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: self.step >= len(self.order) or self.order[self.step] == who, 10)

    def done(self) -> None:
        with self.cond:
            self.step += 1
            self.cond.notify_all()


def test_two_writer_threads_interleaved_with_readers_following(tmp_path) -> None:
    """Camera 0 (blocks of 3) and camera 1 (blocks of 5, frames 4 and 9 dropped) are written by two
    threads in a fixed interleaving, camera 1 lagging; one follower per camera and one following
    the time-aligned stack see every frame once, and the stack what numpy says."""
    n, drop1 = 16, (4, 9)
    paths = [tmp_path / "acq" / "cam0", tmp_path / "acq" / "cam1"]
    writers = [writer(paths[0], 3), writer(paths[1], 5)]
    # camera 0 runs up to 3 frames ahead of camera 1, then camera 1 catches up, and so on
    order = [0, 0, 0] + [c for _ in range(n - 3) for c in (1, 0)] + [1, 1, 1]
    turns = Turns(order)
    stack = open_cameras(tmp_path / "acq", align="time", tolerance=0.02)
    followed: list[list] = [[], []]
    stack_followed: list = []
    halfway = threading.Event()

    def acquire(c: int) -> None:
        w = writers[c]
        for k in range(n):
            turns.wait(c)
            if not (c == 1 and k in drop1):
                w.append(image(c, k), timestamps=when(c, k), frame_ids=k)
                if k % 2 == c:
                    w.flush()
            if c == 1 and k == n // 2:  # wait for the readers to catch up once, mid-way
                assert halfway.wait(10)
            turns.done()
            time.sleep(0.002)
        w.close()

    def follow_stack() -> None:
        for t, frames, times in stack.follow(timeout=5, poll=0.002):
            stack_followed.append((t, frames, times))
            if t >= 4:
                halfway.set()

    threads = [threading.Thread(target=acquire, args=(c,)) for c in (0, 1)]
    threads += [threading.Thread(target=lambda c=c: followed[c].extend(follow(paths[c], timeout=5, poll=0.002)))
                for c in (0, 1)]
    threads.append(threading.Thread(target=follow_stack))
    for th in threads:
        th.start()
    for th in threads:
        th.join(20)
    assert not any(th.is_alive() for th in threads)

    cams = [numpy_camera(0, n), numpy_camera(1, n, drop=drop1)]
    for c in (0, 1):
        assert [i for i, _, _ in followed[c]] == list(range(len(cams[c][0])))
        np.testing.assert_array_equal(np.stack([f for _, f, _ in followed[c]]), cams[c][0])
        np.testing.assert_array_equal([t for _, _, t in followed[c]], cams[c][1])
    index, unmatched = time_oracle(cams, 0.02)
    assert unmatched.tolist() == [4, 9]
    assert [t for t, _, _ in stack_followed] == list(range(len(index)))
    np.testing.assert_array_equal(np.stack([f for _, f, _ in stack_followed]), stacked(cams, index))
    np.testing.assert_array_equal(np.stack([ts for _, _, ts in stack_followed]),
                                  np.stack([cams[c][1][index[:, c]] for c in (0, 1)], axis=1))
    final = open_cameras(tmp_path / "acq", align="time", tolerance=0.02)
    np.testing.assert_array_equal(final.index, index)
    assert stack.complete and stack.shape == final.shape


def test_refresh_keeps_the_frames_already_matched(tmp_path) -> None:
    """While camera 1 lags, camera 0's later frames wait (a nearer partner may come); once matched a
    frame keeps its place."""
    paths = [tmp_path / "cam0", tmp_path / "cam1"]
    w0, w1 = writer(paths[0], 4), writer(paths[1], 4)
    for k in range(10):
        w0.append(image(0, k), timestamps=when(0, k))
    for k in range(4):
        w1.append(image(1, k), timestamps=when(1, k))
    w0.flush()
    w1.flush()
    by_time = open_cameras(paths, align="time")
    by_index = open_cameras(paths)
    # frames 4.. of camera 0 are later than camera 1's last: they wait, even without a tolerance
    assert len(by_time) == 4 and len(by_index) == 4
    seen = by_time[:].copy()
    for k in range(4, 8):
        w1.append(image(1, k), timestamps=when(1, k))
    w1.flush()
    assert len(by_time.refresh()) == 8 and len(by_index.refresh()) == 8
    np.testing.assert_array_equal(by_time[:4], seen)
    w0.close()
    w1.close()
    assert len(by_time.refresh()) == 10 and by_time.index[-1].tolist() == [9, 7]  # all complete: nearest
    assert by_time.complete


CHILD = """
import sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from test_cameras import write_camera
write_camera(Path({path!r}), {c}, {n}, {fpf}, drop={drop!r}, pause=0.004, flush_every={flush})
"""


def test_two_writer_processes_with_readers_following(tmp_path) -> None:
    n = 30
    setup = [(0, 4, (), 5), (1, 7, (11, 12), 3)]  # camera, frames per file, dropped frames, flush every
    paths = [tmp_path / "acq" / f"cam{c}" for c in (0, 1)]
    procs = [subprocess.Popen([sys.executable, "-c", CHILD.format(tests=str(Path(__file__).parent), path=str(p),
                                                                c=c, n=n, fpf=fpf, drop=drop, flush=flush)])
             for p, (c, fpf, drop, flush) in zip(paths, setup)]
    try:
        followed: list[list] = [[], []]
        followers = [threading.Thread(target=lambda c=c: followed[c].extend(follow(paths[c], timeout=10, poll=0.005)))
                     for c in (0, 1)]
        for th in followers:
            th.start()
        deadline = time.monotonic() + 10
        while not all((p / "stack_metadata.json").exists() for p in paths):
            assert time.monotonic() < deadline
            time.sleep(0.005)
        stack = open_cameras(tmp_path / "acq", align="time", tolerance=0.02)
        got = list(stack.follow(timeout=10, poll=0.005))
        for th in followers:
            th.join(20)
    finally:
        assert [p.wait(30) for p in procs] == [0, 0]
    cams = [numpy_camera(0, n), numpy_camera(1, n, drop=(11, 12))]
    for c in (0, 1):
        assert [i for i, _, _ in followed[c]] == list(range(len(cams[c][0])))
        np.testing.assert_array_equal(np.stack([f for _, f, _ in followed[c]]), cams[c][0])
    index, unmatched = time_oracle(cams, 0.02)
    assert unmatched.tolist() == [11, 12]
    assert [t for t, _, _ in got] == list(range(len(index)))
    np.testing.assert_array_equal(np.stack([f for _, f, _ in got]), stacked(cams, index))
    by_index = open_cameras(paths)
    assert by_index.shape == (n - 2, 2, 4, 6) and by_index.complete
