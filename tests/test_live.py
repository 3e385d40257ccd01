"""Reading while a dataset is written: ``split_dataset.follow``, ``split-dataset watch``, napari's refresh.

Writers run in a thread of this process or in a child process; the follower in this one. Every
frame carries its index in its pixels and a time stamp given to ``append``, so each yielded
``(index, frame, time)`` is checked exactly: in order, each once, the right pixels, the right time.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import save_fast

import split_dataset
from split_dataset import SplitDatasetWriter, follow
from split_dataset import live as live_module
from split_dataset.cli import main
from split_dataset.live import DatasetReplacedError, Watch

FRAME = (3, 5)
T0 = 1_700_000_000.0


def frame(i: int) -> np.ndarray:
    return np.full(FRAME, i, np.uint16) + np.arange(15, dtype=np.uint16).reshape(FRAME)


def stamp(i: int) -> float:
    return T0 + 0.25 * i


def writer(path: Path, fpf: int = 4, **kwargs) -> SplitDatasetWriter:
    kwargs.setdefault("fsync", False)
    return SplitDatasetWriter(path, FRAME, np.uint16, fpf, **kwargs)


def check(got: list, lo: int, hi: int, times: bool = True) -> None:
    """`got` is exactly frames lo..hi-1, in order, with their pixels and time stamps."""
    assert [g[0] for g in got] == list(range(lo, hi))
    for i, f, t in got:
        np.testing.assert_array_equal(f, frame(i))
        if times:
            assert t == stamp(i)
        else:
            assert np.isnan(t)


def collect(it, into: list) -> threading.Thread:
    thread = threading.Thread(target=lambda: into.extend(it), daemon=True)
    thread.start()
    return thread


# ----------------------------------------------------------------------------- follow


def test_follow_a_writer_thread_flushing_at_random(tmp_path) -> None:
    path = tmp_path / "cam0"
    rng = np.random.default_rng(1)
    got: list = []
    it = follow(path, timeout=5, poll=0.005)
    reader = collect(it, got)  # started before the dataset exists: it waits for it
    time.sleep(0.05)
    with writer(path) as w:
        i = 0
        while i < 41:
            k = int(rng.integers(1, 4))
            n = min(k, 41 - i)
            w.append(np.stack([frame(j) for j in range(i, i + n)]), timestamps=[stamp(j) for j in range(i, i + n)])
            i += n
            if rng.random() < 0.4:
                w.flush()
            time.sleep(0.002)
    reader.join(10)
    assert not reader.is_alive()
    check(got, 0, 41)
    assert it.ended == "complete" and it.next_index == 41


def test_follow_sees_each_frame_once_when_the_writer_commits_between_stat_and_refresh(tmp_path, monkeypatch) -> None:
    """Race widened on purpose: after each look at the metadata the follower sleeps, so the writer
    commits (a new block, a grown partial block) between the look and the re-read."""
    path = tmp_path / "cam0"
    looked = live_module._signature

    def slow(root):
        sig = looked(root)
        time.sleep(0.01)
        return sig

    monkeypatch.setattr(live_module, "_signature", slow)
    got: list = []
    with writer(path, fpf=3) as w:
        reader = collect(follow(path, timeout=5, poll=0.001), got)
        for i in range(20):
            w.append(frame(i), timestamps=stamp(i))
            w.flush()  # every frame readable at once: the partial block is replaced each time
            time.sleep(0.004)
    reader.join(10)
    check(got, 0, 20)


def test_follow_a_writer_in_another_process(tmp_path) -> None:
    path = tmp_path / "cam0"
    child = f"""
import sys, time, numpy as np
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_live import frame, stamp, writer
from pathlib import Path
with writer(Path({str(path)!r}), fpf=5) as w:
    for i in range(23):
        w.append(frame(i), timestamps=stamp(i))
        if i % 7 == 6:
            w.flush()
        time.sleep(0.003)
