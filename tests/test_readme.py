"""README.md runs as written.

Every ```python block runs, in order, in one namespace, in a fresh empty working
directory, in one child process (as a reader would paste them into one session); a
failure names the block and its line in README.md, with the traceback. Then the
``split-dataset`` commands of the ```bash blocks that only read or write inside that
directory run on what the examples created, and every command named anywhere in the
README must exist (``split-dataset COMMAND --help`` exits 0).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

#: Runs the python blocks given as (first line in README, source) pairs in a JSON file.
_RUNNER = textwrap.dedent(r"""
    import json, sys, traceback
    blocks = json.load(open(sys.argv[1]))
    namespace = {"__name__": "__main__"}
    for number, (line, source) in enumerate(blocks, 1):
        # blank lines in front, so that tracebacks show README.md's own line numbers
        code = compile("\n" * (line - 1) + source, f"README.md (python block {number})", "exec")
        try:
            exec(code, namespace)
        except BaseException:
            print(f"README.md python block {number} (from line {line}) failed:", file=sys.stderr)
            traceback.print_exc()
            sys.exit(1)
        print(f"block {number} ok", flush=True)
""")


def blocks(language: str, text: str | None = None) -> list[tuple[int, str]]:
    """(line of the first code line, code) of every fenced block of `language` in README.md."""
    text = README.read_text(encoding="utf-8") if text is None else text
    out, current, start = [], None, 0
    for number, line in enumerate(text.splitlines(), 1):
        fence = line.strip()
        if current is None and fence.startswith("```") and fence[3:].strip() == language:
            current, start = [], number + 1
        elif current is not None and fence.startswith("```"):
            out.append((start, "\n".join(current) + "\n"))
            current = None
        elif current is not None:
            current.append(line)
    return out


def test_the_block_parser() -> None:
    text = "# t\n```python\na = 1\n```\nx\n```bash\nls\n```\n```python\nb = 2\n\n```\n"
    assert blocks("python", text) == [(3, "a = 1\n"), (10, "b = 2\n\n")]
    assert blocks("bash", text) == [(7, "ls\n")]


def _env() -> dict[str, str]:
    return {**os.environ, "SPLIT_DATASET_THREADS": "2", "PYTHONWARNINGS": "error::DeprecationWarning:split_dataset"}


def _commands(text: str) -> list[list[str]]:
    """The ``split-dataset ...`` commands in a bash block (comments, continuations and `&&` handled)."""
    out = []
    for line in text.replace("\\\n", " ").splitlines():
        for part in line.split("&&"):
            part = part.split("#", 1)[0].strip()
            if part.startswith("split-dataset "):
                out.append(shlex.split(part)[1:])
    return out


def _placeholder(argv: list[str]) -> bool:
    """Syntax summaries like ``convert SRC DST [--x N]`` are not commands to run."""
    return any(a.isupper() or a.startswith("[") or a.endswith("]") or "..." in a for a in argv)


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> Path:
    """A working directory where every python block of README.md has run, in order."""
    code = blocks("python")
    assert len(code) >= 4, "README.md has lost its python examples"
    work = tmp_path_factory.mktemp("readme")
    (work / "blocks.json").write_text(__import__("json").dumps(code))
    (work / "run_blocks.py").write_text(_RUNNER)
    cwd = work / "cwd"
    cwd.mkdir()
    proc = subprocess.run([sys.executable, str(work / "run_blocks.py"), str(work / "blocks.json")], cwd=cwd,
                          capture_output=True, text=True, timeout=600, env=_env())
    if proc.returncode != 0:
        pytest.fail(f"{proc.stderr[-6000:]}\n(stdout: {proc.stdout[-500:]})", pytrace=False)
    assert proc.stdout.split() == " ".join(f"block {i} ok" for i in range(1, len(code) + 1)).split()
    return cwd


def test_python_examples_run_as_written(ran) -> None:
    import numpy as np

    import split_dataset

    raw = split_dataset.open(ran / "fish1" / "raw")
    assert (raw.shape, raw.dtype, raw.shape_block, raw.n_blocks) == ((60, 10, 128, 128), np.uint16,
                                                                     (20, 10, 128, 128), 3)
    assert dict(raw.attrs) == {"fish": "F0", "stage": "6 dpf"}
    old = split_dataset.open(ran / "old_experiment" / "original")
    dff = split_dataset.open(ran / "analysis" / "dff")
    assert dff.shape == old.shape and dff.dtype == np.float32 and dff.n_blocks == old.n_blocks
    acquired = split_dataset.open(ran / "fish2" / "raw")
    assert acquired.shape[1:] == (8, 64, 64) and acquired.axis_order == "tzyx" and acquired.complete is True


def _main(capsys, *argv: str) -> tuple[int, str, str]:
    from split_dataset.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_bash_examples_run_on_what_the_python_examples_wrote(ran, capsys, monkeypatch) -> None:
    monkeypatch.chdir(ran)
    ran_any = False
    for line, text in blocks("bash"):
        for argv in _commands(text):
            if _placeholder(argv) or argv[0] not in ("info", "verify", "export-vds", "demo"):
                continue
            if argv[0] == "demo":
                argv = argv + ["--time-points", "4", "-q"]  # the same command, a shorter simulation
            code, _out, err = _main(capsys, *argv)
            assert code == 0, f"README.md line {line}: split-dataset {' '.join(argv)}\n{err}"
            ran_any = True
    assert ran_any, "README.md's bash blocks no longer show info/verify on the examples' datasets"


def test_every_command_named_in_the_readme_exists(capsys) -> None:
    text = README.read_text(encoding="utf-8")
    named = set(re.findall(r"split-dataset ([a-z][a-z-]+)", text))
    assert {"info", "verify", "convert", "export-vds", "demo"} <= named
    for command in sorted(named):
        code, out, err = _main(capsys, command, "--help")
        assert code == 0 and out.startswith(f"usage: split-dataset {command}"), (command, err)
    for line, text_ in blocks("bash"):
        for argv in _commands(text_):
            if _placeholder(argv):  # a syntax summary: its options must exist
                options = [a.strip("[]").split("=")[0] for a in argv if a.strip("[]").startswith("--")]
                helptext = _main(capsys, argv[0], "--help")[1]
                for option in options:
                    assert option in helptext, f"README.md line {line}: {argv[0]} has no option {option}"


def test_a_failing_block_is_named_with_its_readme_line(tmp_path) -> None:
    import json

    (tmp_path / "blocks.json").write_text(json.dumps([[3, "x = 1\n"], [10, "y = x + 1\nundefined_camera\n"]]))
    (tmp_path / "run.py").write_text(_RUNNER)
    proc = subprocess.run([sys.executable, str(tmp_path / "run.py"), str(tmp_path / "blocks.json")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout == "block 1 ok\n"
    assert "README.md python block 2 (from line 10) failed" in proc.stderr
    assert 'File "README.md (python block 2)", line 11' in proc.stderr and "NameError" in proc.stderr
