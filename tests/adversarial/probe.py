"""Child-process probe for hostile datasets: ``python probe.py PATH OP [OP ...]``.

Prints one JSON line per operation: ``{"op": ..., "outcome": ...}`` where outcome is
``"ok"`` / ``"values:<hash>"`` (a read returned), ``"pkg:<Error>:<message>"`` (a
``SplitDatasetError``), ``"other:<Error>:<message>"``, or for verify
``"verify-ok"`` / ``"verify-problems:<files>"``, for ``cli:<command>`` (the command line run
in this process) ``"cli:<exit code>:<stderr lines>:<stderr>"``. Run under a timeout and an address-space
limit by the parent, so a hang or a huge allocation shows as a dead child.
"""

from __future__ import annotations

import json
import os
import sys
import warnings


def main() -> None:
    limit = int(os.environ.get("PROBE_MEMORY_LIMIT", "0"))
    if limit:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    warnings.simplefilter("ignore")
    import numpy as np

    import split_dataset
    from split_dataset.errors import SplitDatasetError

    path = sys.argv[1]
    for op in sys.argv[2:]:
        try:
            if op == "open":
                ds = split_dataset.open(path)
                outcome = f"ok:{ds.shape}"
            elif op.startswith("read:"):
                ds = split_dataset.open(path)
                got = np.asarray(eval(op[5:], {"ds": ds, "np": np}))
                outcome = f"values:{got.shape}:{int(got.astype(np.int64).sum()) if got.size < 1e8 else 'big'}"
            elif op == "verify":
                from split_dataset.verify import verify

                r = verify(path)
                outcome = "verify-ok" if r.ok else "verify-problems:" + ",".join(
                    f"{p.file}/{p.kind}" for p in r.problems)
            elif op == "info":
                from split_dataset.verify import info

                info(path)
                outcome = "ok"
            elif op.startswith("cli:"):  # the command line, in this process: exit code and stderr
                import contextlib
                import io

                from split_dataset.cli import main as cli_main

                err = io.StringIO()
                with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                    code = cli_main([op[4:], path])
                lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
                outcome = f"cli:{code}:{len(lines)}:{' | '.join(lines)[:300]}"
            else:
                raise SystemExit(f"unknown op {op}")
        except SplitDatasetError as e:
            outcome = f"pkg:{type(e).__name__}:{' '.join(str(e).split())[:300]}"
        except BaseException as e:
            outcome = f"other:{type(e).__name__}:{' '.join(str(e).split())[:300]}"
        print(json.dumps({"op": op, "outcome": outcome}), flush=True)


if __name__ == "__main__":
    main()
