"""Adversarial: damaged blosc chunks (HDF5 filter 32001 frames) in block files.

Every damaged case runs in a child process (``tests/adversarial/runner.py``): every read
path (whole frame, volume, traces through time, corners, stepped, index arrays, mask,
whole array), ``verify()`` and ``split-dataset verify``. Required: the exact original
values or a ``SplitDatasetError`` naming the block file; never a crash, a hang, another
exception, or (for header/offset-table damage and truncation) wrong values; verify flags
the damaged block. Random flips inside the compressed payload may decode to wrong pixels
(blosc frames carry no checksum): counted and printed, not failed.

Default run: a deterministic subset (~30 s on 2 cores). ``pytest -m full``: thousands.
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest
from adversarial import chunkfuzz as cf

import split_dataset
from split_dataset.errors import CorruptBlockError, SplitDatasetError


def _plan(ds: cf.Dataset, full: bool, flips: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    comp = [c for c in ds.chunks if not c.memcpyed]
    memc = [c for c in ds.chunks if c.memcpyed]
    target = comp[-1]  # a compressed chunk of the second block file (t=3, z=1)
    cases = cf.header_cases(ds, target, full) + cf.offset_cases(ds, target, full) + cf.index_cases(ds, target, full)
    cases += cf.header_cases(ds, memc[0], full)
    cases += cf.truncation_cases(ds, target) if full else cf.truncation_cases(ds, target)[::3]
    for c in (comp if full else [target]) + memc:
        cases += cf.bitflip_cases(ds, c, flips, rng)
    return cases


def _run(tmp_path: Path, configs: list[tuple[str, str]], full: bool, flips: int) -> None:
    datasets = [cf.build(tmp_path, codec, kind) for codec, kind in configs]
    plans = [(ds, _plan(ds, full, flips, seed=i)) for i, ds in enumerate(datasets)]
    with ThreadPoolExecutor(2) as ex:
        results = list(ex.map(lambda p: cf.run_cases(p[0], p[1], tmp_path / "work" / p[0].name), plans))
    failures: list[str] = []
    cases = 0
    counted: dict[str, list[int]] = {}
    for outcomes in results:
        f, stats = cf.judge(outcomes)
        failures += f
        cases += stats["cases"]
        for cls, (n, wrong) in stats["counted"].items():
            counted.setdefault(cls, [0, 0])
            counted[cls][0] += n
            counted[cls][1] += wrong
    print(f"\nchunk fuzzer: {cases} cases; silently wrong values where only a checksum could tell: " + ", ".join(
        f"{cls} {w}/{n} ({w / max(n, 1):.1%})" for cls, (n, w) in sorted(counted.items())))
    cf.dump(failures)
    assert not failures, cf.summarize(failures)


QUICK = [("lz4-8k", "noise"), ("blosclz9", "smooth")]
FULL = [(codec, kind) for codec in cf.CODECS for kind in ("noise", "smooth")]


def test_damaged_chunks_quick(tmp_path):
    """Header fields at extreme values, offset-table entries, truncations, bit flips: a fixed subset."""
    _run(tmp_path, QUICK, full=False, flips=12)


@pytest.mark.full
def test_damaged_chunks_full(tmp_path):
    _run(tmp_path, FULL, full=True, flips=150)


def test_codec_variants_header_damage_quick(tmp_path):
    """The other codecs (automatic blocks, zstd): a handful of header fields each."""
    datasets = [cf.build(tmp_path, codec, "noise") for codec in ("lz4-auto", "zstd")]
    failures: list[str] = []
    for ds in datasets:
        chunk = next(c for c in ds.chunks if not c.memcpyed)
        cases = [c for c in cf.header_cases(ds, chunk, full=False)
                 if c["cls"] in ("header:typesize", "header:flags", "header:blocksize")]
        cases += cf.offset_cases(ds, chunk, full=False)
        f, _ = cf.judge(cf.run_cases(ds, cases, tmp_path / "work" / ds.name))
        failures += f
    cf.dump(failures)
    assert not failures, cf.summarize(failures)


# ----------------------------------------------------------------------------- one-case reproductions
# (cheap, in-process only where the damage is known not to crash; each names one requirement)


def _damaged(tmp_path: Path, patch) -> tuple[cf.Dataset, cf.Chunk]:
    ds = cf.build(tmp_path, "lz4-8k", "noise")
    chunk = [c for c in ds.chunks if not c.memcpyed][-1]
    with open(chunk.file, "r+b") as f:
        for off, b in patch(chunk):
            f.seek(chunk.addr + off)
            f.write(b)
    return ds, chunk


def _one(ds: cf.Dataset, chunk: cf.Chunk, tmp_path: Path, strict: bool = True) -> list[str]:
    case = cf._case(ds, chunk, "one", [], strict=strict, must_flag=strict, cls="one")
    return cf.judge(cf.run_cases(ds, [case], tmp_path / "work1"))[0]


@pytest.mark.parametrize("typesize", [1, 3, 4, 66, 130])
def test_typesize_other_than_the_dtype_is_refused(tmp_path, typesize):
    ds, chunk = _damaged(tmp_path, lambda c: [(3, bytes([typesize]))])
    assert not _one(ds, chunk, tmp_path)


@pytest.mark.parametrize("flip", [0x01, 0x02, 0x04, 0x10, 0x80])
def test_flags_other_than_the_filter_says_are_refused(tmp_path, flip):
    ds, chunk = _damaged(tmp_path, lambda c: [(2, bytes([c.header[2] ^ flip]))])
    assert not _one(ds, chunk, tmp_path)


def test_memcpyed_flag_set_on_compressed_chunk_is_refused(tmp_path):
    ds, chunk = _damaged(tmp_path, lambda c: [(2, bytes([c.header[2] | 0x02]))])
    assert not _one(ds, chunk, tmp_path)


@pytest.mark.parametrize("blocksize", [12288, 10240, 40960, 8193, 8191, 1, 2**31 - 1, 2**32 - 1])
def test_blocksize_damage_is_refused(tmp_path, blocksize):
    ds, chunk = _damaged(tmp_path, lambda c: [(8, blocksize.to_bytes(4, "little"))])
    assert not _one(ds, chunk, tmp_path)


# ----------------------------------------------------------------------------- unwritten chunks


def _block_with_unwritten_chunks(tmp_path: Path, written: list[int], fillvalue: int) -> tuple[Path, np.ndarray]:
    """A dataset whose block 0001.h5 is rewritten with h5py: chunk (t, z) planes; only `written` stored."""
    root = tmp_path / "ds"
    x = cf.make_array("noise")
    split_dataset.save(x, root, cf.SHAPE_BLOCK, fsync=False, checksums=False)
    block = root / "0001.h5"
    block.unlink()
    local = x[2:4]
    with h5py.File(block, "w") as f:
        d = f.create_dataset("stack_4D", shape=local.shape, dtype=local.dtype, chunks=(1, 1) + local.shape[2:],
                             fillvalue=fillvalue, **hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=1))
        for k in written:
            t, z = divmod(k, 2)
            d[t, z] = local[t, z]
    with h5py.File(block, "r") as f:
        expected = x.copy()
        expected[2:4] = f["stack_4D"][:]
    return root, expected


@pytest.mark.parametrize("written", [[], [0], [1, 2], [0, 1, 3]])
@pytest.mark.parametrize("fillvalue", [0, 7])
def test_unwritten_chunks_read_as_the_fill_value(tmp_path, written, fillvalue):
    root, expected = _block_with_unwritten_chunks(tmp_path, written, fillvalue)
    code = f"""
