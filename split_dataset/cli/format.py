"""Formatting for the ``split-dataset`` command line: text of info and verify, JSON, sizes, progress bars."""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..storage import CHECKSUM_FILENAME
from ..verify_report import VerifyReport

__all__ = ["format_info"]


def _json_default(o: Any) -> Any:
    """JSON for the values of info/verify dicts that are not plain JSON (attrs mappings, numpy, paths)."""
    from collections.abc import Mapping

    if isinstance(o, Mapping):
        return dict(o)
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _dumps(d: Any, **kwargs: Any) -> str:
    return json.dumps(d, default=_json_default, **kwargs)


class _Bar:
    """A ``progress(done, total)`` callback drawing a tqdm bar on stderr (only on a terminal)."""

    def __init__(self, desc: str, unit: str, quiet: bool) -> None:
        self._desc, self._unit, self._quiet = desc, unit, quiet
        self._bar: Any = None
        self._n = 0

    def __call__(self, done: int, total: int) -> None:
        if self._quiet:
            return
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=self._desc, unit=self._unit, file=sys.stderr,
                             disable=None, leave=False, dynamic_ncols=True)
        if done > self._n:
            self._bar.update(done - self._n)
            self._n = done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def _dims(shape: Sequence[int]) -> str:
    return " × ".join(str(s) for s in shape) if len(shape) else "()"


def _codec(c: Any) -> str:
    if not c:
        return "unknown"
    if not isinstance(c, dict):
        return str(c)[:200]
    name = c.get("name")
    try:
        if name == "blosc":
            return f"blosc {c.get('cname')}, level {c.get('clevel')}, {c.get('shuffle')} shuffle"
        if name == "gzip":
            shuffle = c.get("shuffle")
            return f"gzip level {c.get('clevel')}" + (f", {shuffle} shuffle" if shuffle and shuffle != "none" else "")
        if name == "none":
            return "none (uncompressed)"
        filters = c.get("filters")
        if isinstance(filters, list) and filters:
            return ", ".join(str(f) for f in filters)
    except Exception:
        pass
    return _dumps(c)[:200]


def _wrap(text: str) -> str:
    columns = shutil.get_terminal_size((80, 24)).columns
    return textwrap.fill(text, break_on_hyphens=False, width=min(100, max(40, columns - 2)))



def format_info(d: dict[str, Any]) -> str:
    """The human-readable form of :func:`split_dataset.verify.info`'s dict.

    Examples
    --------
    >>> print(format_info({"path": "/data/ds", "shape": [10, 4], "shape_in_metadata": [10, 4],
    ...     "dtype": "uint16", "axis_order": "yx", "shape_block": [5, 4], "n_blocks": 2,
    ...     "n_blocks_present": 2, "missing_blocks": [], "chunks": [1, 4], "padding": [0, 0],
    ...     "codec": {"name": "none"}, "nbytes": 80, "bytes_on_disk": 4000,
    ...     "compression_ratio": 0.02, "resolution": [1.0, 1.0], "units": ["", ""],
    ...     "frame_interval": None, "frame_rate": None, "attrs": {}, "complete": True,
    ...     "checksums": True, "warnings": []}))  # doctest: +NORMALIZE_WHITESPACE
    path        /data/ds
    shape       10 × 4 (yx), uint16
    blocks      5 × 4, 2 files
    chunks      1 × 4 (HDF5 chunks inside each file)
    codec       none (uncompressed)
    size        80 B uncompressed, 3.9 KiB on disk (compression ratio 0.02)
    resolution  not recorded
    attrs       {}
    complete    yes
    checksums   yes (SHA256SUMS)
    """
    rows: list[tuple[str, str]] = [("path", d["path"])]
    shape = f"{_dims(d['shape'])} ({d['axis_order']}), {d['dtype']}"
    if d.get("shape_in_metadata") and d["shape_in_metadata"] != d["shape"]:
        shape += f"; the metadata describes {_dims(d['shape_in_metadata'])}"
    rows.append(("shape", shape))
    blocks = f"{_dims(d['shape_block'])}, {d['n_blocks']} file{'' if d['n_blocks'] == 1 else 's'}"
    if d["n_blocks_present"] != d["n_blocks"]:
        missing = d["missing_blocks"]
        more = " ..." if len(missing) > 5 else ""
        blocks += f" ({d['n_blocks_present']} present; missing: {', '.join(missing[:5])}{more})"
    rows.append(("blocks", blocks))
    if any(d.get("padding") or ()):
        rows.append(("padding", _dims(d["padding"]) + " (overlap between neighbouring blocks)"))
    if d.get("chunks"):
        rows.append(("chunks", f"{_dims(d['chunks'])} (HDF5 chunks inside each file)"))
    rows.append(("codec", _codec(d.get("codec"))))
    ratio = d.get("compression_ratio")
    size = f"{_bytes(d['nbytes'])} uncompressed, {_bytes(d['bytes_on_disk'])} on disk"
    rows.append(("size", size + (f" (compression ratio {ratio:.2f})" if ratio else "")))
    res, units, order = d["resolution"], d["units"], d["axis_order"]
    if all(r == 1 for r in res) and not any(units):
        rows.append(("resolution", "not recorded"))
    else:
        parts = [f"{a} {r:g}{' ' + u if u else ''}" for a, r, u in zip(order, res, units or [""] * len(res))]
        rows.append(("resolution", ", ".join(parts)))
    if d.get("frame_interval"):
        rows.append(("frame rate", f"{d['frame_rate']:g} Hz (a frame every {d['frame_interval']:g} s)"))
    frames = d.get("frames")
    if frames:
        parts = []
        if frames.get("measured_rate"):
            parts.append(f"measured {frames['measured_rate']:.4g} Hz from {frames['timed']} time stamps, jitter "
                         f"{frames['jitter_ms']:.3g} ms, longest interval {frames['longest_interval']:.4g} s")
        if frames["n_dropped"]:
            ids = ", ".join(map(str, frames["dropped"])) + (" ..." if frames["n_dropped"] > len(frames["dropped"])
                                                             else "")
            parts.append(f"{frames['n_dropped']} dropped (camera frame ids {ids})")
        else:
            parts.append("none dropped" if frames["timed"] else "no time stamps")
        rows.append(("frames", "; ".join(parts)))
    attrs = _dumps(d["attrs"], ensure_ascii=False)
    rows.append(("attrs", attrs if len(attrs) <= 2000 else attrs[:1997] + "..."))
    complete = {True: "yes", False: "no (the acquisition is still running, or it stopped early)",
                None: "not recorded by the writer"}[d["complete"]]
    rows.append(("complete", complete))
    rows.append(("checksums", "yes (SHA256SUMS)" if d["checksums"] else "no (written before checksums existed)"))
    if "chunk_index" in d:
        ci = d["chunk_index"]
        if ci is None:
            rows.append(("index", "no chunk_index.bin (`split-dataset index` writes one for blosc blocks)"))
        elif ci["current"] < d["n_blocks_present"]:
            rows.append(("index", f"chunk_index.bin: {ci['current']} of {d['n_blocks_present']} blocks current (the "
                                  "others changed since, or were never indexed; `split-dataset index` updates it)"))
        else:
            rows.append(("index", f"chunk_index.bin: all {ci['current']} blocks"))
    for w in d.get("warnings", []):
        rows.append(("warning", " ".join(w.split())))
    width = max(len(k) for k, _ in rows) + 2
    return "\n".join(f"{k:<{width}}{v}" for k, v in rows)



