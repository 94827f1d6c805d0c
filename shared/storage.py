"""Object storage behind one small interface: S3 (any endpoint: AWS, MinIO, R2, Ceph) or a local folder.

Writes can be create-if-absent, so a job that runs twice leaves one set of objects: S3 with a conditional
`If-None-Match: *` put, the filesystem with an atomic hard link.

`RideOut` wraps a storage for the worker: an endpoint that is down (connection refused or reset, timeouts,
5xx, throttling) is waited for with jittered exponential backoff, up to a set time, after which the call
raises `StorageUnavailable` and the job fails with a dead letter. botocore's own retries come first, inside
each try.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

import boto3
import tenacity
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from genfleet.shared.errors import StorageUnavailable

log = logging.getLogger(__name__)


class Storage(Protocol):
    def put(self, key: str, data: bytes, content_type: str, if_absent: bool = False) -> bool:
        """Writes `key`; with `if_absent`, returns False and writes nothing when it already exists."""

    def get(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def url(self, key: str) -> str: ...

    def link(self, key: str, expires_s: int) -> str:
        """Where a client fetches `key`: a presigned GET URL (S3), or the file's path (local)."""

    def check(self) -> None:
        """Raises when the storage cannot be reached (for readiness probes)."""

    def key_of(self, ref: str) -> str | None:
        """The key of an object of this storage named by `ref` (its `url`, a link to it, or the key itself), or
        None when `ref` points anywhere else: a job's input is read from this storage, never fetched."""


def _join(prefix: str, key: str) -> str:
    return f"{prefix.strip('/')}/{key}" if prefix.strip("/") else key


