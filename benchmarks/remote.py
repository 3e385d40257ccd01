"""Reading a split dataset by URL: HTTP (with and without the chunk index, 0 and 20 ms per
request), raw h5py through fsspec as the peer, S3 (moto), against the same dataset read locally.

    /work/venv/bin/python benchmarks/remote.py [--reps 5] [--s3] [--big] [--data noise,struct]
                                               [--fsspec-block-size 5242880] [--latency 0.02] [--backlog 128]
                                               [--keep-gc] [--hang-timeout 300]

Data: uint16 (t, z, y, x) = (100, 10, 256, 256) (``--big``: (40, 4, 2048, 2048)), blocks of 20
frames, written by ``split_dataset.save(data, path, (20,), fsync=False)`` (other arguments at
their defaults: blosc-lz4, one chunk per (y, x) plane, a ``chunk_index.bin``), two kinds:
``noise`` (a dark camera: Poisson(2) + 100 per pixel, ``run.make_noise``) and ``struct``
(smooth blobs on an offset of 100 with shot noise, ``run.make_struct``).

Servers (``tests/remote_servers.py``), in this process, on 127.0.0.1: ``RangeHTTPServer`` over
the folder the datasets are written to (threaded, keep-alive, single byte ranges; its
``latency`` is slept before every answer, concurrent answers sleep concurrently; its listen
backlog raised from socketserver's 5 to ``--backlog`` 128, as a production server's), and with
``--s3`` moto's S3 (``S3Server``), the datasets uploaded untracked. Every cell's request count
and bytes come from the server's log (``reset_log()`` before, ``wait_idle()`` after).

Readers (rows of the tables):

- ``local warm``: ``split_dataset.open(path)`` once per data kind, every block touched untimed;
  all repetitions on that object.
- ``local fresh``: a new ``split_dataset.open(path)`` per cell (opened untimed), the read timed.
- ``http idx N ms``: ``split_dataset.open(url)`` opened untimed before each timed read, so the
  chunk locations (from ``chunk_index.bin``, fetched by the open) are known when the timing
  starts; the open's own cost (requests, ms) is in the "open" table.
- ``http noidx N ms 1st`` / ``2nd``: ``split_dataset.open(url, chunk_index=False)`` opened
  untimed; ``1st`` is the first read (each block touched learns its HDF5 chunk locations through
  the block's fsspec file with a 1 MiB block cache), ``2nd`` the same selection again on the same
  object (locations known).
- ``h5py+fsspec N ms``: the peer. ``fs = fsspec.filesystem("http")``; per block touched,
  ``h5py.File(fs.open(url, block_size=B), "r")[key][selection within the block]``, one file
  object per block, blocks one after the other, stitched into one array; opening the file
  objects and the HDF5 files is timed (fsspec's default cache: read-ahead "bytes").
- ``s3 idx 0 ms`` (``--s3``): as ``http idx``, on moto.

Patterns (columns): ``ds[t]`` (one volume: z, y, x), ``ds[t, z]`` (one plane), ``ds[B:2B]`` (one
block's volumes), ``ds[:, z]`` (a plane over time), ``ds[:, z, 100:108, 100:108]`` (an 8x8
trace), ``ds[:]``; t and z drawn per repetition (the same for every reader). A cell is the median
over ``--reps`` of the read's wall time (``~``: slowest > 1.5x fastest), with the median number
of requests (HEADs among them in brackets) and bytes the server sent; "chunk bytes needed" is the
compressed size of the chunks the selection touches (the least any reader fetches). Every
reader's first result per pattern is compared with numpy; a read that raises is counted and
shown as FAILED with its message, and the run goes on. Readers run in a rotated order each
repetition. Both fsspec filesystems are made once per process (fsspec caches instances), so
keep-alive connections outlive the dataset objects.

Python's automatic cyclic GC is off during the run, ``gc.collect()`` runs between cells
(``--keep-gc`` leaves it on): h5py holds its global lock while HDF5 reads through a Python file
object, fsspec answers those reads on its event-loop thread, and a GC pass there that frees an
h5py object waits for that lock: a deadlock (h5py issue 2019), which this benchmark hit with
``chunk_index=False``.

Targets (issue): the whole array over loopback HTTP (0 ms, chunk index) within 2x of the same
read locally (the ratio per data kind, against both local rows); a frame, with the index known,
is one request (``ds[t]`` and ``ds[t, z]``, every repetition).
"""

