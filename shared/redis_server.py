"""Redis connections for every URL form genfleet accepts (the embedded server is started by
genfleet/embedded_redis.py)."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from genfleet.shared.sentinel import SentinelURL


def client(url: str) -> redis.Redis:
    """A redis-py client for `redis://`, `rediss://`, `unix://`, kombu's `redis+socket://` or `sentinel://`
    (shared/sentinel.py) URLs."""
    if url.startswith("redis+socket://"):
        url = "unix://" + url.removeprefix("redis+socket://")
    # redis-py's own retry: a restart or failover of Redis costs a pause, not an error (up to ~10 s in all)
    retry = Retry(ExponentialWithJitterBackoff(cap=2.0, base=0.1), retries=8)
    options: dict[str, Any] = {"socket_timeout": 10, "socket_connect_timeout": 5, "health_check_interval": 30,
                               "retry": retry, "retry_on_error": [redis.ConnectionError, redis.TimeoutError]}
    sentinel = SentinelURL.parse(url)
    return sentinel.client(**options) if sentinel else redis.Redis.from_url(url, **options)


def async_client(url: str) -> redis.asyncio.Redis:
    """A redis.asyncio client for the same URLs (the API's admission and its Server-Sent Events run on it), with
    the same retry as `client`."""
    if url.startswith("redis+socket://"):
        url = "unix://" + url.removeprefix("redis+socket://")
    retry = AsyncRetry(ExponentialWithJitterBackoff(cap=2.0, base=0.1), retries=8)
    # socket_timeout outlasts the longest XREAD BLOCK (10 s) the events endpoint waits for
    options: dict[str, Any] = {"socket_timeout": 30, "socket_connect_timeout": 5, "health_check_interval": 30,
                               "retry": retry, "retry_on_error": [redis.ConnectionError, redis.TimeoutError]}
    sentinel = SentinelURL.parse(url)
    return sentinel.async_client(**options) if sentinel else redis.asyncio.Redis.from_url(url, **options)


def kombu_url(url: str) -> tuple[str, dict[str, Any]]:
    """The broker URL kombu understands for `url`, and the transport options it needs (kombu spells unix
    sockets `redis+socket://`, and takes a Sentinel's master name as an option)."""
    sentinel = SentinelURL.parse(url)
    if sentinel:
        return sentinel.kombu()
    return ("redis+socket://" + url.removeprefix("unix://") if url.startswith("unix://") else url), {}


def answers(url: str) -> bool:
    try:
        return bool(client(url).ping())
    except (redis.RedisError, OSError):
        return False


def socket_path(data_dir: Path) -> Path:
    """Where the embedded server listens for `data_dir` (the data folder itself, unless that path is too long)."""
    path = data_dir.resolve() / "redis.sock"
    if len(str(path)) < 100:  # unix socket paths are capped at about 107 bytes
        return path
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"genfleet-{digest}.sock"
