"""info and verify of datasets given by URL (split_dataset.remote.check): the local answers, by URL.

Most tests use fsspec's memory:// filesystem; one HTTP and one S3 case use the servers of
remote_servers.py, counting the requests made.
"""

from __future__ import annotations

import io
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (blosc, for h5py reading a damaged block below)
import numpy as np
import pytest
from conftest import LEGACY_CASES, save_fast
from remote_servers import (  # noqa: F401 - the fixtures http_server and s3_server
    fixture_http_server,
    fixture_s3_server,
    s3_storage_options,
    upload_folder,
)

from split_dataset.cli import main
from split_dataset.errors import CorruptBlockError
from split_dataset.info import info
from split_dataset.remote.check import VERIFY_BLOCKS, BytesSource, info_remote, open_bytes
from split_dataset.verify import verify

fsspec = pytest.importorskip("fsspec")

X = np.arange(23 * 3 * 16 * 16, dtype=np.uint16).reshape(23, 3, 16, 16)  # 5 blocks of 5 frames, the last of 3


@pytest.fixture
def mem() -> Iterator[str]:
    """A fresh folder on fsspec's (process-wide) memory filesystem, removed afterwards."""
    fs = fsspec.filesystem("memory")
    root = f"memory://check-{uuid.uuid4().hex[:12]}"
    yield root
    if fs.exists(root):
        fs.rm(root, recursive=True)


def _fs():
    return fsspec.filesystem("memory")


def upload(local: Path, url: str) -> str:
    _fs().put(str(local), url, recursive=True)
    return url


def make(tmp_path: Path, mem: str, name: str = "ds", **kw) -> tuple[Path, str]:
    local = tmp_path / name
    save_fast(X, local, (5,), **kw)
    return local, upload(local, f"{mem}/{name}")


def edit(url: str, change: Callable[[bytes], bytes]) -> None:
    _fs().pipe(url, change(_fs().cat(url)))


def flip_in_chunk(local_block: Path, chunk: int = 1) -> Callable[[bytes], bytes]:
    """Flip a bit near the end of the stored bytes of one chunk (blosc still decodes it, to other values)."""
    with h5py.File(local_block, "r") as f:
        key = next(k for k in f if k.startswith("stack"))
        info_ = f[key].id.get_chunk_info(chunk)
    at = info_.byte_offset + info_.size - 3

    def change(data: bytes) -> bytes:
        b = bytearray(data)
        b[at] ^= 0x10
        return bytes(b)

    return change