from __future__ import annotations

import argparse
import faulthandler
import gc
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

Selection = tuple[Any, ...]

# ---------------------------------------------------------------------------- patterns


@dataclass(frozen=True)
class Pattern:
    key: str
    label: str
    make: Callable[[np.random.Generator], Selection]


def patterns(shape: tuple[int, int, int, int], block: int) -> list[Pattern]:
    nt, nz, ny, nx = shape
    zc = 5 if nz > 5 else nz // 2
    yc, xc = min(100, ny - 8), min(100, nx - 8)
    return [
        Pattern("t", "ds[t]", lambda r: (int(r.integers(nt)),)),
        Pattern("tz", "ds[t, z]", lambda r: (int(r.integers(nt)), int(r.integers(nz)))),
        Pattern("block", f"ds[{block}:{2 * block}]", lambda r: (slice(block, 2 * block),)),
        Pattern("plane", f"ds[:, {zc}]", lambda r: (slice(None), zc)),
        Pattern("trace", f"ds[:, {zc}, {yc}:{yc + 8}, {xc}:{xc + 8}]",
                lambda r: (slice(None), zc, slice(yc, yc + 8), slice(xc, xc + 8))),
        Pattern("whole", "ds[:]", lambda r: (slice(None),)),
    ]


def selections(pats: list[Pattern], reps: int) -> list[dict[str, Selection]]:
    """The selection of every pattern in every repetition (the same for every reader)."""
    out = []
    for rep in range(reps):
        rng = np.random.default_rng(1000 + rep)
        out.append({p.key: p.make(rng) for p in pats})
    return out


# ---------------------------------------------------------------------------- measurements


@dataclass
class Cell:
    ms: list[float] = field(default_factory=list)
    requests: list[int] = field(default_factory=list)
    nbytes: list[int] = field(default_factory=list)
    heads: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@dataclass
class Server:
    """Either test server: the log and the latency knob this script uses."""

    impl: Any

    def reset(self) -> None:
        self.impl.wait_idle()
        self.impl.reset_log()

    def counts(self) -> tuple[int, int, int]:
        self.impl.wait_idle()
        return self.impl.count(), self.impl.bytes_sent(), self.impl.count(method="HEAD")


#: one timed call: (ms, result, requests, bytes sent, HEAD requests); the result is the exception if it failed
Timed = tuple[float, Any, int, int, int]
#: one row's measurement in one repetition: (row name, *Timed)
Row = tuple[str, float, Any, int, int, int]


def timed(fn: Callable[[], Any], server: Server | None, catch: bool = False) -> Timed:
    """(ms, result, requests, bytes sent, HEAD requests) of one call; with `catch`, a failing
    read returns its exception as the result (the cell shows it; the run goes on)."""
    if server is not None:
        server.reset()
    t0 = time.perf_counter()
    try:
        out = fn()
    except Exception as e:
        if not catch:
            raise
        out = e
    ms = (time.perf_counter() - t0) * 1e3
    n, b, h = server.counts() if server is not None else (0, 0, 0)
    return ms, out, n, b, h


def record(cell: Cell, ms: float, n: int, b: int, h: int) -> None:
    cell.ms.append(ms)
    cell.requests.append(n)
    cell.nbytes.append(b)
    cell.heads.append(h)


# ---------------------------------------------------------------------------- the peer


