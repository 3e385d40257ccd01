"""The ``split-dataset`` command line (also ``python -m split_dataset``).

Only argument parsing, printing, progress bars and exit codes live here; the work is
done by :mod:`split_dataset.verify` (``info``, ``verify``), :mod:`split_dataset.convert`
(``convert``, ``export-vds``) and the writer (``demo``).

Exit codes: 0 success; 1 the dataset is damaged (``verify`` found problems) or reading
or writing failed; 2 usage error or bad input (one line on stderr); 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

__all__ = ["main", "build_parser", "EXIT_OK", "EXIT_DAMAGED", "EXIT_USAGE", "EXIT_INTERRUPTED"]

EXIT_OK = 0
EXIT_DAMAGED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

PROG = "split-dataset"
DEMO_MARK = "split-dataset demo"

_EXIT_CODES = """\
exit codes:
  0    success
  1    the dataset is damaged (verify found problems), or reading or writing failed
  2    usage error or bad input (unknown source type, missing path, block shape that
       does not fit, destination that exists...): one line on stderr, nothing written
  130  interrupted (Ctrl-C); nothing half-written is left under the destination name
"""

_SPECS = """\
SRC and DST are each one of:
  folder                a split dataset (a DST folder that does not exist is created)
  file.h5:/path/in/file an HDF5 dataset (.h5 .hdf5 .hdf .he5); a source file holding one
                        dataset needs no path, a destination without one gets /stack
  file.npy              a NumPy file (read memory-mapped; holds no metadata)
  store.zarr[:/path]    a zarr array (the zarr package must be installed)
