"""A writer's frames survive every way a process ends but SIGKILL (each case in its own process).

Every frame passed to ``append`` must be on disk after a normal exit without ``close()``,
a forgotten writer, an uncaught exception, Ctrl-C (KeyboardInterrupt, raised or a real
SIGINT), SIGTERM, ``sys.exit``; the dataset is then ``complete: false``. SIGKILL loses at
most the frames appended since the last completed block or ``flush()``.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from split_dataset import SplitDataset, SplitDatasetWriter
from split_dataset.locks import LOCK_FILENAME, live_writer
from split_dataset.verify import verify

TESTS = str(Path(__file__).parent)
PRELUDE = textwrap.dedent(f"""
    import os, sys, signal, threading, time, numpy as np
    sys.path.insert(0, {TESTS!r})
    from test_stream import frames, FRAME
    from split_dataset import SplitDatasetWriter
""")


def run(tmp_path: Path, body: str, *, timeout: float = 60) -> tuple[subprocess.CompletedProcess[str], Path]:
    path = tmp_path / "acq"
    code = PRELUDE + textwrap.dedent(body).replace("PATH", repr(str(path)))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    return proc, path


def on_disk(path: Path) -> SplitDataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SplitDataset(path)


def check(path: Path, n: int, complete: bool | None = False) -> None:
    """Exactly frames 0..n-1 on disk, the lock gone, verify happy."""
    from test_stream import frames

    ds = on_disk(path)
    assert ds.shape[0] == n, f"{ds.shape[0]} frames on disk, {n} appended"
    np.testing.assert_array_equal(ds[:], frames(0, n))
    assert ds.complete is complete
    assert live_writer(path) is None and not (path / LOCK_FILENAME).exists()
    report = verify(path)
    assert report.ok, report.problems


def test_module_level_writer_never_closed(tmp_path) -> None:
    proc, path = run(tmp_path, """
        w = SplitDatasetWriter(PATH, FRAME, np.uint16, 10, fsync=False)
        for t in range(25):
            w.append(frames(t, 1))
    """)
    assert proc.returncode == 0, proc.stderr
    check(path, 25)


def test_writer_forgotten_in_a_function(tmp_path) -> None:
    proc, path = run(tmp_path, """
        import gc
        def acquire():
            w = SplitDatasetWriter(PATH, FRAME, np.uint16, 10, fsync=False)
            for t in range(25):
                w.append(frames(t, 1))
        acquire()
        gc.collect()  # the writer is unreachable from here on; its thread keeps it
        time.sleep(0.2)
    """)
    assert proc.returncode == 0, proc.stderr
    check(path, 25)


@pytest.mark.parametrize("exc", ["KeyboardInterrupt", "RuntimeError('camera gone')"])
def test_uncaught_exception_in_the_loop(tmp_path, exc) -> None:
    proc, path = run(tmp_path, f"""
        w = SplitDatasetWriter(PATH, FRAME, np.uint16, 10, fsync=False)
        for t in range(1310):
            w.append(frames(t, 1))
        raise {exc}
    """)
    assert proc.returncode != 0 and exc.split("(")[0] in proc.stderr
    check(path, 1310)


def test_sys_exit_inside_a_with_block(tmp_path) -> None:
    proc, path = run(tmp_path, """
        with SplitDatasetWriter(PATH, FRAME, np.uint16, 10, fsync=False) as w:
            w.append(frames(0, 23))
            sys.exit(3)
    """)
    assert proc.returncode == 3
    check(path, 23)


SIGNALLED = """
    w = SplitDatasetWriter(PATH, FRAME, np.uint16, 7, fsync=False)
    t = 0
    try:
        while True:
            w.append(frames(t, 1))
            t += 1
            if t == 50:
                print("go", flush=True)
    finally:
        print("appended", t, flush=True)
