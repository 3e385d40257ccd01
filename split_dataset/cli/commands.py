"""The commands of ``split-dataset`` but ``demo``: each takes the parsed arguments, prints, returns the exit code.

The work is done by :mod:`split_dataset.verify` (``info``, ``verify``) and
:mod:`split_dataset.convert` (``convert``, ``export-vds``), imported when a command runs.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from typing import Any

from .exits import EXIT_DAMAGED, EXIT_OK
from .format import _Bar, _checksum_summary, _dims, _dumps, format_info

__all__ = ["cmd_convert", "cmd_export_vds", "cmd_index", "cmd_info", "cmd_refs", "cmd_serve", "cmd_verify",
           "cmd_watch", "format_watch"]


def _storage(args: argparse.Namespace) -> dict[str, Any]:
    """``storage_options=`` for a command given ``--storage-options``; nothing otherwise (the call for a
    local PATH stays as it was)."""
    return {} if args.storage_options is None else {"storage_options": args.storage_options}


def cmd_info(args: argparse.Namespace) -> int:
    from ..verify import info

    d = info(args.path, **_storage(args))
    print(_dumps(d, indent=2) if args.json else format_info(d))
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from ..verify import verify

    with _Bar("verifying", "block", args.quiet) as bar:
        report = verify(args.path, progress=bar, **_storage(args))
    if args.json:
        print(_dumps(report.to_dict(), indent=2))
        return EXIT_OK if report.ok else EXIT_DAMAGED
    for p in report.problems:
        print(f"{p.file}: {p.kind}: {p.message}")
    for n in report.notes:
        print(f"note: {n}")
    sums = _checksum_summary(report)
    if report.ok:
        print(f"OK: {report.path}: all {report.n_blocks} blocks present, decoded and consistent with the metadata; "
              f"{sums}")
        return EXIT_OK
    print(f"DAMAGED: {report.path}: {len(report.problems)} problem(s) in {len(report.damaged_files)} file(s); {sums}")
    return EXIT_DAMAGED




def cmd_index(args: argparse.Namespace) -> int:
    from ..chunk_index import build_chunk_index

    s = build_chunk_index(args.path, rebuild=args.rebuild)
    if args.json:
        print(_dumps(s.to_dict(), indent=2))
        return EXIT_OK
    for name, why in sorted(s.skipped.items()):
        print(f"{name}: {why}")
    if s.indexed:
        print(f"wrote {s.path}: {s.indexed} of {s.n_blocks} blocks, {s.n_chunks} chunks ({s.bytes} bytes; "
              f"{s.reused} unchanged records kept) in {s.seconds:.2f} s")
    else:
        print(f"no block of {s.path.parent} can be indexed; no chunk_index.bin written")
    return EXIT_OK


def cmd_convert(args: argparse.Namespace) -> int:
    from ..convert import convert

    with _Bar("converting", "block", args.quiet) as bar:
        result = convert(args.src, args.dst, shape_block=args.shape_block, compression=args.compression,
                         overwrite=args.overwrite, progress=bar, ngff=args.ngff, bdv=args.bdv,
                         storage_options=args.storage_options)
    kinds = {"split": "split dataset", "hdf5": "HDF5 dataset", "npy": ".npy file", "zarr": "zarr array",
             "omezarr": "OME-Zarr image"}
    where = args.dst if "://" in str(args.dst) else result.destination
    print(f"wrote {where} ({kinds[result.destination.kind]}): {_dims(result.shape)} {result.dtype}")
    if result.carried:
        print(f"carried across: {', '.join(result.carried)}")
    if result.dropped:
        print(f"note: a .npy file holds no metadata; not carried: {', '.join(result.dropped)}")
    return EXIT_OK


def cmd_export_vds(args: argparse.Namespace) -> int:
    from ..convert import export_vds

    with _Bar("mapping", "block", args.quiet) as bar:
        out = export_vds(args.path, args.out, fill_value=args.fill, overwrite=args.overwrite, progress=bar)
    print(f"wrote {out}: /stack is a virtual dataset over the block files of {args.path} (paths relative to the "
          "file: move them together); readers need the blosc filter (Python: import hdf5plugin)")
    return EXIT_OK


def cmd_refs(args: argparse.Namespace) -> int:
    from ..refs import TEMPLATE, refs_summary, virtual_refs

    with _Bar("referencing", "block", args.quiet) as bar:
        refs = virtual_refs(args.path, args.out, paths="absolute" if args.absolute else "relative",
                            url_prefix=args.url_prefix, overwrite=args.overwrite, progress=bar)
    s = refs_summary(refs)
    base = refs["templates"][TEMPLATE]
    if args.json:
        print(_dumps({"path": str(args.out), **s, TEMPLATE: base}, indent=2))
        return EXIT_OK
    where = (f"block files relative to the dataset: open with template_overrides={{'{TEMPLATE}': {str(args.path)!r}}}"
             if base == "." else f"block files under {base}")
    print(f"wrote {args.out}: {s['chunks']} chunks in {s['blocks']} block files ({s['bytes']} bytes) referenced; "
          f"{where}")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from ..remote.serve import DatasetServer

    with DatasetServer(args.folder, args.host, args.port) as server:
        if not args.quiet:
            print(f"serving {args.folder} at {server.url} (read-only; Ctrl-C stops)", flush=True)
        assert server._thread is not None
        server._thread.join()
    return EXIT_OK


def _figure(value: float | None, fmt: str, unit: str = "", bare: bool = False) -> str:
    """`value` formatted with its unit; ``-`` (with the unit, unless `bare`) when unknown."""
    if value is None:
        return "-" if bare else f"-{unit}"
    return f"{value:{fmt}}{unit}"


def format_watch(path: str, s: Any) -> str:
    """One line of ``split-dataset watch`` for a :class:`~split_dataset.live.WatchSample`.

    Examples
    --------
    >>> from split_dataset.live import WatchSample
    >>> print(format_watch("acq/cam0", WatchSample("writing", "process 7 on host", 1200, 20.0, 41.94, 0, 2, 12,
    ...                                            0.412, 0.811, 0, 0.3)))
    acq/cam0: writing | 1200 frames | 20.0 frames/s | 41.9 MB/s | queue 0/2 | 12 behind
    | latency p50 0.41 s p99 0.81 s | 0 dropped
    >>> print(format_watch("acq/cam0", WatchSample("complete", None, 1200, 20.0, *[None] * 6, 3, None)))
    acq/cam0: complete | 1200 frames | 20.0 frames/s | 3 dropped
    """
    fields = [f"{path}: {s.state}", f"{s.n_frames} frames", _figure(s.frames_per_s, ".1f", " frames/s")]
    if s.state == "writing":
        queue = "-" if s.queue_depth is None else f"{s.queue_depth}/{_figure(s.queue_capacity, 'd')}"
        p50, p99 = (_figure(v, ".2f", " s", bare=True) for v in (s.latency_p50, s.latency_p99))
        fields += [_figure(s.mb_per_s, ".1f", " MB/s"), f"queue {queue}", f"{_figure(s.frames_behind, 'd')} behind",
                   f"latency p50 {p50} p99 {p99}"]
    fields.append(f"{s.n_dropped} dropped")
    return " | ".join(fields)


def cmd_watch(args: argparse.Namespace) -> int:
    from ..live import Watch

    watch = Watch(args.path)
    tty = sys.stdout.isatty()
    width = 0
    try:
        while True:
            sample = watch.sample()
            line = format_watch(args.path, sample)
            if tty:  # rewrite the line in place (cut to the terminal's width: a wrapped line cannot be)
                line = line[: max(shutil.get_terminal_size().columns - 1, 20)]
                sys.stdout.write("\r" + line.ljust(width))
                sys.stdout.flush()
                width = len(line)
            else:
                print(line, flush=True)
            if args.once or sample.state != "writing":
                break
            time.sleep(args.interval)
    except KeyboardInterrupt:
        pass  # the way to stop watching
    finally:
        if tty and width:
            sys.stdout.write("\n")
            sys.stdout.flush()
        watch.close()
    return EXIT_OK
