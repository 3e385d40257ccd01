"""Adversarial: hostile dataset folders built in tmp_path.

Every probe of a hostile folder runs in a child process with a timeout and an
address-space limit (``adversarial/probe.py``): a hang, a crash or a huge allocation
fails the test instead of pytest. Required: a clear ``split_dataset.errors`` exception
(UnsafeDatasetError, CorruptBlockError, MissingBlockError, MetadataError, ...) naming
the file; never a read outside the folder, a write through a symlink, a hang.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest
from adversarial.hostile import cli, cli_ok, probe

import split_dataset
from split_dataset import SplitDatasetWriter
from split_dataset.errors import NotASplitDatasetError, UnsafeDatasetError, WriterLockedError

X = np.arange(6 * 3 * 4 * 5, dtype=np.uint16).reshape(6, 3, 4, 5)
OPS = ("open", "read:ds[:]", "read:ds[3]", "read:ds[:, 0, 0:2, 0:2]", "verify")


def make(path: Path, x: np.ndarray = X, block=(3,)) -> Path:
    split_dataset.save(x, path, block + x.shape[len(block):], fsync=False, checksums=False)
    return path


def edit_meta(root: Path, **changes) -> None:
    meta = root / "stack_metadata.json"
    doc = json.loads(meta.read_text())
    doc.update(changes)
    meta.write_text(json.dumps(doc))


def outside_file(tmp_path: Path, value: int = 7) -> Path:
    """A file outside the dataset folder holding what a link could smuggle in (all `value`)."""
    target = tmp_path / "outside" / "secret.h5"
    target.parent.mkdir(exist_ok=True)
    with h5py.File(target, "w") as f:
        for name in ("stack_4D", "grp/stack_4D", "grp/stack_3D", "stack"):
            f[name] = np.full((3, 3, 4, 5), value, np.uint16)
    return target


def assert_refused(results: dict[str, str], block: str, kinds: tuple[str, ...]) -> None:
    """Every read op raised one of the package errors `kinds` naming `block`; verify reported `block`."""
    bad = []
    for op, outcome in results.items():
        if op == "verify":
            if not (outcome.startswith("verify-problems:") and block in outcome):
                if not (outcome.startswith("pkg:") and block in outcome):
                    bad.append(f"{op} -> {outcome}")
            continue
        if op == "open" and outcome.startswith("ok"):
            continue  # opening may defer the check to the first read of the block
        if not (outcome.startswith("pkg:") and outcome.split(":")[1] in kinds and block in outcome):
            bad.append(f"{op} -> {outcome}")
    assert not bad, "\n".join(bad)


# ----------------------------------------------------------------------------- links in block files


def _replace_block(block: Path, build) -> None:
    block.unlink()
    with h5py.File(block, "w") as f:
        build(f)


def _ext_group(target: Path):
    def build(f):
        f["grp"] = h5py.ExternalLink(str(target), "grp")
    return build


def _soft_to_ext_group(target: Path):
    def build(f):
        f["ext"] = h5py.ExternalLink(str(target), "grp")
        f["grp"] = h5py.SoftLink("/ext")
    return build


def _soft_stack_to_ext(target: Path):
    def build(f):
        f["hidden"] = h5py.ExternalLink(str(target), "stack_4D")
        f["stack_4D"] = h5py.SoftLink("/hidden")
    return build


def _ext_stack(target: Path):
    def build(f):
        f["stack_4D"] = h5py.ExternalLink(str(target), "stack_4D")
    return build


def _vds(target: Path):
    def build(f):
        layout = h5py.VirtualLayout((3, 3, 4, 5), np.uint16)
        layout[:] = h5py.VirtualSource(str(target), "stack_4D", shape=(3, 3, 4, 5), dtype=np.uint16)
        f.create_virtual_dataset("stack_4D", layout, fillvalue=0)
    return build


def _external_raw(target: Path):
    raw = target.parent / "raw.bin"
    raw.write_bytes(np.full((3, 3, 4, 5), 7, np.uint16).tobytes())

    def build(f):
        f.create_dataset("stack_4D", (3, 3, 4, 5), np.uint16, external=[(str(raw), 0, h5py.h5f.UNLIMITED)])
    return build


def _nested_ext(target: Path):
    def build(f):
        g = f.create_group("grp")
        g["sub"] = h5py.ExternalLink(str(target), "grp")
    return build


LINKS = {
    "data_key-through-nested-external-link": (_nested_ext, "grp/sub/stack_4D"),
    "data_key-through-external-link-group": (_ext_group, "grp/stack_4D"),
    "data_key-through-soft-link-to-external": (_soft_to_ext_group, "grp/stack_4D"),
    "data_key-3D-through-external-link-group": (_ext_group, "grp/stack_3D"),
    "stack-soft-link-to-external-link": (_soft_stack_to_ext, None),
    "stack-external-link-with-data_key": (_ext_stack, "stack_4D"),
    "stack-virtual-dataset-outside": (_vds, None),
    "stack-external-raw-storage": (_external_raw, None),
}


@pytest.mark.parametrize("name", list(LINKS))
def test_links_out_of_the_folder_are_refused(tmp_path, name):
    build, key = LINKS[name]
    target = outside_file(tmp_path)
    root = make(tmp_path / "ds")
    if key is not None:
        edit_meta(root, data_key=key)
        # the other blocks hold their array under the key too, so only the planted link is hostile
        with h5py.File(root / "0000.h5", "a") as f:
            if "/" in key:
                f.move("stack_4D", "tmp_stack")
                f.require_group(key.rsplit("/", 1)[0])
                f.move("tmp_stack", key)
    _replace_block(root / "0001.h5", build(target))
    results = probe(root, *OPS, "cli:verify")
    cli_verify = results.pop("cli:verify")
    assert_refused(results, "0001.h5", ("UnsafeDatasetError",))
    assert cli_ok(cli_verify, lines=(0, 99)), cli_verify


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs a FIFO")
def test_data_key_link_target_is_never_opened(tmp_path):
    """The external file is a FIFO: opening it would block, so the child would time out."""
    fifo = tmp_path / "outside.h5"
    os.mkfifo(fifo)
    root = make(tmp_path / "ds")
    edit_meta(root, data_key="grp/stack_4D")
    with h5py.File(root / "0000.h5", "a") as f:
        f.create_group("grp")
        f.move("stack_4D", "grp/stack_4D")
    _replace_block(root / "0001.h5", lambda f: f.__setitem__("grp", h5py.ExternalLink(str(fifo), "grp")))
    results = probe(root, "read:ds[3:6]", "verify", timeout=30)
    assert_refused(results, "0001.h5", ("UnsafeDatasetError",))


# ----------------------------------------------------------------------------- special files as blocks


def _fifo(p: Path, tmp: Path) -> None:
    os.mkfifo(p)


def _dev_zero(p: Path, tmp: Path) -> None:
    os.symlink("/dev/zero", p)


def _dev_null(p: Path, tmp: Path) -> None:
    os.symlink("/dev/null", p)


def _dir_link(p: Path, tmp: Path) -> None:
    (tmp / "somedir").mkdir(exist_ok=True)
    os.symlink(tmp / "somedir", p)


def _dangling(p: Path, tmp: Path) -> None:
    os.symlink(tmp / "nowhere.h5", p)


def _fifo_link(p: Path, tmp: Path) -> None:
    os.mkfifo(tmp / "fifo.h5")
    os.symlink(tmp / "fifo.h5", p)


def _char_device(p: Path, tmp: Path) -> None:
    try:
        os.mknod(p, stat.S_IFCHR | 0o644, os.makedev(1, 5))  # /dev/zero's numbers
    except (PermissionError, OSError) as e:
        pytest.skip(f"cannot make a device node here: {e}")


def _directory(p: Path, tmp: Path) -> None:
    p.mkdir()


def _loop(p: Path, tmp: Path) -> None:
    os.symlink(tmp / "loop_b", tmp / "loop_a")
    os.symlink(tmp / "loop_a", tmp / "loop_b")
    os.symlink(tmp / "loop_a", p)


def _dev_urandom(p: Path, tmp: Path) -> None:
    os.symlink("/dev/urandom", p)


SPECIAL = {"fifo": _fifo, "symlink-dev-zero": _dev_zero, "symlink-dev-null": _dev_null,
           "symlink-to-directory": _dir_link, "dangling-symlink": _dangling, "symlink-to-fifo": _fifo_link,
           "char-device": _char_device, "directory": _directory, "symlink-loop": _loop,
           "symlink-dev-urandom": _dev_urandom}


@pytest.mark.parametrize("which", ["0001.h5", "0000.h5"])
@pytest.mark.parametrize("kind", list(SPECIAL))
def test_special_files_as_blocks_are_refused_without_hanging(tmp_path, kind, which):
    root = make(tmp_path / "ds")
    (root / which).unlink()
    SPECIAL[kind](root / which, tmp_path)
    inside = "read:ds[0]" if which == "0000.h5" else "read:ds[4]"  # a read of the planted block alone
    results = probe(root, "open", "read:ds[:]", inside, "read:ds[:, 0, 0:2, 0:2]", "verify", "cli:verify",
                    timeout=10)
    cli_verify = results.pop("cli:verify")
    kinds = ("CorruptBlockError", "UnsafeDatasetError", "MissingBlockError")
    bad = []
    for op, o in results.items():
        if o.startswith(("DIED", "other")):
            bad.append(f"{op} -> {o}")
        elif op == "verify":
            if not ((o.startswith("verify-problems") or o.startswith("pkg:")) and which in o):
                bad.append(f"{op} -> {o}")
        elif op == "open":
            if not (o.startswith("ok") or (o.startswith("pkg:") and which in o)):
                bad.append(f"{op} -> {o}")
        elif not (o.startswith("pkg:") and o.split(":")[1] in kinds and which in o):
            bad.append(f"{op} -> {o}")
    if not cli_ok(cli_verify, lines=(0, 99)):
        bad.append(f"CLI verify -> {cli_verify}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("inside", [True, False], ids=["target-inside", "target-outside"])
def test_symlink_to_a_regular_block_file(tmp_path, inside):
    """Allowed (or refused with UnsafeDatasetError), but never a crash; values exact when allowed."""
    root = make(tmp_path / "ds")
    real = (root if inside else tmp_path) / ("real0001.bin" if inside else "moved0001.h5")
    os.replace(root / "0001.h5", real)
    os.symlink(real, root / "0001.h5")
    results = probe(root, "read:ds[:]", "verify", timeout=30)
    want = f"values:{X.shape}:{int(X.astype(np.int64).sum())}"
    assert results["read:ds[:]"] == want or results["read:ds[:]"].startswith("pkg:UnsafeDatasetError"), results
    assert results["verify"] == "verify-ok" or "0001.h5" in results["verify"], results


# ----------------------------------------------------------------------------- huge declared shapes


def _huge_block(root: Path, shape=(2**40, 8, 8)) -> None:
    for p in root.glob("*.h5"):
        p.unlink()
    with h5py.File(root / "0000.h5", "w") as f:
        f.create_dataset("stack_3D", shape=shape, dtype=np.uint16, chunks=(1, 8, 8),
                         **hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=1))


@pytest.mark.parametrize("claimed", ["huge", "small"])
def test_block_declaring_a_huge_shape(tmp_path, claimed):
    """A ~1.4 KB block file declaring (2**40, 8, 8), no chunk written: no hang, no allocation of it."""
    root = make(tmp_path / "ds", np.zeros((10, 8, 8), np.uint16), block=(10,))
    _huge_block(root)
    assert (root / "0000.h5").stat().st_size < 4096
    if claimed == "huge":
        edit_meta(root, shape_full=[2**40, 8, 8], shape_block=[2**40, 8, 8])
    results = probe(root, "open", "read:ds[0]", "read:ds[-1, 0, 0:2]", "read:ds[:5, 0, 0]", "verify", "cli:verify",
                    timeout=60, memory=2 << 30)
    cli_verify = results.pop("cli:verify")
    bad = [f"{op} -> {o}" for op, o in results.items() if o.startswith(("DIED", "other"))]
    if claimed == "small":  # the block is not the (10, 8, 8) the metadata describes
        bad += [f"{op} -> {o}" for op, o in results.items()
                if op.startswith("read") and not o.startswith(("pkg:BlockMismatchError", "pkg:CorruptBlockError"))]
        if not results["verify"].startswith("verify-problems"):
            bad.append(f"verify -> {results['verify']}")
    else:
        for op in ("read:ds[0]", "read:ds[-1, 0, 0:2]", "read:ds[:5, 0, 0]"):
            o = results[op]
            if not (o.startswith("values:") and o.endswith(":0")) and not o.startswith("pkg:"):
                bad.append(f"{op} -> {o}")
    if not cli_ok(cli_verify, lines=(0, 99), codes=(0, 1, 2)):
        bad.append(f"CLI verify -> {cli_verify}")
    assert not bad, "\n".join(bad)


NUM = "9" * 5000
HOSTILE_META = {
    "2**62-frames": '{"shape_full": [4611686018427387904, 3, 4, 5], "shape_block": [1, 3, 4, 5]}',
    "2**62-frames-one-block": '{"shape_full": [4611686018427387904, 3, 4, 5], "shape_block": [4611686018427387904, 3, 4, 5]}',
    "product-overflows-int64": '{"shape_full": [1099511627776, 1099511627776, 4, 5], "shape_block": [3, 1099511627776, 4, 5]}',
    "grid-overflows-int64": '{"shape_full": [9223372036854775807, 9223372036854775807, 4, 5], "shape_block": [1, 1, 4, 5]}',
    "zero-block": '{"shape_full": [6, 3, 4, 5], "shape_block": [0, 3, 4, 5]}',
    "negative-block": '{"shape_full": [6, 3, 4, 5], "shape_block": [-3, 3, 4, 5]}',
    "negative-shape": '{"shape_full": [-6, 3, 4, 5], "shape_block": [3, 3, 4, 5]}',
    "5000-digit-int": '{"shape_full": [' + NUM + ', 3, 4, 5], "shape_block": [3, 3, 4, 5]}',
    "5000-digit-block": '{"shape_full": [6, 3, 4, 5], "shape_block": [' + NUM + ', 3, 4, 5]}',
    "deep-nesting": '{"shape_full": [6, 3, 4, 5], "shape_block": [3, 3, 4, 5], "attrs": ' + "[" * 100000 + "]" * 100000 + "}",
    "deep-nesting-toplevel": "[" * 100000 + "]" * 100000,
    "nan-resolution": '{"shape_full": [6, 3, 4, 5], "shape_block": [3, 3, 4, 5], "resolution": [NaN, 1, 1, 1]}',
    "inf-shape": '{"shape_full": [Infinity, 3, 4, 5], "shape_block": [3, 3, 4, 5]}',
    "float-1e300-shape": '{"shape_full": [1e300, 3, 4, 5], "shape_block": [3, 3, 4, 5]}',
    "list": "[6, 3, 4, 5]",
    "string": '"stack"',
    "null": "null",
    "number": "5",
    "invalid-utf8": b'\xff\xfe{"shape_full": [6, 3, 4, 5], "shape_block": [3, 3, 4, 5]}',
    "shape-is-string": '{"shape_full": "6,3,4,5", "shape_block": [3, 3, 4, 5]}',
    "shape-of-dicts": '{"shape_full": [{}, 3, 4, 5], "shape_block": [3, 3, 4, 5]}',
    "bool-shape": '{"shape_full": [true, 3, 4, 5], "shape_block": [true, 3, 4, 5]}',
    "empty-file": "",
}


@pytest.mark.parametrize("name", list(HOSTILE_META))
def test_hostile_metadata(tmp_path, name):
    root = make(tmp_path / "ds")
    content = HOSTILE_META[name]
    (root / "stack_metadata.json").write_bytes(content if isinstance(content, bytes) else content.encode())
    results = probe(root, "open", "read:ds[0]", "verify", "info", "cli:info", "cli:verify", timeout=60,
                    memory=2 << 30)
    bad = []
    for cmd in ("info", "verify"):  # one line on stderr, no traceback, exit 1 or 2
        o = results.pop(f"cli:{cmd}")
        if not cli_ok(o, lines=(1, 1) if cmd == "info" else (0, 1)):
            bad.append(f"CLI {cmd} -> {o}")
    for op, o in results.items():
        if op == "verify":
            ok = o.startswith(("pkg:MetadataError", "pkg:NotASplitDatasetError")) or (
                o.startswith("verify-problems") and "stack_metadata.json" in o)
        else:
            ok = o.startswith(("pkg:MetadataError", "pkg:NotASplitDatasetError")) and "stack_metadata.json" in o
        if not ok:
            bad.append(f"{op} -> {o}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("name", ["deep-nesting-toplevel", "5000-digit-int", "2**62-frames", "invalid-utf8"])
def test_hostile_metadata_cli_subprocess(tmp_path, name):
    """The real ``split-dataset`` process: one line on stderr, no traceback, exit 1 or 2."""
    root = make(tmp_path / "ds")
    content = HOSTILE_META[name]
    (root / "stack_metadata.json").write_bytes(content if isinstance(content, bytes) else content.encode())
    for cmd in ("info", "verify"):
        code, out, err = cli(cmd, str(root), timeout=60)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert code in (1, 2) and "Traceback" not in err and len(lines) <= 1 and (lines or out), (cmd, code, err)
        if cmd == "info":
            assert len(lines) == 1, err


@pytest.mark.parametrize("kind", ["fifo", "symlink-dev-zero", "symlink-dev-urandom", "symlink-to-fifo", "directory",
                                  "symlink-loop", "dangling-symlink"])
def test_special_files_as_metadata(tmp_path, kind):
    """stack_metadata.json itself a FIFO, a device, a directory...: an error, never a hang."""
    root = make(tmp_path / "ds")
    (root / "stack_metadata.json").unlink()
    SPECIAL[kind](root / "stack_metadata.json", tmp_path)
    results = probe(root, "open", "verify", "info", "cli:info", "cli:verify", timeout=10)
    bad = [f"{op} -> {o}" for op, o in results.items()
           if not (o.startswith("pkg:") or (op == "verify" and o.startswith("verify-problems"))
                   or (op.startswith("cli:") and cli_ok(o, lines=(1, 1) if op == "cli:info" else (0, 1))))]
    assert not bad, "\n".join(bad)


def test_huge_metadata_file(tmp_path):
    """A 40 MB stack_metadata.json (valid JSON padded with spaces): refused or read, in bounded time and memory."""
    root = make(tmp_path / "ds")
    doc = (root / "stack_metadata.json").read_text()
    (root / "stack_metadata.json").write_text(" " * (40 << 20) + doc)
    results = probe(root, "open", "verify", timeout=30, memory=1 << 30)
    assert not any(o.startswith(("DIED", "other")) for o in results.values()), results


# ----------------------------------------------------------------------------- writes through symlinks


def _sums_link(tmp_path: Path, root: Path) -> tuple[Path, bytes]:
    target = tmp_path / "outside_sums.txt"
    sums = root / "SHA256SUMS"
    content = sums.read_bytes() if sums.exists() else b"precious\n"
    target.write_bytes(content)
    if sums.exists() or sums.is_symlink():
        sums.unlink()
    os.symlink(target, sums)
    return target, content


def test_resuming_writer_does_not_write_through_a_symlinked_checksum_file(tmp_path):
    root = tmp_path / "acq"
    w = SplitDatasetWriter(root, (4, 5), "uint16", 3, fsync=False)
    for t in range(4):
        w.append(np.full((4, 5), t, np.uint16))
    w.close()
    target, content = _sums_link(tmp_path, root)
    stat_before = target.stat()
    try:
        w = SplitDatasetWriter(root, (4, 5), "uint16", 3, mode="a", fsync=False)
        for t in range(4, 11):
            w.append(np.full((4, 5), t, np.uint16))
        w.close()
    except Exception as e:  # refusing to resume is acceptable; writing outside is not
        assert isinstance(e, (UnsafeDatasetError, NotASplitDatasetError, OSError)), repr(e)
    assert target.read_bytes() == content
    assert target.stat().st_mtime_ns == stat_before.st_mtime_ns


def test_save_overwrite_does_not_write_through_a_symlinked_checksum_file(tmp_path):
    root = split_dataset.save(X, tmp_path / "ds", (3, 3, 4, 5), fsync=False).root
    target, content = _sums_link(tmp_path, root)
    split_dataset.save(X + 1, root, (2, 3, 4, 5), overwrite=True, fsync=False)
    assert target.read_bytes() == content
    assert np.array_equal(split_dataset.open(root)[:], X + 1)


def test_verify_does_not_follow_a_checksum_symlink_to_a_fifo(tmp_path):
    root = split_dataset.save(X, tmp_path / "ds", (3, 3, 4, 5), fsync=False).root
    (root / "SHA256SUMS").unlink()
    os.mkfifo(tmp_path / "fifo")
    os.symlink(tmp_path / "fifo", root / "SHA256SUMS")
    results = probe(root, "verify", "read:ds[:]", timeout=30)
    assert not any(o.startswith(("DIED", "other")) for o in results.values()), results


# ----------------------------------------------------------------------------- export-vds onto the dataset


@pytest.mark.parametrize("onto", ["0000.h5", "0001.h5", "stack_metadata.json"])
def test_export_vds_onto_the_datasets_own_files_is_refused(tmp_path, onto):
    root = make(tmp_path / "ds")
    before = {p.name: p.read_bytes() for p in root.iterdir()}
    code, out, err = cli("export-vds", str(root), str(root / onto), "--overwrite")
    assert code != 0 and "Traceback" not in err, (code, out, err)
    after = {p.name: p.read_bytes() for p in root.iterdir() if not p.name.startswith(".")}
    assert after == before
    assert np.array_equal(split_dataset.open(root)[:], X)


def test_export_vds_onto_the_dataset_through_a_symlink_is_refused(tmp_path):
    root = make(tmp_path / "ds")
    os.symlink(root / "0000.h5", tmp_path / "alias.h5")
    before = (root / "0000.h5").read_bytes()
    _code, _out, _err = cli("export-vds", str(root), str(tmp_path / "alias.h5"), "--overwrite")
    assert (root / "0000.h5").read_bytes() == before
    assert np.array_equal(split_dataset.open(root)[:], X)


# ----------------------------------------------------------------------------- a live writer's folder

_LIVE_WRITER = """
import sys, time, numpy as np
from split_dataset import SplitDatasetWriter
w = SplitDatasetWriter(sys.argv[1], (4, 5), "uint16", 3, fsync=False)
for t in range(5):
    w.append(np.full((4, 5), t, np.uint16))
