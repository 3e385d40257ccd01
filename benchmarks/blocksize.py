"""Blosc block size for the default codec (blosc lz4, byte shuffle): write speed, ratio, reads.

    python benchmarks/blocksize.py [--quick] [--reps R] [--data struct,noise] [--case 256,512,2048]
                                   [--variants 8K,16K,32K,64K,auto,rule] [--clevels 5,3] [--nt 40,8,16]

Variants: fixed block sizes of 8, 16, 32, 64, 128, 256 KiB (unsplit blocks: one lz4 stream per
block, as ``storage.blosc.compress`` writes any nonzero block size), ``auto`` (0: blosc's choice,
byte-split blocks, what HDF5's filter and so h5py write: the whole chunk up to 256 KiB for lz4
level 5 on uint16) and ``rule`` (``Codec.parse("blosc-lz4")``, the package's default rule for
these chunks); lz4 at each level of ``--clevels``. The ``blosc bs`` column shows the block size
found in the first chunk's header (``s``: byte-split). Data kinds and shapes:

- ``struct``: structured frames (``run.make_struct`` for the 256x256 planes, ``stream.synth_frames``
  for the 512x512 volumes and 2048x2048 frames); ``noise``: a dark camera, ``poisson(2) + 100`` uint16.
- ``256``: (T, 10, 256, 256), blocks of 20 time points, chunks of one plane (128 KiB, 512 B rows);
  ``512``: (T, 30, 512, 512), blocks of 4 volumes, chunks of one plane (512 KiB, 1 KiB rows), as
  ``stream.py``'s volumes; ``2048``: (T, 2048, 2048), blocks of 8 frames, chunks of (1, 256, 2048)
  (1 MiB, 4 KiB rows). The chunks are ``save``'s defaults.

Measured, each a median over ``--reps`` repetitions, variants interleaved in a rotating order:

- ``comp MB/s``: compressing every chunk of the whole array as the writers do
  (``split_dataset.storage.blosc.compress`` of ``_chunk_of(data, offset, chunks)`` per chunk, mapped
  over the package's thread pool: 2 threads here), raw MB per second; ``ratio``: raw bytes /
  compressed chunk bytes.
- reads through ``split_dataset`` (``ds[...]``, default reader) and through raw h5py with every block
  file open (``peers.H5Blocks``: ``read_direct`` per block, HDF5's filter, one thread) on the same
  files (written untimed by ``save(..., compression=Codec(...))``); a fresh reader per repetition that
  first touches every block (untimed); round 0 is untimed and checks values. Patterns: one frame
  (``ds[t, z]`` / ``ds[t]``), and for 256 and 512 one volume (``ds[t]``), a plane over time
  (``ds[:, z]``) and 100 random frames; an 8x8 trace over T (``ds[:, z, y:y+8, x:x+8]`` /
  ``ds[:, y:y+8, x:x+8]``) and the whole array (``ds[:]``). Small patterns are timed over several
  positions and given per call. ``sd/h5`` is the ratio of the two medians on the same files
  (issue 12's warm target: <= 1.1). A last line per table gives split_dataset's time over raw h5py's
  on the ``auto`` files (what h5py's own writes give), for every variant.

The machine is shared: the load average is printed at the start and the end; ``~`` marks a cell
whose slowest repetition is > 1.5x its fastest. Files go to a scratch folder, deleted at the end.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import peers  # noqa: E402

import split_dataset as sd  # noqa: E402
from split_dataset.storage import Codec, default_chunks, pool  # noqa: E402
from split_dataset.storage import blosc as _blosc  # noqa: E402
from split_dataset.storage.hdf5 import _chunk_grid, _chunk_of  # noqa: E402
from split_dataset.storage.threads import POOL_THREADS  # noqa: E402

NOISY = 1.5
SIZES = {"8K": 8192, "16K": 16384, "32K": 32768, "64K": 65536, "128K": 131072, "256K": 262144, "auto": 0}


def load() -> str:
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def make_data(kind: str, case: str, nt: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """The array and its block shape."""
    if case == "256":
        import run

        shape = (nt, 10, 256, 256)
        data = run.make_struct(shape) if kind == "struct" else run.make_noise(shape)
        return data, (20, 10, 256, 256)
    import stream

    if case == "512":
        vols = (stream.synth_frames((30, 512, 512), 4) if kind == "struct"
                else stream.noise_frames((30, 512, 512), 4))
        return np.stack([vols[i % len(vols)] for i in range(nt)]), (4, 30, 512, 512)

    frames = stream.synth_frames((2048, 2048), 8) if kind == "struct" else stream.noise_frames((2048, 2048), 8)
    data = np.stack([frames[i % len(frames)] for i in range(nt)])
    return data, (8, 2048, 2048)


def variant_codec(name: str, clevel: int) -> Codec:
    bs: int | str = Codec.parse("blosc-lz4").blocksize if name == "rule" else SIZES[name]
    return Codec("blosc", "lz4", clevel, "byte", bs)


def compress_all(data: np.ndarray, block: tuple[int, ...], codec: Codec) -> tuple[float, int]:
    """Seconds to compress every chunk of `data` (block by block, chunks over the pool), bytes out."""
    nb = data.shape[0] // block[0]
    ch = default_chunks(block, data.itemsize)
    offsets = _chunk_grid(block, ch)
    args = codec.blosc_args(ch[-1] * data.itemsize, int(np.prod(ch)) * data.itemsize, data.itemsize)
    assert args is not None
    total = 0
    t0 = time.perf_counter()
    for b in range(nb):
        part = data[b * block[0]:(b + 1) * block[0]]
        for payload in pool().map(lambda o: _blosc.compress(_chunk_of(part, o, ch), *args), offsets):  # noqa: B023
            total += payload.nbytes
    return time.perf_counter() - t0, total


def patterns(case: str, shape: tuple[int, ...], rng: np.random.Generator) -> dict[str, tuple[list[Any], int]]:
    """name -> (indices, calls): per-call time = total / calls."""
    nt = shape[0]
    if case in ("256", "512"):
        nz = shape[1]
        frames = [(int(t), int(z)) for t, z in zip(rng.integers(0, nt, 100), rng.integers(0, nz, 100))]
        out = {
            "frame": ([(int(rng.integers(nt)), int(rng.integers(nz))) for _ in range(20)], 20),
            "volume": ([(int(rng.integers(nt)),) for _ in range(5)], 5),
            "plane/T": ([(slice(None), int(rng.integers(nz))) for _ in range(3)], 3),
            "trace8x8": ([(slice(None), int(rng.integers(nz)), slice(yy, yy + 8), slice(xx, xx + 8))
                          for yy, xx in rng.integers(0, shape[-1] - 8, (5, 2))], 5),
            "whole": ([(slice(None),)], 1),
            "100frames": (frames, 1),
        }
        return out
    return {
        "frame": ([(int(rng.integers(nt)),) for _ in range(5)], 5),
        "trace8x8": ([(slice(None), slice(yy, yy + 8), slice(xx, xx + 8))
                      for yy, xx in rng.integers(0, shape[-1] - 8, (5, 2))], 5),
        "whole": ([(slice(None),)], 1),
    }


class SD:
    def __init__(self, path: Path) -> None:
        self.ds = sd.SplitDataset(path)

    def read(self, idx: Any) -> Any:
        return self.ds[idx]

    def close(self) -> None:
        self.ds.close()


def time_patterns(opener: Callable[[], Any], touch: list[Any], pats: dict[str, tuple[list[Any], int]],
                  source: np.ndarray | None) -> dict[str, float]:
    reader = opener()
    out: dict[str, float] = {}
    try:
        for idx in touch:
            reader.read(idx)
        for name, (indices, calls) in pats.items():
            gc.collect()
            t0 = time.perf_counter()
            got = [reader.read(i) for i in indices]
            out[name] = (time.perf_counter() - t0) / calls
            if source is not None:
                assert np.array_equal(np.asarray(got[0]), source[indices[0]]), (name, indices[0])
            del got
    finally:
        reader.close()
    return out


def med(v: list[float]) -> tuple[float, bool]:
    return statistics.median(v), len(v) > 1 and max(v) > NOISY * min(v)


def fmt(s: float) -> str:
    return f"{s * 1e3:.2f}" if s < 0.01 else f"{s * 1e3:.1f}" if s < 1 else f"{s * 1e3:.0f}"


def run_one(kind: str, case: str, nt: int, variants: list[tuple[str, int]], reps: int, root: Path) -> None:
    t_start = time.perf_counter()
    data, block = make_data(kind, case, nt)
    raw = data.nbytes
    names = [f"{v}" if c == 5 else f"{v} c{c}" for v, c in variants]
    codecs = {n: variant_codec(v, c) for n, (v, c) in zip(names, variants)}
    ch = default_chunks(block, data.itemsize)
    row = ch[-1] * data.itemsize
    # write the files (untimed), one folder per variant
    paths = {}
    for n, codec in codecs.items():
        p = root / f"{kind}-{case}-{n.replace(' ', '_')}"
        sd.save(data, p, shape_block=block, compression=codec, fsync=False).close()
        paths[n] = p
    bs_seen = {}
    for n, p in paths.items():
        import h5py

        with h5py.File(sorted(p.glob("*.h5"))[0], "r") as f:
            d = f[peers.find_key(f)]
            frame = d.id.read_direct_chunk((0,) * d.ndim)[1]
            head = _blosc.HEADER.unpack_from(frame)
            bs_seen[n] = f"{head[5] // 1024}K{'' if head[2] & 0x10 else 's'}"  # s: split byte streams
    disk = {n: sum(f.stat().st_size for f in p.glob("*.h5")) for n, p in paths.items()}
    comp: dict[str, list[float]] = {n: [] for n in names}
    cbytes: dict[str, int] = {}
    reads: dict[tuple[str, str, str], list[float]] = {}
    touch = [(b * block[0],) + (0,) * (data.ndim - 1) for b in range(data.shape[0] // block[0])]
    rng = np.random.default_rng(7)
    for r in range(reps + 1):  # round 0: warm-up, checks values, untimed
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            dt, nbytes = compress_all(data, block, codecs[n])
            cbytes[n] = nbytes
            if r:
                comp[n].append(dt)
        pats = patterns(case, data.shape, rng)
        for i, n in enumerate(order):
            systems: list[tuple[str, Callable[[], Any]]] = [
                ("sd", lambda p=paths[n]: SD(p)), ("h5", lambda p=paths[n]: peers.H5Blocks(p))]
            if (r + i) % 2:
                systems.reverse()
            for sysname, opener in systems:
                res = time_patterns(opener, touch, pats, data if r == 0 else None)
                if r:
                    for pat, s in res.items():
                        reads.setdefault((n, sysname, pat), []).append(s)
    pat_names = list(patterns(case, data.shape, np.random.default_rng(0)))
    print(f"\n{kind}, {case}: shape {data.shape} uint16 ({raw / 1e6:.0f} MB), blocks {block}, chunks {ch} "
          f"({int(np.prod(ch)) * 2 // 1024} KiB, rows {row} B); median of {reps}; load {load()}")
    head = f"{'variant':<10} {'blosc bs':>8} {'comp MB/s':>10} {'ratio':>6} {'disk MB':>8}"
    print(head + "".join(f" | {p:>19}" for p in pat_names))
    print(" " * len(head) + "".join(f" | {'sd ms':>7} {'h5 ms':>6} {'sd/h5':>4}" for _ in pat_names))
    auto_name = next((n for n in names if n.startswith("auto")), None)
    for n in names:
        cm, cnoisy = med(comp[n])
        line = (f"{n:<10} {bs_seen[n]:>8} {raw / cm / 1e6:>9.0f}{'~' if cnoisy else ' '} "
                f"{raw / cbytes[n]:>6.3f} {disk[n] / 1e6:>8.1f}")
        for p in pat_names:
            s, sn = med(reads[(n, "sd", p)])
            h, hn = med(reads[(n, "h5", p)])
            line += f" | {fmt(s):>6}{'~' if sn else ' '} {fmt(h):>5}{'~' if hn else ' '} {s / h:>4.2f}"
        print(line)
    if auto_name:
        print(f"  sd / h5py on the {auto_name} files (h5py's own block size):"
              + "".join(f"  {p} " + " ".join(f"{n}={med(reads[(n, 'sd', p)])[0] / med(reads[(auto_name, 'h5', p)])[0]:.2f}"
                                               for n in names) + ";" for p in pat_names))
    print(f"  ({time.perf_counter() - t_start:.0f} s)", flush=True)
    for p in paths.values():
        shutil.rmtree(p)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer time points and repetitions")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--data", default="struct,noise")
    ap.add_argument("--case", default="256,512,2048")
    ap.add_argument("--variants", default="8K,16K,32K,64K,auto,rule")
    ap.add_argument("--clevels", default="5")
    ap.add_argument("--nt", default=None, help="time points for 256,512,2048 (default 40,8,16; quick 20,4,8)")
    a = ap.parse_args(argv)
    reps = a.reps or (3 if a.quick else 5)
    nts = dict(zip(("256", "512", "2048"), (int(v) for v in (a.nt or ("20,4,8" if a.quick else "40,8,16")).split(","))))
    variants = [(v, int(c)) for c, v in itertools.product(a.clevels.split(","), a.variants.split(","))]
    print(f"blosc lz4 byte shuffle, block sizes {a.variants}, clevels {a.clevels}; "
          f"{POOL_THREADS} pool threads; load {load()}", flush=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sd-blocksize-", dir=os.environ.get("TMPDIR")) as tmp:
        for kind in a.data.split(","):
            for case in a.case.split(","):
                run_one(kind, case, nts[case], variants, reps, Path(tmp))
    print(f"\ncomp MB/s: raw MB/s compressing every chunk over the pool; ratio: raw / compressed chunk bytes; "
          f"disk MB: block files; ms per call; sd/h5 = split_dataset / raw h5py (open handles) on the same "
          f"files, medians; ~: slowest rep > {NOISY}x fastest. load {load()}; wall {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
