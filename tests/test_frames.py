"""Per-frame records (time stamps, camera frame ids, small numbers), dropped-frame detection and
writer health: stored with the frames, surviving SIGKILL exactly as the frames do, read back
lazily, resumed, readable by the old package's way of finding the array.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

import split_dataset
from split_dataset import SplitDataset, SplitDatasetWriter
from split_dataset.errors import DroppedFramesWarning
from split_dataset.storage import STATUS_FILENAME

TESTS = str(Path(__file__).parent)
FRAME = (3, 8, 6)


def frames(start: int, n: int) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.uint16)[:, None, None, None] * np.ones(FRAME, np.uint16)


def writer(path: Path, fpf: int = 4, **kw) -> SplitDatasetWriter:
    return SplitDatasetWriter(path, FRAME, np.uint16, fpf, fsync=False, **kw)


def killed_after(body: str, line: str, *, warnings_off: bool = False) -> None:
    """Run `body` in a Python process (``frames``, ``writer``, ``Path``, ``time``, ``np`` imported),
    wait until it prints `line`, then SIGKILL it."""
    prelude = textwrap.dedent(f"""
        import sys, time, warnings, numpy as np
        sys.path.insert(0, {TESTS!r})
        from test_frames import frames, writer
        from pathlib import Path
    """)
    flags = ["-W", "ignore"] if warnings_off else []
    proc = subprocess.Popen([sys.executable, *flags, "-c", prelude + textwrap.dedent(body)], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == line
    finally:
        proc.kill()
        proc.wait()


def test_records_round_trip(tmp_path: Path):
    path = tmp_path / "acq"
    times = 1000.0 + 0.25 * np.arange(10)
    with writer(path) as w:
        w.append(frames(0, 3), timestamps=times[:3], frame_ids=[0, 1, 2], meta={"exposure_ms": 5.0})
        for t in range(3, 10):
            w.append(frames(t, 1), timestamps=times[t], frame_ids=t, meta={"stage_z": t * 0.5} if t > 5 else None)
    ds = SplitDataset(path)
    np.testing.assert_array_equal(ds.frame_times, times)
    np.testing.assert_array_equal(ds.frame_ids, np.arange(10))
    meta = ds.frame_meta
    assert meta.dtype.names == ("time", "id", "exposure_ms", "stage_z")
    np.testing.assert_array_equal(meta["exposure_ms"][:3], 5.0)
    assert np.isnan(meta["exposure_ms"][3:]).all()
    assert np.isnan(meta["stage_z"][:6]).all() and meta["stage_z"][9] == 4.5
    assert ds.dropped_frames.size == 0 and w.n_dropped == 0
    np.testing.assert_array_equal(ds[:], frames(0, 10))


def test_defaults_arrival_time_and_no_ids(tmp_path: Path):
    path = tmp_path / "acq"
    before = time.time()
    with writer(path) as w:
        w.append(frames(0, 6))
    after = time.time()
    ds = SplitDataset(path)
    assert ((ds.frame_times >= before) & (ds.frame_times <= after)).all()
    assert ds.frame_ids is None and ds.frame_meta.dtype.names == ("time", "id")


def test_datasets_without_records(tmp_path: Path):
    ds = split_dataset.save(frames(0, 5), tmp_path / "saved", (2,), fsync=False)
    assert ds.frame_meta is None and ds.frame_times is None and ds.frame_ids is None
    assert ds.dropped_frames.size == 0


def test_dropped_frames_are_warned_counted_recorded(tmp_path: Path):
    path = tmp_path / "acq"
    ids = [10, 11, 14, 15, 16, 20, 21]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with writer(path) as w:
            w.append(frames(0, 3), frame_ids=ids[:3])  # a gap inside a batch
            for t, fid in enumerate(ids[3:], 3):
                w.append(frames(t, 1), frame_ids=fid)  # and between appends
            assert w.n_dropped == 5 and w.health().n_dropped == 5
    messages = [str(c.message) for c in caught if issubclass(c.category, DroppedFramesWarning)]
    assert len(messages) == 2 and all("dropped" in m for m in messages)  # one per append that saw a gap
    ds = SplitDataset(path)
    np.testing.assert_array_equal(ds.dropped_frames, [12, 13, 17, 18, 19])
    assert json.loads((path / "stack_metadata.json").read_text())["dropped_frames"] == [[12, 2], [17, 3]]
    np.testing.assert_array_equal(ds.frame_ids, ids)


def test_ids_going_backwards_warn(tmp_path: Path):
    with pytest.warns(DroppedFramesWarning, match="did not increase"), writer(tmp_path / "acq") as w:
        w.append(frames(0, 2), frame_ids=[5, 6])
        w.append(frames(2, 1), frame_ids=6)


def test_bad_records_are_refused_before_anything_is_appended(tmp_path: Path):
    with writer(tmp_path / "acq") as w:
        with pytest.raises(ValueError, match="2 frame"):
            w.append(frames(0, 2), timestamps=[1.0, 2.0, 3.0])
        with pytest.raises(ValueError, match="finite"):
            w.append(frames(0, 1), timestamps=float("nan"))
        with pytest.raises(ValueError, match="identifiers"):
            w.append(frames(0, 1), meta={"time": 1.0})
        with pytest.raises(ValueError, match="identifiers"):
            w.append(frames(0, 1), meta={"not valid": 1.0})
        with pytest.raises(TypeError, match="numbers"):
            w.append(frames(0, 1), meta={"note": "text"})
        assert w.n_frames == 0
        w.append(frames(0, 1))
    assert SplitDataset(tmp_path / "acq").shape[0] == 1


def test_resume_keeps_the_partial_blocks_records_and_the_gaps(tmp_path: Path):
    path = tmp_path / "acq"
    with pytest.warns(DroppedFramesWarning):
        w = writer(path, frame_fields=("power",))
        w.append(frames(0, 6), timestamps=np.arange(6.0), frame_ids=[0, 1, 2, 4, 5, 6], meta={"power": 1.0})
        w.abort()  # 6 frames: one block and a partial one
    with pytest.warns(DroppedFramesWarning, match="dropped"), writer(path, mode="a") as w2:
        assert w2.n_dropped == 1
        w2.append(frames(6, 3), timestamps=[6.0, 7.0, 8.0], frame_ids=[9, 10, 11])
    ds = SplitDataset(path)
    np.testing.assert_array_equal(ds.frame_times, np.arange(9.0))
    np.testing.assert_array_equal(ds.frame_ids, [0, 1, 2, 4, 5, 6, 9, 10, 11])
    np.testing.assert_array_equal(ds.frame_meta["power"][:6], 1.0)
    np.testing.assert_array_equal(ds.dropped_frames, [3, 7, 8])


def test_records_survive_sigkill_exactly_like_the_frames(tmp_path: Path):
    path = tmp_path / "acq"
    killed_after(f"""
        w = writer(Path({str(path)!r}), fpf=4)
        for t in range(10):
            w.append(frames(t, 1), timestamps=500.0 + t, frame_ids=100 + 2 * t, meta={{"z": -t}})
        w.flush()
        w.append(frames(10, 1), timestamps=510.0, frame_ids=120)  # neither flushed nor a full block
        print("flushed 10", flush=True)
        time.sleep(60)
    """, "flushed 10", warnings_off=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = SplitDataset(path)
    assert ds.shape[0] == 10
    np.testing.assert_array_equal(ds[:], frames(0, 10))
    np.testing.assert_array_equal(ds.frame_times, 500.0 + np.arange(10))
    np.testing.assert_array_equal(ds.frame_ids, 100 + 2 * np.arange(10))
    np.testing.assert_array_equal(ds.frame_meta["z"], -np.arange(10.0))
    assert ds.dropped_frames.size == 9  # ids 101, 103, ..., 117: one between each pair


def test_old_readers_find_the_array_not_the_records(tmp_path: Path):
    """split_dataset 0.4.4 takes the first name containing 'stack' in flammkuchen's listing."""
    fl = pytest.importorskip("flammkuchen")
    path = tmp_path / "acq"
    with writer(path) as w:
        w.append(frames(0, 4), frame_ids=[0, 1, 2, 3])
    block = path / "0000.h5"
    with h5py.File(block) as f:
        assert sorted(f) == ["frame_meta", "stack_4D"]
    key = [k for k in fl.meta(str(block)).keys() if "stack" in k][0]
    np.testing.assert_array_equal(fl.load(str(block), "/" + key), frames(0, 4))


