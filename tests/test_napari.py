"""The napari plugin (split_dataset/napari), run in a real napari without Qt (ViewerModel)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("napari")
npe2 = pytest.importorskip("npe2")
da = pytest.importorskip("dask.array")

from napari.components import ViewerModel  # noqa: E402

import split_dataset  # noqa: E402
from split_dataset.napari import DISPLAY_RANGE_KEY, get_reader, read  # noqa: E402
from split_dataset.storage.reader import ChunkReader  # noqa: E402

DATA = Path(__file__).parent / "data" / "legacy"
DIALECTS = ["empty_filled", "old_no_json", "padded", "tzyx_uint16", "yx_int32", "zyx_float32_2axes",
            "acquisition/original"]
PLUGIN = "split-dataset"


@pytest.fixture(scope="module", autouse=True)
def _plugins() -> None:
    # napari.Viewer discovers plugins when it starts; a bare ViewerModel does not
    npe2.PluginManager.instance().discover()


def _touched(ds: split_dataset.SplitDataset, selection: Any) -> int:
    """How many in-file chunks an integer-and-slice selection overlaps."""
    chunks = ds.meta.chunks or ds.shape_block
    sel = selection if isinstance(selection, tuple) else (selection,)
    count = 1
    for axis, (n, c) in enumerate(zip(ds.shape, chunks)):
        s = sel[axis] if axis < len(sel) else slice(None)
        if isinstance(s, slice):
            start, stop, _ = s.indices(n)
            count *= (stop - 1) // c - start // c + 1 if stop > start else 0
    return count


def _plane(selection: Any) -> tuple[int, ...]:
    """The leading indices of a one-plane selection (ints, or slices one long as dask passes them)."""
    out = []
    for s in selection[:-2]:
        if isinstance(s, slice):
            assert s.stop - s.start == 1, selection
            s = s.start
        out.append(int(s))
    return tuple(out)


class Reads:
    """Counts what SplitDataset indexing reads: the selections, the in-file chunks they overlap,
    and the chunk decoder's calls (whole chunks and parts of chunks)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.chunks = 0
        self.decodes = 0
        self.selections: list[Any] = []
        whole, part = ChunkReader._whole, ChunkReader._decode_part
        getitem = split_dataset.SplitDataset.__getitem__

        def counted_whole(reader: ChunkReader, *args: Any, **kwargs: Any) -> Any:
            self.decodes += 1
            return whole(reader, *args, **kwargs)

        def counted_part(reader: ChunkReader, *args: Any, **kwargs: Any) -> Any:
            self.decodes += 1
            return part(reader, *args, **kwargs)

        def counted_getitem(ds: split_dataset.SplitDataset, selection: Any) -> Any:
            self.selections.append(selection)
            self.chunks += _touched(ds, selection)
            return getitem(ds, selection)

        monkeypatch.setattr(ChunkReader, "_whole", counted_whole)
        monkeypatch.setattr(ChunkReader, "_decode_part", counted_part)
        monkeypatch.setattr(split_dataset.SplitDataset, "__getitem__", counted_getitem)

    def reset(self) -> None:
        self.chunks = self.decodes = 0
        self.selections.clear()


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[Reads]:
    yield Reads(monkeypatch)


def _open(path: Path | str) -> tuple[ViewerModel, list[Any]]:
    viewer = ViewerModel()
    layers = viewer.open(str(path), plugin=PLUGIN)
    return viewer, layers


def _units(layer: Any) -> list[str]:
    return [str(u) for u in layer.units]


