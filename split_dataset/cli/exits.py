"""Exit codes and one-line error messages of the ``split-dataset`` command line."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["EXIT_CODES_HELP", "EXIT_DAMAGED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "PROG"]

EXIT_OK = 0
EXIT_DAMAGED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

PROG = "split-dataset"

EXIT_CODES_HELP = """\
exit codes:
  0    success
  1    the dataset is damaged (verify found problems), or reading or writing failed
  2    usage error or bad input (unknown source type, missing path, block shape that
       does not fit, destination that exists...): one line on stderr, nothing written
  130  interrupted (Ctrl-C); nothing half-written is left under the destination name
"""


def _err(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)


def _one_line(e: BaseException) -> str:
    try:
        text = " ".join(str(e).split())
    except Exception:
        text = ""
    if len(text) > 2000:
        text = text[:1997] + "..."
    if isinstance(e, KeyError) and text.startswith(("'", '"')):
        text = text[1:-1]
    return text or type(e).__name__


def _show_warning(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    print(f"{PROG}: warning: {' '.join(str(message).split())}", file=sys.stderr)


def _exit_code(e: BaseException) -> int | None:
    """The exit code for an exception, or None for a bug (re-raised with its traceback)."""
    from ..errors import (
        BlockMismatchError,
        ChunkIndexError,
        CorruptBlockError,
        MetadataError,
        MissingBlockError,
        NotASplitDatasetError,
        RemoteError,
        SplitDatasetError,
        UnsafeDatasetError,
        WriteError,
    )

    if isinstance(e, (CorruptBlockError, MissingBlockError, BlockMismatchError, UnsafeDatasetError, MetadataError,
                      WriteError, ChunkIndexError, RemoteError)):
        return EXIT_DAMAGED  # the data on disk is damaged, or writing failed (checked first: these subclass
        #                      ValueError, OSError, FileNotFoundError)
    if isinstance(e, NotASplitDatasetError):
        return EXIT_USAGE  # a path that holds no dataset: bad input
    if isinstance(e, (ValueError, TypeError, LookupError, ImportError, FileNotFoundError, FileExistsError,
                      NotADirectoryError, IsADirectoryError)):
        return EXIT_USAGE  # (WriterLockedError and InvalidIndexError are among these)
    if isinstance(e, (OSError, SplitDatasetError, RecursionError, MemoryError, OverflowError)):
        return EXIT_DAMAGED  # reading or writing failed, or input too large or too deep to handle
    return None


def _message(e: BaseException) -> str:
    """One line for the user: the exception's own text, with a cause for the bare builtins."""
    text = _one_line(e)
    if isinstance(e, MemoryError):
        return f"out of memory{': ' + text if text != 'MemoryError' else ''}"
    if isinstance(e, RecursionError):
        return f"the input is nested too deeply to handle ({text})"
    if isinstance(e, OverflowError):
        return f"a number in the input is too large ({text})"
    return text