def test_health_and_the_status_file(tmp_path: Path):
    path = tmp_path / "acq"
    w = writer(path, fpf=2)
    for t in range(8):
        w.append(frames(t, 1))
    w.flush()
    h = w.health()
    assert h.frames_safe == 8 and h.frames_behind == 0 and h.queue_capacity == 2
    assert h.latency_p50 is not None and 0 <= h.latency_p50 <= h.latency_p99 < 30
    assert h.mb_per_s is None or h.mb_per_s > 0
    status = json.loads((path / STATUS_FILENAME).read_text())
    assert status["frames_safe"] >= 6 and "latency_p99" in status
    w.close()
    assert not (path / STATUS_FILENAME).exists()
    split_dataset.save(frames(0, 2), path, (2,), overwrite=True, fsync=False)  # replaced like any dataset


def test_records_read_by_url(tmp_path: Path):
    fsspec = pytest.importorskip("fsspec")
    path = tmp_path / "acq"
    with writer(path, fpf=3) as w:
        w.append(frames(0, 7), timestamps=10.0 + np.arange(7), frame_ids=np.arange(7))
    fsspec.filesystem("memory").put(str(path), "memory://frames/acq", recursive=True)
    ds = split_dataset.open("memory://frames/acq")
    np.testing.assert_array_equal(ds.frame_times, 10.0 + np.arange(7))
    np.testing.assert_array_equal(ds.frame_ids, np.arange(7))


