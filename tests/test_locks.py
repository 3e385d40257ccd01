"""The writer lock: OS-locked lock files, stale-lock takeover (raced on purpose), old-style locks, links."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import split_dataset
from split_dataset import SplitDataset, SplitDatasetWriter
from split_dataset.errors import WriterLockedError
from split_dataset.locks import LOCK_FILENAME, WriterLock, live_writer, refuse_if_written, writer_gone

TESTS = str(Path(__file__).parent)


def dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def killed_holder(root: Path) -> int:
    """A process that takes the lock of `root` and is SIGKILLed holding it; its pid."""
    code = f"from split_dataset.locks import WriterLock; import time; l = WriterLock.acquire({str(root)!r}); " \
           "print('held', flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    assert live_writer(root) == f"process {proc.pid} on {socket.gethostname()}"
    proc.kill()
    proc.wait()
    return proc.pid


def test_lock_is_held_and_released(tmp_path) -> None:
    lock = WriterLock.acquire(tmp_path)
    assert (tmp_path / LOCK_FILENAME).read_text().split() == [socket.gethostname(), str(os.getpid()), "flock"]
    assert live_writer(tmp_path) == f"process {os.getpid()} on {socket.gethostname()}"
    with pytest.raises(WriterLockedError, match=f"process {os.getpid()}"):
        WriterLock.acquire(tmp_path)  # flock is per open file: a second lock in one process conflicts too
    with pytest.raises(WriterLockedError, match="refusing to replace it"):
        refuse_if_written(tmp_path, "replace it")
    lock.release()
    lock.release()  # idempotent
    assert not (tmp_path / LOCK_FILENAME).exists() and live_writer(tmp_path) is None


def test_live_writer_asks_the_os_lock_not_the_pid(tmp_path) -> None:
    """A SIGKILLed holder leaves its file; the kernel dropped its lock, so it is not live."""
    pid = killed_holder(tmp_path)
    assert (tmp_path / LOCK_FILENAME).exists()
    assert live_writer(tmp_path) is None
    assert writer_gone(tmp_path) == f"process {pid} on {socket.gethostname()}"
    refuse_if_written(tmp_path, "replace it")  # no live writer: allowed
    lock = WriterLock.acquire(tmp_path)  # taken over
    assert live_writer(tmp_path) == f"process {os.getpid()} on {socket.gethostname()}"
    lock.release()


def test_live_writer_does_not_drop_the_holders_lock(tmp_path) -> None:
    """Asking closes its own descriptor only: the writer's flock survives (lockf would not)."""
    lock = WriterLock.acquire(tmp_path)
    for _ in range(3):
        assert live_writer(tmp_path) is not None
    code = f"from split_dataset.locks import live_writer; print(live_writer({str(tmp_path)!r}))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip()
    assert other == f"process {os.getpid()} on {socket.gethostname()}"
    lock.release()


@pytest.mark.parametrize("alive", [True, False])
def test_lock_files_of_older_versions_are_honoured(tmp_path, alive) -> None:
    """'host pid' without an OS lock (split_dataset before the flock): live while that pid runs."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) if alive else None
    pid = sleeper.pid if sleeper else dead_pid()
    try:
        (tmp_path / LOCK_FILENAME).write_text(f"{socket.gethostname()} {pid}")
        if alive:
            assert live_writer(tmp_path) == f"process {pid} on {socket.gethostname()}"
            with pytest.raises(WriterLockedError, match=f"process {pid}"):
                WriterLock.acquire(tmp_path)
        else:
            assert live_writer(tmp_path) is None
            WriterLock.acquire(tmp_path).release()
    finally:
        if sleeper:
            sleeper.kill()
            sleeper.wait()


def test_lock_of_another_host_without_os_lock_is_honoured(tmp_path) -> None:
    (tmp_path / LOCK_FILENAME).write_text("some-other-host 1234")
    assert live_writer(tmp_path) == "process 1234 on some-other-host"
    with pytest.raises(WriterLockedError, match="some-other-host"):
        WriterLock.acquire(tmp_path)


def test_a_link_in_place_of_the_lock_file_is_never_written_through(tmp_path) -> None:
    target = tmp_path / "elsewhere.txt"
    target.write_text("precious")
    root = tmp_path / "ds"
    root.mkdir()
    (root / LOCK_FILENAME).symlink_to(target)
    assert live_writer(root) is not None
    with pytest.raises(WriterLockedError, match="symbolic link"):
        WriterLock.acquire(root)
    assert target.read_text() == "precious"


# ----------------------------------------------------------------------------- races

RACER = textwrap.dedent(r"""
    import os, sys, time, numpy as np
    sys.path.insert(0, {tests!r})
    import split_dataset.locks as locks
    from split_dataset import SplitDatasetWriter
    from split_dataset.errors import WriterLockedError
    from test_stream import frames, FRAME
    locks._before_takeover = lambda: time.sleep({pause})  # widen the window between reading and acting
    if {no_fcntl}:
        locks.fcntl = None  # the fallback for platforms without fcntl: a stale lock is refused
    barrier, n = {barrier!r}, {n}
    def count(kind):
        return sum(1 for f in os.listdir(barrier) if f.startswith(kind))
    open(os.path.join(barrier, f"ready.{{os.getpid()}}"), "w").close()
    t0 = time.time()
    while count("ready") < n and time.time() - t0 < 60:  # everyone imported: go together
        time.sleep(0.001)
    try:
        w = SplitDatasetWriter({path!r}, FRAME, np.uint16, 4, mode="a", fsync=False)
    except WriterLockedError as e:
        open(os.path.join(barrier, f"done.{{os.getpid()}}"), "w").close()
        print("locked", e, flush=True)
        sys.exit(0)
    k = w.n_frames
    w.append(frames(k, 5))
    t0 = time.time()
    while count("done") < n - 1 and time.time() - t0 < 60:  # hold the lock until all the others tried
        time.sleep(0.01)
    w.close()
    print("won", k, flush=True)
