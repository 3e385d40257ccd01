"""Cached virtualenv with the old ``split-dataset==0.4.4`` and a runner for ``old_worker.py``.

The old package needs NumPy < 2, so it cannot share an interpreter with the new one.
The env is built once into ``benchmarks/.oldenv/`` (git-ignored) and reused while the
requirement list is unchanged; the worker is run there with ``python -I`` so neither
``PYTHONPATH`` nor the working tree's new ``split_dataset`` can shadow the old package.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_ENV_DIR = HERE / ".oldenv"
WORKER = HERE / "old_worker.py"
REQUIREMENTS = (
    "numpy==1.26.4",
    "split-dataset==0.4.4",
    "flammkuchen",
    "tables<3.11",
    "h5py",
    "hdf5plugin",
)
_MARKER = ".requirements-installed"


def _env_python(env_dir: Path) -> Path:
    return env_dir / "bin" / "python"


def _default_base_python() -> str:
    """An interpreter that NumPy 1.26.4 has wheels for and the worker runs on (CPython 3.10 to 3.12)."""
    if (3, 10) <= sys.version_info[:2] <= (3, 12):
        return sys.executable  # `-m venv` from inside a venv bases the new env on the base interpreter
    for name in ("python3.12", "python3.11", "python3.10"):
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError("no Python 3.10-3.12 found for the old-package env; pass --old-python")


def ensure_env(env_dir: Path = DEFAULT_ENV_DIR, base_python: str | None = None, quiet: bool = False) -> Path:
    """Create (once) the old-package virtualenv and return its python executable."""
    python = _env_python(env_dir)
    wanted = "\n".join(REQUIREMENTS) + "\n"
    marker = env_dir / _MARKER
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    if env_dir.exists():
        shutil.rmtree(env_dir)
    base = base_python or _default_base_python()
    if not quiet:
        print(f"[oldenv] creating {env_dir} with {base} and installing {' '.join(REQUIREMENTS)} ...", flush=True)
    subprocess.run([base, "-m", "venv", str(env_dir)], check=True)
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check"]
    if quiet:
        pip.append("-q")
    proc = subprocess.run([*pip, *REQUIREMENTS], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"pip install into {env_dir} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    check = subprocess.run(
        [str(python), "-I", "-c", "import numpy, split_dataset, flammkuchen, tables, h5py, hdf5plugin"],
        capture_output=True,
        text=True,
    )
    if check.returncode != 0:
        raise RuntimeError(f"old-package env at {env_dir} does not import:\n{check.stderr}")
    marker.write_text(wanted)
    return python


def run_worker(python: Path, job: dict[str, Any], job_file: Path, timeout: float = 3600) -> dict[str, Any]:
    """Run ``old_worker.py`` on `job` (written to `job_file`) and return its JSON answer."""
    job_file.write_text(json.dumps(job))
    # no PYTHON* (the old package must not see the new one) and glibc malloc at its defaults
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "MALLOC_", "GLIBC_TUNABLES"))}
    proc = subprocess.run(
        [str(python), "-I", str(WORKER), str(job_file)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"old worker failed (exit {proc.returncode}):\n{proc.stderr[-5000:]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if not lines:
        raise RuntimeError(f"old worker printed nothing; stderr:\n{proc.stderr[-5000:]}")
    answer: dict[str, Any] = json.loads(lines[-1])
    return answer


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--env-dir", type=Path, default=DEFAULT_ENV_DIR)
    parser.add_argument("--old-python", default=None, help="base interpreter for the env (3.10-3.12)")
    args = parser.parse_args()
    py = ensure_env(args.env_dir, args.old_python)
    info = subprocess.run([str(py), "-I", str(WORKER), "--versions"], capture_output=True, text=True, check=True).stdout
    print(py)
    print(info)