"""


# ----------------------------------------------------------------------------- helpers


def _err(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)


def _one_line(e: BaseException) -> str:
    try:
        text = " ".join(str(e).split())
    except Exception:  # an exception whose str() fails (a huge int in its arguments, say)
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
    from .errors import (
        BlockMismatchError,
        CorruptBlockError,
        MetadataError,
        MissingBlockError,
        NotASplitDatasetError,
        SplitDatasetError,
        UnsafeDatasetError,
        WriteError,
    )

    if isinstance(e, (CorruptBlockError, MissingBlockError, BlockMismatchError, UnsafeDatasetError, MetadataError,
                      WriteError)):
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

    def __exit__(self, *exc: Any) -> None:
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
    except Exception:  # a codec description written by another tool: show it as it is
        pass
    return _dumps(c)[:200]


def _wrap(text: str) -> str:
    return textwrap.fill(text, break_on_hyphens=False, width=min(100, max(40, shutil.get_terminal_size((80, 24)).columns - 2)))


def _number(text: str) -> float | int:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


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
        blocks += f" ({d['n_blocks_present']} present; missing: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''})"
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
    attrs = _dumps(d["attrs"], ensure_ascii=False)
    rows.append(("attrs", attrs if len(attrs) <= 2000 else attrs[:1997] + "..."))
    complete = {True: "yes", False: "no (the acquisition is still running, or it stopped early)",
                None: "not recorded by the writer"}[d["complete"]]
    rows.append(("complete", complete))
    rows.append(("checksums", "yes (SHA256SUMS)" if d["checksums"] else "no (written before checksums existed)"))
    for w in d.get("warnings", []):
        rows.append(("warning", " ".join(w.split())))
    width = max(len(k) for k, _ in rows) + 2
    return "\n".join(f"{k:<{width}}{v}" for k, v in rows)


# ----------------------------------------------------------------------------- commands


def _cmd_info(args: argparse.Namespace) -> int:
    from .verify import info

    d = info(args.path)
    print(_dumps(d, indent=2) if args.json else format_info(d))
    return EXIT_OK


def _cmd_verify(args: argparse.Namespace) -> int:
    from .verify import verify

    with _Bar("verifying", "block", args.quiet) as bar:
        report = verify(args.path, progress=bar)
    if args.json:
        print(_dumps(report.to_dict(), indent=2))
        return EXIT_OK if report.ok else EXIT_DAMAGED
    for p in report.problems:
        print(f"{p.file}: {p.kind}: {p.message}")
    for n in report.notes:
        print(f"note: {n}")
    sums = _checksum_summary(report)
    if report.ok:
        print(f"OK: {report.path}: all {report.n_blocks} blocks present, decoded and consistent with the metadata; {sums}")
        return EXIT_OK
    print(f"DAMAGED: {report.path}: {len(report.problems)} problem(s) in {len(report.damaged_files)} file(s); {sums}")
    return EXIT_DAMAGED


def _checksum_summary(report: Any) -> str:
    """What the report says about checksums, counted from its problems (never more than it says).

    Examples
    --------
    >>> from types import SimpleNamespace as Report
    >>> from split_dataset.verify import Problem
    >>> _checksum_summary(Report(n_blocks=3, checksums_available=True, n_checksums_matched=3, problems=[]))
    'all 3 SHA-256 checksums match SHA256SUMS'
    >>> _checksum_summary(Report(n_blocks=3, checksums_available=True, n_checksums_matched=2,
    ...                          problems=[Problem("0001.h5", "checksum", "differs")]))
    '1 checksum problem: 1 block differs from its SHA-256 in SHA256SUMS'
    >>> _checksum_summary(Report(n_blocks=3, checksums_available=False, problems=[]))
    'checksums not available (no SHA256SUMS)'
    """
    from .storage import CHECKSUM_FILENAME

    if not report.checksums_available:
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
            parts.append(f"{len(unlisted)} block{'s have' if len(unlisted) > 1 else ' has'} no line in {CHECKSUM_FILENAME}")
        if other:
            parts.append(f"{len(other)} problem{'s' if len(other) > 1 else ''} with {CHECKSUM_FILENAME} itself")
        return f"{n} checksum problem{'s' if n > 1 else ''}: {'; '.join(parts)}"
    matched = getattr(report, "n_checksums_matched", None)  # counted by verify where it counts them
    if matched is not None and matched < report.n_blocks:
        return f"{matched} of {report.n_blocks} SHA-256 checksums match {CHECKSUM_FILENAME} (the others could not be computed)"
    if matched is None and any(p.kind == "missing" for p in report.problems):
        return f"the SHA-256 checksums of the blocks present match {CHECKSUM_FILENAME}"
    return f"all {report.n_blocks} SHA-256 checksums match {CHECKSUM_FILENAME}"


def _cmd_convert(args: argparse.Namespace) -> int:
    from .convert import convert

    with _Bar("converting", "block", args.quiet) as bar:
        result = convert(args.src, args.dst, shape_block=args.shape_block, compression=args.compression,
                         overwrite=args.overwrite, progress=bar)
    kinds = {"split": "split dataset", "hdf5": "HDF5 dataset", "npy": ".npy file", "zarr": "zarr array"}
    print(f"wrote {result.destination} ({kinds[result.destination.kind]}): {_dims(result.shape)} {result.dtype}")
    if result.carried:
        print(f"carried across: {', '.join(result.carried)}")
    if result.dropped:
        print(f"note: a .npy file holds no metadata; not carried: {', '.join(result.dropped)}")
    return EXIT_OK


def _cmd_export_vds(args: argparse.Namespace) -> int:
    from .convert import export_vds

    with _Bar("mapping", "block", args.quiet) as bar:
        out = export_vds(args.path, args.out, fill_value=args.fill, overwrite=args.overwrite, progress=bar)
    print(f"wrote {out}: /stack is a virtual dataset over the block files of {args.path} (paths relative to the "
          "file: move them together); readers need the blosc filter (Python: import hdf5plugin)")
    return EXIT_OK


def _lightsheet(n_t: int, shape: tuple[int, int, int], seed: int = 0) -> Iterator[np.ndarray]:
    """Synthetic light-sheet volumes: a dim sample with flickering, drifting cells, plus camera noise."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    z, y, x = np.arange(nz, dtype=np.float32), np.arange(ny, dtype=np.float32), np.arange(nx, dtype=np.float32)
    # autofluorescence of the sample: a smooth ellipsoid, brighter in the middle planes
    tissue = (np.exp(-(((z - nz / 2) / nz) ** 2))[:, None, None]
              * np.exp(-(((y - ny / 2) / (0.35 * ny)) ** 2))[None, :, None]
              * np.exp(-(((x - nx / 2) / (0.3 * nx)) ** 2))[None, None, :])
    background = (100 + 250 * tissue).astype(np.float32)
    n_cells = 60
    pos = np.column_stack([rng.uniform(0, nz - 1, n_cells), rng.uniform(0.2 * ny, 0.8 * ny, n_cells),
                           rng.uniform(0.25 * nx, 0.75 * nx, n_cells)])
    drift = rng.normal(0, 1, (n_cells, 3)) * np.array([0.01, 0.15, 0.15])  # voxels per time point
    rate = rng.uniform(0.02, 0.15, n_cells)
    amp = rng.uniform(400, 1500, n_cells)
    sz, sxy = 0.8, 2.5
    r = int(3 * sxy) + 1
    activity = np.zeros(n_cells)
    for t in range(n_t):
        activity = 0.75 * activity + (rng.random(n_cells) < rate)  # calcium-like transients
        vol = background.copy()
        for c in range(n_cells):
            cz, cy, cx = pos[c] + drift[c] * t
            y0, y1 = max(0, int(cy) - r), min(ny, int(cy) + r + 1)
            x0, x1 = max(0, int(cx) - r), min(nx, int(cx) + r + 1)
            if y0 >= y1 or x0 >= x1:
                continue
            gz = np.exp(-0.5 * ((z - cz) / sz) ** 2)
            gy = np.exp(-0.5 * ((y[y0:y1] - cy) / sxy) ** 2)
            gx = np.exp(-0.5 * ((x[x0:x1] - cx) / sxy) ** 2)
            vol[:, y0:y1, x0:x1] += (amp[c] * (0.2 + activity[c])) * gz[:, None, None] * gy[None, :, None] * gx[None, None, :]
        vol += rng.standard_normal(shape, dtype=np.float32) * 12  # camera noise
        yield np.clip(vol, 0, 65535).astype(np.uint16)


