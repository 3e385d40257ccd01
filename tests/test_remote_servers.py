"""The test servers of tests/remote_servers.py: HTTP semantics, knobs and log, seen from urllib and
http.client, then from fsspec's HTTPFileSystem and s3fs (what the remote-reading tests rely on)."""

from __future__ import annotations

import gc
import http.client
import os
import statistics
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from email.message import Message
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
from remote_servers import (  # noqa: F401 - the fixtures http_server and s3_server
    LOOPBACK,
    LoggedRequest,
    RangeHTTPServer,
    S3Server,
    fixture_http_server,
    fixture_s3_server,
    s3_storage_options,
    upload_folder,
)

DATA = bytes(range(256)) * 4  # 1024 bytes, every slice distinct enough
FILE = "/ds/0000.h5"
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture
def served(http_server: RangeHTTPServer, tmp_path: Path) -> RangeHTTPServer:
    """The http_server over tmp_path with ds/0000.h5 (DATA) and ds/stack_metadata.json."""
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "0000.h5").write_bytes(DATA)
    (tmp_path / "ds" / "stack_metadata.json").write_text('{"shape_full": [4, 16, 16]}')
    return http_server


def fetch(url: str, method: str = "GET", headers: dict[str, str] | None = None, timeout: float = 10) -> tuple[
    int, Message, bytes
]:
    """Status, headers and body, whatever the status."""
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with DIRECT.open(request, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers, error.read()


def connect(server: RangeHTTPServer) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(LOOPBACK, int(server.url.rsplit(":", 1)[1]), timeout=10)


def threads_of(server: RangeHTTPServer | S3Server) -> Callable[[], list[str]]:
    """A function listing the live threads of ``server`` (named "<class>:<port>..."), usable after stop()."""
    name = f"{type(server).__name__}:{server.url.rsplit(':', 1)[1]}"
    return lambda: [t.name for t in threading.enumerate() if t.name in (name, name + "-connection")]


# ----------------------------------------------------------------------------- HTTP, plain clients


def test_head_has_size_validators_and_no_body(served: RangeHTTPServer) -> None:
    status, headers, body = fetch(served.url + FILE, "HEAD")
    assert (status, body) == (200, b"")
    assert headers["Content-Length"] == "1024"
    assert headers["Accept-Ranges"] == "bytes"
    assert headers["ETag"].startswith('"') and headers["ETag"].endswith('"')
    mtime = os.stat(served.root / "ds" / "0000.h5").st_mtime
    assert abs(parsedate_to_datetime(headers["Last-Modified"]).timestamp() - mtime) < 1
    assert served.requests() == [LoggedRequest("HEAD", FILE, None, 200, 0)]


def test_get_whole_file(served: RangeHTTPServer) -> None:
    assert served.url_for(served.root / "ds" / "0000.h5") == served.url_for("ds/0000.h5") == served.url + FILE
    assert served.url_for() == served.url_for(served.root) == served.url
    status, headers, body = fetch(served.url_for("ds/0000.h5"))
    assert (status, body) == (200, DATA)
    assert "Content-Range" not in headers
    assert served.requests() == [LoggedRequest("GET", FILE, None, 200, 1024)]
    assert served.bytes_sent("0000.h5") == 1024


@pytest.mark.parametrize(
    ("header", "start", "stop"),
    [
        ("bytes=2-5", 2, 6),
        ("bytes=0-0", 0, 1),
        ("bytes=1000-", 1000, 1024),
        ("bytes=-10", 1014, 1024),
        ("bytes=1020-5000", 1020, 1024),  # clipped to the end
        ("bytes=-5000", 0, 1024),  # the whole file, still as a range
        ("bytes = 3 - 4", 3, 5),
    ],
)
def test_single_ranges(served: RangeHTTPServer, header: str, start: int, stop: int) -> None:
    status, headers, body = fetch(served.url + FILE, headers={"Range": header})
    assert (status, body) == (206, DATA[start:stop])
    assert headers["Content-Range"] == f"bytes {start}-{stop - 1}/1024"
    assert headers["Content-Length"] == str(stop - start)
    assert served.requests() == [LoggedRequest("GET", FILE, header, 206, stop - start)]


@pytest.mark.parametrize("header", ["bytes=1024-", "bytes=5000-6000", "bytes=-0"])
def test_unsatisfiable_ranges(served: RangeHTTPServer, header: str) -> None:
    status, headers, _ = fetch(served.url + FILE, headers={"Range": header})
    assert status == 416
    assert headers["Content-Range"] == "bytes */1024"


@pytest.mark.parametrize("header", ["bytes=5-2", "bytes=0-1,4-5", "items=0-1", "bytes=-", "bytes=a-b"])
def test_other_range_headers_are_ignored(served: RangeHTTPServer, header: str) -> None:
    # RFC 9110: a server may ignore a Range it does not support or that is invalid, and send it all
    assert fetch(served.url + FILE, headers={"Range": header})[::2] == (200, DATA)


def test_empty_file_ranges(served: RangeHTTPServer) -> None:
    (served.root / "empty").write_bytes(b"")
    assert fetch(served.url + "/empty")[::2] == (200, b"")
    assert fetch(served.url + "/empty", headers={"Range": "bytes=-5"})[0] == 416


@pytest.mark.parametrize(
    "path", ["/", "/ds", "/ds/", "/nothing", "/ds/0000.h5/", "/../ds/0000.h5", "/ds/%2e%2e/ds/0000.h5", "/ds/..%2f.."]
)
def test_folders_and_escapes_are_not_found(served: RangeHTTPServer, path: str) -> None:
    conn = connect(served)
    try:
        for method in ("GET", "HEAD"):
            conn.request(method, path)
            response = conn.getresponse()
            response.read()
            assert response.status == 404, (method, path)
    finally:
        conn.close()


def test_symlink_out_of_root_is_not_followed(served: RangeHTTPServer, tmp_path_factory: pytest.TempPathFactory) -> None:
    outside = tmp_path_factory.mktemp("outside") / "secret"
    outside.write_bytes(b"secret")
    (served.root / "link").symlink_to(outside)
    assert fetch(served.url + "/link")[0] == 404


def test_listing_option(served: RangeHTTPServer) -> None:
    served.listing = True
    status, headers, body = fetch(served.url + "/ds/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'href="0000.h5"' in body and b'href="stack_metadata.json"' in body
    conn = connect(served)
    try:
        conn.request("GET", "/ds")
        response = conn.getresponse()
        response.read()
        assert (response.status, response.headers["Location"]) == (301, "/ds/")
    finally:
        conn.close()
    assert fetch(served.url + "/")[2].count(b'href="ds/"') == 1


def test_read_only(served: RangeHTTPServer) -> None:
    status, headers, _ = fetch(served.url + FILE, "PUT")
    assert status == 405 and headers["Allow"] == "GET, HEAD"
    request = urllib.request.Request(served.url + FILE, data=b"x" * 100, method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        DIRECT.open(request, timeout=10)
    info.value.close()
    assert (served.root / "ds" / "0000.h5").read_bytes() == DATA


def test_keep_alive(served: RangeHTTPServer) -> None:
    conn = connect(served)
    try:
        statuses = []
        for method, path, headers in [
            ("HEAD", FILE, {}), ("GET", FILE, {"Range": "bytes=0-9"}), ("GET", "/nothing", {}), ("GET", FILE, {})
        ]:
            conn.request(method, path, headers=headers)
            response = conn.getresponse()
            response.read()
            statuses.append(response.status)
            assert not response.will_close
        assert statuses == [200, 206, 404, 200]
        assert served.connections == 1
    finally:
        conn.close()


def test_serve_another_folder(served: RangeHTTPServer, tmp_path_factory: pytest.TempPathFactory) -> None:
    other = tmp_path_factory.mktemp("other")
    (other / "x").write_bytes(b"xyz")
    assert served.serve(other) == served.url
    assert fetch(served.url + "/x")[::2] == (200, b"xyz")
    assert fetch(served.url + FILE)[0] == 404


def test_transient_failures(served: RangeHTTPServer) -> None:
    served.fail_next(2)
    statuses = [fetch(served.url + FILE, "HEAD")[0] for _ in range(3)]
    assert statuses == [503, 503, 200]
    served.fail_next(1, status=500)
    assert fetch(served.url + "/anything")[0] == 500
    assert [r.status for r in served.requests()] == [503, 503, 200, 500]


def test_knobs_under_concurrent_requests(served: RangeHTTPServer) -> None:
    served.fail_next(5)
    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(lambda _: fetch(served.url + FILE, "HEAD")[0], range(20)))
    assert sorted(statuses) == [200] * 15 + [503] * 5
    assert served.count(FILE, "HEAD") == 20


def test_restart(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"f")
    server = RangeHTTPServer(tmp_path)
    for _ in range(2):
        with server:
            assert fetch(server.url + "/f")[::2] == (200, b"f")
    assert server.count("/f") == 2


def test_persistent_path_failures(served: RangeHTTPServer) -> None:
    served.fail_paths = {FILE: 500, "ds/stack_metadata.json": 403}
    for _ in range(2):
        assert fetch(served.url + FILE)[0] == 500
        assert fetch(served.url + "/ds/stack_metadata.json")[0] == 403
    served.fail_paths = {}
    assert fetch(served.url + FILE)[0] == 200


def test_ignore_range(served: RangeHTTPServer) -> None:
    served.ignore_range = True
    status, headers, body = fetch(served.url + FILE, headers={"Range": "bytes=10-19"})
    assert (status, body) == (200, DATA)
    assert "Content-Range" not in headers
    assert served.requests() == [LoggedRequest("GET", FILE, "bytes=10-19", 200, 1024)]


def test_transfer_broken_off_by_the_client(served: RangeHTTPServer) -> None:
    big = os.urandom(16 << 20)  # much larger than the sockets' buffers (up to a few MiB on loopback)
    (served.root / "big").write_bytes(big)
    served.ignore_range = True
    conn = connect(served)
    conn.request("GET", "/big", headers={"Range": "bytes=0-99"})
    response = conn.getresponse()
    assert response.status == 200  # the client sees the range was ignored, and hangs up
    conn.close()
    assert served.wait_idle()
    assert served.bytes_sent("/big") < len(big) // 2


def test_truncated_bodies(served: RangeHTTPServer) -> None:
    served.truncate_body = 100
    with pytest.raises(http.client.IncompleteRead) as info:
        fetch(served.url + FILE)
    assert len(info.value.partial) == 100
    assert fetch(served.url + FILE, headers={"Range": "bytes=0-49"})[::2] == (206, DATA[:50])  # short enough
    served.truncate_body = None
    served.truncate_next(1, keep=10)
    with pytest.raises(http.client.IncompleteRead):
        fetch(served.url + FILE)
    assert fetch(served.url + FILE)[2] == DATA
    assert [r.bytes_sent for r in served.requests()] == [100, 50, 10, 1024]


def test_mangle(served: RangeHTTPServer) -> None:
    served.mangle = lambda path, body: body[::-1] + path.encode()
    status, headers, body = fetch(served.url + FILE, headers={"Range": "bytes=0-3"})
    assert (status, body) == (206, DATA[3::-1] + FILE.encode())
    assert headers["Content-Length"] == str(4 + len(FILE))
    assert fetch(served.url + FILE, "HEAD")[1]["Content-Length"] == "1024"
    with served.untracked():
        assert fetch(served.url + FILE)[2] == DATA
    served.mangle = None
    assert fetch(served.url + FILE)[2] == DATA


def test_latency(served: RangeHTTPServer) -> None:
    served.latency = 0.15
    t0 = time.perf_counter()
    fetch(served.url + FILE, "HEAD")
    fetch(served.url + FILE, headers={"Range": "bytes=0-0"})
    assert time.perf_counter() - t0 >= 0.3
    served.latency = 0


def test_bad_knob_values(served: RangeHTTPServer) -> None:
    with pytest.raises(ValueError):
        served.latency = -1
    with pytest.raises(ValueError):
        served.fail_next(1, status=200)
    with pytest.raises(ValueError):
        served.truncate_body = -1


def test_stall_times_out_and_does_not_hold_up_stop(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(DATA)
    server = RangeHTTPServer(tmp_path).start()
    threads = threads_of(server)
    try:
        server.stall = True
        with pytest.raises((TimeoutError, urllib.error.URLError)):
            fetch(server.url + "/f", timeout=0.3)
        assert server.requests() == [LoggedRequest("GET", "/f", None, 0, 0)]
        idle = connect(server)  # a client that waits forever on a stalled request
        idle.request("GET", "/f")
    finally:
        t0 = time.perf_counter()
        server.stop()
        assert time.perf_counter() - t0 < 3
    idle.close()
    assert threads() == []


def test_stop_ends_keep_alive_connections_without_leaks(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(DATA)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        server = RangeHTTPServer(tmp_path).start()
        threads = threads_of(server)
        idle = connect(server)
        idle.request("GET", "/f")
        idle.getresponse().read()  # the connection stays open, its server thread waits for a request
        assert server.connections == 1 and len(threads()) == 2  # serving, and the connection's
        t0 = time.perf_counter()
        server.stop()
        assert time.perf_counter() - t0 < 3
        assert threads() == []
        idle.close()
        del server
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []


# ----------------------------------------------------------------------------- HTTP, fsspec


@pytest.fixture
def http_fs() -> Iterator[Any]:
    """A fresh fsspec HTTPFileSystem (no instance cache), its aiohttp session closed afterwards."""
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("http", skip_instance_cache=True)
    yield fs
    if fs._session is not None:
        fsspec.asyn.sync(fs.loop, fs._session.close)


def test_fsspec_cat_file_range_is_one_ranged_get(served: RangeHTTPServer, http_fs: Any) -> None:
    assert http_fs.cat_file(served.url + FILE, 10, 20) == DATA[10:20]
    assert served.requests() == [LoggedRequest("GET", FILE, "bytes=10-19", 206, 10)]
    served.reset_log()
    assert http_fs.cat_file(served.url + FILE, -10) == DATA[-10:]  # a suffix range: no HEAD either
    assert served.requests() == [LoggedRequest("GET", FILE, "bytes=-10", 206, 10)]


def test_fsspec_info_is_one_head_without_listing(served: RangeHTTPServer, http_fs: Any) -> None:
    info = http_fs.info(served.url + FILE)
    assert info["size"] == 1024 and info["type"] == "file" and "ETag" in info
    assert served.requests() == [LoggedRequest("HEAD", FILE, None, 200, 0)]
    assert not http_fs.exists(served.url + "/ds/0001.h5")


def test_fsspec_open_is_head_then_ranged_gets(served: RangeHTTPServer, http_fs: Any) -> None:
    with http_fs.open(served.url + FILE, block_size=100) as f:
        f.seek(500)
        assert f.read(10) == DATA[500:510]
    assert [(r.method, r.range) for r in served.requests()] == [("HEAD", None), ("GET", "bytes=500-609")]


def test_fsspec_reuses_connections(served: RangeHTTPServer, http_fs: Any) -> None:
    for i in range(5):
        assert http_fs.cat_file(served.url + FILE, i, i + 1) == DATA[i : i + 1]
    assert served.count(FILE, "GET") == 5
    assert served.connections == 1


def test_fsspec_with_a_server_ignoring_range(served: RangeHTTPServer, http_fs: Any) -> None:
    served.ignore_range = True
    # cat_file does not check the answer: the whole body comes back for a 10-byte request
    assert http_fs.cat_file(served.url + FILE, 10, 20) == DATA
    # a file object does check, and refuses to read from an offset
    with http_fs.open(served.url + FILE, block_size=100) as f:
        f.seek(500)
        with pytest.raises(ValueError, match="support range requests"):
            f.read(10)


def test_fsspec_does_not_retry(served: RangeHTTPServer, http_fs: Any) -> None:
    aiohttp = pytest.importorskip("aiohttp")
    served.fail_next(1)
    with pytest.raises(aiohttp.ClientResponseError) as info:
        http_fs.cat_file(served.url + FILE, 0, 10)
    assert info.value.status == 503
    assert http_fs.cat_file(served.url + FILE, 0, 10) == DATA[:10]
    assert [r.status for r in served.requests()] == [503, 206]


def test_fsspec_ls_needs_listing(served: RangeHTTPServer, http_fs: Any) -> None:
    with pytest.raises(FileNotFoundError):
        http_fs.ls(served.url + "/ds/")
    served.listing = True
    assert sorted(http_fs.ls(served.url + "/ds/", detail=False)) == [
        served.url + FILE, served.url + "/ds/stack_metadata.json"
    ]


def test_fsspec_truncated_body(served: RangeHTTPServer, http_fs: Any) -> None:
    aiohttp = pytest.importorskip("aiohttp")
    served.truncate_next(1, keep=5)
    with pytest.raises(aiohttp.ClientPayloadError):
        http_fs.cat_file(served.url + FILE)
    assert http_fs.cat_file(served.url + FILE) == DATA


def test_fsspec_stall_and_timeout(served: RangeHTTPServer, http_fs: Any) -> None:
    aiohttp = pytest.importorskip("aiohttp")
    fsspec = pytest.importorskip("fsspec")
    # (a timeout= keyword of cat_file would be taken by fsspec's sync wrapper, not passed to aiohttp)
    impatient = fsspec.filesystem(
        "http", skip_instance_cache=True, client_kwargs={"timeout": aiohttp.ClientTimeout(sock_read=0.3)}
    )
    served.stall = True
    try:
        with pytest.raises(TimeoutError):  # aiohttp's timeouts are asyncio.TimeoutError, TimeoutError since 3.11
            impatient.cat_file(served.url + FILE, 0, 10)
    finally:
        fsspec.asyn.sync(impatient.loop, impatient._session.close)
    served.stall = False
    assert http_fs.cat_file(served.url + FILE, 0, 10) == DATA[:10]
    assert [r.status for r in served.requests()] == [0, 206]


def test_fsspec_requests_are_fast_without_latency(served: RangeHTTPServer, http_fs: Any) -> None:
    # with Nagle's algorithm on, the body waited for the client's delayed ACK of the headers: 40 ms each
    times = []
    for _ in range(11):
        t0 = time.perf_counter()
        http_fs.cat_file(served.url + FILE, 0, 500)
        times.append(time.perf_counter() - t0)
    assert statistics.median(times) < 0.03, times


def test_fsspec_latency(served: RangeHTTPServer, http_fs: Any) -> None:
    served.latency = 0.05
    t0 = time.perf_counter()
    for _ in range(3):
        http_fs.cat_file(served.url + FILE, 0, 1)
    assert time.perf_counter() - t0 >= 0.15


# ----------------------------------------------------------------------------- S3 (moto), s3fs


@pytest.fixture
def s3fs_fs(s3_server: S3Server) -> Any:
    """A fresh s3fs filesystem on the test's moto server (no instance cache)."""
    s3fs = pytest.importorskip("s3fs")
    return s3fs.S3FileSystem(**s3_storage_options(s3_server, skip_instance_cache=True))


def test_s3_fixture_environment(s3_server: S3Server) -> None:
    assert os.environ["AWS_ACCESS_KEY_ID"] == "testing"
    assert os.environ["AWS_EC2_METADATA_DISABLED"] == "true"
    assert "AWS_PROFILE" not in os.environ
    options = s3_storage_options(s3_server)
    assert options["client_kwargs"]["endpoint_url"] == s3_server.url
    assert s3_server.url.startswith(f"http://{LOOPBACK}:")
    assert s3_server.bucket is not None
    assert s3_server.requests() == []


def test_s3fs_requests_are_counted(s3_server: S3Server, s3fs_fs: Any, tmp_path: Path) -> None:
    key = f"{s3_server.bucket}/ds/0000.h5"
    (tmp_path / "local").write_bytes(DATA)
    s3fs_fs.put_file(str(tmp_path / "local"), key)
    assert [(r.method, r.status) for r in s3_server.requests()] == [("PUT", 200)]
    s3_server.reset_log()

    # start and end are keywords: S3FileSystem.cat_file(path, version_id=None, start=None, end=None)
    assert s3fs_fs.cat_file(key, start=10, end=20) == DATA[10:20]
    assert s3_server.requests() == [LoggedRequest("GET", "/" + key, "bytes=10-19", 206, 10)]
    s3_server.reset_log()

    s3fs_fs.get_file(key, str(tmp_path / "back"))
    assert (tmp_path / "back").read_bytes() == DATA
    assert [(r.method, r.range, r.bytes_sent) for r in s3_server.requests()] == [("GET", None, 1024)]
    s3_server.reset_log()

    with s3fs_fs.open(key, block_size=100) as f:
        f.seek(500)
        assert f.read(10) == DATA[500:510]
    assert [(r.method, r.range) for r in s3_server.requests()] == [("HEAD", None), ("GET", "bytes=500-609")]
    assert s3_server.count("0000.h5") == 2 and s3_server.bytes_sent("0000.h5", "GET") == 110


def test_upload_folder_is_not_logged(s3_server: S3Server, s3fs_fs: Any, tmp_path: Path) -> None:
    (tmp_path / "ds" / "sub").mkdir(parents=True)
    (tmp_path / "ds" / "0000.h5").write_bytes(DATA)
    (tmp_path / "ds" / "sub" / "x.json").write_text("{}")
    url = upload_folder(s3_server, tmp_path / "ds", f"{s3_server.bucket}/prefix/ds")
    assert url == f"s3://{s3_server.bucket}/prefix/ds"
    assert s3_server.requests() == []
    assert sorted(s3fs_fs.find(url)) == [
        f"{s3_server.bucket}/prefix/ds/0000.h5", f"{s3_server.bucket}/prefix/ds/sub/x.json"
    ]
    assert upload_folder(s3_server, tmp_path / "ds" / "sub", "other-bucket") == "s3://other-bucket"
    assert s3fs_fs.cat_file("other-bucket/x.json") == b"{}"


def test_s3_latency_and_failures(s3_server: S3Server, s3fs_fs: Any, tmp_path: Path) -> None:
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "0000.h5").write_bytes(DATA)
    s3_server.fail_next(1)
    s3_server.latency = 1.0
    url = upload_folder(s3_server, tmp_path / "ds", f"{s3_server.bucket}/ds")  # set-up: no knob applies
    key = url[len("s3://"):] + "/0000.h5"
    s3_server.latency = 0

    # 503 SlowDown: retried (by botocore, after a random wait of up to a second with its defaults;
    # by s3fs after 0.1 s when botocore's retries are off, as here to keep the test fast)
    s3fs = pytest.importorskip("s3fs")
    fs = s3fs.S3FileSystem(
        **s3_storage_options(s3_server, skip_instance_cache=True, config_kwargs={"retries": {"total_max_attempts": 1}})
    )
    assert fs.cat_file(key, start=0, end=10) == DATA[:10]
    assert [(r.method, r.status) for r in s3_server.requests()] == [("GET", 503), ("GET", 206)]

    s3_server.fail_next(1, 500)  # InternalError: s3fs itself does not retry it
    with pytest.raises(OSError):
        fs.cat_file(key, start=0, end=10)
    s3_server.fail_paths = {key: 403}  # AccessDenied
    with pytest.raises(PermissionError):
        s3fs_fs.cat_file(key, start=0, end=10)
    s3_server.fail_paths = {}

    s3_server.latency = 0.1
    t0 = time.perf_counter()
    assert s3fs_fs.cat_file(key, start=0, end=1) == DATA[:1]
    assert time.perf_counter() - t0 >= 0.1


def test_s3_each_test_has_an_empty_bucket(s3_server: S3Server, s3fs_fs: Any) -> None:
    assert s3fs_fs.ls(s3_server.bucket) == []
    assert s3fs_fs.ls("") == [s3_server.bucket]  # moto was reset after the tests before


def test_s3_server_stops_cleanly() -> None:
    pytest.importorskip("moto.moto_server.werkzeug_app")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        server = S3Server().start()
        threads = threads_of(server)
        server.create_bucket("own-bucket")
        server.reset_state()
        server.stop()
        assert threads() == []
        del server
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
