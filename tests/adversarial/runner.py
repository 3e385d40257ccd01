"""Batch runner for the chunk fuzzer, run in a subprocess: ``python runner.py SPEC.json OUT.jsonl``.

SPEC holds ``{"cases": [...]}``; each case names a dataset folder, the saved array
(``.npy``), a damage (byte patches and/or a truncation of one block file) and the reads
to try. For each case this applies the damage in place, runs every read on a freshly
opened dataset, ``verify()`` and the CLI's ``verify``, restores the file's bytes and
writes one JSON line. A ``{"begin": id}`` line precedes each case, so when the process
dies the parent knows which case killed it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import warnings

import numpy as np


def _classify_exc(e: BaseException, block_name: str) -> str:
    from split_dataset.errors import SplitDatasetError

    if isinstance(e, SplitDatasetError):
        if block_name not in str(e):
            return f"pkg-unnamed:{type(e).__name__}:{' '.join(str(e).split())[:200]}"
        return "pkg"
    return f"other:{type(e).__name__}:{' '.join(str(e).split())[:200]}"


def _apply(case: dict) -> bytes:
    path = case["file"]
    with open(path, "rb") as f:
        original = f.read()
    with open(path, "r+b") as f:
        for offset, hexbytes in case.get("patches", []):
            f.seek(offset)
            f.write(bytes.fromhex(hexbytes))
        if case.get("truncate") is not None:
            f.truncate(case["truncate"])
    return original


def _restore(path: str, original: bytes) -> None:
    with open(path, "r+b") as f:
        f.write(original)
        f.truncate(len(original))


def run_case(case: dict, arrays: dict) -> dict:
    import split_dataset
    from split_dataset.cli import main as cli_main
    from split_dataset.verify import verify

    expected = arrays.get(case["npy"])
    if expected is None:
        expected = arrays[case["npy"]] = np.load(case["npy"])
    block_name = os.path.basename(case["file"])
    result: dict = {"id": case["id"], "reads": {}}
    original = _apply(case)
    try:
        for name, expr in case["reads"]:
            want = eval(expr, {"ds": expected, "np": np})
            try:
                ds = split_dataset.open(case["root"], cache_size=case.get("cache_size", 32))
                try:
                    got = eval(expr, {"ds": ds, "np": np})
                    got = np.asarray(got)
                finally:
                    ds.close()
                if got.shape == np.shape(want) and got.dtype == expected.dtype and np.array_equal(got, want):
                    outcome = "ok"
                else:
                    bad = int(np.count_nonzero(got != want)) if got.shape == np.shape(want) else -1
                    outcome = f"wrong:{bad}"
            except BaseException as e:
                outcome = _classify_exc(e, block_name)
            result["reads"][name] = outcome
        if case.get("verify", True):
            try:
                report = verify(case["root"])
                if report.ok:
                    result["verify"] = "ok"
                elif block_name in report.damaged_files:
                    result["verify"] = "flagged"
                else:
                    result["verify"] = f"flagged-other:{report.damaged_files}"
            except BaseException as e:
                result["verify"] = _classify_exc(e, block_name)
            err = io.StringIO()
            try:
                with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                    code = cli_main(["verify", case["root"]])
                result["cli"] = f"exit:{code}"
            except BaseException as e:
                result["cli"] = f"other:{type(e).__name__}:{' '.join(str(e).split())[:200]}"
            if "Traceback" in err.getvalue():
                result["cli"] += ":traceback"
    finally:
        _restore(case["file"], original)
    return result


def main() -> None:
    spec_path, out_path = sys.argv[1], sys.argv[2]
    with open(spec_path) as f:
        spec = json.load(f)
    warnings.simplefilter("ignore")
    arrays: dict = {}
    with open(out_path, "a", buffering=1) as out:
        for case in spec["cases"]:
            out.write(json.dumps({"begin": case["id"]}) + "\n")
            out.flush()
            out.write(json.dumps(run_case(case, arrays)) + "\n")
            out.flush()


if __name__ == "__main__":
    main()
