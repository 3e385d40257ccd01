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