def run(capsys, *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# ----------------------------------------------------------------------------- info


def test_info_by_url_is_the_local_info(tmp_path, mem) -> None:
    local, url = make(tmp_path, mem, attrs={"fish": "F1"}, resolution=(2, 1, 0.5, 0.5))
    here, there = info(local), info(url)
    assert there["path"] == url and here["path"] == str(local.resolve())
    assert {**there, "path": None} == {**here, "path": None}
    assert there["checksums"] is True and there["chunk_index"] == {"blocks": 5, "current": 5}
    assert info_remote(url) == there


def test_info_without_checksums_or_index(tmp_path, mem) -> None:
    _, url = make(tmp_path, mem)
    _fs().rm(f"{url}/SHA256SUMS")
    _fs().rm(f"{url}/chunk_index.bin")
    d = info(url)
    assert d["checksums"] is False and d["chunk_index"] is None and d["warnings"] == []


def test_info_current_counts_records_of_the_objects_size(tmp_path, mem) -> None:
    local, url = make(tmp_path, mem)
    edit(f"{url}/0001.h5", lambda b: b + b"\0" * 10)  # another object, of another size
    edit(f"{url}/0002.h5", flip_in_chunk(local / "0002.h5"))  # same size: no way to tell here (verify does)
    d = info(url)
    assert d["chunk_index"] == {"blocks": 5, "current": 4}
    assert d["bytes_on_disk"] == sum(p.stat().st_size for p in local.glob("*.h5")) + 10


def test_info_of_missing_blocks_and_a_damaged_index(tmp_path, mem) -> None:
    local, url = make(tmp_path, mem)
    _fs().rm(f"{url}/0003.h5")
    edit(f"{url}/chunk_index.bin", lambda b: b[:-1] + bytes([b[-1] ^ 1]))
    d = info(url)
    assert d["missing_blocks"] == ["0003.h5"] and d["n_blocks_present"] == 4
    assert d["bytes_on_disk"] == sum(p.stat().st_size for p in local.glob("*.h5") if p.name != "0003.h5")
    assert d["chunk_index"] is None
    assert any("missing" in w and url in w for w in d["warnings"])
    assert any("chunk_index.bin" in w and "ignored" in w for w in d["warnings"])


@pytest.mark.parametrize("name", sorted(LEGACY_CASES))
def test_info_and_verify_of_every_legacy_fixture(name, mem) -> None:
    url = upload(LEGACY_CASES[name], f"{mem}/{name}")
    here, there = info(LEGACY_CASES[name]), info(url)
    assert {**there, "path": None} == {**here, "path": None}
    report = verify(url)
    assert report.ok, report.problems
    assert {**report.to_dict(), "path": None} == {**verify(LEGACY_CASES[name]).to_dict(), "path": None}
    assert report.n_checked == report.n_blocks > 0 and str(report.path) == url


# ----------------------------------------------------------------------------- verify


@pytest.mark.parametrize("remove", [(), ("SHA256SUMS",), ("chunk_index.bin",), ("SHA256SUMS", "chunk_index.bin")])
def test_verify_a_whole_dataset(tmp_path, mem, remove) -> None:
    _, url = make(tmp_path, mem)
    for name in remove:
        _fs().rm(f"{url}/{name}")
    calls: list[tuple[int, int]] = []
    report = verify(url, progress=lambda done, total: calls.append((done, total)))
    assert report.ok, report.problems
    assert report.n_checked == report.n_blocks == 5
    assert report.checksums_available is ("SHA256SUMS" not in remove)
    assert report.n_checksums_matched == (0 if "SHA256SUMS" in remove else 5)
    assert calls == [(i, 5) for i in range(6)]
    assert any("checksums not available" in n for n in report.notes) is ("SHA256SUMS" in remove)


def test_a_flipped_byte_is_found_by_sha256_and_by_the_chunk_index(tmp_path, mem) -> None:
    local, url = make(tmp_path, mem)
    change = flip_in_chunk(local / "0002.h5")
    edit(f"{url}/0002.h5", change)
    with h5py.File(io.BytesIO(change((local / "0002.h5").read_bytes())), "r") as f:  # the point: it decodes
        decoded = f["stack_4D"][:]
    assert decoded.shape == (5, 3, 16, 16) and not np.array_equal(decoded, X[10:15])
    report = verify(url)
    assert report.damaged_files == [f"{url}/0002.h5"]
    kinds = {p.kind: p.message for p in report.problems}
    assert set(kinds) == {"checksum", "changed"}
    assert "does not match its checksum in chunk_index.bin" in kinds["changed"] and "its size unchanged" in kinds["changed"]
    _fs().rm(f"{url}/SHA256SUMS")  # without checksums, the chunk index still tells
    assert [p.kind for p in verify(url).problems] == ["changed"]


def test_a_flipped_byte_in_an_uncompressed_dataset(tmp_path, mem) -> None:
    local, url = make(tmp_path, mem, compression="none")
    edit(f"{url}/0001.h5", flip_in_chunk(local / "0001.h5"))
    report = verify(url)
    assert [(p.file, p.kind) for p in report.problems] == [(f"{url}/0001.h5", "checksum")]
    assert report.n_checked == 5  # it decodes: only the checksum tells


def _wrong_shape(data: bytes) -> bytes:
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f["stack_4D"] = np.zeros((4, 3, 16, 16), np.uint16)
    return buf.getvalue()


def _wrong_dtype(data: bytes) -> bytes:
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f["stack_4D"] = np.zeros((5, 3, 16, 16), np.float32)
    return buf.getvalue()


def _garbage(data: bytes) -> bytes:
    return np.random.default_rng(1).integers(0, 256, len(data), dtype=np.uint8).tobytes()


@pytest.mark.parametrize(
    "change, kinds, checked, stale",
    [
        pytest.param(lambda b: b[: len(b) // 2], ["checksum", "corrupt"], 4, True, id="truncated"),
        pytest.param(None, ["missing"], 4, False, id="missing"),
        pytest.param(_wrong_shape, ["checksum", "mismatch"], 4, True, id="wrong-shape"),
        pytest.param(_wrong_dtype, ["checksum", "mismatch"], 4, True, id="wrong-dtype"),
        pytest.param(_garbage, ["checksum", "corrupt"], 4, False, id="random-bytes"),
    ],
)
def test_verify_names_the_damaged_object(tmp_path, mem, capsys, change, kinds, checked, stale) -> None:
    _, url = make(tmp_path, mem)
    block = f"{url}/0002.h5"
    if change is None:
        _fs().rm(block)
    else:
        edit(block, change)
    report = verify(url)
    assert report.damaged_files == [block]
    assert sorted(p.kind for p in report.problems) == kinds
    assert report.n_checked == checked
    assert any("chunk_index.bin is out of date for 1 block(s) (0002.h5)" in n for n in report.notes) is stale
    code, out, err = run(capsys, "verify", url, "--json")
    assert code == 1 and err == ""
    d = json.loads(out)
    assert d["ok"] is False and d["path"] == url and {p["file"] for p in d["problems"]} == {block}
    code, out, _ = run(capsys, "verify", url)
    assert code == 1 and out.splitlines()[0].startswith(f"{block}: ") and out.splitlines()[-1].startswith(
        f"DAMAGED: {url}: ")


def test_a_missing_last_block_and_an_unlisted_checksum(tmp_path, mem) -> None:
    _, url = make(tmp_path, mem)
    _fs().rm(f"{url}/0004.h5")
    sums = _fs().cat(f"{url}/SHA256SUMS").decode().splitlines(keepends=True)
    _fs().pipe(f"{url}/SHA256SUMS", "".join(line for line in sums if "0001.h5" not in line).encode())
    report = verify(url)
    assert [(p.file.rsplit("/", 1)[-1], p.kind) for p in report.problems] == [
        ("0001.h5", "no-checksum"), ("0004.h5", "missing")]
    assert "(listed in SHA256SUMS)" in report.problems[1].message
    assert any("the metadata describes 23 frames" in n and url not in n for n in report.notes), report.notes


def test_a_damaged_chunk_index(tmp_path, mem) -> None:
    _, url = make(tmp_path, mem)
    edit(f"{url}/chunk_index.bin", lambda b: b[:100] + bytes([b[100] ^ 1]) + b[101:])
    report = verify(url)
    assert [(p.file, p.kind) for p in report.problems] == [(f"{url}/chunk_index.bin", "corrupt")]
    assert "checksum does not match" in report.problems[0].message and report.n_checked == 5


def test_unreadable_metadata_and_not_a_dataset(tmp_path, mem, capsys) -> None:
    _, url = make(tmp_path, mem)
    _fs().pipe(f"{url}/stack_metadata.json", b'{"shape_full": [23, 3')
    code, out, err = run(capsys, "verify", url)
    assert code == 1 and out.startswith(f"{url}/stack_metadata.json: metadata: ")
    code, out, err = run(capsys, "info", url)
    assert code == 1 and out == "" and "not valid JSON" in err
    for empty, why in ((f"{mem}/nothing", "is not a split dataset"), (url + "/0000.h5", "is a file; a split dataset")):
        for command in ("info", "verify"):
            code, out, err = run(capsys, command, empty)
            assert code == 2 and out == "" and err.count("\n") == 1 and why in err and empty in err, err


def test_a_block_with_a_stray_extra_listed_in_checksums(tmp_path, mem) -> None:
    _, url = make(tmp_path, mem)
    _fs().pipe(f"{url}/extra.h5", b"x")
    _fs().pipe(f"{url}/SHA256SUMS", _fs().cat(f"{url}/SHA256SUMS") + b"a" * 64 + b"  extra.h5\n" + b"b" * 64
               + b"  gone.h5\n")
    report = verify(url)
    assert [(p.file, p.kind) for p in report.problems] == [(f"{url}/gone.h5", "missing")]
    assert any("extra.h5" in n and "not checked" in n for n in report.notes)


def test_blocks_are_checked_a_few_at_a_time(tmp_path, mem, monkeypatch) -> None:
    from split_dataset.remote import check

    _, url = make(tmp_path, mem)
    lock, now, peak = threading.Lock(), [0], [0]
    inner = check._verify_block

    def counted(*args, **kw):
        with lock:
            now[0] += 1
            peak[0] = max(peak[0], now[0])
        try:
            return inner(*args, **kw)
        finally:
            with lock:
                now[0] -= 1

    monkeypatch.setattr(check, "_verify_block", counted)
    assert verify(url).ok and 1 <= peak[0] <= VERIFY_BLOCKS


def test_bytes_source_and_open_bytes(tmp_path) -> None:
    local = tmp_path / "ds"
    save_fast(X, local, (5,))
    data = (local / "0001.h5").read_bytes()
    src = BytesSource(data, "memory://x/0001.h5")
    views = [memoryview(bytearray(8)), memoryview(bytearray(4))]
    src.read_many([(views[0], 0), (views[1], len(data) - 4)])
    assert bytes(views[0]) == data[:8] and bytes(views[1]) == data[-4:]
    with pytest.raises(Exception, match="past the end of memory://x/0001.h5"):
        src.read_exactly(memoryview(bytearray(8)), len(data) - 4)
    with open_bytes(data, "memory://x/0001.h5", (1, 0, 0, 0), None) as handle:
        assert handle.mode == "direct" and str(handle.path) == "memory://x/0001.h5"
        out = np.empty(handle.shape, handle.dtype)
        handle.read(tuple(slice(0, n, 1) for n in handle.shape), out, tuple(slice(0, n) for n in handle.shape))
        np.testing.assert_array_equal(out, X[5:10])
    with pytest.raises(CorruptBlockError, match="not an HDF5 file"):
        open_bytes(b"not hdf5" * 100, "memory://x/0001.h5", (1, 0, 0, 0), None)


# ----------------------------------------------------------------------------- command line


def test_cli_info_and_verify_by_url(tmp_path, mem, capsys) -> None:
    local, url = make(tmp_path, mem)
    code, out, err = run(capsys, "info", url, "--json", "--storage-options", "{}")
    assert code == 0 and err == ""
    assert json.loads(out) == {**info(local), "path": url}
    code, out, err = run(capsys, "info", url)
    assert code == 0 and url in out
    code, out, err = run(capsys, "verify", url, "--json", "--storage-options", "{}")
    assert code == 0 and json.loads(out)["ok"] is True and json.loads(out)["checksums_verified"] is True
    code, out, _ = run(capsys, "verify", url)
    assert code == 0 and out.splitlines()[-1].startswith(f"OK: {url}: all 5 blocks present")
    for bad in ("[1]", "{nope"):
        code, out, err = run(capsys, "verify", url, "--storage-options", bad)
        assert code == 2 and "--storage-options" in err
    code, out, err = run(capsys, "info", local, "--storage-options", '{"anon": true}')
    assert code == 2 and "storage_options apply to datasets given by URL" in err


# ----------------------------------------------------------------------------- real servers


def test_over_http(http_server, tmp_path, capsys) -> None:
    save_fast(X, tmp_path / "ds", (5,))
    url = http_server.url_for("ds")
    http_server.reset_log()
    d = info(url)
    assert d["path"] == url and d["bytes_on_disk"] == sum(p.stat().st_size for p in (tmp_path / "ds").glob("*.h5"))
    # no listing over HTTP: metadata, chunk index, one HEAD per block and one for SHA256SUMS
    assert http_server.count() == 5 + 3 and http_server.count(method="HEAD") == 5 + 1
    http_server.reset_log()
    report = verify(url)
    assert report.ok and report.checksums_verified, report.problems
    # metadata, chunk index, SHA256SUMS, one GET per block, each block whole
    assert http_server.count() == 5 + 3 and http_server.count(method="HEAD") == 0
    for i in range(5):
        (request,) = http_server.requests(f"000{i}.h5")
        assert request.range is None and request.bytes_sent == (tmp_path / "ds" / f"000{i}.h5").stat().st_size
    (tmp_path / "ds" / "0002.h5").unlink()  # a plain HTTP server cannot list: a 404 tells
    d = info(url)
    assert d["missing_blocks"] == ["0002.h5"] and d["n_blocks_present"] == 4
    code, out, _ = run(capsys, "verify", url, "--json")
    assert code == 1
    assert [(p["file"], p["kind"]) for p in json.loads(out)["problems"]] == [(f"{url}/0002.h5", "missing")]


def test_over_s3(s3_server, tmp_path, capsys) -> None:
    save_fast(X, tmp_path / "ds", (5,))
    url = upload_folder(s3_server, tmp_path / "ds", f"{s3_server.bucket}/ds")
    options = json.dumps(s3_storage_options(s3_server))
    s3_server.reset_log()
    code, out, err = run(capsys, "info", url, "--json", "--storage-options", options)
    assert code == 0, err
    assert json.loads(out) == {**info(tmp_path / "ds"), "path": url}
    assert s3_server.count() == 3  # the listing (with sizes), the metadata, the chunk index
    s3_server.reset_log()
    code, out, err = run(capsys, "verify", url, "--json", "--storage-options", options)
    assert code == 0 and json.loads(out)["checksums_verified"] is True, out + err
    assert s3_server.count() == 5 + 4  # listing, metadata, chunk index, SHA256SUMS, a GET per block
    s3_server.client().delete_object(Bucket=s3_server.bucket, Key="ds/0003.h5")
    s3_server.reset_log()
    code, out, _ = run(capsys, "verify", url, "--json", "--storage-options", options)
    assert code == 1
    assert [(p["file"], p["kind"]) for p in json.loads(out)["problems"]] == [(f"{url}/0003.h5", "missing")]
    assert s3_server.count("0003.h5") == 0  # the listing says it is not there: never asked for


def test_a_block_whose_array_is_a_link_out_of_the_dataset(tmp_path, mem) -> None:
    _, url = make(tmp_path, mem)

    def linked(data: bytes) -> bytes:
        buf = io.BytesIO()
        with h5py.File(buf, "w") as f:
            f["stack_4D"] = h5py.ExternalLink("/etc/elsewhere.h5", "/stack_4D")
        return buf.getvalue()

    edit(f"{url}/0001.h5", linked)
    report = verify(url)
    corrupt = [p for p in report.problems if p.kind == "corrupt"]
    assert [p.file for p in corrupt] == [f"{url}/0001.h5"]
    assert "ExternalLink" in corrupt[0].message and "refused" in corrupt[0].message
    assert f"{url}/0001.h5" in corrupt[0].message and "BytesIO" not in corrupt[0].message
