"""Damaged, incomplete, foreign and hostile folders: what opening and reading them does.

Each case builds a healthy dataset with ``split_dataset.save`` (numpy is the oracle),
damages it the way acquisitions, crashes, users or attackers do (USER-NEEDS.md,
failure modes), and checks the package's error class (a subclass of the builtin
callers already catch), that the message names the file and block, and that what
stays readable reads correctly.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import tracemalloc
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import tables

import split_dataset
from split_dataset import SplitDataset
from split_dataset.dataset import MissingBlocksWarning, TruncatedDatasetWarning
from split_dataset.errors import (
    BlockMismatchError,
    CorruptBlockError,
    MetadataError,
    MissingBlockError,
    NotASplitDatasetError,
    UnsafeDatasetError,
)

LEGACY = Path(__file__).parent / "data" / "legacy"
METADATA = "stack_metadata.json"
SHAPE = (23, 3, 4, 5)  # 5 files of 5 frames, the last one holds 3
X = np.arange(np.prod(SHAPE), dtype=np.uint16).reshape(SHAPE)


def make(path: Path, x: np.ndarray = X, block=(5,)) -> Path:
    """A healthy dataset on disk, with no handle left open."""
    split_dataset.save(x, path, block, fsync=False).close()
    return path


def overwrite_block(path: Path, data, key: str = "stack_4D") -> None:
    path.unlink()
    with h5py.File(path, "w") as f:
        f[key] = data


def edit_json(root: Path, **changes) -> None:
    meta = json.loads((root / METADATA).read_text())
    meta.update(changes)
    (root / METADATA).write_text(json.dumps(meta))


def snapshot(root: Path) -> dict:
    """Every entry under root with its mtime, size and (for files) content."""
    out = {".": root.stat().st_mtime_ns}
    for p in sorted(root.rglob("*")):
        st = p.stat()
        out[str(p.relative_to(root))] = (st.st_mtime_ns, st.st_size, p.read_bytes() if p.is_file() else None)
    return out


# ----------------------------------------------------------------------------- missing block in the middle


@pytest.mark.parametrize(
    "shape, block, missing, coords, region, other",
    [
        pytest.param(SHAPE, (5,), 2, (2, 0, 0, 0), np.s_[10:15], np.s_[:10], id="axis0-block-2"),
        pytest.param((9, 20, 11), (4, 8), 4, (1, 1, 0), np.s_[4:8, 8:16], np.s_[:, :8], id="2-axes-centre"),
        pytest.param(SHAPE, (5,), 0, (0, 0, 0, 0), np.s_[0:5], np.s_[5:], id="axis0-first-block"),
    ],
)
def test_missing_block_in_the_middle(tmp_path, shape, block, missing, coords, region, other):
    x = np.random.default_rng(0).integers(1, 1000, shape, dtype=np.uint16)
    root = make(tmp_path / "ds", x, block)
    name = f"{missing:04d}.h5"
    (root / name).unlink()

    with pytest.warns(MissingBlocksWarning, match=name):
        ds = SplitDataset(root)
    assert ds.shape == x.shape  # a hole does not truncate
    assert ds.missing_blocks == [missing]

    coords_re = r"\(" + r",\s*".join(str(c) for c in coords) + r"\)"
    with pytest.raises(MissingBlockError, match=name) as info:
        ds[region]
    assert isinstance(info.value, FileNotFoundError)
    assert info.value.block == coords
    assert info.value.path.name == name
    assert pytest.raises(MissingBlockError, ds.__getitem__, np.s_[:]).match(coords_re)

    np.testing.assert_array_equal(ds[other], x[other])

    with pytest.warns(MissingBlocksWarning):
        filled = SplitDataset(root, fill_value=0)
    full = filled[:]
    expected = x.copy()
    expected[region] = 0
    np.testing.assert_array_equal(full, expected)
    assert (full[region] == 0).all()
    np.testing.assert_array_equal(filled[other], x[other])


# ----------------------------------------------------------------------------- unreadable block files


def _random_bytes(p: Path) -> None:
    p.write_bytes(np.random.default_rng(1).integers(0, 256, p.stat().st_size, dtype=np.uint8).tobytes())


def _cut_in_half(p: Path) -> None:
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def _empty(p: Path) -> None:
    p.write_bytes(b"")


CORRUPTIONS = [
    pytest.param(_random_bytes, True, id="random-bytes"),
    pytest.param(_cut_in_half, True, id="cut-in-half"),
    pytest.param(_empty, True, id="empty-file"),
]


@pytest.mark.parametrize("damage, chained", CORRUPTIONS)
def test_corrupt_block_in_the_middle(tmp_path, damage, chained):
    root = make(tmp_path / "ds")
    damage(root / "0001.h5")
    ds = SplitDataset(root)
    assert ds.shape == SHAPE
    for _ in range(2):  # the failure is not cached into a wrong state
        with pytest.raises(CorruptBlockError, match=r"0001\.h5") as info:
            ds[7]
        assert isinstance(info.value, OSError)
        assert info.value.block == (1, 0, 0, 0)
        assert r"(1, 0, 0, 0)" in str(info.value)
        if chained:
            assert info.value.__cause__ is not None
            assert isinstance(info.value.__cause__, OSError)
    np.testing.assert_array_equal(ds[:5], X[:5])
    np.testing.assert_array_equal(ds[10:], X[10:])


@pytest.mark.parametrize("damage, chained", CORRUPTIONS)
def test_corrupt_last_block(tmp_path, damage, chained):
    """The last file is looked at when opening; the error is the same, at open or at read."""
    root = make(tmp_path / "ds")
    damage(root / "0004.h5")
    with pytest.raises(CorruptBlockError, match=r"0004\.h5") as info:
        SplitDataset(root)[20]
    assert isinstance(info.value, OSError)
    assert "(4, 0, 0, 0)" in str(info.value)
    if chained:
        assert info.value.__cause__ is not None


def test_block_without_stack_array_is_corrupt(tmp_path):
    root = make(tmp_path / "ds")
    overwrite_block(root / "0001.h5", np.zeros((5, 3, 4, 5), np.uint16), key="data")
    ds = SplitDataset(root)
    with pytest.raises(CorruptBlockError, match=r"0001\.h5.*stack"):
        ds[6]
    np.testing.assert_array_equal(ds[:5], X[:5])


# ----------------------------------------------------------------------------- wrong-shaped blocks


WRONG_BLOCKS = [
    pytest.param(1, (5, 3, 4, 4), np.uint16, id="middle-narrower"),
    pytest.param(1, (4, 3, 4, 5), np.uint16, id="middle-fewer-frames"),
    pytest.param(1, (5, 3, 20), np.uint16, id="middle-wrong-ndim"),
    pytest.param(1, (5, 3, 4, 5), np.float32, id="middle-wrong-dtype"),
    pytest.param(4, (3, 3, 20), np.uint16, id="last-wrong-ndim"),
    pytest.param(
        1, (6, 3, 4, 5), np.uint16, id="middle-extra-frame",
    ),
    pytest.param(
        1, (5, 3, 4, 6), np.uint16, id="middle-wider",
    ),
    pytest.param(
        4, (4, 3, 4, 5), np.uint16, id="last-too-long",
    ),
]


@pytest.mark.parametrize("index, shape, dtype", WRONG_BLOCKS)
def test_wrong_shaped_block(tmp_path, index, shape, dtype):
    root = make(tmp_path / "ds")
    name = f"{index:04d}.h5"
    overwrite_block(root / name, np.zeros(shape, dtype))
    with pytest.raises(BlockMismatchError, match=name) as info:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TruncatedDatasetWarning)
            ds = SplitDataset(root)
        ds[:]
    assert isinstance(info.value, ValueError)


# ----------------------------------------------------------------------------- truncated acquisitions


@pytest.mark.parametrize(
    "shape, block, remove, frames",
    [
        pytest.param(SHAPE, (5,), [4], 20, id="last-file"),
        pytest.param(SHAPE, (5,), [3, 4], 15, id="last-two-files"),
        pytest.param((9, 20, 11), (4, 8), [6, 7, 8], 8, id="2-axes-last-layer"),
        pytest.param((9, 20, 11), (4, 8), [8], 8, id="2-axes-part-of-last-layer"),
    ],
)
def test_last_blocks_missing_truncates(tmp_path, shape, block, remove, frames):
    x = np.random.default_rng(2).integers(0, 60000, shape, dtype=np.uint16)
    root = make(tmp_path / "ds", x, block)
    for i in remove:
        (root / f"{i:04d}.h5").unlink()
    with pytest.warns(TruncatedDatasetWarning, match=str(frames)):
        ds = SplitDataset(root)
    assert ds.shape == (frames,) + shape[1:]
    assert len(ds) == frames
    np.testing.assert_array_equal(ds[:], x[:frames])
    np.testing.assert_array_equal(ds[-1], x[frames - 1])
    with pytest.raises(IndexError):
        ds[frames]


@pytest.mark.parametrize(
    "claimed, frames",
    [
        pytest.param(40, 23, id="more-files-planned"),
        pytest.param(25, 23, id="same-files-last-short"),
        pytest.param(1000, 23, id="far-more-planned"),
    ],
)
def test_metadata_claims_more_frames_than_files_hold(tmp_path, claimed, frames):
    """sashimi writes the planned length; the files hold what was acquired."""
    root = make(tmp_path / "ds")
    edit_json(root, shape_full=[claimed, *SHAPE[1:]])
    with pytest.warns(TruncatedDatasetWarning, match=f"{claimed}.*{frames}"):
        ds = SplitDataset(root)
    assert ds.shape == (frames,) + SHAPE[1:]
    np.testing.assert_array_equal(ds[:], X[:frames])
    np.testing.assert_array_equal(ds[::-3, 1], X[:frames][::-3, 1])


def test_acquisition_dialect_with_planned_length(tmp_path):
    src = LEGACY / "acquisition" / "original"
    expected = np.load(LEGACY / "acquisition__original.expected.npy")
    root = tmp_path / "original"
    shutil.copytree(src, root)
    meta = json.loads((root / METADATA).read_text())
    meta["shape_full"][0] = 30  # planned 30 volumes, stopped after 13
    (root / METADATA).write_text(json.dumps(meta))
    with pytest.warns(TruncatedDatasetWarning):
        ds = SplitDataset(root)
    assert ds.shape == expected.shape
    np.testing.assert_array_equal(ds[:], expected)


# ----------------------------------------------------------------------------- stray files


def test_stray_files_are_ignored(tmp_path):
    root = make(tmp_path / "ds")
    shutil.copy(root / "0001.h5", root / "0001 copy.h5")
    (root / "notes.txt").write_text("exposure 10 ms")
    (root / ".0003.h5.abc.tmp").write_bytes(b"half a block")
    (root / "0002.h5.tmp").write_bytes(b"half a block")
    (root / "log.json").write_text("{}")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = SplitDataset(root)
    assert ds.shape == SHAPE and ds.n_blocks == 5
    assert ds.missing_blocks == []
    np.testing.assert_array_equal(ds[:], X)


# ----------------------------------------------------------------------------- not a split dataset


def _empty_folder(p: Path) -> Path:
    p.mkdir()
    return p


def _notes_only(p: Path) -> Path:
    p.mkdir()
    (p / "notes.txt").write_text("nothing here")
    return p


def _copy_only(p: Path) -> Path:
    p.mkdir()
    with h5py.File(p / "0001 copy.h5", "w") as f:
        f["stack"] = np.zeros(3)
    return p


def _lone_h5(p: Path) -> Path:
    p.mkdir()
    with h5py.File(p / "0000.h5", "w") as f:
        f["stack"] = np.zeros(3)
    return p


def _a_file(p: Path) -> Path:
    p.write_text("a file, not a folder")
    return p


def _two_prefixes(p: Path) -> Path:
    p.mkdir()
    for prefix in ("a_", "b_"):
        with h5py.File(p / f"{prefix}0000.h5", "w") as f:
            f["stack"] = np.zeros(3)
    return p


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(_empty_folder, id="empty-folder"),
        pytest.param(_notes_only, id="notes-only"),
        pytest.param(_copy_only, id="only-a-copy-file"),
        pytest.param(_lone_h5, id="h5-without-metadata"),
        pytest.param(_a_file, id="path-is-a-file"),
        pytest.param(_two_prefixes, id="two-prefixes"),
    ],
)
def test_not_a_split_dataset(tmp_path, build):
    p = build(tmp_path / "thing")
    with pytest.raises(NotASplitDatasetError, match="thing") as info:
        SplitDataset(p)
    assert isinstance(info.value, ValueError)


def test_nonexistent_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        SplitDataset(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        split_dataset.open(tmp_path / "nowhere")


# ----------------------------------------------------------------------------- bad metadata

GOOD = {"shape_full": list(SHAPE), "shape_block": [5, 3, 4, 5]}
BAD_METADATA = [
    pytest.param("{not json", "JSON", id="invalid-json"),
    pytest.param(b"\xff\xfe\x00garbage", "JSON", id="binary-garbage"),
    pytest.param("[23, 3, 4, 5]", "object", id="not-an-object"),
    pytest.param("", "JSON", id="empty-file"),
    pytest.param({"foo": 1}, "shape_full", id="no-shape"),
    pytest.param(dict(GOOD, shape_full=[-23, 3, 4, 5]), r"shape_full\[0\]", id="negative-shape"),
    pytest.param(dict(GOOD, shape_full=[2.5, 3, 4, 5]), r"shape_full\[0\].*2\.5", id="non-integer-shape"),
    pytest.param(dict(GOOD, shape_full=["23", 3, 4, 5]), r"shape_full\[0\]", id="string-in-shape"),
    pytest.param(dict(GOOD, shape_full=[None, 3, 4, 5]), r"shape_full\[0\]", id="null-in-shape"),
    pytest.param(dict(GOOD, shape_full=[True, 3, 4, 5]), r"shape_full\[0\]", id="bool-in-shape"),
    pytest.param(dict(GOOD, shape_full="23"), "shape_full", id="shape-is-a-string"),
    pytest.param(dict(GOOD, shape_full=[]), "shape_full", id="empty-shape"),
    pytest.param(dict(GOOD, shape_full=[10**15, 10**15, 4, 5]), "large", id="absurdly-large"),
    pytest.param(dict(GOOD, shape_full=[10**400, 3, 4, 5]), "large", id="huge-integer"),
    pytest.param(dict(GOOD, shape_full=[10**12, 3, 4, 5], shape_block=[1, 3, 4, 5]), "block files", id="too-many-blocks"),
    pytest.param(dict(GOOD, shape_block=[0, 3, 4, 5]), r"shape_block\[0\]", id="block-of-0"),
    pytest.param(dict(GOOD, shape_block=[5, 3, 4, -1]), r"shape_block\[3\]", id="negative-block"),
    pytest.param(dict(GOOD, shape_block=[5, 3, 4]), "shape_block", id="mismatched-lengths"),
    pytest.param(dict(GOOD, padding=[0, 0]), "padding", id="padding-wrong-length"),
    pytest.param(dict(GOOD, shape_full=[23] * 40, shape_block=[5] * 40), "dimensions", id="too-many-dims"),
    pytest.param(dict(GOOD, dtype="object"), "dtype", id="object-dtype"),
    pytest.param(dict(GOOD, dtype="not-a-dtype"), "dtype", id="unknown-dtype"),
]


def _write_metadata(root: Path, content) -> None:
    if isinstance(content, bytes):
        (root / METADATA).write_bytes(content)
    elif isinstance(content, str):
        (root / METADATA).write_text(content)
    else:
        (root / METADATA).write_text(json.dumps(content))


@pytest.mark.parametrize("content, fragment", BAD_METADATA)
def test_impossible_metadata(tmp_path, content, fragment):
    root = make(tmp_path / "ds")
    _write_metadata(root, content)
    tracemalloc.start()
    try:
        with pytest.raises(MetadataError, match=fragment) as info:
            SplitDataset(root)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(info.value, ValueError)
    assert peak < 64 << 20, f"opening bad metadata allocated {peak} bytes"


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("{not json", id="invalid-json"),
        pytest.param("[1]", id="not-an-object"),
        pytest.param(
            dict(GOOD, shape_full=[-23, 3, 4, 5]), id="negative-shape",
        ),
        pytest.param(
            dict(GOOD, shape_block=[5, 3, 4]), id="mismatched-lengths",
        ),
    ],
)
def test_metadata_error_names_the_file(tmp_path, content):
    root = make(tmp_path / "the_dataset")
    _write_metadata(root, content)
    with pytest.raises(MetadataError, match=r"the_dataset.*stack_metadata\.json|stack_metadata\.json.*the_dataset"):
        SplitDataset(root)


def test_impossible_legacy_metadata(tmp_path):
    """No JSON: the metadata group inside the last block is validated the same way."""
    root = tmp_path / "old"
    shutil.copytree(LEGACY / "old_no_json", root)
    with h5py.File(root / "0001.h5", "a") as f:
        f["stack_metadata/full_size"].attrs["i0"] = np.int64(-8)
    with pytest.raises(MetadataError, match=r"shape_full\[0\]"):
        SplitDataset(root)


# ----------------------------------------------------------------------------- opening is read-only


def _truncated(root: Path) -> None:
    (root / "0004.h5").unlink()


def _holed(root: Path) -> None:
    (root / "0002.h5").unlink()


def _planned(root: Path) -> None:
    edit_json(root, shape_full=[40, *SHAPE[1:]])


@pytest.mark.parametrize(
    "source",
    [
        pytest.param("old_no_json", id="old_no_json"),
        pytest.param("tzyx_uint16", id="tzyx_uint16"),
        pytest.param("padded", id="padded"),
        pytest.param("acquisition/original", id="acquisition"),
        pytest.param(_truncated, id="truncated"),
        pytest.param(_holed, id="missing-middle"),
        pytest.param(_planned, id="planned-length"),
    ],
)
def test_opening_never_writes(tmp_path, source):
    root = tmp_path / "ro"
    if isinstance(source, str):
        shutil.copytree(LEGACY / source, root)
        expected = np.load(LEGACY / (source.replace("/", "__") + ".expected.npy"))
    else:
        make(root)
        source(root)
        expected = None
    for p in root.iterdir():
        p.chmod(0o444)
    root.chmod(0o555)
    try:
        before = snapshot(root)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = SplitDataset(root, fill_value=0)
            data = ds[:]
            ds.refresh()
            ds[-1]
            _ = (ds.dtype, ds.files, ds.metadata, ds.data_key)
            ds.close()
            del ds
        assert snapshot(root) == before
    finally:
        root.chmod(0o755)
    if expected is not None:
        np.testing.assert_array_equal(data, expected)


# ----------------------------------------------------------------------------- untrusted content


def _outside_file(tmp_path: Path, value: int = 7) -> Path:
    target = tmp_path / "outside" / "secret.h5"
    target.parent.mkdir(exist_ok=True)
    with h5py.File(target, "w") as f:
        f["stack_4D"] = np.full((5, 3, 4, 5), value, np.uint16)
    return target


def _external_link(block: Path, target: Path, key: str = "stack_4D") -> None:
    block.unlink()
    with h5py.File(block, "w") as f:
        f[key] = h5py.ExternalLink(str(target), "stack_4D")


def _virtual(block: Path, source: str) -> None:
    block.unlink()
    with h5py.File(block, "w") as f:
        layout = h5py.VirtualLayout((5, 3, 4, 5), np.uint16)
        layout[:] = h5py.VirtualSource(source, "stack_4D", shape=(5, 3, 4, 5), dtype=np.uint16)
        f.create_virtual_dataset("stack_4D", layout, fillvalue=0)


def _external_storage(block: Path, raw: str) -> None:
    block.unlink()
    with h5py.File(block, "w") as f:
        f.create_dataset("stack_4D", (5, 3, 4, 5), np.uint16, external=[(raw, 0, h5py.h5f.UNLIMITED)])


UNSAFE = [
    pytest.param(lambda b, t: _external_link(b, t), id="external-link-stack_4D"),
    pytest.param(lambda b, t: _external_link(b, t, key="stack"), id="external-link-stack"),
    pytest.param(lambda b, t: _virtual(b, str(t)), id="virtual-absolute"),
    pytest.param(lambda b, t: _virtual(b, os.path.relpath(t, b.parent)), id="virtual-relative-dotdot"),
]


@pytest.mark.parametrize("plant", UNSAFE)
def test_block_pointing_outside_the_folder_is_refused(tmp_path, plant):
    target = _outside_file(tmp_path)
    root = make(tmp_path / "ds")
    plant(root / "0001.h5", target)
    with pytest.raises(UnsafeDatasetError, match=r"0001\.h5") as info:
        ds = SplitDataset(root)
        ds[5:10]
    assert isinstance(info.value, ValueError)
    # fill_value is for missing blocks, not a way around the check
    with pytest.raises(UnsafeDatasetError):
        SplitDataset(root, fill_value=0)[:]


def test_external_raw_storage_outside_is_refused(tmp_path):
    raw = tmp_path / "outside.bin"
    raw.write_bytes(np.full((5, 3, 4, 5), 9, np.uint16).tobytes())
    root = make(tmp_path / "ds")
    _external_storage(root / "0001.h5", str(raw))
    with pytest.raises(UnsafeDatasetError, match=r"0001\.h5"):
        SplitDataset(root)[5:10]


@pytest.mark.parametrize(
    "plant",
    [
        pytest.param(lambda b, t: _virtual(b, "secret.h5"), id="virtual-relative-name-missing-inside"),
        pytest.param(lambda b, t: _virtual(b, str(b.parent / "secret.h5")), id="virtual-absolute-inside-missing"),
        pytest.param(
            lambda b, t: (t.parent.joinpath("raw.bin").write_bytes(np.full(300, 7, np.uint16).tobytes()),
                          _external_storage(b, "raw.bin")),
            id="external-storage-relative-name",
        ),
    ],
)
def test_sources_that_hdf5_resolves_outside_are_refused(tmp_path, monkeypatch, plant):
    target = _outside_file(tmp_path)  # holds 7s, in tmp_path/outside: the working directory below
    root = make(tmp_path / "ds")
    plant(root / "0001.h5", target)
    monkeypatch.chdir(target.parent)
    with pytest.raises(UnsafeDatasetError, match=r"0001\.h5"):
        SplitDataset(root)[5:10]


_NEVER_OPENS = """
import sys, split_dataset
from split_dataset.errors import UnsafeDatasetError
for path in sys.argv[1:]:
    try:
        split_dataset.SplitDataset(path, fill_value=0)[:]
        print("read")
    except UnsafeDatasetError:
        print("refused")