""")


def race(tmp_path: Path, n_procs: int, pause: float = 0.3, no_fcntl: bool = False) -> None:
    """`n_procs` writers start on a dead writer's lock at the same moment: exactly one wins, no frame is lost."""
    from test_stream import frames

    path = tmp_path / "acq"
    with SplitDatasetWriter(path, (3, 8, 6), np.uint16, 4, fsync=False) as w:
        w.append(frames(0, 6))
    killed_holder(path)  # the stale lock: its holder died (SIGKILL)
    assert (path / LOCK_FILENAME).exists()
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    code = RACER.format(tests=TESTS, path=str(path), barrier=str(barrier), n=n_procs, pause=pause, no_fcntl=no_fcntl)
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(n_procs)]
    outs = [p.communicate(timeout=180) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    won = [o[0] for o in outs if o[0].startswith("won")]
    if no_fcntl:  # no OS lock: a stale lock is refused (no takeover could be atomic), nothing is written
        assert not won and all("no longer runs" in o[0] for o in outs), [o[0] for o in outs]
        assert (path / LOCK_FILENAME).exists()
        (path / LOCK_FILENAME).unlink()  # what the message asks a person to do
        np.testing.assert_array_equal(SplitDataset(path)[:], frames(0, 6))
        return
    assert len(won) == 1, [o[0] for o in outs]
    assert all(o[0].startswith("locked") for o in outs if not o[0].startswith("won"))
    ds = SplitDataset(path)
    assert ds.shape[0] == 11 and ds.complete is True
    np.testing.assert_array_equal(ds[:], frames(0, 11))
    assert not (path / LOCK_FILENAME).exists()
    from split_dataset.verify import verify

    assert verify(path).ok


def test_stale_lock_race_has_one_winner(tmp_path) -> None:
    race(tmp_path, 4)


@pytest.mark.full
@pytest.mark.parametrize("round_", range(6))
def test_stale_lock_race_has_one_winner_full(tmp_path, round_) -> None:
    race(tmp_path, 10, pause=[0.0, 0.05, 0.3][round_ % 3])


@pytest.mark.full
@pytest.mark.parametrize("round_", range(3))
def test_stale_lock_without_fcntl_is_refused_by_every_racer(tmp_path, round_) -> None:
    race(tmp_path, 6, pause=[0.0, 0.05, 0.3][round_ % 3], no_fcntl=True)


def test_lock_released_and_recreated_during_takeover(tmp_path, monkeypatch) -> None:
    """A taker that opened a lock file which was released and replaced meanwhile must not use it."""
    import split_dataset.locks as locks

    root = tmp_path
    first = WriterLock.acquire(root)
    events: list[str] = []
    holder: list[WriterLock] = []

    def meanwhile() -> None:  # between our open() and our flock(): the holder leaves, another comes
        if not events:
            events.append("swap")
            first.release()
            holder.append(WriterLock._acquire_os_locked(root / LOCK_FILENAME, 3))

    monkeypatch.setattr(locks, "_before_takeover", meanwhile)
    with pytest.raises(WriterLockedError, match=f"process {os.getpid()}"):
        WriterLock.acquire(root)  # it must see the newcomer's lock, not take the released file
    assert events == ["swap"] and holder[0].held
    holder[0].release()


def test_sigterm_of_a_lock_holder_releases(tmp_path) -> None:
    code = f"from split_dataset.locks import WriterLock; import time; l = WriterLock.acquire({str(tmp_path)!r}); " \
           "print('held', flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    os.kill(proc.pid, signal.SIGTERM)
    proc.wait()
    assert live_writer(tmp_path) is None


# ----------------------------------------------------------------------------- nothing replaces a live writer's folder


def live(tmp_path: Path) -> tuple[SplitDatasetWriter, Path]:
    from test_stream import frames

    path = tmp_path / "acq"
    w = SplitDatasetWriter(path, (3, 8, 6), np.uint16, 4, fsync=False)
    w.append(frames(0, 6))
    w.flush()
    return w, path


def finish_intact(w: SplitDatasetWriter, path: Path) -> None:
    """The writer goes on and closes cleanly; the folder holds its frames only."""
    from test_stream import frames

    from split_dataset.verify import verify

    w.append(frames(6, 3))
    w.close()
    ds = SplitDataset(path)
    assert ds.shape[0] == 9 and ds.complete is True
    np.testing.assert_array_equal(ds[:], frames(0, 9))
    assert verify(path).ok


REPLACERS = {
    "save": lambda p: split_dataset.save(np.zeros((5, 2), "u1"), p, overwrite=True),
    "save-no-overwrite": lambda p: split_dataset.save(np.zeros((5, 2), "u1"), p),
    "prepare_folder": lambda p: split_dataset.writer.prepare_folder(p, overwrite=True),
    "writer-w": lambda p: SplitDatasetWriter(p, (2,), np.uint8, 2, overwrite=True),
    "writer-a": lambda p: SplitDatasetWriter(p, (3, 8, 6), np.uint16, 4, mode="a"),
    "empty-split-dataset": lambda p: split_dataset.EmptySplitDataset(p.parent, p.name, shape_full=(5, 2),
                                                                     shape_block=(5, 2)),
    "convert": lambda p: split_dataset.convert.convert(np.save(p.parent / "x.npy", np.zeros((5, 2), "u1"))
                                                       or p.parent / "x.npy", p, overwrite=True),
}


@pytest.mark.parametrize("how", list(REPLACERS))
def test_nothing_replaces_a_live_writers_folder(tmp_path, how) -> None:
    import split_dataset.convert
    import split_dataset.writer  # noqa: F401 - the lambdas use them

    w, path = live(tmp_path)
    if how == "save-no-overwrite":  # refused as any non-empty folder is (WriterLockedError is one too)
        with pytest.raises(FileExistsError):
            REPLACERS[how](path)
    else:
        with pytest.raises(WriterLockedError, match=f"process {os.getpid()}"):
            REPLACERS[how](path)
    finish_intact(w, path)


def test_dask_save_refuses_a_live_writers_folder(tmp_path) -> None:
    da = pytest.importorskip("dask.array")
    w, path = live(tmp_path)
    with pytest.raises(WriterLockedError):
        split_dataset.save(da.zeros((5, 2), chunks=2, dtype="u1"), path, overwrite=True)
    finish_intact(w, path)


def test_save_over_a_writer_in_another_process_is_refused(tmp_path) -> None:
    """The reported case: save(overwrite=True) replaced a folder another process was filling."""
    path = tmp_path / "acq"
    code = textwrap.dedent(f"""
        import sys, time, numpy as np
        sys.path.insert(0, {TESTS!r})
        from test_stream import frames, FRAME
        from split_dataset import SplitDatasetWriter
        w = SplitDatasetWriter({str(path)!r}, FRAME, np.uint16, 4, fsync=False)
        w.append(frames(0, 6)); w.flush()
        print("ready", flush=True)
        sys.stdin.readline()
        w.append(frames(6, 3)); w.close()
        print("closed", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    with pytest.raises(WriterLockedError, match=f"process {proc.pid}"):
        split_dataset.save(np.ones((7, 2), "u1"), path, overwrite=True)
    proc.stdin.write("go\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "closed" and proc.wait(30) == 0
    from test_stream import frames

    np.testing.assert_array_equal(SplitDataset(path)[:], frames(0, 9))


def test_a_writer_cannot_start_while_save_writes(tmp_path, monkeypatch) -> None:
    """save holds the lock while it writes: a writer starting meanwhile is refused, not mixed in."""
    from split_dataset.writer import BlockSink

    seen = []
    real = BlockSink.write_unchecked

    def during(self, index, arr):
        if not seen:
            with pytest.raises(WriterLockedError):
                SplitDatasetWriter(self.root, (2,), np.uint8, 2, mode="a")
            seen.append(index)
        return real(self, index, arr)

    monkeypatch.setattr(BlockSink, "write_unchecked", during)
    ds = split_dataset.save(np.zeros((6, 2), "u1"), tmp_path / "ds", (2,), fsync=False)
    assert seen == [0] and ds.shape == (6, 2) and not (tmp_path / "ds" / LOCK_FILENAME).exists()


def test_a_dead_writers_folder_may_be_replaced(tmp_path) -> None:
    path = tmp_path / "ds"
    split_dataset.save(np.zeros((5, 2), "u1"), path, fsync=False)
    killed_holder(path)
    split_dataset.save(np.ones((5, 2), "u1"), path, overwrite=True, fsync=False)
    assert SplitDataset(path)[:].tolist() == np.ones((5, 2)).tolist()
    assert not (path / LOCK_FILENAME).exists()