def _checksum_summary(report: VerifyReport) -> str:
    """What the report says about checksums, from its problems and counts (never more than it says).

    Examples
    --------
    >>> from pathlib import Path
    >>> from split_dataset.verify import Problem, VerifyReport
    >>> _checksum_summary(VerifyReport(Path("ds"), n_blocks=3, checksums_available=True, n_checksums_matched=3))
    'all 3 SHA-256 checksums match SHA256SUMS'
    >>> _checksum_summary(VerifyReport(Path("ds"), n_blocks=3, checksums_available=True, n_checksums_matched=2,
    ...                                problems=[Problem("0001.h5", "checksum", "differs")]))
    '1 checksum problem: 1 block differs from its SHA-256 in SHA256SUMS'
    >>> _checksum_summary(VerifyReport(Path("ds"), n_blocks=3, checksums_available=True, n_checksums_matched=2))
    '2 of the 3 SHA-256 checksums verified (the others could not be computed)'
    >>> _checksum_summary(VerifyReport(Path("ds"), n_blocks=3))
    'checksums not available (no SHA256SUMS)'
    """
    if not report.checksums_available:
        if any(p.file == CHECKSUM_FILENAME for p in report.problems):
            return f"checksums not checked ({CHECKSUM_FILENAME} was refused, see above)"
        return f"checksums not available (no {CHECKSUM_FILENAME})"
    changed = [p for p in report.problems if p.kind == "checksum"]
    unlisted = [p for p in report.problems if p.kind == "no-checksum"]
    other = [p for p in report.problems if p.file == CHECKSUM_FILENAME and p not in changed + unlisted]
    n = len(changed) + len(unlisted) + len(other)
    if n:
        parts = []
        if changed:
            parts.append(f"{len(changed)} block{'s differ' if len(changed) > 1 else ' differs'} from "
                         f"{'their' if len(changed) > 1 else 'its'} SHA-256 in {CHECKSUM_FILENAME}")
        if unlisted:
            parts.append(f"{len(unlisted)} block{'s have' if len(unlisted) > 1 else ' has'} no line in "
                         f"{CHECKSUM_FILENAME}")
        if other:
            parts.append(f"{len(other)} problem{'s' if len(other) > 1 else ''} with {CHECKSUM_FILENAME} itself")
        return f"{n} checksum problem{'s' if n > 1 else ''}: {'; '.join(parts)}"
    if report.checksums_verified:
        return f"all {report.n_blocks} SHA-256 checksums match {CHECKSUM_FILENAME}"
    matched, pending = report.n_checksums_matched, report.n_checksums_pending
    others = report.n_blocks - matched
    if pending and pending >= others:
        why = f"the newest {pending} not in {CHECKSUM_FILENAME} yet: a writer is adding blocks"
    elif pending:
        why = f"{pending} not in {CHECKSUM_FILENAME} yet, the others could not be computed"
    else:
        why = "the others could not be computed"
    return f"{matched} of the {report.n_blocks} SHA-256 checksums verified ({why})"