@pytest.mark.parametrize("name", DIALECTS)
def test_every_dialect_opens_lazily_at_its_scale(tmp_path: Path, name: str) -> None:
    src = DATA / name
    root = tmp_path / name
    shutil.copytree(src, root)
    expected = np.load(DATA / f"{name.replace('/', '__')}.expected.npy")
    ds = split_dataset.open(root)
    _, layers = _open(root)
    assert len(layers) == 1
    layer = layers[0]
    assert not layer.multiscale
    assert isinstance(layer.data, da.Array)
    assert layer.data.shape == expected.shape
    np.testing.assert_array_equal(np.asarray(layer.data), expected)
    assert tuple(layer.axis_labels) == tuple(ds.axis_order)
    np.testing.assert_allclose(layer.scale, ds.resolution)
    assert _units(layer) == [{"": "pixel", "um": "micrometer"}[u] for u in ds.units]
    # one plane per dask chunk, never straddling a block file
    if ds.ndim > 2:
        assert layer.data.chunksize[:-2] == (1,) * (ds.ndim - 2)
    for axis, cs in enumerate(layer.data.chunks):
        starts = np.cumsum((0, *cs[:-1]))
        assert all(s // ds.shape_block[axis] == (s + c - 1) // ds.shape_block[axis] for s, c in zip(starts, cs))
    lo, hi = layer.contrast_limits
    finite = expected[np.isfinite(expected)] if expected.dtype.kind == "f" else expected
    assert finite.min() <= lo < hi <= finite.max()


def test_physical_metadata_channels_and_time(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 1000, (4, 2, 3, 16, 20), dtype=np.uint16)
    x[:, 1] += 3000  # channel 1 is brighter: its own contrast limits
    split_dataset.save(x, tmp_path / "ds", shape_block=(2,), resolution=(1.0, 1.0, 5.0, 0.6, 0.6),
                       units=("", "", "um", "um", "um"), axis_order="tczyx", frame_interval=0.25)
    viewer, layers = _open(tmp_path / "ds")
    assert [layer.name for layer in layers] == ["ds [c=0]", "ds [c=1]"]
    for c, layer in enumerate(layers):
        assert layer.data.shape == (4, 3, 16, 20)
        np.testing.assert_allclose(layer.scale, (0.25, 5.0, 0.6, 0.6))
        assert _units(layer) == ["second", "micrometer", "micrometer", "micrometer"]
        assert tuple(layer.axis_labels) == ("t", "z", "y", "x")
        np.testing.assert_array_equal(np.asarray(layer.data[3, 2]), x[3, c, 2])
        assert layer.blending == "additive"
        lo, hi = layer.contrast_limits
        assert x[:, c].min() <= lo < hi <= x[:, c].max()
    assert {layer.colormap.name for layer in layers} == {"magenta", "green"}
    assert layers[1].contrast_limits[0] > layers[0].contrast_limits[1]
    assert viewer.dims.ndim == 4


def test_a_stored_display_range_is_used_without_reading_pixels(tmp_path: Path, reads: Reads) -> None:
    x = np.random.default_rng(1).integers(0, 4000, (30, 4, 32, 32), dtype=np.uint16)
    ds = split_dataset.save(x, tmp_path / "ds", shape_block=(10,))
    ds.attrs[DISPLAY_RANGE_KEY] = [100, 3000]
    reads.reset()
    (data, meta, kind), = read(str(tmp_path / "ds"))
    assert kind == "image" and meta["contrast_limits"] == [100.0, 3000.0]
    assert reads.chunks == reads.decodes == 0 and reads.selections == []
    _, (layer,) = _open(tmp_path / "ds")
    assert tuple(layer.contrast_limits) == (100.0, 3000.0)
    # a malformed range is ignored: sampled limits instead
    ds.attrs[DISPLAY_RANGE_KEY] = [5, "high"]
    _, (layer,) = _open(tmp_path / "ds")
    assert tuple(layer.contrast_limits) != (100.0, 3000.0)
    lo, hi = layer.contrast_limits
    assert 0 <= lo < 200 and 3800 < hi < 4000


def test_get_reader_claims_split_datasets_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import h5py

    ds = split_dataset.save(np.zeros((4, 8, 8), "uint8"), tmp_path / "ds", shape_block=(2,))
    no_json = tmp_path / "no_json"
    shutil.copytree(DATA / "old_no_json", no_json)
    (tmp_path / "empty").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    (tmp_path / "other" / "image.h5").write_bytes(b"")
    (tmp_path / "other" / "0001 copy.h5").write_bytes(b"")
    (tmp_path / "file.h5").write_bytes(b"")

    def no_hdf5(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("get_reader opened an HDF5 file")

    monkeypatch.setattr(h5py, "File", no_hdf5)
    assert get_reader(str(ds.root)) is read
    assert get_reader(str(no_json)) is read
    assert get_reader([str(ds.root)]) is read
    assert get_reader(str(ds.root / "stack_metadata.json")) is read
    for path in (tmp_path / "empty", tmp_path / "other", tmp_path / "file.h5", tmp_path / "other" / "notes.txt",
                 ds.root / "0000.h5", tmp_path / "missing", tmp_path):
        assert get_reader(str(path)) is None, path
    assert get_reader([str(ds.root), str(no_json)]) is None
    # napari offers every folder to the plugin: a folder that is not a dataset finds no reader of ours
    monkeypatch.undo()
    readers = [r.plugin_name for r in npe2.PluginManager.instance().iter_compatible_readers([str(tmp_path / "other")])]
    assert PLUGIN in readers  # offered (directories are), and then declines:
    with pytest.raises(ValueError):
        ViewerModel().open(str(tmp_path / "other"), plugin=PLUGIN)


def test_multiscale_for_large_planes(tmp_path: Path) -> None:
    y = np.arange(3000, dtype=np.uint16)[:, None]
    x = ((y * 7 + np.arange(3000, dtype=np.uint16)[None, :] * 3) % 4001).astype(np.uint16)
    data = np.stack([x, x // 2])
    split_dataset.save(data, tmp_path / "ds", resolution=(2.0, 0.5, 0.5), units=("um", "um", "um"))
    viewer, (layer,) = _open(tmp_path / "ds")
    assert layer.multiscale
    assert [level.shape for level in layer.data] == [(2, 3000, 3000), (2, 1500, 1500), (2, 750, 750),
                                                     (2, 375, 375)]
    np.testing.assert_allclose(layer.scale, (2.0, 0.5, 0.5))
    np.testing.assert_array_equal(np.asarray(layer.data[0][1]), data[1])
    coarse = np.asarray(layer.data[1][1])
    expected = data[1].reshape(1500, 2, 1500, 2).mean(axis=(1, 3))
    np.testing.assert_array_equal(coarse, np.rint(expected).astype(np.uint16))
    level3 = np.asarray(layer.data[3][0, :2, :2])
    np.testing.assert_array_equal(level3, np.rint(data[0, :16, :16].reshape(2, 8, 2, 8).mean(axis=(1, 3))))
    viewer.dims.ndisplay = 3  # napari renders the coarsest level in 3-D
    assert layer.data_level == len(layer.data) - 1


def _huge(tmp_path: Path) -> Path:
    """A 10^10-voxel dataset, (1000, 2, 2500, 2000) uint8: 1000 hard links to one block file."""
    plane = (np.arange(2500 * 2000, dtype=np.uint32).reshape(2500, 2000) % 251).astype(np.uint8)
    block = np.stack([plane, plane // 2])[None]
    root = tmp_path / "huge"
    split_dataset.save(block, root, resolution=(1.0, 4.0, 0.5, 0.5), units=("", "um", "um", "um"),
                       frame_interval=0.5, axis_order="tzyx")
    for name in ("chunk_index.bin", "SHA256SUMS"):
        (root / name).unlink()
    meta = json.loads((root / "stack_metadata.json").read_text())
    meta["shape_full"][0] = meta["n_blocks"] = 1000
    meta.pop("display_range")  # as an old writer left it: the contrast is sampled
    (root / "stack_metadata.json").write_text(json.dumps(meta))
    for i in range(1, 1000):
        os.link(root / "0000.h5", root / f"{i:04d}.h5")
    return root


def test_opening_a_huge_dataset_reads_a_few_dozen_chunks(tmp_path: Path, reads: Reads) -> None:
    root = _huge(tmp_path)
    reads.reset()
    viewer, (layer,) = _open(root)
    assert layer.data[0].size == 10**10 and layer.multiscale
    assert [level.shape[-2:] for level in layer.data] == [(2500, 2000), (1250, 1000), (625, 500), (313, 250)]
    np.testing.assert_allclose(layer.scale, (0.5, 4.0, 0.5, 0.5))
    assert _units(layer) == ["second", "micrometer", "micrometer", "micrometer"]
    # the central 1024 x 1024 of 8 sampled planes (3 in-file chunks of 524 rows each), and the two
    # planes napari shows while adding the layer (at step 0, then at the middle: 5 chunks each)
    assert len(reads.selections) == 10, reads.selections
    assert reads.chunks == 8 * 3 + 2 * 5
    assert reads.decodes <= 2 * reads.chunks  # a part decoded from its blosc blocks may be decoded whole too
    lo, hi = layer.contrast_limits
    assert 0 <= lo < hi <= 250

    # a slider move: the plane shown is read, nothing else
    reads.reset()
    viewer.dims.current_step = (700, 1, 0, 0)
    step = viewer.dims.current_step
    shown = np.asarray(layer.data[0][step[:2]])
    assert shown.shape == (2500, 2000)
    plane = (np.arange(2500 * 2000, dtype=np.uint32).reshape(2500, 2000) % 251).astype(np.uint8)
    np.testing.assert_array_equal(shown, plane // 2)
    assert 1 <= len(reads.selections) <= 2  # ours, and napari's own slice if it ran on the step change
    assert reads.chunks <= 2 * 5
    assert reads.decodes <= 2 * reads.chunks
    for selection in reads.selections:
        assert _plane(selection) == (700, 1)


def test_slider_moves_read_only_the_planes_shown(tmp_path: Path, reads: Reads) -> None:
    x = np.random.default_rng(2).integers(0, 4000, (40, 5, 64, 64), dtype=np.uint16)
    split_dataset.save(x, tmp_path / "ds", shape_block=(10,))
    viewer, (layer,) = _open(tmp_path / "ds")
    for t, z in [(3, 1), (17, 4), (39, 0)]:
        reads.reset()
        viewer.dims.current_step = (t, z, 0, 0)
        shown = np.asarray(layer.data[viewer.dims.current_step[:2]])
        np.testing.assert_array_equal(shown, x[t, z])
        assert reads.selections and all(_plane(s) == (t, z) for s in reads.selections)
        assert reads.chunks == reads.decodes == len(reads.selections)  # a 64x64 plane is one in-file chunk


def test_the_writer_round_trips_scale_units_and_contrast(tmp_path: Path) -> None:
    x = np.random.default_rng(3).integers(0, 1000, (6, 3, 16, 16), dtype=np.uint16)
    viewer = ViewerModel()
    layer = viewer.add_image(x, scale=(0.5, 5.0, 0.6, 0.6), units=("s", "um", "um", "um"),
                             axis_labels=("t", "z", "y", "x"), contrast_limits=(10, 900))
    out = tmp_path / "saved"
    written = layer.save(str(out), plugin=PLUGIN)
    assert [Path(p) for p in written] == [out]
    ds = split_dataset.open(out)
    np.testing.assert_array_equal(ds[:], x)
    assert ds.resolution == (0.5, 5.0, 0.6, 0.6) and ds.axis_order == "tzyx"
    assert ds.units == ("s", "um", "um", "um") and ds.frame_interval == 0.5
    assert ds.attrs[DISPLAY_RANGE_KEY] == [10.0, 900.0]
    _, (back,) = _open(out)
    np.testing.assert_allclose(back.scale, layer.scale)
    assert _units(back) == _units(layer) and tuple(back.axis_labels) == tuple(layer.axis_labels)
    assert tuple(back.contrast_limits) == (10.0, 900.0)
    # a plain layer (default axis labels, pixel units) saves with the package's defaults
    plain = viewer.add_image(np.ones((5, 7), "float32"), scale=(2.0, 3.0))
    plain.save(str(tmp_path / "plain"), plugin=PLUGIN)
    ds = split_dataset.open(tmp_path / "plain")
    assert ds.resolution == (2.0, 3.0) and ds.units == ("", "") and ds.axis_order == "yx"


def test_importing_the_package_or_the_plugin_imports_neither_napari_nor_dask() -> None:
    import subprocess
    import sys

    code = ("import sys, split_dataset, split_dataset.napari as p; "
            "p.get_reader('.'); "
            "print(sorted(m for m in ('napari', 'dask', 'npe2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_writers_record_a_display_range_that_the_reader_uses_without_reading_pixels(tmp_path: Path,
                                                                                     reads: Reads) -> None:
    x = (np.random.default_rng(2).poisson(40.0, (30, 2, 32, 32)) + 100).astype(np.uint16)
    split_dataset.save(x, tmp_path / "saved", shape_block=(10,), fsync=False)
    with split_dataset.SplitDatasetWriter(tmp_path / "streamed", (2, 32, 32), np.uint16, 10, fsync=False) as w:
        w.append(x)
    for name in ("saved", "streamed"):
        meta = json.loads((tmp_path / name / "stack_metadata.json").read_text())
        lo, hi = meta["display_range"]
        assert np.percentile(x, 0.5) - 3 <= lo <= np.percentile(x, 5) and np.percentile(x, 95) <= hi <= x.max()
        reads.reset()
        (data, layer_meta, _), = read(str(tmp_path / name))
        assert layer_meta["contrast_limits"] == [lo, hi]
        assert reads.chunks == reads.decodes == 0  # no pixel read for the contrast