"""


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs a FIFO")
def test_unsafe_target_is_never_opened(tmp_path):
    """The link targets are FIFOs: opening one blocks forever, so the child would time out."""
    fifo = tmp_path / "outside.h5"
    os.mkfifo(fifo)
    linked = make(tmp_path / "linked")
    _external_link(linked / "0001.h5", fifo)
    virtual = make(tmp_path / "virtual")
    _virtual(virtual / "0001.h5", str(fifo))
    proc = subprocess.run(
        [sys.executable, "-c", _NEVER_OPENS, str(linked), str(virtual)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["refused", "refused"]


def test_pickled_legacy_metadata_is_not_unpickled(tmp_path):
    root = tmp_path / "old"
    shutil.copytree(LEGACY / "old_no_json", root)
    marker = tmp_path / "UNPICKLED"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with tables.open_file(str(root / "0001.h5"), "a") as h:
        group = h.root.stack_metadata
        group._v_attrs.evil = Payload()  # PyTables pickles non-numpy attributes
        h.create_vlarray(group, "evil_obj", tables.ObjectAtom()).append(Payload())  # flammkuchen's way
    with h5py.File(root / "0001.h5", "a") as f:
        f["stack_metadata"].create_dataset("opaque", data=np.void(pickle.dumps(Payload())))
        f["stack_metadata"].create_dataset("raw", data=np.frombuffer(pickle.dumps(Payload()), "S1"))

    ds = SplitDataset(root)
    np.testing.assert_array_equal(ds[:], np.load(LEGACY / "old_no_json.expected.npy"))
    _ = (ds.metadata, ds.attrs, ds.resolution)
    assert not marker.exists()
    assert not (root / METADATA).exists()
    ds.close()
    # the payload is live: a reader that unpickles would have run it
    with tables.open_file(str(root / "0001.h5"), "r") as h:
        h.root.stack_metadata._v_attrs.evil
    assert marker.exists()


# ----------------------------------------------------------------------------- writing into existing folders


@pytest.mark.parametrize(
    "prepare",
    [
        pytest.param(lambda p: make(p), id="existing-dataset"),
        pytest.param(lambda p: (p.mkdir(), (p / "notes.txt").write_text("keep")), id="notes-only"),
        pytest.param(lambda p: p.write_text("a file"), id="path-is-a-file"),
    ],
)
def test_save_refuses_non_empty_target(tmp_path, prepare):
    target = tmp_path / "target"
    prepare(target)
    before = snapshot(target) if target.is_dir() else target.read_bytes()
    with pytest.raises(FileExistsError, match="target"):
        split_dataset.save(np.ones((4, 4), np.uint8), target, (2,), fsync=False)
    after = snapshot(target) if target.is_dir() else target.read_bytes()
    assert after == before


@pytest.mark.parametrize(
    "unrelated",
    [
        pytest.param("notes.txt", id="notes"),
        pytest.param("0001 copy.h5", id="copy-of-a-block"),
        pytest.param("analysis.json", id="other-json"),
        pytest.param(".0003.h5.abc.tmp", id="stale-tmp"),
        pytest.param(
            "calibration_2024.h5", id="user-h5-ending-in-digits",
        ),
    ],
)
def test_overwrite_replaces_dataset_and_keeps_unrelated_files(tmp_path, unrelated):
    root = make(tmp_path / "ds")  # 5 blocks
    (root / unrelated).write_bytes(b"user data")
    y = (np.arange(7 * 6) * 3).astype(np.int16).reshape(7, 6)
    ds = split_dataset.save(y, root, (2,), overwrite=True, fsync=False)
    assert (root / unrelated).read_bytes() == b"user data"
    assert ds.shape == y.shape and ds.dtype == y.dtype
    np.testing.assert_array_equal(ds[:], y)
    blocks = sorted(p.name for p in root.glob("[0-9][0-9][0-9][0-9].h5"))
    assert blocks == ["0000.h5", "0001.h5", "0002.h5", "0003.h5"]  # old 0004.h5 is gone
    assert json.loads((root / METADATA).read_text())["shape_full"] == [7, 6]
    ds.close()
    np.testing.assert_array_equal(SplitDataset(root)[:], y)


def test_stray_block_beyond_the_grid_is_ignored(tmp_path):
    """A leftover block with a higher number (an earlier, longer run) does not confuse the reader."""
    x = np.arange(8 * 3, dtype=np.int16).reshape(8, 3)
    ds = split_dataset.save(x, tmp_path / "ds", (4,), fsync=False)
    ds.close()
    (tmp_path / "ds" / "0007.h5").write_bytes((tmp_path / "ds" / "0001.h5").read_bytes())
    meta = json.loads((tmp_path / "ds" / "stack_metadata.json").read_text())
    del meta["dtype"], meta["data_key"]  # as old writers leave it: the reader must look into a block
    (tmp_path / "ds" / "stack_metadata.json").write_text(json.dumps(meta))
    again = split_dataset.SplitDataset(tmp_path / "ds")
    assert again.shape == (8, 3) and again.dtype == np.int16 and again.data_key == "stack_2D"
    np.testing.assert_array_equal(again[:], x)
