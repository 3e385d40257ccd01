"""``DatasetAttrs``: attrs edits are saved at once, atomically, keeping every other key."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import save_fast

import split_dataset
import split_dataset.attrs as attrs_module
from split_dataset.attrs import DatasetAttrs, to_json_value
from split_dataset.errors import MetadataError, WriterLockedError
from split_dataset.locks import LOCK_FILENAME

JSON = "stack_metadata.json"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "ds"
    save_fast(np.arange(24, dtype=np.uint16).reshape(6, 4), path, (3,), attrs={"fish": "F0", "n": [1, 2]},
              frame_interval=0.5).close()
    doc = json.loads((path / JSON).read_text())
    doc["microscope"] = {"laser": 488}  # a key of another tool: must survive every edit
    (path / JSON).write_text(json.dumps(doc))
    return path


def on_disk(root: Path) -> dict:
    return json.loads((root / JSON).read_text())


def without_attrs(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != "attrs"}


def test_assignment_is_saved_and_keeps_every_other_key(root) -> None:
    before = on_disk(root)
    a = DatasetAttrs(root)
    assert dict(a) == {"fish": "F0", "n": [1, 2]} and len(a) == 2 and "fish" in a
    a["stage"] = "6 dpf"
    assert a["stage"] == "6 dpf"
    after = on_disk(root)
    assert after["attrs"] == {"fish": "F0", "n": [1, 2], "stage": "6 dpf"}
    assert without_attrs(after) == without_attrs(before)
    assert DatasetAttrs(root)["stage"] == "6 dpf"
    assert split_dataset.open(root).attrs["stage"] == "6 dpf"
    assert not [p.name for p in root.iterdir() if p.name.startswith(".") and p.name != LOCK_FILENAME]  # no temp files


def test_numpy_values_are_converted(root) -> None:
    a = DatasetAttrs(root)
    a["gain"] = np.float32(1.5)
    a["count"] = np.int64(7)
    a["on"] = np.bool_(True)
    a["roi"] = (0, 0, np.uint16(64), 64)
    a["lut"] = np.arange(3, dtype=np.uint8)
    a["grid"] = np.ones((2, 2))
    a["names"] = np.array(["a", "b"])
    a["where"] = Path("/data/fish1")
    assert on_disk(root)["attrs"] | {} == {
        "fish": "F0", "n": [1, 2], "gain": 1.5, "count": 7, "on": True, "roi": [0, 0, 64, 64],
        "lut": [0, 1, 2], "grid": [[1.0, 1.0], [1.0, 1.0]], "names": ["a", "b"], "where": "/data/fish1",
    }
    assert type(a["count"]) is int and a["roi"] == [0, 0, 64, 64]  # reads give what the file holds


@pytest.mark.parametrize(
    "value, error",
    [
        (b"bytes", TypeError), ({1, 2}, TypeError), (object(), TypeError), (1 + 2j, TypeError),
        ({1: "x"}, TypeError), ([1, {"a": b"x"}], TypeError), (np.array([1 + 1j]), TypeError),
        (np.datetime64("2024-01-01"), TypeError), (float("nan"), ValueError), (np.float32("inf"), ValueError),
        (2**64, ValueError), (-(2**63) - 1, ValueError),
    ],
)
def test_values_that_are_not_json_are_refused_before_writing(root, value, error) -> None:
    before = (root / JSON).read_bytes()
    a = DatasetAttrs(root)
    with pytest.raises(error):
        a["bad"] = value
    with pytest.raises(error):
        a.update(good=1, bad=value)
    with pytest.raises(error):
        a.setdefault("bad", value)
    assert (root / JSON).read_bytes() == before and "bad" not in a and "good" not in a


def test_keys_must_be_strings(root) -> None:
    a = DatasetAttrs(root)
    with pytest.raises(TypeError, match="keys must be strings"):
        a[1] = "x"  # type: ignore[index]


def test_too_deep_or_too_large_is_refused(root) -> None:
    deep: list = []
    for _ in range(100):
        deep = [deep]
    a = DatasetAttrs(root)
    with pytest.raises(ValueError, match="nested"):
        a["deep"] = deep
    with pytest.raises(ValueError, match="can be read back"):
        a["big"] = "x" * (1 << 24)
    assert "big" not in DatasetAttrs(root)


def test_update_writes_once(root, monkeypatch) -> None:
    writes = []
    real = attrs_module.write_json_atomic
    monkeypatch.setattr(attrs_module, "write_json_atomic", lambda *a, **k: (writes.append(a[0]), real(*a, **k)))
    a = DatasetAttrs(root)
    a.update({"a": 1, "b": 2}, c=3)
    assert len(writes) == 1 and on_disk(root)["attrs"] == {"fish": "F0", "n": [1, 2], "a": 1, "b": 2, "c": 3}
    a.update([("d", 4)])
    a.update()  # nothing to change: no write
    assert len(writes) == 2 and a["d"] == 4


def test_delete_pop_popitem_clear_setdefault(root) -> None:
    a = DatasetAttrs(root)
    del a["fish"]
    assert "fish" not in on_disk(root)["attrs"]
    with pytest.raises(KeyError):
        del a["fish"]
    assert a.pop("n") == [1, 2] and a.pop("n", None) is None
    with pytest.raises(KeyError):
        a.pop("n")
    assert a.setdefault("z", [0]) == [0] and a.setdefault("z", 5) == [0]
    a["y"] = 1
    assert a.popitem() == ("y", 1) and dict(a) == {"z": [0]}
    a.clear()
    assert on_disk(root)["attrs"] == {} and len(a) == 0
    with pytest.raises(KeyError):
        a.popitem()
    assert on_disk(root)["microscope"] == {"laser": 488}


def test_returned_values_are_copies(root) -> None:
    a = DatasetAttrs(root)
    a["n"].append(3)
    assert a["n"] == [1, 2]  # not saved, so not shown either: assign it back
    n = a["n"]
    n.append(3)
    a["n"] = n
    assert on_disk(root)["attrs"]["n"] == [1, 2, 3]


def test_a_concurrent_change_is_not_clobbered(root) -> None:
    first, second = DatasetAttrs(root), DatasetAttrs(root)
    first["x"] = 1
    doc = on_disk(root)
    doc["other_tool"] = "note"  # another program edits the file meanwhile
    (root / JSON).write_text(json.dumps(doc))
    second["y"] = 2  # knew nothing of x nor of other_tool
    after = on_disk(root)
    assert after["attrs"]["x"] == 1 and after["attrs"]["y"] == 2 and after["other_tool"] == "note"
    assert dict(second) == after["attrs"]  # the write brought second up to date
    assert "y" not in first
    assert first.refresh()["y"] == 2


def test_refused_while_a_writer_holds_the_folder(root) -> None:
    (root / LOCK_FILENAME).write_text("another-host.example 4242")  # a writer on another machine
    before = (root / JSON).read_bytes()
    a = DatasetAttrs(root)
    assert a["fish"] == "F0"  # reading is fine
    for edit in (lambda: a.__setitem__("x", 1), lambda: a.__delitem__("fish"), a.clear, lambda: a.update(x=1)):
        with pytest.raises(WriterLockedError, match="refusing to edit its attrs"):
            edit()
    assert (root / JSON).read_bytes() == before


def test_a_live_streaming_writer_refuses_edits(tmp_path) -> None:
    with split_dataset.SplitDatasetWriter(tmp_path / "acq", (4, 4), "uint8", frames_per_file=2, fsync=False) as w:
        w.append(np.zeros((4, 4), np.uint8))
        with pytest.raises(WriterLockedError):
            DatasetAttrs(tmp_path / "acq")["x"] = 1
    DatasetAttrs(tmp_path / "acq")["x"] = 1  # once it is closed
    assert split_dataset.open(tmp_path / "acq").attrs["x"] == 1


def test_a_failed_write_changes_nothing(root, monkeypatch) -> None:
    before = (root / JSON).read_bytes()

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(attrs_module, "write_json_atomic", fail)
    a = DatasetAttrs(root)
    with pytest.raises(OSError):
        a["x"] = 1
    assert "x" not in a and (root / JSON).read_bytes() == before


def test_malformed_metadata_is_never_rewritten(root) -> None:
    a = DatasetAttrs(root)
    (root / JSON).write_text('{"shape_full": [6, 4], "shape_block": [3, 4], "attrs": [1]}')
    before = (root / JSON).read_bytes()
    with pytest.raises(MetadataError, match="stack_metadata.json"):
        a["x"] = 1
    (root / JSON).write_text('{"shape_full": [6, 4], "shape_bl')
    with pytest.raises(MetadataError, match="stack_metadata.json"):
        a["x"] = 1
    (root / JSON).write_bytes(before)
    with pytest.raises(MetadataError):
        DatasetAttrs(root)


def test_the_old_layout_without_json_is_refused(legacy_copy) -> None:
    root = legacy_copy("old_no_json")
    listing = sorted(p.name for p in root.iterdir())
    a = DatasetAttrs(root)
    assert dict(a) == {} and a.refresh() == {}
    with pytest.raises(MetadataError, match="has no stack_metadata.json.*split-dataset convert"):
        a["x"] = 1
    assert sorted(p.name for p in root.iterdir()) == listing  # nothing created


def test_on_change_gets_the_whole_document(root) -> None:
    seen = []
    a = DatasetAttrs(root, {"fish": "F0"}, on_change=seen.append)
    a["x"] = 1
    assert seen == [on_disk(root)] and seen[0]["attrs"]["x"] == 1


def test_repr_and_equality(root) -> None:
    a = DatasetAttrs(root)
    assert repr(a) == "<DatasetAttrs of 'ds': {'fish': 'F0', 'n': [1, 2]}>"
    assert a == {"fish": "F0", "n": [1, 2]} and a.to_dict() == {"fish": "F0", "n": [1, 2]}
    a["long"] = "x" * 2000
    assert len(repr(a)) < 600


def test_to_json_value_examples() -> None:
    assert to_json_value({"a": (1, np.int8(2)), "b": None}) == {"a": [1, 2], "b": None}
    assert to_json_value(np.array(3.5)) == 3.5


def test_ds_attrs_assignment_is_saved(root) -> None:
    """``ds.attrs[...] = ...`` through the dataset (passes once SplitDataset.attrs returns DatasetAttrs)."""
    ds = split_dataset.open(root)
    if not isinstance(ds.attrs, DatasetAttrs):
        pytest.xfail("SplitDataset.attrs does not return DatasetAttrs yet")
    ds.attrs["x"] = 1
    assert ds.attrs["x"] == 1 and ds.metadata["attrs"]["x"] == 1 and ds.meta.attrs["x"] == 1
    assert split_dataset.open(root).attrs["x"] == 1
    ds.attrs.update(y=[2])
    del ds.attrs["fish"]
    assert dict(split_dataset.open(root).attrs) == {"n": [1, 2], "x": 1, "y": [2]}
    assert ds.shape == (6, 4) and ds.axis_order == "tx" and on_disk(root)["microscope"] == {"laser": 488}
