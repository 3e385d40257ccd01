"""Metadata parsing and validation, and the block grid (pure functions, no files); then a
fuzzer over ``stack_metadata.json`` that opens every case in child processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from split_dataset.errors import MetadataError
from split_dataset.grid import BlockGrid, grid_shape
from split_dataset.metadata import Metadata, default_axis_order, migrate_legacy

CLASSIC = {"shape_full": [23, 3, 17, 19], "shape_block": [5, 3, 17, 19], "crop_start": [0, 0, 0, 0],
           "crop_end": [0, 0, 0, 0], "padding": [0, 0, 0, 0], "resolution": [1, 1, 1, 1], "axis_order": "tzyx"}


def test_classic_round_trip() -> None:
    m = Metadata.from_dict(CLASSIC)
    d = m.to_dict()
    for k, v in CLASSIC.items():
        assert d[k] == v
    assert Metadata.from_dict(d) == m


def test_unknown_keys_are_kept() -> None:
    m = Metadata.from_dict({**CLASSIC, "microscope": {"laser": 488}})
    assert m.to_dict()["microscope"] == {"laser": 488}


def test_floats_that_are_integers_are_accepted() -> None:
    assert Metadata.from_dict({"shape_full": [10.0, 4], "shape_block": [5, 4.0]}).shape == (10, 4)


@pytest.mark.parametrize(
    "raw, match",
    [
        ({"shape_block": [1]}, "no 'shape_full'"),
        ({"shape_full": [4]}, "no 'shape_block'"),
        ({"shape_full": [-1, 3], "shape_block": [1, 3]}, r"shape_full\[0\] must be >= 0"),
        ({"shape_full": [2.5], "shape_block": [1]}, "must be an integer"),
        ({"shape_full": [True], "shape_block": [1]}, "must be an integer"),
        ({"shape_full": "10", "shape_block": [1]}, "list of integers"),
        ({"shape_full": [4, 4], "shape_block": [0, 4]}, r"shape_block\[0\] must be >= 1"),
        ({"shape_full": [4, 4], "shape_block": [4]}, "must have 2 entries"),
        ({"shape_full": [2**40, 2**40], "shape_block": [1, 1]}, "impossibly large"),
        ({"shape_full": [2**30], "shape_block": [1]}, "corrupt metadata"),
        ({"shape_full": [], "shape_block": []}, "at least one dimension"),
        ({"shape_full": [1] * 40, "shape_block": [1] * 40}, "at most 32"),
        ({"shape_full": [4], "shape_block": [4], "dtype": "O"}, "Python objects"),
        ({"shape_full": [4], "shape_block": [4], "dtype": "notatype"}, "not a numpy dtype"),
        ({"shape_full": [4], "shape_block": [4], "resolution": ["a"]}, "must be a number"),
        ([1, 2], "JSON object"),
    ],
)
def test_impossible_metadata_is_rejected(raw, match) -> None:
    with pytest.raises(MetadataError, match=match):
        Metadata.from_dict(raw)
    assert issubclass(MetadataError, ValueError)


def test_acquisition_dialect() -> None:
    raw = {"shape_full": [13, 2, 16, 16], "shape_block": [5, 2, 16, 16], "crop": [0, 0, 16, 16],
           "padding": [0, 0, 0, 0], "voxel_size": [5.0, 0.6, 0.6]}
    m = Metadata.from_dict(raw)
    assert m.resolution == (1.0, 5.0, 0.6, 0.6)
    assert m.crop_start == (0, 0, 0, 0)  # the camera ROI is not an array crop
    written = m.to_dict()
    assert written["crop"] == [0, 0, 16, 16] and written["voxel_size"] == [5.0, 0.6, 0.6]  # kept as found
    assert written["resolution"] == [1, 5, 0.6, 0.6]
    assert m.axis_order == "tzyx"


def test_old_group_keys() -> None:
    assert migrate_legacy({"block_size": (4, 5), "full_size": (8, 5)}) == {"shape_block": (4, 5), "shape_full": (8, 5)}


def test_old_resolution_of_wrong_length_is_fitted() -> None:
    m = Metadata.from_dict({"shape_full": [10, 7], "shape_block": [3, 7], "resolution": [1, 1, 1], "axis_order": "zyx"})
    assert m.resolution == (1.0, 1.0) and m.axis_order == "yx"


def test_default_axis_order() -> None:
    assert [default_axis_order(n) for n in range(1, 7)] == ["x", "yx", "zyx", "tzyx", "tczyx", "abcdef"]


@pytest.mark.parametrize(
    "shape, block, pad, grid",
    [((23, 3), (5, 3), (0, 0), (5, 1)), ((9, 20, 11), (4, 8, 11), (0, 0, 0), (3, 3, 1)),
     ((11, 6, 5), (4, 3, 5), (1, 1, 0), (3, 2, 1)), ((0, 4), (3, 4), (0, 0), (0, 1)), ((1,), (1,), (1,), (1,))],
)
def test_grid_shape(shape, block, pad, grid) -> None:
    assert grid_shape(shape, block, pad) == grid


def test_grid_linear_coords_and_ownership() -> None:
    g = BlockGrid((9, 20, 11), (4, 8, 11))
    for i in range(g.n_blocks):
        assert g.linear(g.coords(i)) == i == np.ravel_multi_index(g.coords(i), g.grid_shape)
    assert g.linear((1, 2, 0)) == 5
    with pytest.raises(IndexError):
        g.linear((3, 0, 0))
    padded = BlockGrid((9,), (4,), (1,))  # blocks [0,5) [4,9): the last block owns up to 9
    assert padded.grid_shape == (2,)
    assert [(padded.block_start(0, i), padded.owned_stop(0, i)) for i in range(2)] == [(0, 4), (4, 9)]
    assert padded.block_shape((0,)) == (5,)
    covered = np.zeros(9, int)
    for i in range(2):
        covered[padded.block_start(0, i):padded.owned_stop(0, i)] += 1
    assert (covered == 1).all()


# ----------------------------------------------------------------------------- malformed values

HUGE = 10**5000  # more digits than Python converts to a string by default
BASE = {"shape_full": [6, 4], "shape_block": [3, 4]}


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"shape_full": [HUGE, 4]}, r"shape_full\[0\] is impossibly large: <an integer of 5001 digits> \(at most 2\*\*62\)"),
        ({"shape_full": [-HUGE, 4]}, r"shape_full\[0\]"),
        ({"shape_block": [HUGE, 4]}, r"shape_block\[0\]"),
        ({"shape_full": [1e308, 4]}, r"shape_full\[0\]"),
        ({"shape_full": [float("nan"), 4]}, "must be an integer, got nan"),
        ({"shape_full": [float("inf"), 4]}, "must be an integer, got inf"),
        ({"shape_full": [6.5, 4]}, "must be an integer"),
        ({"shape_full": [False, 4]}, "must be an integer"),
        ({"shape_full": 6}, "list of integers"),
        ({"shape_full": {"a": 1}}, "list of integers"),
        ({"shape_full": [[6], 4]}, "must be an integer"),
        ({"shape_full": [None, 4]}, "must be an integer"),
        ({"shape_full": [2**61, 2**61], "shape_block": [2**61, 2**61]}, "impossibly large"),
        ({"shape_full": [2**30, 2**20], "shape_block": [1, 1]}, "corrupt metadata"),
        ({"shape_full": [1] * 10**5, "shape_block": [1] * 10**5}, "at most 32"),
        ({"padding": HUGE}, "padding is impossibly large"),
        ({"padding": [HUGE, 0]}, r"padding\[0\]"),
        ({"padding": [1e300, 0]}, r"padding\[0\]"),
        ({"padding": [-1, 0]}, r"padding\[0\] must be >= 0"),
        ({"padding": True}, "padding must be a list of integers"),
        ({"padding": "0"}, "padding must be a list of integers"),
        ({"resolution": [HUGE, 1]}, r"resolution\[0\] must be a finite number"),
        ({"resolution": [float("nan"), 1]}, r"resolution\[0\] must be a finite number"),
        ({"resolution": [1, float("-inf")]}, r"resolution\[1\] must be a finite number"),
        ({"resolution": [-0.5, 1]}, r"resolution\[0\] must be a finite number >= 0"),
        ({"resolution": [True, 1]}, r"resolution\[0\] must be a number"),
        ({"resolution": 5}, "resolution must be a list of numbers"),
        ({"resolution": {"z": 5}}, "resolution must be a list of numbers"),
        ({"voxel_size": 5}, "resolution must be a list of numbers"),
        ({"units": 5}, "units must be a list of strings"),
        ({"units": "um"}, "units must be a list of strings"),
        ({"units": [1, 2]}, "units must have 2 strings"),
        ({"frame_interval": HUGE}, "frame_interval must be a positive number"),
        ({"frame_interval": "0.5"}, "frame_interval must be a positive number"),
        ({"frame_interval": True}, "frame_interval must be a positive number"),
        ({"frame_interval": 0}, "frame_interval must be a positive number"),
        ({"frame_interval": -1}, "frame_interval must be a positive number"),
        ({"frame_interval": float("nan")}, "frame_interval must be a positive number"),
        ({"frame_interval": 1e-320}, "frame_interval must be a positive number"),  # 1 / it overflows
        ({"attrs": [1]}, "attrs must be a JSON object"),
        ({"attrs": "ab"}, "attrs must be a JSON object"),
        ({"attrs": 5}, "attrs must be a JSON object"),
        ({"dtype": 5}, "dtype must be a numpy type string"),
        ({"dtype": [["a", "<i4"]]}, "dtype must be a numpy type string"),
        ({"dtype": {"names": ["a"]}}, "dtype must be a numpy type string"),
        ({"dtype": "(1000000000,)i8"}, "not a numpy dtype"),
        ({"dtype": "(2,)u2"}, "sub-array"),
        ({"dtype": "V0"}, "0 bytes"),
        ({"dtype": "S0"}, "0 bytes"),
        ({"dtype": "i4" * 3000}, "not a numpy dtype"),
        ({"dtype": "[[[["}, "not a numpy dtype"),
        ({"shape_full": [2**31, 2**29], "shape_block": [2**31, 2**29], "dtype": "S1000"}, "impossibly large"),
        ({"chunks": 5}, "chunks must be a list of integers"),
        ({"chunks": [HUGE, 4]}, r"chunks\[0\]"),
        ({"chunks": [0, 4]}, r"chunks\[0\] must be >= 1"),
        ({"complete": "no"}, "complete must be true, false or null"),
        ({"complete": [True]}, "complete must be true, false or null"),
        ({"axis_order": 5}, "axis_order must be a string"),
        ({"axis_order": ["t", "x"]}, "axis_order must be a string"),
        ({"data_key": 5}, "data_key must be the name of a dataset"),
        ({"data_key": "/"}, "data_key must be the name of a dataset"),
        ({"compression": [1, 2]}, "compression must be a JSON object"),
        ({"compression": HUGE}, "compression must be a JSON object"),
    ],
)
def test_malformed_values_raise_metadata_error(changes, match) -> None:
    with pytest.raises(MetadataError, match=match) as info:
        Metadata.from_dict({**BASE, **changes})
    assert len(str(info.value)) < 400  # never the 5000 digits, never a whole nested value


def test_malformed_values_that_are_only_informative_are_ignored() -> None:
    m = Metadata.from_dict({**BASE, "crop_start": HUGE, "crop_end": [[1], "x"], "complete": 1, "padding": 0.0})
    assert m.crop_start == m.crop_end == (0, 0) and m.complete is True and m.padding == (0, 0)


def test_keys_found_are_listed_briefly() -> None:
    with pytest.raises(MetadataError, match="no 'shape_block'") as info:
        Metadata.from_dict({"shape_full": [1], **{f"k{i}": i for i in range(10_000)}})
    assert len(str(info.value)) < 400


def test_deeply_nested_values_are_shown_briefly() -> None:
    deep: list = []
    for _ in range(900):
        deep = [deep]
    for key in ("shape_full", "resolution", "units", "attrs", "compression"):
        with pytest.raises(MetadataError) as info:
            Metadata.from_dict({**BASE, key: deep} if key != "units" else {**BASE, key: [deep, deep]})
        assert len(str(info.value)) < 400
    assert Metadata.from_dict({**BASE, "attrs": {"deep": deep}}).attrs["deep"] is deep  # attrs may nest


# ----------------------------------------------------------------------------- axis order and time


@pytest.mark.parametrize("ndim, order", [(1, "t"), (2, "tx"), (3, "tyx"), (4, "tzyx"), (5, "tczyx"), (6, "tabcde")])
def test_default_axis_order_with_time(ndim, order) -> None:
    assert default_axis_order(ndim, time=True) == order


@pytest.mark.parametrize("shape, order", [((0, 32, 32), "tyx"), ((5, 8, 32, 32), "tzyx"), ((7, 3), "tx")])
def test_a_frame_interval_makes_axis_0_time(shape, order) -> None:
    m = Metadata(shape, (1,) + shape[1:], frame_interval=0.5)
    assert m.axis_order == order
    assert Metadata.from_dict(m.to_dict()) == m
    assert Metadata(shape, (1,) + shape[1:]).axis_order == default_axis_order(len(shape))  # no interval: as before


def test_the_first_writers_zyx_label_with_a_frame_interval_reads_as_tyx() -> None:
    raw = {"shape_full": [10, 32, 32], "shape_block": [5, 32, 32], "axis_order": "zyx", "frame_interval": 0.1}
    assert Metadata.from_dict(raw).axis_order == "tyx"
    assert Metadata.from_dict({**raw, "axis_order": "cyx"}).axis_order == "cyx"  # chosen by a person: kept
    assert Metadata.from_dict({**raw, "frame_interval": None}).axis_order == "zyx"


def test_streamed_2d_frames_with_a_frame_interval_are_tyx(tmp_path) -> None:
    import split_dataset

    with split_dataset.SplitDatasetWriter(tmp_path / "ds", (8, 8), "uint16", frames_per_file=2,
                                          frame_interval=0.05, fsync=False) as w:
        for _ in range(3):
            w.append(np.zeros((8, 8), np.uint16))
    assert split_dataset.open(tmp_path / "ds").axis_order == "tyx"
    saved = split_dataset.save(np.zeros((3, 4, 8, 8), np.uint8), tmp_path / "v", frame_interval=2.0, fsync=False)
    assert saved.axis_order == "tzyx"
    assert split_dataset.save(np.zeros((3, 8, 8), np.uint8), tmp_path / "t", frame_interval=2.0,
                              fsync=False).axis_order == "tyx"



# ----------------------------------------------------------------------------- fuzzer
#
# Random stack_metadata.json content (random JSON values per key, extreme numbers, deep
# nesting, truncations and byte flips of a valid file) under a real dataset folder. Each
# case is opened, verified, and run through `split-dataset info` and `verify` in a child
# process (many cases per child); a crash or a hang of a child reruns its remaining cases
# one per process to name the culprit. Allowed: a successful open, or MetadataError /
# NotASplitDatasetError naming the file, or BlockMismatchError (well-formed metadata that
# disagrees with the block files); verify returns a report; the CLI exits 0, 1 or 2 with
# at most one error line and never a traceback.

_CHILD = textwrap.dedent(r"""
    import contextlib, io, os, shutil, sys, tempfile, warnings
    from pathlib import Path
    try:
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))  # a huge allocation fails, not the machine
    except (ImportError, ValueError, OSError):
        pass
    os.environ.setdefault("SPLIT_DATASET_THREADS", "1")
    import numpy as np
    import split_dataset
    from split_dataset.cli import main
    from split_dataset.errors import BlockMismatchError, MetadataError, NotASplitDatasetError, SplitDatasetError
    from split_dataset.verify import verify

    template, cases, ids = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3].split(",")
    work = Path(tempfile.mkdtemp()) / "ds"
    shutil.copytree(template, work)
    meta = work / "stack_metadata.json"

    def line(e):
        try:
            text = " ".join(str(e).split())
        except BaseException:
            text = "<str() failed>"
        return f"{type(e).__name__}: {text[:300]}"

    def check(data):
        meta.write_bytes(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ds = split_dataset.open(work)
            except MetadataError as e:
                if "stack_metadata.json" not in str(e):
                    return "MetadataError without the file name: " + line(e)
            except (NotASplitDatasetError, BlockMismatchError):
                pass
            except BaseException as e:
                return "open raised " + line(e)
            else:
                try:
                    frame = int(np.prod(ds.shape[1:], dtype=np.float64) * ds.dtype.itemsize)
                    if ds.shape[0] and frame < (16 << 20):
                        ds[0], ds[-1]
                except SplitDatasetError:
                    pass  # the metadata may disagree with the files; reading says so
                except BaseException as e:
                    return "reading after open raised " + line(e)
                finally:
                    ds.close()
            try:
                verify(work)
            except NotASplitDatasetError:
                pass
            except BaseException as e:
                return "verify raised " + line(e)
        for argv in (["info", str(work)], ["info", "--json", str(work)], ["verify", "-q", str(work)]):
            out, err = io.StringIO(), io.StringIO()
            try:
                with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                    code = main(argv)
            except BaseException as e:
                return f"split-dataset {argv[0]} raised (a traceback): " + line(e)
            errors = [l for l in err.getvalue().splitlines() if l.startswith("split-dataset: error:")]
            if code not in (0, 1, 2) or len(errors) > 1 or "Traceback" in err.getvalue():
                return f"split-dataset {' '.join(argv[:-1])} exit {code}, stderr {err.getvalue()[:300]!r}"
            if code != 0 and argv[0] == "info" and not errors:
                return f"split-dataset info exit {code} without an error line"
        return "ok"

    for cid in ids:
        result = check((cases / f"{cid}.json").read_bytes())
        print(f"{cid}\t{result}", flush=True)
""")


class _Raw:
    """JSON text inserted as it is (numbers Python will not format, deep nesting, NaN...)."""

    def __init__(self, text: str, label: str | None = None) -> None:
        self.text, self.label = text, label or (text if len(text) < 40 else text[:20] + f"...({len(text)} chars)")


def _enc(v: Any) -> str:
    if isinstance(v, _Raw):
        return v.text
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))}: {_enc(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(_enc(x) for x in v) + "]"
    return json.dumps(v)


def _label(v: Any) -> str:
    if isinstance(v, _Raw):
        return v.label
    text = _enc(v)
    return text if len(text) < 60 else text[:50] + f"...({len(text)} chars)"


_KEYS = ("shape_full", "shape_block", "crop_start", "crop_end", "padding", "resolution", "axis_order",
         "format_version", "dtype", "data_key", "compression", "chunks", "attrs", "complete", "n_blocks",
         "units", "frame_interval", "full_size", "block_size", "voxel_size", "crop", "camera_roi")
_STRINGS = ("", "<u2", "|u1", "<f4", ">f8", "S0", "V0", "O", "(2,)i4", "m8", "M8[ns]", "<U10", "c16", "?",
            "i4,i4", "(1000000000,)i8", "zyx", "tzyx", "tyx", "stack", "stack_4D", "/", "../x", "µm", "\x00",
            "um", "s", "blosc", "gzip", "[[[[", "a" * 5000)


def _number(rng: np.random.Generator, depth: int = 0) -> Any:
    k = rng.integers(0, 22 if depth < 2 else 16)
    if k < 6:
        return int(rng.integers(-3, 40))
    if k == 6:
        return int(rng.choice([2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**62 - 1, 2**62, 2**62 + 1, 2**63 - 1,
                               2**63, 2**64, -(2**63), -(2**63) - 1, 2**21, 2**22 + 1]))
    if k == 7:
        digits = int(rng.choice([19, 20, 100, 309, 400, 4299, 4300, 4301, 5000, 20000]))
        return _Raw(("-" if rng.random() < 0.3 else "") + "9" * digits, f"<{digits}-digit integer>")
    if k == 8:
        return _Raw(str(rng.choice(["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1e308", "5e-324",
                                    "-0", "-0.0", "0.0", "1E400", "2.5e9", "1e-320"])))
    if k == 9:
        return float(rng.choice([0.5, 1.0, 2.0, 3.0, 0.1, -0.5, 1e-9, 4.0000001, 1e20, 6.02e23]))
    if k == 10:
        return bool(rng.integers(0, 2))
    if k == 11:
        return None
    if k < 16:
        return str(rng.choice(_STRINGS))
    if k < 19:
        n = int(rng.choice([0, 1, 2, 3, 4, 4, 4, 5, 33, 100]))
        return [_number(rng, depth + 1) if rng.random() < 0.8 else _value(rng, depth + 1) for _ in range(n)]
    if k < 21:
        return {str(rng.choice(_KEYS + ("x", "name", "filters"))): _value(rng, depth + 1)
                for _ in range(int(rng.integers(0, 4)))}
    return _deep(rng)


def _deep(rng: np.random.Generator) -> _Raw:
    n = int(rng.choice([10, 200, 500, 900, 990, 1000, 1100, 5000, 100_000]))
    if rng.random() < 0.5:
        return _Raw("[" * n + "1" + "]" * n, f"<list nested {n} deep>")
    return _Raw('{"a": ' * n + "1" + "}" * n, f"<object nested {n} deep>")


def _value(rng: np.random.Generator, depth: int = 0) -> Any:
    if depth > 2:
        return _number(rng, depth)
    k = rng.integers(0, 10)
    if k < 6:
        return _number(rng, depth)
    if k < 9:
        return [_value(rng, depth + 1) for _ in range(int(rng.integers(0, 6)))]
    return {str(rng.choice(_KEYS)): _value(rng, depth + 1) for _ in range(int(rng.integers(0, 4)))}


def _shape_like(rng: np.random.Generator, ndim: int) -> list:
    return [int(rng.choice([0, 1, 2, 3, 4, 7, 8, 16, 2**20, 2**31])) for _ in range(ndim)]


def _fuzz_case(seed: int, base: dict) -> tuple[bytes, str]:
    """One stack_metadata.json content and a description of it."""
    rng = np.random.default_rng(seed)
    text = _enc(base)
    kind = int(rng.integers(0, 12))
    doc: dict = dict(base)
    if kind <= 2:  # one key set to a random value
        key = str(rng.choice(_KEYS)) if rng.random() < 0.9 else "x_other_tool"
        doc[key] = _value(rng)
        return _enc(doc).encode(), f"{key} = {_label(doc[key])}"
    if kind == 3:  # one element of a list key
        key = str(rng.choice(["shape_full", "shape_block", "padding", "resolution", "chunks", "units", "crop_start"]))
        lst = list(doc.get(key) or [0, 0, 0, 0])
        i = int(rng.integers(0, len(lst)))
        lst[i] = _number(rng, 1)
        doc[key] = lst
        return _enc(doc).encode(), f"{key}[{i}] = {_label(lst[i])}"
    if kind == 4:  # plausible but inconsistent geometry
        ndim = int(rng.choice([1, 2, 3, 4, 4, 4, 5]))
        doc["shape_full"], doc["shape_block"] = _shape_like(rng, ndim), _shape_like(rng, ndim)
        if rng.random() < 0.5:
            doc["padding"] = _shape_like(rng, ndim)
        return _enc(doc).encode(), f"geometry {_label({k: doc.get(k) for k in ('shape_full', 'shape_block', 'padding')})}"
    if kind == 5:  # keys removed
        gone = [k for k in base if rng.random() < 0.3]
        for k in gone:
            doc.pop(k)
        return _enc(doc).encode(), f"without {gone}"
    if kind == 6:  # truncated
        cut = int(rng.integers(0, len(text)))
        return text[:cut].encode(), f"truncated at byte {cut}"
    if kind == 7:  # byte flips
        data = bytearray(text.encode())
        where = sorted(int(i) for i in rng.integers(0, len(data), int(rng.integers(1, 9))))
        for i in where:
            data[i] = int(rng.integers(0, 256))
        return bytes(data), f"bytes changed at {where}"
    if kind == 8:  # deep nesting, as a value or as the document
        deep = _deep(rng)
        if rng.random() < 0.3:
            return deep.text.encode(), f"document {deep.label}"
        key = str(rng.choice(_KEYS))
        doc[key] = deep
        return _enc(doc).encode(), f"{key} = {deep.label}"
    if kind == 9:  # the document is not an object, or not JSON
        junk = [b"", b" ", b"null", b"[]", b"[1, 2]", b"\"x\"", b"1e999", b"\xff\xfe\x00", b"\xef\xbb\xbf" + text.encode(),
                text.encode() + b" trailing", text.encode() * 2, b"{" + b'"a": 1, ' * 1000, b"\x00" * 64,
                text.replace('"shape_full"', '"shape_full": [1], "shape_full"').encode()]
        i = int(rng.integers(0, len(junk)))
        return junk[i], f"junk document #{i}"
    # several keys at once
    keys = [str(k) for k in rng.choice(_KEYS, int(rng.integers(2, 6)), replace=False)]
    for key in keys:
        doc[key] = _value(rng)
    return _enc(doc).encode(), "; ".join(f"{k} = {_label(doc[k])}" for k in keys)


@pytest.fixture(scope="module")
def fuzz_template(tmp_path_factory) -> Path:
    import split_dataset

    root = tmp_path_factory.mktemp("fuzz") / "template"
    x = np.arange(7 * 3 * 8 * 8, dtype=np.uint16).reshape(7, 3, 8, 8)
    split_dataset.save(x, root, (3,), fsync=False, frame_interval=0.5, units=("s", "um", "um", "um"),
                       resolution=(0.5, 5.0, 0.6, 0.6), attrs={"fish": "F0", "n": [1, 2]}).close()
    return root


def _run_child(template: Path, cases: Path, ids: list[str], timeout: float) -> tuple[dict[str, str], str | None]:
    """Results per case id, and what went wrong with the child itself (crash, hang), if anything."""
    script = cases / "child.py"
    if not script.exists():
        script.write_text(_CHILD)
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    try:
        proc = subprocess.run([sys.executable, str(script), str(template), str(cases), ",".join(ids)],
                              capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        problem = f"hung (no result within {timeout:.0f} s)"
    else:
        out = proc.stdout
        problem = None if proc.returncode == 0 else f"crashed (exit {proc.returncode}): {proc.stderr[-500:]}"
    results = dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)
    return results, problem


def _fuzz(template: Path, workdir: Path, seeds: range, batch: int) -> list[str]:
    """Every failing case, described (empty: all passed)."""
    base = json.loads((template / "stack_metadata.json").read_text())
    cases = workdir / "cases"
    cases.mkdir()
    described = {}
    for seed in seeds:
        data, what = _fuzz_case(seed, base)
        (cases / f"{seed}.json").write_bytes(data)
        described[str(seed)] = what
    ids = list(described)
    failures = []
    for start in range(0, len(ids), batch):
        chunk = ids[start : start + batch]
        results, problem = _run_child(template, cases, chunk, timeout=30 + 0.5 * len(chunk))
        if problem is not None:  # name the culprit: every case without a result, one per process
            for cid in chunk:
                if cid in results:
                    continue
                one, single = _run_child(template, cases, [cid], timeout=30)
                if single is not None:
                    results[cid] = single
                else:
                    results.update(one)
        for cid in chunk:
            outcome = results.get(cid, "no result")
            if outcome != "ok":
                failures.append(f"case {cid} ({described[cid]}): {outcome}")
    return failures


def _assert_none(failures: list[str], n: int) -> None:
    assert not failures, f"{len(failures)} of {n} cases failed:\n" + "\n".join(failures[:40])


def _read_json_is_safe(tmp_path: Path) -> bool:
    """Whether ``storage.read_json`` turns json.loads' RecursionError and ValueError into MetadataError."""
    from split_dataset.storage import read_json

    probe = tmp_path / "probe.json"
    for text in ("[" * 100_000 + "]" * 100_000, '{"a": 1' + "0" * 5000 + "}"):
        probe.write_text(text)
        try:
            read_json(probe)
        except MetadataError:
            continue
        except (RecursionError, ValueError):
            return False
    return True


def _fuzz_or_xfail(template: Path, tmp_path: Path, seeds: range, batch: int) -> None:
    failures = _fuzz(template, tmp_path, seeds, batch)
    if _read_json_is_safe(tmp_path):
        _assert_none(failures, len(seeds))
        return
    # until storage.read_json is fixed (the lead's change), its two escapes are expected; nothing else is
    _assert_none([f for f in failures if "RecursionError" not in f and "integer string conversion" not in f],
                 len(seeds))
    if failures:
        pytest.xfail(f"storage.read_json still lets RecursionError/ValueError out ({len(failures)} cases)")


def test_fuzz_stack_metadata_json(fuzz_template, tmp_path) -> None:
    t0 = time.perf_counter()
    _fuzz_or_xfail(fuzz_template, tmp_path, range(200), batch=100)
    assert time.perf_counter() - t0 < 120


@pytest.mark.full
def test_fuzz_stack_metadata_json_full(fuzz_template, tmp_path) -> None:
    _fuzz_or_xfail(fuzz_template, tmp_path, range(10_000, 13_000), batch=250)


def test_fuzzer_names_a_crashing_case(fuzz_template, tmp_path, monkeypatch) -> None:
    """The harness itself: a child that dies on one case gets that case named."""
    crash = _CHILD.replace("    result = check(", "    if cid == '3': os._exit(9)\n    result = 'ok' or check(")
    assert crash != _CHILD
    monkeypatch.setattr(sys.modules[__name__], "_CHILD", crash)
    with pytest.raises(AssertionError, match=r"case 3 \(.*\): crashed \(exit 9\)") as info:
        _assert_none(_fuzz(fuzz_template, tmp_path, range(6), batch=6), 6)
    assert "1 of 6 cases failed" in str(info.value)


@pytest.mark.parametrize("version", [2, 99, -1, "1", 1.0, True])
def test_a_newer_or_malformed_format_version_is_refused(version) -> None:
    raw = {"shape_full": [4, 3], "shape_block": [2, 3], "format_version": version}
    with pytest.raises(MetadataError, match="format_version"):
        Metadata.from_dict(raw)


@pytest.mark.parametrize("version", [None, 0, 1])
def test_known_format_versions_open(version) -> None:
    raw = {"shape_full": [4, 3], "shape_block": [2, 3]}
    if version is not None:
        raw["format_version"] = version
    assert Metadata.from_dict(raw).shape == (4, 3)


@pytest.mark.parametrize("value, parsed", [([1, 2.5], (1.0, 2.5)), ([3, 3], (3.0, 3.0)), ([5, 1], None),
                                           ([1], None), (["a", 2], None), ([True, 2], None),
                                           ([float("nan"), 1], None), ("0 1", None), (None, None)])
def test_display_range_is_a_hint_parsed_or_ignored(value, parsed) -> None:
    d = Metadata((4, 4), (2, 4)).to_dict()
    d["display_range"] = value
    m = Metadata.from_dict(d)  # never refused for it
    assert m.display_range == parsed
    assert ("display_range" in m.to_dict()) == (parsed is not None)