import numpy as np, split_dataset, warnings
warnings.simplefilter("ignore")
want = np.load({str(tmp_path / 'want.npy')!r})
bad = []
for expr in ["ds[2, 0]", "ds[3, 1]", "ds[3]", "ds[:, 1, 0:8, 0:8]", "ds[2, 0, -8:, -8:]", "ds[:, 0, 100:108, :]",
             "ds[::2]", "ds[:, :, ::2, ::2]", "ds[[0, 2, 3]]", "ds[:]", "ds[2:4, :, 10:20]"]:
    ds = split_dataset.open({str(root)!r})
    try:
        got = eval(expr)
        if not np.array_equal(got, eval(expr.replace("ds[", "want["))):
            bad.append(expr + ": wrong values")
    except BaseException as e:
        bad.append(expr + ": " + type(e).__name__ + ": " + str(e)[:200])
    ds.close()
from split_dataset.verify import verify
r = verify({str(root)!r})  # may report the chunks never written (this package always writes them all)
if not r.ok and r.damaged_files != ["0001.h5"]:
    bad.append("verify: " + str(r.problems)[:300])
print("\\n".join(bad))
"""
    np.save(tmp_path / "want.npy", expected)
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert proc.returncode == 0, f"child died: {proc.returncode} {proc.stderr.decode()[-500:]}"
    out = proc.stdout.decode().strip()
    assert not out, out


def test_checksums_catch_any_payload_flip(tmp_path):
    """With SHA256SUMS (save's default) verify reports a flipped payload bit even when it decodes."""
    root = tmp_path / "ds"
    x = cf.make_array("noise")
    split_dataset.save(x, root, cf.SHAPE_BLOCK, fsync=False)
    with h5py.File(root / "0001.h5", "r") as f:
        ci = f["stack_4D"].id.get_chunk_info(3)
    with open(root / "0001.h5", "r+b") as f:
        f.seek(ci.byte_offset + ci.size - 100)
        b = f.read(1)
        f.seek(ci.byte_offset + ci.size - 100)
        f.write(bytes([b[0] ^ 0x10]))
    from split_dataset.verify import verify

    assert "0001.h5" in verify(root).damaged_files


def test_error_type_for_a_short_chunk(tmp_path):
    """A chunk cut short by truncation raises CorruptBlockError (an OSError) naming the file."""
    ds = cf.build(tmp_path, "lz4-8k", "noise")
    chunk = [c for c in ds.chunks if not c.memcpyed][-1]
    with open(chunk.file, "r+b") as f:
        f.truncate(chunk.addr + chunk.size - 1)
    with pytest.raises(CorruptBlockError, match="0001.h5") as e:
        split_dataset.open(ds.root)[chunk.t, chunk.z]
    assert isinstance(e.value, (SplitDatasetError, OSError))
