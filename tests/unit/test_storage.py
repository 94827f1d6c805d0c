import uuid

import pytest

from shared.storage import LocalStorage, S3Storage, open_storage
from tests.conftest import BUCKET


@pytest.fixture(params=["local", "s3"])
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


def test_urls_and_schemes(tmp_path):
    assert isinstance(open_storage(f"file://{tmp_path}"), LocalStorage)
    assert isinstance(open_storage("./rel"), LocalStorage)
    s3 = open_storage("s3://bucket/some/prefix")
    assert isinstance(s3, S3Storage) and s3.url("j/0.png") == "s3://bucket/some/prefix/j/0.png"
    with pytest.raises(ValueError, match="scheme"):
        open_storage("ftp://x/y")
    with pytest.raises(ValueError, match="no bucket"):
        open_storage("s3:///prefix")