"""


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_signal_during_acquisition(tmp_path, sig) -> None:
    """A real SIGTERM / Ctrl-C at a random moment: every frame whose append returned is on disk."""
    path = tmp_path / "acq"
    code = PRELUDE + textwrap.dedent(SIGNALLED).replace("PATH", repr(str(path)))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "go"
    time.sleep(random.uniform(0.05, 0.3))
    proc.send_signal(getattr(signal, sig))
    out, err = proc.communicate(timeout=60)
    appended = int(out.split()[-1])
    if sig == "SIGTERM":
        assert proc.returncode == 128 + signal.SIGTERM, err  # SystemExit(143), as the docs say
    else:
        assert "KeyboardInterrupt" in err
    ds = on_disk(path)
    # the interrupted append itself may or may not have stored its frame
    assert ds.shape[0] in (appended, appended + 1), (ds.shape, appended)
    check(path, ds.shape[0])


def test_sigterm_handler_is_ours_only_while_a_writer_is_open(tmp_path) -> None:
    proc, _ = run(tmp_path, """
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        w = SplitDatasetWriter(PATH, FRAME, np.uint16, 7, fsync=False)
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        w.close()
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        mine = lambda *a: None
        signal.signal(signal.SIGTERM, mine)
        w = SplitDatasetWriter(PATH, FRAME, np.uint16, 7, mode="a", fsync=False)
        assert signal.getsignal(signal.SIGTERM) is mine  # a program's own handler is left alone
        w.close()
        print("ok")
    """)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_writer_fed_by_a_thread_that_outlives_the_main_one(tmp_path) -> None:
    """The main thread returns while an acquisition thread still appends: nothing is cut short."""
    proc, path = run(tmp_path, """
        w = SplitDatasetWriter(PATH, FRAME, np.uint16, 10, fsync=False)
        def acquire():
            for t in range(40):
                w.append(frames(t, 1))
                time.sleep(0.005)
            w.append(frames(40, 2))  # and never closes it
        threading.Thread(target=acquire).start()
    """)
    assert proc.returncode == 0, proc.stderr
    check(path, 42)


def test_sigkill_loses_only_what_was_not_flushed(tmp_path) -> None:
    """The README's promise: frames up to the last completed block or flush() survive SIGKILL."""
    path = tmp_path / "acq"
    code = PRELUDE + textwrap.dedent("""
        w = SplitDatasetWriter(PATH, FRAME, np.uint16, 10, fsync=False)
        w.append(frames(0, 27))
        w.flush()
        w.append(frames(27, 2))  # not flushed, no block completed
        print("flushed 27", flush=True)
        time.sleep(60)
    """).replace("PATH", repr(str(path)))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "flushed 27"
    proc.kill()
    proc.wait()
    ds = on_disk(path)
    assert ds.shape[0] == 27
    assert live_writer(path) is None  # the lock file is there, but its holder is gone
    report = verify(path)
    assert report.ok and any("no longer runs" in n for n in report.notes), report.notes
    with SplitDatasetWriter(path, (3, 8, 6), np.uint16, 10, mode="a", fsync=False) as w:
        assert w.n_frames == 27
    check(path, 27, complete=True)


def test_folder_is_a_valid_dataset_after_every_flush_seen_from_another_process(tmp_path) -> None:
    """The docstring's claim, checked by this process while the writer's process waits after each flush:
    the dataset opens, holds exactly the flushed frames, and verify (checksums included) is happy."""
    path = tmp_path / "acq"
    code = PRELUDE + textwrap.dedent("""
        import random
        random.seed(7)
        w = SplitDatasetWriter(PATH, FRAME, np.uint16, 4, fsync=False)
        t = 0
        for _ in range(6):
            n = random.choice([1, 2, 3, 5, 8])
            w.append(frames(t, n))
            t += n
            w.flush()
            print(t, flush=True)
            sys.stdin.readline()
        w.close()
        print("closed", flush=True)
    """).replace("PATH", repr(str(path)))
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    from test_stream import frames

    for _ in range(6):
        n = int(proc.stdout.readline())
        ds = on_disk(path)
        assert ds.shape[0] == n and ds.complete is False
        np.testing.assert_array_equal(ds[:], frames(0, n))
        report = verify(path)
        assert report.ok and report.checksums_verified, report.problems
        assert live_writer(path) == f"process {proc.pid} on {os.uname().nodename}"
        proc.stdin.write("\n")
        proc.stdin.flush()
    assert proc.stdout.readline().strip() == "closed" and proc.wait(30) == 0
    check(path, n, complete=True)


def test_abort_writes_everything_and_leaves_it_incomplete(tmp_path) -> None:
    from test_stream import frames

    w = SplitDatasetWriter(tmp_path / "acq", (3, 8, 6), np.uint16, 4, fsync=False)
    w.append(frames(0, 7))
    w.abort()
    check(tmp_path / "acq", 7, complete=False)


def test_a_forked_child_neither_closes_the_writer_nor_keeps_its_lock(tmp_path) -> None:
    """A child forked while a writer runs exits normally; the parent's dataset and lock are untouched,
    and the lock does not outlive the parent in the child."""
    proc, path = run(tmp_path, """
        w = SplitDatasetWriter(PATH, FRAME, np.uint16, 10, fsync=False)
        w.append(frames(0, 12))
        w.flush()
        pid = os.fork()
        if pid == 0:
            time.sleep(1.5)  # outlives the parent (which is killed below)
            sys.exit(0)  # a normal exit: exit hooks run in the child
        w.append(frames(12, 5))
        w.flush()
        print(pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    child = int(proc.stdout.split()[0])
    os.kill(child, 0)  # still running, the parent is dead
    assert live_writer(path) is None  # so nobody holds the lock: the child did not keep it
    for _ in range(200):  # wait for the child's exit
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.02)
    else:
        pytest.fail("the forked child did not exit")
    ds = on_disk(path)
    assert ds.shape[0] == 17 and ds.complete is False  # the child did not rewrite the metadata
