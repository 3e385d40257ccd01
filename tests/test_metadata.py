"""Metadata parsing and validation, and the block grid: pure functions, no files."""

from __future__ import annotations

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
        ({"shape_full": [HUGE, 4]}, r"shape_full\[0\] must be an integer below 2\*\*62, got <an integer of 5001 digits>"),
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
        ({"padding": HUGE}, "padding must be an integer below"),
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