"""
    it = follow(path, timeout=10, poll=0.01)
    proc = subprocess.Popen([sys.executable, "-c", child])
    try:
        got = list(it)
    finally:
        assert proc.wait(30) == 0
    check(got, 0, 23)
    assert it.ended == "complete"


def test_follow_through_a_resumed_writer(tmp_path) -> None:
    """A writer stops (complete: false) with a partial block; another resumes it (mode="a"),
    replacing that block: every frame comes once, the follower does not stop in between."""
    path = tmp_path / "cam0"
    w = writer(path)
    for i in range(6):
        w.append(frame(i), timestamps=stamp(i))
    w.flush()
    got: list = []
    it = follow(path, timeout=5, poll=0.005)
    reader = collect(it, got)
    w.abort()
    time.sleep(0.1)  # the follower has read the partial block of the first writer
    assert [g[0] for g in got] == list(range(6)) and reader.is_alive()
    with writer(path, mode="a") as w2:
        for i in range(6, 15):
            w2.append(frame(i), timestamps=stamp(i))
            if i == 7:
                w2.flush()
    reader.join(10)
    check(got, 0, 15)
    assert it.ended == "complete"


def test_follow_times_out_without_new_frames(tmp_path) -> None:
    path = tmp_path / "cam0"
    w = writer(path)
    for i in range(5):
        w.append(frame(i), timestamps=stamp(i))
    w.abort()  # complete: false, nobody writes: only the timeout ends it
    it = follow(path, timeout=0.3, poll=0.02)
    start = time.monotonic()
    got = list(it)
    took = time.monotonic() - start
    check(got, 0, 5)
    assert it.ended == "timeout" and 0.3 <= took < 2.0
    # a start beyond the frames on disk waits for them
    it = follow(path, timeout=0.1, start=8)
    assert list(it) == [] and it.ended == "timeout"
    # a dataset that never appears
    it = follow(tmp_path / "nothing", timeout=0.1)
    assert list(it) == [] and it.ended == "timeout" and it.dataset is None


def test_follow_a_complete_dataset_from_start_and_without_records(tmp_path) -> None:
    path = tmp_path / "cam0"
    with writer(path) as w:
        for i in range(9):
            w.append(frame(i), timestamps=stamp(i))
    it = follow(path, timeout=None, start=6)  # complete: ends without waiting, even with no timeout
    check(list(it), 6, 9)
    assert it.ended == "complete"
    it = follow(path, timeout=None, start=20)
    assert list(it) == [] and it.ended == "complete"
    saved = tmp_path / "saved"
    save_fast(np.stack([frame(i) for i in range(7)]), saved, (3,)).close()
    check(list(follow(saved, timeout=None)), 0, 7, times=False)  # no per-frame records: NaN


def test_follow_refuses_bad_arguments_and_urls(tmp_path) -> None:
    with pytest.raises(ValueError, match="timeout"):
        follow(tmp_path, timeout=-1)
    with pytest.raises(ValueError, match="poll"):
        follow(tmp_path, poll=0)
    with pytest.raises(ValueError, match="start"):
        follow(tmp_path, start=-2)
    with pytest.raises(ValueError, match="local folders"):
        follow("s3://bucket/ds")


def test_follow_reports_a_dataset_replaced_under_it(tmp_path) -> None:
    path = tmp_path / "cam0"
    with writer(path) as w:
        for i in range(8):
            w.append(frame(i))
    it = follow(path, timeout=None)
    assert next(it)[0] == 0
    for _ in range(7):
        next(it)
    with writer(path, overwrite=True) as w:  # a new, shorter dataset in its place
        w.append(frame(0))
    with pytest.raises(DatasetReplacedError, match="fewer than the 8"):
        next(it)


def test_follow_recovers_a_change_its_stat_missed(tmp_path, monkeypatch) -> None:
    """File times are coarse and inodes are reused: a follower whose stat never changes still
    re-reads the dataset every RECHECK seconds."""
    monkeypatch.setattr(live_module, "_signature", lambda root: (1, 2, 3, 4) if (root / "stack_metadata.json").exists()
                        else None)
    monkeypatch.setattr(live_module, "RECHECK", 0.1)
    path = tmp_path / "cam0"
    got: list = []
    with writer(path) as w:
        w.append(frame(0), timestamps=stamp(0))
        w.flush()
        reader = collect(follow(path, timeout=3, poll=0.01), got)
        time.sleep(0.05)
        for i in range(1, 10):
            w.append(frame(i), timestamps=stamp(i))
        w.flush()
    reader.join(5)
    check(got, 0, 10)


def test_follow_latency_is_bounded_by_a_flush(tmp_path) -> None:
    """Frames flushed one by one reach the follower within a poll or so, however large the block."""
    path = tmp_path / "cam0"
    arrived: dict[int, float] = {}
    with writer(path, fpf=1000) as w:
        it = follow(path, timeout=5, poll=0.005)
        thread = threading.Thread(target=lambda: arrived.update((i, time.monotonic()) for i, _, _ in it))
        thread.start()
        sent = {}
        for i in range(10):
            w.append(frame(i))
            w.flush()
            sent[i] = time.monotonic()
            time.sleep(0.03)
    thread.join(10)
    assert sorted(arrived) == list(range(10))
    assert max(arrived[i] - sent[i] for i in range(10)) < 0.5


# ----------------------------------------------------------------------------- watch


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_watch_once_on_a_live_writer(tmp_path, capsys) -> None:
    path = tmp_path / "cam0"
    with writer(path) as w:
        code, out, _ = run(capsys, "watch", path, "--once")  # before the first block: no figures yet
        assert code == 0 and out == f"{path}: writing | 0 frames | - frames/s | - MB/s | queue - | - behind | " \
                                     "latency p50 - p99 - | 0 dropped\n"
        for i in range(10):
            w.append(frame(i), timestamps=stamp(i), frame_ids=i + (i >= 7))  # id 7 skipped: one dropped
        w.flush()
        code, out, _ = run(capsys, "watch", path, "--once")
        assert code == 0 and out.count("\n") == 1
        fields = out.strip().split(" | ")
        assert fields[0] == f"{path}: writing" and fields[1] == "10 frames" and fields[2] == "4.0 frames/s"
        assert fields[3].endswith(" MB/s") and fields[4] == "queue 0/2" and fields[5] == "0 behind"
        assert fields[6].startswith("latency p50 ") and " s p99 " in fields[6] and fields[7] == "1 dropped"
        sample = Watch(path).sample()
        assert sample.writer is not None and sample.status_age is not None and sample.latency_p99 is not None
    code, out, _ = run(capsys, "watch", path, "--once")
    assert code == 0 and out == f"{path}: complete | 10 frames | 4.0 frames/s | 1 dropped\n"


def test_watch_until_the_writer_closes(tmp_path, capsys, monkeypatch) -> None:
    path = tmp_path / "cam0"
    w = writer(path)
    w.append(frame(0))
    w.flush()

    def later() -> None:
        time.sleep(0.3)
        w.close()

    closer = threading.Thread(target=later)
    closer.start()
    code, out, _ = run(capsys, "watch", path, "--interval", "0.05")
    closer.join()
    lines = out.splitlines()
    assert code == 0 and len(lines) >= 3
    assert all(" writing | 1 frames | " in line for line in lines[:-1])
    assert lines[-1] == f"{path}: complete | 1 frames | - frames/s | 0 dropped"


def test_watch_a_stopped_writer_and_on_a_terminal(tmp_path, capsys, monkeypatch) -> None:
    path = tmp_path / "cam0"
    w = writer(path)
    for i in range(5):
        w.append(frame(i), timestamps=stamp(i))
    w.abort()
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setenv("COLUMNS", "300")
    code, out, _ = run(capsys, "watch", path)  # no writer: one line, then it exits
    assert code == 0 and out == f"\r{path}: no writer | 5 frames | 4.0 frames/s | 0 dropped\n"
    monkeypatch.setenv("COLUMNS", "40")  # a line the terminal would wrap is cut
    code, out, _ = run(capsys, "watch", path)
    assert code == 0 and out == f"\r{path}: no writer | 5 frames | 4.0 frames/s | 0 dropped"[:40] + "\n"


def test_watch_usage_errors(tmp_path, capsys) -> None:
    code, _, err = run(capsys, "watch", tmp_path / "cam0", "--interval", "0")
    assert code == 2 and "positive number of seconds" in err
    code, _, err = run(capsys, "watch", tmp_path / "missing")
    assert code == 2 and "missing" in err
    code, out, _ = run(capsys, "watch", "--help")
    assert code == 0 and out.startswith("usage: split-dataset watch")


# ----------------------------------------------------------------------------- napari


def test_napari_layer_of_a_live_dataset_grows_on_refresh(tmp_path, monkeypatch) -> None:
    pytest.importorskip("napari")
    from napari.components import ViewerModel

    from split_dataset.napari import _reader, read, refresh

    monkeypatch.setattr(_reader, "MULTISCALE_FROM", 16)  # small frames, but a pyramid for the second dataset
    monkeypatch.setattr(_reader.pyramid, "__defaults__", (8,))
    viewer = ViewerModel()
    path = tmp_path / "cam0"
    w = writer(path)
    for i in range(5):
        w.append(frame(i))
    w.flush()
    (data, kwargs, kind), = read(str(path))
    layer = viewer.add_image(data, **kwargs)
    assert layer.data.shape == (5, 3, 5) and layer.metadata["complete"] is False
    assert refresh(layer) is False  # nothing new
    for i in range(5, 12):
        w.append(frame(i))
    w.flush()
    assert refresh(layer) is True
    assert layer.data.shape == (12, 3, 5) and viewer.dims.range[0][1] >= 11
    np.testing.assert_array_equal(np.asarray(layer.data[11]), frame(11))
    w.close()
    assert refresh(layer) is False and layer.metadata["complete"] is True
    assert refresh(layer) is False  # complete: not reopened

    # two channels (axis_order tcyx), one layer each, as a pyramid
    live = tmp_path / "two"
    w2 = SplitDatasetWriter(live, (2, 20, 24), np.uint16, 3, axis_order="tcyx", fsync=False)
    stack = np.arange(2 * 20 * 24 * 7, dtype=np.uint16).reshape(7, 2, 20, 24)
    w2.append(stack[:4])
    w2.flush()
    layers = [viewer.add_image(d, **k) for d, k, _ in read(str(live))]
    assert [la.multiscale for la in layers] == [True, True] and layers[1].data[0].shape == (4, 20, 24)
    w2.append(stack[4:])
    w2.close()
    assert [refresh(la) for la in layers] == [True, True]
    for c, la in enumerate(layers):
        assert la.data[0].shape == (7, 20, 24) and la.data[1].shape == (7, 10, 12)
        np.testing.assert_array_equal(np.asarray(la.data[0][6]), stack[6, c])
    with pytest.raises(ValueError, match="not opened from a split dataset"):
        refresh(viewer.add_image(np.zeros((2, 4, 4))))


def test_top_level_exports() -> None:
    assert split_dataset.follow is follow
    assert split_dataset.open_cameras is split_dataset.cameras.open_cameras
