"""Helpers for test_hostile: run the probe and the CLI in children with timeouts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PROBE = Path(__file__).with_name("probe.py")


def probe(path: Path, *ops: str, timeout: float = 60, memory: int = 4 << 30) -> dict[str, str]:
    """``{op: outcome}``; a child that dies or hangs gives ``"DIED:<how>"`` for the ops it did not finish."""
    env = dict(os.environ, PROBE_MEMORY_LIMIT=str(memory))
    died = ""
    try:
        proc = subprocess.run([sys.executable, str(PROBE), str(path), *ops], capture_output=True, text=True,
                              timeout=timeout, env=env)
        out = proc.stdout
        if proc.returncode:
            died = f"exit {proc.returncode}: {proc.stderr[-300:]}"
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        died = f"HANG (>{timeout}s)"
    results = {}
    for line in out.splitlines():
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            continue
        results[doc["op"]] = doc["outcome"]
    for op in ops:
        results.setdefault(op, f"DIED:{died}")
    return results


def path_hint(args: tuple[str, ...]) -> str:
    """A directory to run the CLI in: not the repository (whose ``split_dataset`` would shadow PYTHONPATH)."""
    return "/tmp/"


def cli(*args: str, timeout: float = 60) -> tuple[int | str, str, str]:
    """(exit code or "HANG", stdout, stderr) of ``split-dataset ARGS`` run as a module."""
    try:
        proc = subprocess.run([sys.executable, "-m", "split_dataset", *args], capture_output=True, text=True,
                              timeout=timeout, cwd=os.path.dirname(os.path.abspath(path_hint(args))))
    except subprocess.TimeoutExpired:
        return "HANG", "", ""
    return proc.returncode, proc.stdout, proc.stderr


def cli_ok(outcome: str, *, lines: tuple[int, int] = (1, 1), codes: tuple[int, ...] = (1, 2)) -> bool:
    """A ``cli:`` probe outcome with an exit code in `codes`, no traceback, and between
    ``lines[0]`` and ``lines[1]`` lines on stderr."""
    if not outcome.startswith("cli:"):
        return False
    _, code, nlines, text = outcome.split(":", 3)
    return int(code) in codes and "Traceback" not in text and lines[0] <= int(nlines) <= lines[1]