print("ready", flush=True)
sys.stdin.readline()
for t in range(5, 8):
    w.append(np.full((4, 5), t, np.uint16))
w.close()
print("closed", flush=True)
"""


def _expected_live(n: int) -> np.ndarray:
    return np.repeat(np.arange(n, dtype=np.uint16), 20).reshape(n, 4, 5)


@pytest.mark.parametrize("how", ["save", "convert-cli", "convert-api"])
def test_overwriting_a_folder_held_by_a_writer_in_another_process(tmp_path, how):
    root = tmp_path / "live"
    proc = subprocess.Popen([sys.executable, "-c", _LIVE_WRITER, str(root)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        src = make(tmp_path / "src")
        if how == "save":
            with pytest.raises(WriterLockedError):
                split_dataset.save(X, root, (3, 3, 4, 5), overwrite=True, fsync=False)
        elif how == "convert-api":
            from split_dataset.convert import convert

            with pytest.raises(WriterLockedError):
                convert(str(src), str(root), overwrite=True)
        else:
            code, out, err = cli("convert", str(src), str(root), "--overwrite")
            assert code not in (0, "HANG") and "Traceback" not in err, (code, out, err)
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "closed"
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert np.array_equal(split_dataset.open(root)[:], _expected_live(8))


@pytest.mark.parametrize("how", ["save", "convert-api"])
def test_overwriting_a_folder_held_by_a_writer_in_this_process(tmp_path, how):
    root = tmp_path / "live"
    w = SplitDatasetWriter(root, (4, 5), "uint16", 3, fsync=False)
    for t in range(5):
        w.append(np.full((4, 5), t, np.uint16))
    src = make(tmp_path / "src")
    with pytest.raises(WriterLockedError):
        if how == "save":
            split_dataset.save(X, root, (3, 3, 4, 5), overwrite=True, fsync=False)
        else:
            from split_dataset.convert import convert

            convert(str(src), str(root), overwrite=True)
    for t in range(5, 8):
        w.append(np.full((4, 5), t, np.uint16))
    w.close()
    assert np.array_equal(split_dataset.open(root)[:], _expected_live(8))