def h5py_fsspec_read(fs: Any, base: str, names: list[str], key: str, block: int, nt: int, sel: Selection,
                     block_size: int) -> np.ndarray:
    """What an h5py user does without this package: one fsspec file object per block touched,
    ``h5py.File(...)[key][part]``, blocks one after the other, stitched."""
    import h5py

    first, rest = sel[0], sel[1:]

    def part(b: int, local: Any) -> np.ndarray:
        with fs.open(f"{base}/{names[b]}", "rb", block_size=block_size) as f, h5py.File(f, "r") as h:
            arr: np.ndarray = np.asarray(h[key][(local,) + rest])
            return arr

    if isinstance(first, int):
        b, lt = divmod(first, block)
        return part(b, lt)
    start, stop, step = first.indices(nt)
    assert step == 1
    pieces = []
    for b in range(start // block, (stop - 1) // block + 1):
        lo, hi = max(start, b * block) - b * block, min(stop, (b + 1) * block) - b * block
        pieces.append(part(b, slice(lo, hi)))
    out: np.ndarray = np.empty((stop - start,) + pieces[0].shape[1:], pieces[0].dtype)
    i = 0
    for p in pieces:
        out[i:i + len(p)] = p
        i += len(p)
    return out


def chunk_bytes_needed(path: Path, names: list[str], key: str, block: int, nt: int, sel: Selection) -> int:
    """Compressed bytes of the chunks a selection touches (the least any reader must fetch)."""
    import h5py

    first = sel[0]
    ts = [first] if isinstance(first, int) else list(range(*first.indices(nt)))
    total = 0
    for b in sorted({t // block for t in ts}):
        with h5py.File(path / names[b], "r") as h:
            dset = h[key]
            chunks = dset.chunks
            local_ts = [t - b * block for t in ts if t // block == b]
            # the per-axis chunk ranges of the rest of the selection
            ranges: list[range] = [range(min(local_ts) // chunks[0], max(local_ts) // chunks[0] + 1)]
            for ax in range(1, dset.ndim):
                s = sel[ax] if ax < len(sel) else slice(None)
                if isinstance(s, int):
                    ranges.append(range(s // chunks[ax], s // chunks[ax] + 1))
                else:
                    a, z, _ = s.indices(dset.shape[ax])
                    ranges.append(range(a // chunks[ax], (z - 1) // chunks[ax] + 1))
            wanted_t = {t // chunks[0] for t in local_ts}
            for idx in np.ndindex(*(len(r) for r in ranges)):
                coord = tuple(r[i] * c for r, i, c in zip(ranges, idx, chunks))
                if coord[0] // chunks[0] not in wanted_t:
                    continue
                total += dset.id.get_chunk_info_by_coord(coord).size
    return total


# ---------------------------------------------------------------------------- formatting


def fmt_bytes(n: float) -> str:
    if n >= 1e6:
        return f"{n / 1e6:.1f} MB"
    if n >= 1e3:
        return f"{n / 1e3:.0f} kB"
    return f"{n:.0f} B"


def fmt_count(values: list[int]) -> str:
    lo, hi = min(values), max(values)
    return f"{int(statistics.median(values))}" if lo == hi else f"{int(statistics.median(values))} ({lo}-{hi})"


def fmt_ms(values: list[float]) -> str:
    med = statistics.median(values)
    text = f"{med:.1f}" if med < 100 else f"{med:.0f}"
    return text + ("~" if len(values) > 1 and max(values) > 1.5 * min(values) else "")


def fmt_cell(cell: Cell, remote: bool) -> str:
    if cell.errors and not cell.ms:
        return f"**FAILED** ({len(cell.errors)}/{len(cell.errors)})"
    if not cell.ms:
        return "-"
    text = f"{fmt_ms(cell.ms)} ms"
    if remote:
        text += f", {fmt_count(cell.requests)} req, {fmt_bytes(statistics.median(cell.nbytes))}"
        if any(cell.heads):
            text += f" ({fmt_count(cell.heads)} HEAD)"
    if cell.errors:
        text += f" **{len(cell.errors)}/{len(cell.errors) + len(cell.ms)} FAILED**"
    return text


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# ---------------------------------------------------------------------------- running


@dataclass
class Reader:
    name: str
    remote: bool
    #: run one repetition of one pattern: (selection) -> list of (row name, ms, result, n, bytes, heads)
    run: Callable[[Selection], list[Row]]


@contextmanager
def aws_environment(folder: Path) -> Iterator[None]:
    """moto's fake credentials and no user AWS configuration, for this process only."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    for k in saved:
        del os.environ[k]
    os.environ.update({
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(folder / "no-aws-config"), "AWS_SHARED_CREDENTIALS_FILE": str(folder / "no-aws-config"),
        "AWS_EC2_METADATA_DISABLED": "true",
    })
    try:
        yield
    finally:
        for k in [k for k in os.environ if k.startswith("AWS_")]:
            del os.environ[k]
        os.environ.update(saved)


def run_kind(kind: str, data: np.ndarray, work: Path, http: Any, s3: Any, args: argparse.Namespace,
             block: int) -> dict[str, Any]:
    import fsspec

    import split_dataset
    from split_dataset.storage import block_name

    path = work / kind
    split_dataset.save(data, path, (block,), fsync=False).close()
    meta_key = json.loads((path / "stack_metadata.json").read_text())["data_key"]  # the array's name in a block
    nt = data.shape[0]
    names = [block_name(i) for i in range((nt + block - 1) // block)]
    on_disk = sum(p.stat().st_size for p in path.iterdir())
    url = http.url_for(kind)
    hserver = Server(http)
    s3url = s3opts = None
    if s3 is not None:
        from remote_servers import s3_storage_options, upload_folder

        s3url = upload_folder(s3, path, f"bench/{kind}")
        s3opts = s3_storage_options(s3)
    sserver = Server(s3) if s3 is not None else None

    pats = patterns((data.shape[0], data.shape[1], data.shape[2], data.shape[3]), block)
    sels = selections(pats, args.reps)
    lat = args.latency
    lat_ms = round(lat * 1e3)
    fs = fsspec.filesystem("http")
    opens: dict[str, Cell] = {}

    def open_cell(name: str) -> Cell:
        return opens.setdefault(name, Cell())

    # ---- readers
    warm = split_dataset.open(path)
    for b in range(len(names)):
        warm[b * block, 0, 0, 0]

    def local_warm(sel: Selection) -> list[Row]:
        ms, out, *_ = timed(lambda: warm[sel], None)
        return [("local warm", ms, out, 0, 0, 0)]

    def local_fresh(sel: Selection) -> list[Row]:
        t0 = time.perf_counter()
        ds = split_dataset.open(path)
        record(open_cell("local"), (time.perf_counter() - t0) * 1e3, 0, 0, 0)
        try:
            ms, out, *_ = timed(lambda: ds[sel], None)
        finally:
            ds.close()
        return [("local fresh", ms, out, 0, 0, 0)]

    def remote_idx(latency: float, name: str, server: Server, u: str, opts: dict[str, Any] | None
                   ) -> Callable[[Selection], list[Row]]:
        def run(sel: Selection) -> list[Row]:
            server.impl.latency = latency
            ms, ds, n, b, h = timed(lambda: split_dataset.open(u, storage_options=opts), server)
            record(open_cell(name), ms, n, b, h)
            try:
                ms, out, n, b, h = timed(lambda: ds[sel], server, catch=True)
            finally:
                ds.close()
                server.impl.latency = 0.0
            return [(name, ms, out, n, b, h)]
        return run

    def http_noidx(latency: float, name: str) -> Callable[[Selection], list[Row]]:
        def run(sel: Selection) -> list[Row]:
            http.latency = latency
            ms, ds, n, b, h = timed(lambda: split_dataset.open(url, chunk_index=False), hserver)
            record(open_cell(name), ms, n, b, h)
            try:
                first = timed(lambda: ds[sel], hserver, catch=True)
                second = timed(lambda: ds[sel], hserver, catch=True)
            finally:
                ds.close()
                http.latency = 0.0
            return [(f"{name} 1st", *first), (f"{name} 2nd", *second)]
        return run

    def peer(latency: float, name: str) -> Callable[[Selection], list[Row]]:
        def run(sel: Selection) -> list[Row]:
            http.latency = latency
            try:
                res = timed(lambda: h5py_fsspec_read(fs, url, names, meta_key, block, nt, sel, args.fsspec_block_size),
                            hserver, catch=True)
            finally:
                http.latency = 0.0
            return [(name, *res)]
        return run

    readers = [
        Reader("local warm", False, local_warm),
        Reader("local fresh", False, local_fresh),
        Reader("http idx 0 ms", True, remote_idx(0.0, "http idx 0 ms", hserver, url, None)),
        Reader(f"http idx {lat_ms} ms", True, remote_idx(lat, f"http idx {lat_ms} ms", hserver, url, None)),
        Reader("http noidx 0 ms", True, http_noidx(0.0, "http noidx 0 ms")),
        Reader(f"http noidx {lat_ms} ms", True, http_noidx(lat, f"http noidx {lat_ms} ms")),
        Reader("h5py+fsspec 0 ms", True, peer(0.0, "h5py+fsspec 0 ms")),
        Reader(f"h5py+fsspec {lat_ms} ms", True, peer(lat, f"h5py+fsspec {lat_ms} ms")),
    ]
    if s3 is not None and sserver is not None and s3url is not None:
        readers.append(Reader("s3 idx 0 ms", True, remote_idx(0.0, "s3 idx 0 ms", sserver, s3url, s3opts)))

    rows: dict[str, dict[str, Cell]] = {}
    row_order: list[str] = []
    checked: set[tuple[str, str]] = set()
    for rep in range(args.reps):
        shift = rep % len(readers)
        for reader in readers[shift:] + readers[:shift]:
            for p in pats:
                sel = sels[rep][p.key]
                faulthandler.dump_traceback_later(args.hang_timeout, exit=True)  # a hang: stacks, then exit
                try:
                    measured = reader.run(sel)
                finally:
                    faulthandler.cancel_dump_traceback_later()
                if not args.keep_gc:
                    gc.collect()  # here, in the main thread, while no HDF5 read through fsspec is running
                for row, ms, out, n, b, h in measured:
                    if row not in rows:
                        rows[row] = {}
                    cell = rows[row].setdefault(p.key, Cell())
                    if isinstance(out, Exception):
                        cell.errors.append(f"{type(out).__name__}: {' '.join(str(out).split())}")
                        continue
                    record(cell, ms, n, b, h)
                    if (row, p.key) not in checked:
                        expected = data[sel]
                        if out.shape != expected.shape or out.dtype != expected.dtype or not np.array_equal(out, expected):
                            raise AssertionError(f"{kind}: {row} {p.label} {sel}: wrong values")
                        checked.add((row, p.key))
        print(f"  {kind}: repetition {rep + 1}/{args.reps} done, load {loadavg()}", file=sys.stderr, flush=True)
    warm.close()
    for reader in readers:  # the table's order: the readers' order, a reader's rows in the order they came
        for row in rows:
            if row.startswith(reader.name) and row not in row_order:
                row_order.append(row)
    needed = {p.key: chunk_bytes_needed(path, names, meta_key, block, nt, sels[0][p.key]) for p in pats}
    return {"pats": pats, "rows": rows, "row_order": row_order, "opens": opens, "needed": needed,
            "on_disk": on_disk, "remote": {r.name for r in readers if r.remote}, "raw": data.nbytes,
            "n_blocks": len(names)}


def print_kind(kind: str, res: dict[str, Any], args: argparse.Namespace) -> None:
    pats: list[Pattern] = res["pats"]
    remote = res["remote"]
    print(f"\n### {kind}: {fmt_bytes(res['raw'])} raw, {fmt_bytes(res['on_disk'])} on disk "
          f"({res['raw'] / res['on_disk']:.2f}x), {res['n_blocks']} block files\n")
    print("Median ms over the repetitions (`~`: slowest > 1.5x fastest), requests and bytes the server sent.\n")
    print("| reader | " + " | ".join(f"`{p.label}`" for p in pats) + " |")
    print("|---|" + "---:|" * len(pats))
    print("| chunk bytes needed | " + " | ".join(fmt_bytes(res["needed"][p.key]) for p in pats) + " |")
    for row in res["row_order"]:
        is_remote = any(row.startswith(r) for r in remote)
        print(f"| {row} | " + " | ".join(fmt_cell(res["rows"][row].get(p.key, Cell()), is_remote) for p in pats) + " |")
    failures: dict[str, tuple[str, list[str]]] = {}  # the message with its numbers blanked -> (first, cells)
    for row in res["row_order"]:
        for p in pats:
            for err in res["rows"][row].get(p.key, Cell()).errors:
                failures.setdefault(re.sub(r"\d+", "N", err), (err, []))[1].append(f"{row} `{p.label}`")
    for first, where in failures.values():
        cells = sorted(set(where), key=where.index)
        print(f"\nFAILED {len(where)} time(s), in {', '.join(cells)}; the first: {first[:500]}")
    print(f"\nOpening (before each timed read of the rows above; {len(pats)} x {args.reps} opens per row):\n")
    print("| open | ms | requests | bytes |")
    print("|---|---:|---:|---:|")
    for name, cell in res["opens"].items():
        if name == "local":
            print(f"| local `split_dataset.open(path)` | {fmt_ms(cell.ms)} | - | - |")
        else:
            what = "chunk_index=False" if "noidx" in name else "with chunk index"
            print(f"| {name.replace(' idx', '').replace(' noidx', '')} ({what}) | {fmt_ms(cell.ms)} | "
                  f"{fmt_count(cell.requests)} | {fmt_bytes(statistics.median(cell.nbytes))} |")


def print_targets(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    print("\n### Targets\n")
    print("| data | target | measured | |")
    print("|---|---|---:|---|")
    lat_ms = round(args.latency * 1e3)
    for kind, res in results.items():
        rows = res["rows"]
        cell = rows["http idx 0 ms"]["whole"]
        for ref in ("local fresh", "local warm"):
            local = statistics.median(rows[ref]["whole"].ms)
            if not cell.ms or cell.errors:
                print(f"| {kind} | `ds[:]` over HTTP 0 ms (index) <= 2x {ref} | failed {len(cell.errors)}/"
                      f"{len(cell.errors) + len(cell.ms)} reads | NOT met |")
                continue
            http = statistics.median(cell.ms)
            ratio = http / local
            print(f"| {kind} | `ds[:]` over HTTP 0 ms (index) <= 2x {ref} ({http:.0f} ms / {local:.0f} ms; HTTP "
                  f"{res['raw'] / 1e6 / (http / 1e3):.0f} MB/s raw) | {ratio:.2f}x | {'met' if ratio <= 2 else 'NOT met'} |")
        for row in ("http idx 0 ms", f"http idx {lat_ms} ms", "s3 idx 0 ms"):
            if row not in rows:
                continue
            for key, label in (("t", "ds[t]"), ("tz", "ds[t, z]")):
                c = rows[row][key]
                ok = bool(c.requests) and not c.errors and all(n == 1 for n in c.requests)
                measured = fmt_count(c.requests) if c.requests else "-"
                if c.errors:
                    measured += f", {len(c.errors)}/{len(c.errors) + len(c.ms)} reads failed"
                print(f"| {kind} | `{label}` = one request, index known ({row}) | {measured} | "
                      f"{'met' if ok else 'NOT met'} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions per cell (medians); default 5")
    ap.add_argument("--s3", action="store_true", help="also read from S3 (moto in server mode, 0 ms)")
    ap.add_argument("--big", action="store_true", help="(40, 4, 2048, 2048) instead of (100, 10, 256, 256)")
    ap.add_argument("--data", default="noise,struct", help="data kinds, comma-separated: noise, struct")
    ap.add_argument("--latency", type=float, default=0.02, help="the slow server's delay per request, s (0.02)")
    ap.add_argument("--backlog", type=int, default=128,
                    help="the HTTP test server's listen backlog (socketserver's default, 5, makes connection bursts "
                         "stall for seconds in SYN retransmits; nginx uses 511); default 128")
    ap.add_argument("--keep-gc", action="store_true",
                    help="leave Python's automatic cyclic GC on (risks the h5py/fsspec deadlock, h5py issue 2019)")
    ap.add_argument("--hang-timeout", type=float, default=300,
                    help="seconds one reader may take for one pattern before the stacks are dumped and the run exits")
    ap.add_argument("--fsspec-block-size", type=int, default=5 * 2**20,
                    help="block_size of the peer's fsspec file objects (fsspec's HTTP default: 5 MiB)")
    args = ap.parse_args()
    kinds = [k for k in args.data.split(",") if k]
    if not kinds or any(k not in ("noise", "struct") for k in kinds):
        ap.error("--data takes noise, struct")
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        os.environ.pop(name, None)
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"

    import fsspec
    import h5py
    import remote_servers
    from remote_servers import RangeHTTPServer, S3Server
    from run import make_noise, make_struct

    import split_dataset

    # a listen queue like a production server's: our reader opens up to ~100 connections at once
    # (aiohttp's per-session limit) for a selection spread over many chunks
    remote_servers._RangeHTTPD.request_queue_size = args.backlog
    if not args.keep_gc:
        # h5py holds its global lock while HDF5 reads through a Python file object; fsspec serves
        # those reads on its event-loop thread; if the cyclic GC runs there and frees an h5py object,
        # that thread waits for h5py's lock: a deadlock (h5py issue 2019; seen here with
        # chunk_index=False, a gdb stack). The GC runs between cells instead, untimed.
        gc.disable()
    shape = (40, 4, 2048, 2048) if args.big else (100, 10, 256, 256)
    block = 20
    start_load = loadavg()
    print(f"## Remote reads: uint16 {shape}, blocks of {block} frames, {args.reps} reps, "
          f"latency {args.latency * 1e3:.0f} ms for the slow rows\n")
    print(f"split_dataset {getattr(split_dataset, '__version__', '?')}, h5py {h5py.__version__}, fsspec "
          f"{fsspec.__version__}, numpy {np.__version__}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; "
          f"peer block_size {args.fsspec_block_size} (cache 'bytes', read-ahead); HTTP server listen backlog {args.backlog}; "
          f"automatic GC {'on' if args.keep_gc else 'off (gc.collect() between cells)'}; "
          f"load average at start {start_load}")
    work = Path(tempfile.mkdtemp(prefix="sd-remote-bench-"))
    results: dict[str, dict[str, Any]] = {}
    try:
        with aws_environment(work), RangeHTTPServer(work) as http:
            s3 = S3Server().start() if args.s3 else None
            try:
                if s3 is not None:
                    s3.create_bucket("bench")
                for kind in kinds:
                    data = make_noise(shape) if kind == "noise" else make_struct(shape)
                    results[kind] = run_kind(kind, data, work, http, s3, args, block)
                    del data
            finally:
                if s3 is not None:
                    s3.stop()
        for kind, res in results.items():
            print_kind(kind, res, args)
        print_targets(results, args)
        print(f"\nLoad average: start {start_load}, end {loadavg()} (2 cores shared: see `~` marks)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