def _is_demo_output(path: Path) -> bool:
    from .storage import METADATA_FILENAME, read_json

    try:
        attrs = read_json(path / METADATA_FILENAME).get("attrs") or {}
    except (OSError, ValueError):
        return False
    return isinstance(attrs, dict) and attrs.get("created_by") == DEMO_MARK


def _mean_projection(ds: Any) -> tuple[np.ndarray, str]:
    try:
        import dask.array  # noqa: F401
    except ImportError:
        acc = np.zeros(ds.shape[1:], np.float64)
        for start in range(0, ds.shape[0], ds.shape_block[0]):
            acc += ds[start : start + ds.shape_block[0]].sum(axis=0, dtype=np.float64)
        return acc / max(1, ds.shape[0]), "numpy, block by block: dask is not installed"
    x = ds.to_dask()
    return x.mean(axis=0).compute(), f"dask, {x.numblocks[0]} tasks, one per block file"


def _cmd_demo(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .dataset import SplitDataset
    from .stream import SplitDatasetWriter
    from .verify import info

    out = Path(args.out)
    previous = _is_demo_output(out)
    if out.exists() and not previous and not args.overwrite and not (out.is_dir() and not any(out.iterdir())):
        raise FileExistsError(f"{str(out)!r} exists and is not the output of an earlier demo; "
                              "pass --overwrite to replace it")
    n_t, frame, per_file, interval = args.time_points, (8, 256, 256), 10, 0.5
    print(f"simulating a light-sheet acquisition: {n_t} volumes of {_dims(frame)} uint16, one every {interval} s")
    print(f"streaming it to {out} with SplitDatasetWriter, {per_file} volumes per block file")
    with SplitDatasetWriter(out, frame, "uint16", frames_per_file=per_file, resolution=(interval, 5.0, 0.6, 0.6),
                            units=("s", "um", "um", "um"), frame_interval=interval, overwrite=True,
                            attrs={"created_by": DEMO_MARK, "sample": "synthetic larval zebrafish brain",
                                   "microscope": "simulated light-sheet"}) as writer:
        for volume in tqdm(_lightsheet(n_t, frame, seed=args.seed), total=n_t, desc="acquiring", unit="volume",
                           file=sys.stderr, disable=True if args.quiet else None, leave=False):
            writer.append(volume)
    with SplitDataset(out) as ds:
        mean, how = _mean_projection(ds)
    z, y, x = np.unravel_index(int(np.argmax(mean)), mean.shape)
    print(f"read back: the mean over time ({how}) is {_dims(mean.shape)}; brightest voxel at "
          f"z={z}, y={y}, x={x} ({mean.max():.0f} counts)")
    print()
    print(format_info(info(out)))
    print()
    print(f"next: {PROG} verify {out}  |  {PROG} export-vds {out} {out}.h5  |  "
          f"{PROG} convert {out} {out}.npy")
    return EXIT_OK


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``split-dataset`` (one sub-parser per command)."""
    from . import __version__

    fmt = argparse.RawDescriptionHelpFormatter
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bars (they are drawn only when stderr is a terminal anyway)")
    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=fmt, epilog=_EXIT_CODES,
        description=_wrap("Inspect, check, convert and demonstrate split datasets: numpy-like arrays stored as "
                          "a folder of HDF5 block files plus stack_metadata.json. "
                          f"Run '{PROG} COMMAND --help' for the options of each command."),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, func: Callable[[argparse.Namespace], int], help: str, description: str, epilog: str = "",
            raw: str = "") -> Any:
        text = "\n\n".join([_wrap(description)] + ([raw] if raw else []))
        p = sub.add_parser(name, parents=[common], help=help, description=text,
                           epilog=(epilog + "\n\n" if epilog else "") + _EXIT_CODES, formatter_class=fmt)
        p.set_defaults(func=func)
        return p

    p = add("info", _cmd_info, "shape, dtype, blocks, codec, size, resolution, attrs of a split dataset",
            "Show what a split dataset holds: shape, dtype, block shape and count, codec, bytes on disk and "
            "compression ratio, resolution and units, axis order, frame rate, attrs, and whether the "
            "acquisition is complete. Reads the metadata and one block header; no pixel data.",
            f"examples:\n  {PROG} info fish1/raw\n  {PROG} info fish1/raw --json | jq .shape")
    p.add_argument("path", metavar="PATH", help="the dataset folder")
    p.add_argument("--json", action="store_true", help="print one JSON object (stable keys) instead of text")

    p = add("verify", _cmd_verify, "decode every block and check it against the metadata and its checksum",
            "Open and decode every block file, check its shape and dtype against the metadata and, where the "
            "folder has SHA256SUMS (written by this package as each block is written), its SHA-256: any changed "
            "byte is found, even where the damaged block still decodes. Names every missing, corrupt or "
            "inconsistent file. Datasets from older writers have no checksums: every block is still decoded, "
            "and the report says that checksums were not available. Exits 0 only if the dataset is whole.",
            f"examples:\n  {PROG} verify fish1/raw && echo whole\n  {PROG} verify fish1/raw --json")
    p.add_argument("path", metavar="PATH", help="the dataset folder")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")

    p = add("convert", _cmd_convert, "copy an array between split datasets, HDF5, .npy and zarr",
            "Copy an array from SRC to DST block by block (memory stays bounded), carrying resolution, units, "
            "axis order, frame interval and attrs across where both sides can hold them (HDF5 and zarr "
            "attributes <-> attrs). DST is written under a temporary name and renamed when complete; an "
            "existing DST is refused unless --overwrite.",
            f"examples:\n  {PROG} convert project_export.h5:/exported_data fish1/probabilities\n"
            f"  {PROG} convert fish1/raw fish1_raw.zarr --shape-block 10,-1,256,256\n"
            f"  {PROG} convert stack.npy fish1/raw --shape-block 20 --compression blosc-zstd", _SPECS)
    p.add_argument("src", metavar="SRC", help="the source array")
    p.add_argument("dst", metavar="DST", help="the destination (must not exist, unless --overwrite)")
    p.add_argument("--shape-block", metavar="N,N,...",
                   help="block shape of a split dataset DST, chunk shape of an HDF5 or zarr DST, e.g. 10,64,64,1; "
                        "-1 or missing trailing entries mean the whole axis (default: the source's blocks for a "
                        "split dataset, else about 64 MiB of whole frames per block; HDF5: one image plane per "
                        "chunk; zarr: zarr's choice)")
    p.add_argument("--compression", metavar="CODEC",
                   help="blosc-lz4, blosc-zstd, blosc (the old blosclz level 9), gzip or none (default: blosc-lz4 "
                        "for split datasets, gzip for HDF5 so that every HDF5 tool reads it, zarr's default for "
                        "zarr; a .npy file cannot be compressed)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing DST (a file, split dataset or zarr store) once the new one is complete")

    p = add("export-vds", _cmd_export_vds, "write an HDF5 file that shows a split dataset as one dataset",
            "Write OUT.h5 whose dataset /stack is an HDF5 virtual dataset over every block file of PATH, so any "
            "HDF5 tool (h5py, HDFView, MATLAB, Fiji) sees the whole array as one dataset. Block files are "
            "referenced by paths relative to OUT.h5, so the folder and the file can move together. Readers "
            "need the blosc filter plugin (Python: import hdf5plugin). A dataset with missing blocks is "
            "refused unless --fill is given.",
            f"examples:\n  {PROG} export-vds fish1/raw fish1/raw.h5\n"
            "  python -c \"import h5py, hdf5plugin; print(h5py.File('fish1/raw.h5')['stack'].shape)\"")
    p.add_argument("path", metavar="PATH", help="the dataset folder")
    p.add_argument("out", metavar="OUT.h5", help="the HDF5 file to write")
    p.add_argument("--fill", type=_number, metavar="VALUE",
                   help="export even if block files are missing; their regions read as VALUE")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT.h5")

    p = add("demo", _cmd_demo, "simulate an acquisition, stream it to disk, read it back, show info",
            "Simulate a short light-sheet acquisition (synthetic volumes: drifting, flickering cells in a dim "
            "sample, plus camera noise), stream it into a split dataset with SplitDatasetWriter, read it back "
            "(the mean over time, through dask when installed) and print info. Takes a few seconds. Running it "
            "again into the same OUT replaces the earlier demo output; any other existing OUT is refused unless "
            "--overwrite.",
            f"example:\n  {PROG} demo demo_output && {PROG} verify demo_output")
    p.add_argument("out", metavar="OUT", help="the dataset folder to write")
    p.add_argument("--time-points", type=int, default=60, metavar="N", help="volumes to simulate (default 60)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the simulation (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT even if it is not an earlier demo output")
    return parser


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
