"""The ``split-dataset`` command line (also ``python -m split_dataset``).

Only argument parsing, printing, progress bars and exit codes live here; the work is
done by :mod:`split_dataset.verify` (``info``, ``verify``), :mod:`split_dataset.convert`
(``convert``, ``export-vds``) and the writer (``demo``).

Exit codes: 0 success; 1 the dataset is damaged (``verify`` found problems) or reading
or writing failed; 2 usage error or bad input (one line on stderr); 130 interrupted.

Modules: ``exits`` (exit codes, one-line errors), ``format`` (text and JSON output),
``commands`` (info, verify, convert, export-vds), ``demo``, ``parser`` (argparse).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from .exits import (
    EXIT_DAMAGED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    _err,
    _exit_code,
    _message,
    _show_warning,
)
from .format import _checksum_summary, _codec, format_info  # noqa: F401  (the private ones: importable as before)
from .parser import build_parser

__all__ = ["EXIT_DAMAGED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "PROG", "build_parser", "format_info", "main"]

def main(argv: Sequence[str] | None = None) -> int:
    """Run ``split-dataset`` with `argv` (default: ``sys.argv[1:]``) and return the exit code.

    Examples
    --------
    >>> main(["info", "fish1/raw"])  # doctest: +SKIP
    0
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, usage errors: argparse has printed what it had to say
        return e.code if isinstance(e.code, int) else (EXIT_OK if e.code is None else EXIT_USAGE)
    if getattr(args, "time_points", 1) < 1:
        _err("--time-points must be at least 1")
        return EXIT_USAGE
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = _show_warning
        try:
            return int(args.func(args))
        except KeyboardInterrupt:
            _err("interrupted")
            return EXIT_INTERRUPTED
        except BrokenPipeError:  # `split-dataset info --json | head`
            return EXIT_DAMAGED
        except (Exception, RecursionError, MemoryError) as e:
            code = _exit_code(e)
            if code is None:
                raise  # a bug: keep the traceback
            _err(_message(e))
            return code
