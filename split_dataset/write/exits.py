"""Open writers are written out however the program ends: exit, exception, Ctrl-C, SIGTERM.

:func:`register` a writer when it starts and :func:`unregister` it when it is closed.
Until then, the interpreter's exit calls its ``_shutdown(complete=False)`` (docs/format.md
§10), SIGTERM raises ``SystemExit(143)`` in the main thread while the program has not set
its own handler, and a forked child forgets its parent's writers.
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
from concurrent.futures import thread as _cf_thread
from types import FrameType
from typing import Protocol

__all__ = ["ShutdownTarget", "register", "unregister"]


class ShutdownTarget(Protocol):
    """What the exit hooks need of a writer."""

    def _shutdown(self, complete: bool) -> None: ...


#: Writers not closed yet. A plain set: each writer is kept alive by its background thread
#: anyway (a forgotten writer is never garbage collected before the interpreter exits).
_OPEN_WRITERS: set[ShutdownTarget] = set()
_OPEN_LOCK = threading.Lock()


def register(writer: ShutdownTarget) -> None:
    """Have `writer` written out at exit, and SIGTERM turned into ``SystemExit`` meanwhile."""
    with _OPEN_LOCK:
        _OPEN_WRITERS.add(writer)
    _install_sigterm_handler()


def unregister(writer: ShutdownTarget) -> None:
    """`writer` is closed: forget it (and restore SIGTERM's default after the last one)."""
    with _OPEN_LOCK:
        _OPEN_WRITERS.discard(writer)
    _restore_sigterm_handler()


def _close_forgotten_writers() -> None:
    """Write out and stop every writer still open when the main thread ends (complete: false).

    Registered with ``threading._register_atexit``: those hooks run when the main thread
    has finished, *before* ``concurrent.futures`` refuses new work (its own hook, which
    registered earlier, runs after ours) and before non-daemon threads are joined. The
    plain ``atexit`` hook, which 1.x used alone, runs after that: the writer's thread then
    could not compress anything ("cannot schedule new futures after interpreter
    shutdown") and every frame not yet written was lost.

    Other non-daemon threads may still be appending (an acquisition thread the main one
    started and left running): they are joined first, as the interpreter would join them
    anyway, but while blocks can still be compressed. Pool threads of
    ``concurrent.futures`` are not joined (they only stop after this hook).
    """
    if not _OPEN_WRITERS:
        return
    pool_threads = set(getattr(_cf_thread, "_threads_queues", {}))  # the pool's private registry
    main, me = threading.main_thread(), threading.current_thread()
    for t in threading.enumerate():
        if t is not main and t is not me and not t.daemon and t not in pool_threads:
            t.join()
    _shutdown_all()


def _shutdown_all() -> None:
    for w in list(_OPEN_WRITERS):
        try:
            w._shutdown(complete=False)
        except BaseException:
            pass


try:
    threading._register_atexit(_close_forgotten_writers)  # type: ignore[attr-defined]
except (AttributeError, RuntimeError):  # pragma: no cover - Python without the hook
    atexit.register(_close_forgotten_writers)
atexit.register(_shutdown_all)  # the last chance, if the threading hook could not run


def _forget_writers_in_child() -> None:
    """A forked child does not own its parent's writers (their threads did not survive the
    fork): it must never close them, which would rewrite the parent's metadata."""
    _OPEN_WRITERS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_writers_in_child)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM while a writer is open: exit like ``sys.exit(143)``, so every frame gets written."""
    raise SystemExit(128 + signum)


def _install_sigterm_handler() -> None:
    """Turn SIGTERM into ``SystemExit`` while writers are open, if nobody else handles it."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        return
    try:
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):  # pragma: no cover - not allowed here
        pass


def _restore_sigterm_handler() -> None:
    if _OPEN_WRITERS or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        return
    try:
        if signal.getsignal(signal.SIGTERM) is _on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except (ValueError, OSError):  # pragma: no cover
        pass
