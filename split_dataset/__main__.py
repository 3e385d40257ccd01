"""``python -m split_dataset``: the ``split-dataset`` command line (see :mod:`split_dataset.cli`)."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":  # pragma: no branch
    raise SystemExit(main())
