import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread

import pytest

from genfleet.shared.storage import LocalStorage, S3Storage, open_storage
from tests.helpers import BUCKET


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.integration)])
def storage(request, tmp_path):
    if request.param == "local":
        return LocalStorage(tmp_path / "out")
    endpoint = request.getfixturevalue("s3_endpoint")
    return S3Storage(BUCKET, f"unit-{uuid.uuid4().hex[:8]}", endpoint)


def test_round_trip(storage):
    assert not storage.exists("j/0.png")
    assert storage.put("j/0.png", b"one", "image/png")
    assert storage.exists("j/0.png") and storage.get("j/0.png") == b"one"
    assert storage.put("j/0.png", b"two", "image/png")  # a plain put overwrites
    assert storage.get("j/0.png") == b"two"
    storage.check()


def test_create_if_absent_keeps_the_first(storage):
    assert storage.put("j/manifest.json", b"first", "application/json", if_absent=True)
    assert not storage.put("j/manifest.json", b"second", "application/json", if_absent=True)
    assert storage.get("j/manifest.json") == b"first"


def test_local_refuses_keys_outside_root(tmp_path):
    with pytest.raises(ValueError, match="leaves the storage root"):
        LocalStorage(tmp_path).put("../escape", b"x", "text/plain")


def test_local_leaves_no_temporary_files(tmp_path):
    s = LocalStorage(tmp_path)
    s.put("a/b.png", b"x", "image/png", if_absent=True)
    s.put("a/b.png", b"y", "image/png", if_absent=True)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b.png"]


def test_urls_and_schemes(tmp_path, monkeypatch):
    # with no region or credentials configured, botocore asks the instance metadata endpoint for them
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert isinstance(open_storage(f"file://{tmp_path}"), LocalStorage)
    assert isinstance(open_storage("./rel"), LocalStorage)
    s3 = open_storage("s3://bucket/some/prefix")
    assert isinstance(s3, S3Storage) and s3.url("j/0.png") == "s3://bucket/some/prefix/j/0.png"
    with pytest.raises(ValueError, match="scheme"):
        open_storage("ftp://x/y")
    with pytest.raises(ValueError, match="no bucket"):
        open_storage("s3:///prefix")


def test_ride_out_waits_for_an_endpoint_that_died_mid_write(s3_server):
    from genfleet.shared.storage import RideOut
    from tests.faults import FlakyEndpoint

    endpoint = FlakyEndpoint(s3_server._port)
    storage = RideOut(S3Storage(BUCKET, f"unit-{uuid.uuid4().hex[:8]}", endpoint.url), outage_s=30, max_wait_s=1)
    endpoint.die_at("PUT", 2, down_s=3)  # the second PUT is cut mid-request; the endpoint is away for 3 s
    started = time.monotonic()
    assert storage.put("j/0.png", b"zero", "image/png", if_absent=True)
    storage.put("j/1.png", b"one", "image/png", if_absent=True)
    assert endpoint.deaths == 1 and time.monotonic() - started >= 3  # it waited the outage out
    assert storage.get("j/1.png") == b"one" and storage.get("j/0.png") == b"zero"
    endpoint.kill()


def test_ride_out_gives_up_after_the_outage_window(s3_server):
    from genfleet.shared.errors import StorageUnavailable
    from genfleet.shared.storage import RideOut
    from tests.faults import FlakyEndpoint

    endpoint = FlakyEndpoint(s3_server._port)
    storage = RideOut(S3Storage(BUCKET, "unit-gone", endpoint.url), outage_s=3, max_wait_s=1)
    endpoint.kill()
    started = time.monotonic()
    with pytest.raises(StorageUnavailable, match="outage window"):
        storage.exists("j/manifest.json")
    assert 3 <= time.monotonic() - started < 30
    with pytest.raises(FileNotFoundError):  # a wrong request is not an outage: no waiting
        RideOut(LocalStorage(Path("/nonexistent-genfleet")), outage_s=30).get("j/0.png")


def test_an_input_url_maps_to_a_key_of_this_storage_or_to_nothing(tmp_path, monkeypatch):
    # signing a link needs keys, and without them botocore would look for some on the network
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "unit")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    local = LocalStorage(tmp_path)
    assert local.key_of(local.url("inputs/a.png")) == "inputs/a.png"
    assert local.key_of(str(tmp_path / "inputs" / "a.png")) == "inputs/a.png"
    assert local.key_of("inputs/a.png") == "inputs/a.png"
    for elsewhere in ("/etc/passwd", "file:///etc/passwd", "../outside.png", "inputs/../../x", "http://x/y.png"):
        assert local.key_of(elsewhere) is None, elsewhere
    s3 = S3Storage("bucket", "run-1", endpoint_url="http://127.0.0.1:9")  # no request is made
    assert s3.key_of("s3://bucket/run-1/inputs/a.png") == "inputs/a.png"
    assert s3.key_of(s3.link("job/0.png", 60)) == "job/0.png"  # a presigned link of its own
    assert s3.key_of("s3://other/run-1/inputs/a.png") is None
    assert s3.key_of("s3://bucket/run-2/inputs/a.png") is None  # another prefix: not this server's objects
    assert s3.key_of("http://evil.example/bucket/run-1/inputs/a.png") is None
    assert s3.key_of("s3://bucket/run-1/../secrets") is None


class _Recording(BaseHTTPRequestHandler):
    """An S3 endpoint's front door that keeps each request's headers and body and answers 200: what went over
    the wire, seen by something other than botocore."""

    seen: list[tuple[dict[str, str], bytes]] = []

    def do_PUT(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.seen.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(200)
        self.send_header("ETag", '"0"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.mark.integration  # loopback HTTP
def test_a_put_carries_no_checksum_s3_does_not_require(monkeypatch):
    """botocore 1.36 and later add a CRC32 to every PUT unless told otherwise; some S3-compatible stores refuse
    it, and it is CPU the worker spends per image. The request as it arrives says what was sent."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recording)
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        storage = S3Storage(BUCKET, "p", f"http://127.0.0.1:{server.server_address[1]}")
        assert storage.put("j/0.png", b"\x89PNG-bytes", "image/png", if_absent=True)
    finally:
        server.shutdown()
    (headers, body), = _Recording.seen
    assert body == b"\x89PNG-bytes" and headers["if-none-match"] == "*"
    assert not [h for h in headers if h.startswith("x-amz-checksum") or h == "x-amz-sdk-checksum-algorithm"], headers
    assert "aws-chunked" not in headers.get("content-encoding", "")