def test_info_shows_measured_rate_jitter_and_dropped(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from split_dataset.cli import main

    path = tmp_path / "acq"
    times = 0.1 * np.arange(9) + np.array([0, 0, 0, 0.01, 0, 0, 0, 0, 0])
    with pytest.warns(DroppedFramesWarning), writer(path) as w:
        w.append(frames(0, 9), timestamps=times, frame_ids=[0, 1, 2, 3, 5, 6, 7, 8, 9])
    assert main(["info", str(path), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)["frames"]
    assert d["timed"] == 9 and d["n_dropped"] == 1 and d["dropped"] == [4]
    assert abs(d["measured_rate"] - 10) < 1e-6 and 0 < d["jitter_ms"] < 10 and abs(d["longest_interval"] - 0.11) < 1e-9
    assert main(["info", str(path)]) == 0
    assert "frames      measured 10 Hz from 9 time stamps" in capsys.readouterr().out


def test_flush_interval_makes_partial_blocks_readable_without_waiting(tmp_path: Path):
    path = tmp_path / "acq"
    with pytest.raises(ValueError, match="flush_interval"):
        writer(path, flush_interval=0)
    with pytest.raises(ValueError, match="identifiers"):
        writer(path, frame_fields=("id",))
    assert not path.exists()  # refused before anything was written
    w = writer(path, fpf=100, flush_interval=0.05)
    for t in range(5):
        w.append(frames(t, 1))
        time.sleep(0.06)
    w._work.join()  # the background write queued by the last append
    ds = SplitDataset(path)
    assert 4 <= ds.shape[0] <= 5 and w.frames_safe >= 4  # no block of 100 is full: flushed by interval
    np.testing.assert_array_equal(ds[:4], frames(0, 4))
    w.close()
    assert SplitDataset(path).shape[0] == 5


def test_flush_interval_bounds_what_sigkill_loses(tmp_path: Path):
    path = tmp_path / "acq"
    killed_after(f"""
        w = writer(Path({str(path)!r}), fpf=1000, flush_interval=0.05)
        for t in range(20):
            w.append(frames(t, 1), frame_ids=t)
            time.sleep(0.02)
        time.sleep(0.3)   # the last interval write has landed
        print("appended 20", flush=True)
        time.sleep(60)
    """, "appended 20")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = SplitDataset(path)
    assert ds.shape[0] >= 17  # at most about 0.05 s of frames (3 at 50 frames/s) were not yet written
    np.testing.assert_array_equal(ds[:], frames(0, ds.shape[0]))
    np.testing.assert_array_equal(ds.frame_ids, np.arange(ds.shape[0]))


def test_metadata_lists_only_gaps_revealed_by_frames_on_disk(tmp_path: Path):
    """A gap is published once the frame after it is on disk: after SIGKILL the metadata never
    claims drops among frames that were lost, and resuming detects the gap across the restart."""
    path = tmp_path / "acq"
    killed_after(f"""
        w = writer(Path({str(path)!r}), fpf=10)
        w.append(frames(0, 15), frame_ids=[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15])
        while w.frames_safe < 10:
            time.sleep(0.01)
        print("block 0 on disk", flush=True)
        time.sleep(60)
    """, "block 0 on disk", warnings_off=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = SplitDataset(path)
    assert ds.shape[0] == 10 and ds.dropped_frames.size == 0  # id 12's gap was never on disk
    with pytest.warns(DroppedFramesWarning), writer(path, fpf=10, mode="a") as w:
        w.append(frames(10, 3), frame_ids=[40, 41, 42])  # the last id on disk is 9: 10..39 are missing
        assert w.n_dropped == 30
    ds = SplitDataset(path)
    np.testing.assert_array_equal(ds.dropped_frames, np.arange(10, 40))
    assert ds.meta.n_dropped_frames == 30


def test_the_exact_total_survives_the_gap_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from split_dataset import stream

    monkeypatch.setattr(stream, "MAX_GAPS", 3)
    path = tmp_path / "acq"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with writer(path) as w:
            w.append(frames(0, 8), frame_ids=2 * np.arange(8))  # 7 gaps of one frame
    assert len(caught) == 1  # one warning for the append, not one per gap
    ds = SplitDataset(path)
    np.testing.assert_array_equal(ds.dropped_frames, [1, 3, 5])  # the first 3 gaps are listed
    assert ds.meta.n_dropped_frames == 7
    with writer(path, mode="a") as w2:
        assert w2.n_dropped == 7