def _plain_key(ref: str) -> str | None:
    """`ref` as a key, when it is one: relative, no scheme, no `..` or empty segment."""
    parts = ref.split("/")
    if "://" in ref or ref.startswith("/") or any(p in ("", ".", "..") for p in parts):
        return None
    return ref


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"key {key!r} leaves the storage root")
        return path

    def put(self, key: str, data: bytes, content_type: str, if_absent: bool = False) -> bool:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            if not if_absent:
                os.replace(tmp, path)  # readers see the old file or the new one, never half of one
                return True
            try:
                os.link(tmp, path)  # atomic and fails if the name exists
                return True
            except FileExistsError:
                return False
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def url(self, key: str) -> str:
        return self._path(key).as_uri()

    def link(self, key: str, expires_s: int) -> str:
        return str(self._path(key))

    def key_of(self, ref: str) -> str | None:
        parsed = urlparse(ref)
        path = Path(unquote(parsed.path)) if parsed.scheme == "file" else Path(ref) if ref.startswith("/") else None
        if path is None:
            return _plain_key(ref)
        path = path.resolve()
        return path.relative_to(self.root).as_posix() if path.is_relative_to(self.root) and path != self.root else None

    def check(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not os.access(self.root, os.W_OK):
            raise PermissionError(f"{self.root} is not writable")


class S3Storage:
    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None) -> None:
        self.bucket, self.prefix = bucket, prefix.strip("/")
        # botocore's standard retry mode: backoff with jitter on throttling, 5xx and connection errors. SigV4
        # links: expiry bounded at 7 days, accepted everywhere. Checksums only where S3 requires one: the CRC32
        # that botocore 1.36 began adding to every PUT is refused by some S3-compatible stores, and the worker
        # spends its CPU per image on it (docs/benchmarks.md).
        config = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=30,
                        signature_version="s3v4", request_checksum_calculation="when_required",
                        response_checksum_validation="when_required")
        self.client = boto3.client("s3", endpoint_url=endpoint_url, config=config)

    def put(self, key: str, data: bytes, content_type: str, if_absent: bool = False) -> bool:
        extra = {"IfNoneMatch": "*"} if if_absent else {}
        try:
            self.client.put_object(Bucket=self.bucket, Key=_join(self.prefix, key), Body=data,
                                   ContentType=content_type, **extra)
            return True
        except ClientError as e:
            if if_absent and e.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412"):
                return False
            raise

    def get(self, key: str) -> bytes:
        body: bytes = self.client.get_object(Bucket=self.bucket, Key=_join(self.prefix, key))["Body"].read()
        return body

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=_join(self.prefix, key))
            return True
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{_join(self.prefix, key)}"

    def link(self, key: str, expires_s: int) -> str:
        return str(self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": _join(self.prefix, key)}, ExpiresIn=expires_s))

    def check(self) -> None:
        self.client.head_bucket(Bucket=self.bucket)

    def key_of(self, ref: str) -> str | None:
        parsed = urlparse(ref)
        if parsed.scheme == "s3":
            if parsed.netloc != self.bucket:
                return None
            full = parsed.path.lstrip("/")
        elif parsed.scheme in ("http", "https"):  # a presigned link: path-style or virtual-hosted
            endpoint = urlparse(self.client.meta.endpoint_url)
            path = unquote(parsed.path).lstrip("/")
            if parsed.netloc == endpoint.netloc and path.startswith(f"{self.bucket}/"):
                full = path.removeprefix(f"{self.bucket}/")
            elif parsed.netloc == f"{self.bucket}.{endpoint.netloc}":
                full = path
            else:
                return None
        else:
            return _plain_key(ref)
        prefix = f"{self.prefix}/" if self.prefix else ""
        return _plain_key(full.removeprefix(prefix)) if full.startswith(prefix) else None


def transient(e: BaseException) -> bool:
    """Whether an error means "the endpoint is away", not "this request is wrong"."""
    if isinstance(e, ClientError):
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return status >= 500 or status == 429 or e.response.get("Error", {}).get("Code") in ("SlowDown", "Throttling")
    return isinstance(e, (BotoCoreError, ConnectionError, TimeoutError))


class RideOut:
    """A storage whose calls wait out an outage of up to `outage_s` seconds (see the module's docstring)."""

    def __init__(self, inner: Storage, outage_s: float, max_wait_s: float = 15.0) -> None:
        self.inner = inner
        self._retry = tenacity.Retrying(
            retry=tenacity.retry_if_exception(transient), stop=tenacity.stop_after_delay(outage_s),
            wait=tenacity.wait_exponential_jitter(multiplier=0.5, max=max_wait_s), reraise=False,
            before_sleep=lambda state: log.warning("storage unreachable (%s); retrying",
                                                   state.outcome.exception() if state.outcome else None))

    def _call(self, name: str, *args: Any) -> Any:
        try:
            return self._retry(getattr(self.inner, name), *args)
        except tenacity.RetryError as e:
            raise StorageUnavailable(f"still failing after the outage window: {e.last_attempt.exception()}") from e

    def put(self, key: str, data: bytes, content_type: str, if_absent: bool = False) -> bool:
        return bool(self._call("put", key, data, content_type, if_absent))

    def get(self, key: str) -> bytes:
        return bytes(self._call("get", key))

    def exists(self, key: str) -> bool:
        return bool(self._call("exists", key))

    def url(self, key: str) -> str:
        return self.inner.url(key)

    def link(self, key: str, expires_s: int) -> str:
        return self.inner.link(key, expires_s)

    def check(self) -> None:
        self.inner.check()

    def key_of(self, ref: str) -> str | None:
        return self.inner.key_of(ref)


def open_storage(url: str, s3_endpoint_url: str | None = None) -> Storage:
    """`s3://bucket/prefix`, `file:///abs/path`, `file://./rel/path` or a plain path."""
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"storage URL {url!r} names no bucket")
        return S3Storage(parsed.netloc, parsed.path, s3_endpoint_url)
    if parsed.scheme == "file":
        return LocalStorage(Path(parsed.netloc + parsed.path))
    if parsed.scheme == "":
        return LocalStorage(Path(url))
    raise ValueError(f"storage URL {url!r}: scheme must be s3:// or file://")
