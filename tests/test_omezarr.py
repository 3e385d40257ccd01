"""OME-Zarr export and import: every level equals the mean-downsampled source, the metadata
validates against the OME-NGFF JSON schemas and is understood by ome-zarr-py, and a round
trip split -> OME-Zarr -> split keeps values and physical metadata.

The schemas are test data (``tests/data/ngff_schemas``, see its README), resolved offline.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA, LEGACY_CASES, save_fast

from split_dataset import SplitDataset
from split_dataset.cli import main
from split_dataset.convert import Source, convert, omezarr, open_source, parse_spec
from split_dataset.convert.omezarr import mean2x, plan_layout

zarr = pytest.importorskip("zarr")
SCHEMAS = DATA / "ngff_schemas"


def _noise(shape: tuple[int, ...], dtype: str = "uint16", seed: int = 0) -> np.ndarray:
    """Dark-camera-like noise (Poisson around an offset) plus a gradient, so means are not trivial."""
    rng = np.random.default_rng(seed)
    x = rng.poisson(40, size=shape) + 100 + np.arange(shape[-1]) % 7
    return x.astype(dtype)


def _levels(x: np.ndarray, axes: tuple[int, ...], n: int) -> list[np.ndarray]:
    out = [x]
    for _ in range(n - 1):
        out.append(mean2x(out[-1], axes))
    return out


def _group(path: Path):
    return zarr.open_group(str(path), mode="r")


def _ms(attrs: dict) -> dict:
    return (attrs["ome"] if "ome" in attrs else attrs)["multiscales"][0]


# ----------------------------------------------------------------------------- levels


@pytest.mark.parametrize("ngff", ["0.5", "0.4"])
def test_every_level_equals_the_mean_downsampled_source(tmp_path: Path, ngff: str):
    x = _noise((5, 2, 1100, 1030))
    src = save_fast(x, tmp_path / "src", (2, None, None, None), resolution=(0.5, 4, 0.3, 0.3),
                    units=("s", "um", "um", "um"), axis_order="tzyx", frame_interval=0.5)
    src.close()
    out = convert(tmp_path / "src", tmp_path / "x.ome.zarr", ngff=ngff)
    assert out.destination.kind == "omezarr"
    g = _group(tmp_path / "x.ome.zarr")
    expected = _levels(x, (2, 3), 3)  # 1100 -> 550 -> 275: planes of 512 or less
    assert sorted(g.array_keys()) == ["0", "1", "2"]
    for k, want in enumerate(expected):
        got = g[str(k)][...]
        assert got.dtype == x.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    ms = _ms(dict(g.attrs))
    assert ms["type"] == "mean"
    scales = [d["coordinateTransformations"][0]["scale"] for d in ms["datasets"]]
    assert scales == [[0.5, 4.0, 0.3, 0.3], [0.5, 4.0, 0.6, 0.6], [0.5, 4.0, 1.2, 1.2]]
    shifts = [d["coordinateTransformations"][1]["translation"] for d in ms["datasets"][1:]]
    np.testing.assert_allclose(shifts, [[0, 0, 0.15, 0.15], [0, 0, 0.45, 0.45]])


def test_floor_rule_odd_sizes_and_dtypes(tmp_path: Path):
    for dtype in ("uint8", "int16", "uint32", "float32"):
        x = (_noise((3, 1031, 1029), "int64", seed=1) - 140).astype(dtype)
        src = Source(x, parse_spec("x.npy", writing=True), axis_order="tyx")
        dst = tmp_path / f"{dtype}.ome.zarr"
        convert(src, dst)
        g = _group(dst)
        assert [g[k].shape for k in sorted(g.array_keys())] == [(3, 1031, 1029), (3, 515, 514), (3, 257, 257)]
        for k, want in enumerate(_levels(x, (1, 2), 3)):
            got = g[str(k)][...]
            assert got.dtype == np.dtype(dtype)
            np.testing.assert_array_equal(got, want)


def test_mean2x_rounds_half_to_even_and_keeps_the_dtype():
    x = np.array([[1, 2], [2, 2]], "uint16")  # mean 1.75 -> 2
    assert mean2x(x, (0, 1)).tolist() == [[2]]
    assert mean2x(np.array([[1, 2], [1, 2]], "int16"), (0, 1)).tolist() == [[2]]  # 1.5 -> 2 (even)
    assert mean2x(np.array([[2, 3], [2, 3]], "int16"), (0, 1)).tolist() == [[2]]  # 2.5 -> 2 (even)
    assert mean2x(np.array([[-3, -2], [-3, -2]], "int16"), (0, 1)).tolist() == [[-2]]  # -2.5 -> -2
    big = np.full((2, 2), 65535, "uint16")
    assert mean2x(big, (0, 1)).tolist() == [[65535]]
    assert mean2x(np.full((2, 2), 2**32 - 1, "uint32"), (0, 1)).tolist() == [[2**32 - 1]]


def test_isotropic_z_is_halved_anisotropic_z_is_not(tmp_path: Path):
    x = _noise((40, 1030, 1030))
    iso = Source(x, parse_spec("x.npy", writing=True), axis_order="zyx", resolution=(0.5, 0.5, 0.5),
                 units=("um", "um", "um"))
    lay = plan_layout(iso)
    assert lay.shapes == ((40, 1030, 1030), (20, 515, 515), (10, 257, 257))
    convert(iso, tmp_path / "iso.ome.zarr")
    g = _group(tmp_path / "iso.ome.zarr")
    for k, want in enumerate(_levels(x, (0, 1, 2), 3)):
        np.testing.assert_array_equal(g[str(k)][...], want)
    aniso = Source(x, parse_spec("x.npy", writing=True), axis_order="zyx", resolution=(5, 0.5, 0.5),
                   units=("um", "um", "um"))
    assert plan_layout(aniso).shapes == ((40, 1030, 1030), (40, 515, 515), (40, 257, 257))
    unknown = Source(x, parse_spec("x.npy", writing=True), axis_order="zyx")  # no units: z left alone
    assert plan_layout(unknown).shapes[1] == (40, 515, 515)


def test_streaming_pass_reads_bounded_slabs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    x = _noise((12, 3, 600, 520))
    reads: list[int] = []

    class Counting:
        shape, dtype, ndim = x.shape, x.dtype, x.ndim

        def __getitem__(self, sel):
            out = x[sel]
            reads.append(out.nbytes)
            return out

    monkeypatch.setattr(omezarr, "SLAB_BYTES", 2 * 3 * 600 * 520 * 2)  # two volumes
    src = Source(Counting(), parse_spec("x.npy", writing=True), axis_order="tzyx", chunks=(5, 3, 600, 520))
    calls: list[tuple[int, int]] = []
    convert(src, tmp_path / "x.ome.zarr", progress=lambda d, t: calls.append((d, t)))
    assert max(reads) <= 2 * 3 * 600 * 520 * 2 and sum(reads) == x.nbytes  # every voxel read once
    assert calls[0] == (0, 6) and calls[-1] == (6, 6)
    g = _group(tmp_path / "x.ome.zarr")
    np.testing.assert_array_equal(g["1"][...], mean2x(x, (2, 3)))
    assert g["0"].shards == (2, 3, 600, 520) and g["0"].chunks == (1, 1, 600, 520)


def test_shards_follow_the_source_blocks(tmp_path: Path):
    x = _noise((9, 2, 64, 48))
    save_fast(x, tmp_path / "src", (4, None, None, None)).close()
    convert(tmp_path / "src", tmp_path / "x.ome.zarr")
    a = _group(tmp_path / "x.ome.zarr")["0"]
    assert a.shards == (4, 2, 64, 48) and a.chunks == (1, 1, 64, 48)
    assert a.metadata.dimension_names == ("t", "z", "y", "x")
    files = sorted(p.name for p in (tmp_path / "x.ome.zarr" / "0" / "c").iterdir())
    assert files == ["0", "1", "2"]  # one shard file per source block
    codec = json.loads((tmp_path / "x.ome.zarr" / "0" / "zarr.json").read_text())["codecs"][0]
    inner = codec["configuration"]["codecs"]
    assert [c["name"] for c in inner] == ["bytes", "blosc"]
    assert inner[1]["configuration"]["shuffle"] == "shuffle" and inner[1]["configuration"]["cname"] == "zstd"


# ----------------------------------------------------------------------------- metadata


def _registry():
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    resources = []
    for p in SCHEMAS.rglob("*.schema"):
        doc = json.loads(p.read_text())
        resources.append((doc["$id"], Resource.from_contents(doc, default_specification=DRAFT202012)))
    return Registry().with_resources(resources)


def _validate(instance: dict, version: str) -> None:
    import jsonschema

    schema = json.loads((SCHEMAS / version / "strict_image.schema").read_text())
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    errors = sorted(cls(schema, registry=_registry()).iter_errors(instance), key=str)
    assert not errors, "\n".join(e.message for e in errors)


@pytest.mark.parametrize("ngff,bdv", [("0.5", False), ("0.4", False), ("0.4", True)])
@pytest.mark.parametrize("order,shape", [("tzyx", (4, 3, 700, 530)), ("yx", (1030, 700)), ("tcyx", (3, 2, 40, 50)),
                                         ("czyx", (2, 3, 40, 50))])
def test_metadata_validates_against_the_ngff_schemas(tmp_path: Path, ngff: str, bdv: bool, order: str, shape):
    x = _noise(shape)
    units = tuple("s" if a == "t" else "" if a == "c" else "um" for a in order)
    src = Source(x, parse_spec("x.npy", writing=True), axis_order=order, units=units,
                 resolution=tuple(2.0 if a == "z" else 0.3 for a in order), attrs={"sample": "fish"})
    dst = tmp_path / "x.ome.zarr"
    convert(src, dst, ngff=ngff, bdv=bdv)
    if ngff == "0.5":
        doc = json.loads((dst / "zarr.json").read_text())
        assert doc["node_type"] == "group"
        attrs = doc["attributes"]
        assert attrs["ome"]["version"] == "0.5"
    else:
        attrs = json.loads((dst / ".zattrs").read_text())
        assert attrs["multiscales"][0]["version"] == "0.4"
        assert json.loads((dst / "0" / ".zarray").read_text())["dimension_separator"] == "/"
    _validate(attrs, ngff)
    axes = _ms(attrs)["axes"]
    names = [a["name"] for a in axes]
    assert names == (list("tczyx") if bdv else [a for a in "tczyx" if a in order])
    for a in axes:
        assert a["type"] == {"t": "time", "c": "channel"}.get(a["name"], "space")
        if a["name"] in order and a["name"] != "c":
            assert a["unit"] == ("second" if a["name"] == "t" else "micrometer")
    window = (attrs["ome"] if "ome" in attrs else attrs)["omero"]["channels"][0]["window"]
    assert 100 <= window["start"] < window["end"] <= 170 and window["max"] == 65535
    n_channels = shape[order.index("c")] if "c" in order else 1
    assert len((attrs["ome"] if "ome" in attrs else attrs)["omero"]["channels"]) == n_channels


def test_ome_zarr_py_reads_multiscales_axes_and_units(tmp_path: Path):
    pytest.importorskip("ome_zarr")
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Multiscales, Reader

    x = _noise((3, 2, 1030, 600))
    save_fast(x, tmp_path / "src", (2, None, None, None), resolution=(1, 2, 0.25, 0.25), units=("s", "um", "um", "um"),
              axis_order="tzyx", frame_interval=1.0).close()
    for ngff in ("0.5", "0.4"):
        dst = tmp_path / f"x{ngff}.ome.zarr"
        convert(tmp_path / "src", dst, ngff=ngff)
        location = parse_url(str(dst))
        assert location is not None
        nodes = list(Reader(location)())
        image = nodes[0]
        assert image.load(Multiscales) is not None
        assert [a["name"] for a in image.metadata["axes"]] == ["t", "z", "y", "x"]
        assert [a.get("unit") for a in image.metadata["axes"]] == ["second", "micrometer", "micrometer", "micrometer"]
        assert len(image.data) == 3  # 1030 -> 515 -> 257
        for got, want in zip(image.data, _levels(x, (2, 3), 3)):
            np.testing.assert_array_equal(np.asarray(got), want)


# ----------------------------------------------------------------------------- round trips and reading


@pytest.mark.parametrize("ngff,bdv", [("0.5", False), ("0.4", False), ("0.4", True)])
def test_round_trip_keeps_values_and_physical_metadata(tmp_path: Path, ngff: str, bdv: bool):
    x = _noise((6, 3, 40, 30))
    save_fast(x, tmp_path / "src", (4, None, None, None), resolution=(0.2, 5, 0.6, 0.6), units=("s", "um", "um", "um"),
              axis_order="tzyx", frame_interval=0.2, attrs={"sample": "fish 3", "laser_mW": [1.5, 2]}).close()
    convert(tmp_path / "src", tmp_path / "x.ome.zarr", ngff=ngff, bdv=bdv)
    convert(tmp_path / "x.ome.zarr", tmp_path / "back")
    a, b = SplitDataset(tmp_path / "src"), SplitDataset(tmp_path / "back")
    np.testing.assert_array_equal(b[...], x)
    assert (b.shape, b.axis_order, b.resolution, b.units, b.frame_interval) == (
        a.shape, a.axis_order, a.resolution, a.units, a.frame_interval)
    assert dict(b.attrs) == dict(a.attrs)
    a.close()
    b.close()


def test_axes_out_of_ngff_order_are_reordered_and_restored(tmp_path: Path):
    x = _noise((3, 4, 20, 30))  # z t y x
    src = Source(x, parse_spec("x.npy", writing=True), axis_order="ztyx", units=("um", "s", "um", "um"),
                 resolution=(2.0, 0.5, 0.3, 0.3))
    convert(src, tmp_path / "x.ome.zarr")
    g = _group(tmp_path / "x.ome.zarr")
    np.testing.assert_array_equal(g["0"][...], x.transpose(1, 0, 2, 3))
    assert [a["name"] for a in _ms(dict(g.attrs))["axes"]] == ["t", "z", "y", "x"]
    with open_source(tmp_path / "x.ome.zarr") as back:
        assert back.axis_order == "ztyx" and back.shape == x.shape
        np.testing.assert_array_equal(back[...], x)
        np.testing.assert_array_equal(back[1:3, :, 5], x[1:3, :, 5:6][:, :, 0])


def test_ome_zarr_written_by_ome_zarr_py_converts_at_level_0(tmp_path: Path):
    pytest.importorskip("ome_zarr")
    from ome_zarr.io import parse_url
    from ome_zarr.writer import write_image

    x = _noise((4, 3, 64, 64))
    store = parse_url(str(tmp_path / "theirs.ome.zarr"), mode="w")
    assert store is not None
    root = zarr.open_group(store.store, mode="a")
    write_image(x, root, scale_factors=(2,), axes="tzyx", scale={"t": 250.0, "z": 2.0, "y": 0.5, "x": 0.5},
                axes_units={"t": "millisecond", "z": "micrometer", "y": "micrometer", "x": "micrometer"})
    out = convert(tmp_path / "theirs.ome.zarr", tmp_path / "ds")
    assert set(out.carried) >= {"resolution", "units", "axis_order", "frame_interval"}
    with SplitDataset(tmp_path / "ds") as ds:
        np.testing.assert_array_equal(ds[...], x)
        assert ds.axis_order == "tzyx" and ds.units == ("s", "um", "um", "um")
        assert ds.frame_interval == pytest.approx(0.25)
        assert ds.resolution == pytest.approx((0.25, 2.0, 0.5, 0.5))


def test_legacy_datasets_export(tmp_path: Path):
    for name, path in list(LEGACY_CASES.items())[:4]:
        expected = np.load(DATA / "legacy" / f"{name}.expected.npy")
        if expected.ndim < 2:
            continue
        dst = tmp_path / f"{name}.ome.zarr"
        try:
            convert(path, dst)
        except ValueError as e:  # an axis order NGFF cannot hold is refused by name
            assert "axis" in str(e)
            continue
        with open_source(dst) as back:
            np.testing.assert_array_equal(back[...], expected)


# ----------------------------------------------------------------------------- refusals


def test_refusals_are_clear(tmp_path: Path):
    x = _noise((3, 20, 20))
    npy = parse_spec("x.npy", writing=True)
    with pytest.raises(ValueError, match="OME-Zarr axes are time"):
        convert(Source(x, npy, axis_order="tpx"), tmp_path / "a.ome.zarr")
    with pytest.raises(ValueError, match="need y and x"):
        convert(Source(x, npy, axis_order="tzy"), tmp_path / "b.ome.zarr")
    with pytest.raises(ValueError, match="NGFF version '0.3'"):
        convert(Source(x, npy, axis_order="tyx"), tmp_path / "c.ome.zarr", ngff="0.3")
    with pytest.raises(ValueError, match="block shape does not apply"):
        convert(Source(x, npy, axis_order="tyx"), tmp_path / "d.ome.zarr", shape_block="1")
    with pytest.raises(ValueError, match="NGFF options apply to zarr"):
        convert(Source(x, npy, axis_order="tyx"), tmp_path / "e.h5", ngff="0.5")
    assert not any(tmp_path.iterdir())  # nothing left behind
    convert(Source(x, npy, axis_order="tyx"), tmp_path / "f.ome.zarr")
    with pytest.raises(FileExistsError):
        convert(Source(x, npy, axis_order="tyx"), tmp_path / "f.ome.zarr")


def test_plain_zarr_destination_with_ngff_option(tmp_path: Path):
    x = _noise((2, 30, 20))
    convert(Source(x, parse_spec("x.npy", writing=True), axis_order="tyx"), tmp_path / "x.zarr", ngff="0.4")
    assert "multiscales" in json.loads((tmp_path / "x.zarr" / ".zattrs").read_text())
    with open_source(tmp_path / "x.zarr") as back:  # a group with multiscales: level 0
        np.testing.assert_array_equal(back[...], x)


def test_cli_convert_to_ome_zarr(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    x = _noise((4, 2, 30, 20))
    save_fast(x, tmp_path / "src", (2, None, None, None), axis_order="tzyx").close()
    assert main(["convert", str(tmp_path / "src"), str(tmp_path / "x.ome.zarr"), "-q"]) == 0
    assert "OME-Zarr" in capsys.readouterr().out
    assert main(["convert", str(tmp_path / "src"), str(tmp_path / "y.ome.zarr"), "--ngff", "0.4", "-q"]) == 0
    assert (tmp_path / "y.ome.zarr" / ".zattrs").exists()
    assert main(["convert", str(tmp_path / "src"), str(tmp_path / "bdv.ome.zarr"), "--bdv", "-q"]) == 0
    assert _group(tmp_path / "bdv.ome.zarr")["0"].shape == (4, 1, 2, 30, 20)
    assert main(["convert", str(tmp_path / "x.ome.zarr"), str(tmp_path / "back"), "-q"]) == 0
    np.testing.assert_array_equal(SplitDataset(tmp_path / "back")[...], x)


# ----------------------------------------------------------------------------- hostile OME metadata

_FUZZ = textwrap.dedent("""
    import json, sys, random
    from pathlib import Path
    from split_dataset.convert import open_source
    from split_dataset.errors import SourceError
    root = Path(sys.argv[1]); seed = int(sys.argv[2]); n = int(sys.argv[3])
    doc = json.loads((root / "zarr.json").read_text())
    level = (root / "0" / "zarr.json").read_bytes()
    extremes = [None, 0, -1, 2**63, 1e308, float("nan"), "", "x" * 10000, [], {}, [None], {"path": "../.."}, True]
    rng = random.Random(seed)
    def paths(node, prefix=()):
        yield prefix
        if isinstance(node, dict):
            for k, v in node.items():
                yield from paths(v, prefix + (k,))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from paths(v, prefix + (i,))
    targets = [p for p in paths(doc["attributes"]) if p]
    for case in range(n):
        mutated = json.loads(json.dumps(doc))
        for _ in range(rng.randint(1, 3)):
            p = rng.choice(targets)
            node = mutated["attributes"]
            try:
                for k in p[:-1]:
                    node = node[k]
                if rng.random() < 0.3 and isinstance(node, dict):
                    node.pop(p[-1], None)
                else:
                    node[p[-1]] = rng.choice(extremes)
            except (KeyError, IndexError, TypeError):
                pass
        (root / "zarr.json").write_text(json.dumps(mutated))
        (root / "0" / "zarr.json").write_bytes(level)
        if case % 3 == 2:  # bytes of the group's or level 0's zarr.json flipped or cut
            target = root / rng.choice(["zarr.json", "0/zarr.json"])
            raw = bytearray(target.read_bytes())
            if rng.random() < 0.5:
                del raw[rng.randrange(len(raw)):]
            else:
                for _ in range(rng.randint(1, 4)):
                    raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
            target.write_bytes(bytes(raw))
        try:
            with open_source(root) as src:
                src[(0,) * (src.ndim - 2)] if src.ndim > 2 else src[...]
        except (SourceError, ValueError, OSError):
            pass
    print("ok")
""")


@pytest.mark.parametrize("seed,n", [(0, 40), pytest.param(1, 600, marks=pytest.mark.full)])
def test_fuzzed_ome_metadata_never_crashes(tmp_path: Path, seed: int, n: int):
    x = _noise((2, 2, 20, 30))
    save_fast(x, tmp_path / "src", (1, None, None, None), axis_order="tzyx", resolution=(1, 2, 0.5, 0.5),
              units=("s", "um", "um", "um")).close()
    convert(tmp_path / "src", tmp_path / "x.ome.zarr")
    proc = subprocess.run([sys.executable, "-c", _FUZZ, str(tmp_path / "x.ome.zarr"), str(seed), str(n)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]
