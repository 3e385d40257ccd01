"""The argument parser of ``split-dataset``: one sub-command per task, each with examples and the exit codes."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from .commands import cmd_convert, cmd_export_vds, cmd_index, cmd_info, cmd_refs, cmd_serve, cmd_verify, cmd_watch
from .demo import cmd_demo
from .exits import EXIT_CODES_HELP, PROG
from .format import _wrap

__all__ = ["build_parser"]

_SPECS = """\
SRC and DST are each one of:
  folder                a split dataset (a DST folder that does not exist is created)
  file.h5:/path/in/file an HDF5 dataset (.h5 .hdf5 .hdf .he5); a source file holding one
                        dataset needs no path, a destination without one gets /stack
  file.npy              a NumPy file (read memory-mapped; holds no metadata)
  store.zarr[:/path]    a zarr array (the zarr package must be installed)
  image.ome.zarr        an OME-Zarr image: written as OME-NGFF 0.5 with a pyramid (--ngff 0.4,
                        --bdv), read at level 0 with its physical metadata
  s3://bucket/ds, https://host/ds
                        a split dataset by URL (the remote extra); a URL DST is uploaded,
                        its metadata last (object stores only)
"""



def _json_object(text: str) -> dict[str, Any]:
    """A JSON object from the command line (``--storage-options``)."""
    try:
        value = json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {type(value).__name__}")
    return value


_STORAGE_OPTIONS_HELP = ('fsspec options for a URL PATH, e.g. \'{"anon": true}\' or '
                         '\'{"client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}\'')


def _number(text: str) -> float | int:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None



def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``split-dataset`` (one sub-parser per command)."""
    from .. import __version__

    fmt = argparse.RawDescriptionHelpFormatter
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bars (they are drawn only when stderr is a terminal anyway)")
    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=fmt, epilog=EXIT_CODES_HELP,
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
                           epilog=(epilog + "\n\n" if epilog else "") + EXIT_CODES_HELP, formatter_class=fmt)
        p.set_defaults(func=func)
        return p

    p = add("info", cmd_info, "shape, dtype, blocks, codec, size, resolution, attrs of a split dataset",
            "Show what a split dataset holds: shape, dtype, block shape and count, codec, bytes on disk and "
            "compression ratio, resolution and units, axis order, frame rate, attrs, and whether the "
            "acquisition is complete. Reads the metadata and one block header; no pixel data. PATH may be a "
            "URL (s3://, https://, any fsspec URL; the remote extra): a listing or one HEAD request per block "
            "gives the bytes stored.",
            f"examples:\n  {PROG} info fish1/raw\n  {PROG} info fish1/raw --json | jq .shape\n"
            f"  {PROG} info s3://lab-archive/fish1/raw --storage-options '{{\"anon\": true}}'")
    p.add_argument("path", metavar="PATH", help="the dataset folder or its URL")
    p.add_argument("--json", action="store_true", help="print one JSON object (stable keys) instead of text")
    p.add_argument("--storage-options", metavar="JSON", type=_json_object, help=_STORAGE_OPTIONS_HELP)

    p = add("watch", cmd_watch, "show how a dataset being written keeps up: frames, rate, queue, latency",
            "Print one line per interval about a dataset being written by SplitDatasetWriter (in any process): "
            "frames on disk, frames per second (from the frames' time stamps when the dataset has them, else "
            "from its growth), the writer's MB/s, queue (full blocks waiting / capacity), frames not yet safe on "
            "disk, append-to-disk latency p50/p99 and dropped frames. The writer's figures come from "
            ".split_dataset.writer.status.json, which it rewrites after each block; '-' before its first block. "
            "On a terminal the line is rewritten in place. Stops, exit code 0, when the dataset is complete or "
            "no live writer holds it (stopped or crashed: 'no writer'); Ctrl-C stops it too.",
            f"examples:\n  {PROG} watch acq/cam0\n  {PROG} watch acq/cam0 --interval 5 > watch.log\n"
            f"  {PROG} watch acq/cam0 --once")
    p.add_argument("path", metavar="PATH", help="the dataset folder")
    p.add_argument("--interval", type=_seconds, default=1.0, metavar="SECONDS",
                   help="seconds between two lines (default 1)")
    p.add_argument("--once", action="store_true", help="print one line and exit")

    p = add("verify", cmd_verify, "decode every block and check it against the metadata and its checksum",
            "Open and decode every block file, check its shape and dtype against the metadata and, where the "
            "folder has SHA256SUMS (written by this package as each block is written), its SHA-256: any changed "
            "byte is found, even where the damaged block still decodes. Names every missing, corrupt or "
            "inconsistent file. Datasets from older writers have no checksums: every block is still decoded, "
            "and the report says that checksums were not available. Exits 0 only if the dataset is whole. "
            "PATH may be a URL (s3://, https://, any fsspec URL; the remote extra): each block object is "
            "downloaded once, a few at a time, and checked as a local file is; problems name the URLs.",
            f"examples:\n  {PROG} verify fish1/raw && echo whole\n  {PROG} verify fish1/raw --json\n"
            f"  {PROG} verify https://data.example.org/fish1/raw")
    p.add_argument("path", metavar="PATH", help="the dataset folder or its URL")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.add_argument("--storage-options", metavar="JSON", type=_json_object, help=_STORAGE_OPTIONS_HELP)

    p = add("index", cmd_index, "write chunk_index.bin, so first reads skip HDF5 and chunks are checksummed",
            "Write the dataset's chunk_index.bin: for every block file its size, modification time and inode, and "
            "for every chunk its place in the file and an XXH3-64 checksum of its stored bytes. Readers then open "
            "no HDF5 file on the first read of a block and check every whole chunk they read against its "
            "checksum. Writers of this package write it themselves; this command is for datasets from the old "
            "package, acquisition programs, killed writers, or copies that lost their file times (a block whose "
            "file changed is ignored by readers until the index is rebuilt). Only blocks new or changed since "
            "the last index are read, unless --rebuild.",
            f"examples:\n  {PROG} index fish1/raw\n  {PROG} index fish1/raw --rebuild --json")
    p.add_argument("path", metavar="PATH", help="the dataset folder")
    p.add_argument("--rebuild", action="store_true", help="read and checksum every block again")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")

    p = add("convert", cmd_convert, "copy an array between split datasets, HDF5, .npy, zarr and OME-Zarr",
            "Copy an array from SRC to DST block by block (memory stays bounded), carrying resolution, units, "
            "axis order, frame interval and attrs across where both sides can hold them (HDF5 and zarr "
            "attributes <-> attrs). DST is written under a temporary name and renamed when complete; an "
            "existing DST is refused unless --overwrite.",
            f"examples:\n  {PROG} convert project_export.h5:/exported_data fish1/probabilities\n"
            f"  {PROG} convert fish1/raw fish1_raw.zarr --shape-block 10,-1,256,256\n"
            f"  {PROG} convert stack.npy fish1/raw --shape-block 20 --compression blosc-zstd\n"
            f"  {PROG} convert fish1/raw fish1_raw.ome.zarr\n"
            f"  {PROG} convert fish1/raw s3://lab-archive/fish1/raw", _SPECS)
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
    p.add_argument("--ngff", choices=["0.5", "0.4"],
                   help="write a zarr DST as an OME-Zarr image of this OME-NGFF version (default for a name ending "
                        "in .ome.zarr: 0.5 on zarr v3, sharded; 0.4: zarr v2)")
    p.add_argument("--bdv", action="store_true",
                   help="write OME-NGFF 0.4 as full 5-D (t, c, z, y, x), the form BigDataViewer reads")
    p.add_argument("--storage-options", metavar="JSON", type=_json_object,
                   help='fsspec options for a URL SRC or DST, e.g. \'{"anon": true}\' or '
                        '\'{"client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}\'')

    p = add("export-vds", cmd_export_vds, "write an HDF5 file that shows a split dataset as one dataset",
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

    p = add("refs", cmd_refs, "write virtual zarr references (kerchunk JSON) to the block files, nothing copied",
            "Write OUT.json, a kerchunk-style reference set (version 1) that fsspec's reference file system serves "
            "as a zarr v3 store: one array 'data' whose chunks are byte ranges inside the block files of PATH, "
            "with dimension names from axis_order and the physical metadata and attrs as attributes. zarr-python 3 "
            "and xarray read it (gzip blocks need the numcodecs.zlib codec). Datasets whose blocks differ in codec "
            "or chunk shape, whose chunks do not tile the blocks or skip a filter are refused. Block files are "
            "named relative to the dataset (template 'u' = '.'): open with template_overrides={'u': PATH}; "
            "--absolute or --url-prefix name them otherwise. Missing blocks read as the fill value.",
            f"examples:\n  {PROG} refs fish1/raw fish1/raw.refs.json\n"
            f"  {PROG} refs fish1/raw fish1/s3.refs.json --url-prefix s3://bucket/fish1/raw\n"
            "  python -c \"import xarray as xr; print(xr.open_dataset('reference://', engine='zarr', "
            "storage_options={'fo': 'fish1/raw.refs.json', 'template_overrides': {'u': 'fish1/raw'}}))\"")
    p.add_argument("path", metavar="PATH", help="the dataset folder")
    p.add_argument("out", metavar="OUT.json", help="the reference file to write")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--absolute", action="store_true", help="name the block files by their absolute paths")
    where.add_argument("--url-prefix", metavar="URL", help="name the block files under URL, the dataset folder's "
                       "URL (s3://..., https://...)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT.json")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")

    p = add("serve", cmd_serve, "share dataset folders over HTTP (read-only, with byte ranges)",
            "Serve the files under FOLDER read-only over HTTP, answering Range requests, so that "
            "split_dataset.open('http://HOST:PORT/path/to/dataset') reads a dataset by chunks from another "
            "process or machine (python -m http.server ignores Range headers: a reader would download whole "
            "block files). No listing, no symbolic links out of FOLDER, no writes. Binds 127.0.0.1 unless "
            "--host says otherwise; put a real web server in front of it before sharing beyond one machine. "
            "Runs until interrupted.",
            f"examples:\n  {PROG} serve /data/acquisitions --port 8000\n"
            "  python -c \"import split_dataset; print(split_dataset.open('http://127.0.0.1:8000/fish1/raw'))\"")
    p.add_argument("folder", metavar="FOLDER", help="the folder whose files are served (datasets anywhere under it)")
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1: this machine)")
    p.add_argument("--port", type=int, default=8000, help="the port (default 8000; 0 picks a free one)")

    p = add("demo", cmd_demo, "simulate an acquisition, stream it to disk, read it back, show info",
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
