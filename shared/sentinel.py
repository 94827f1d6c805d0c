"""Redis Sentinel in `GENFLEET_REDIS_URL`: `sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER[/DB]`.

Every part of genfleet reaches Redis through Sentinel when the URL says so: the job store, the API's limits
and idempotency keys, the events stream (redis.asyncio), and Celery (kombu's own Sentinel transport). Each asks
the sentinels for the current primary and asks again when a connection to it fails, so a failover costs a
pause and a few retries, not a restart. PASSWORD is the data nodes' password; the sentinels are reached
without one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlparse

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel

SCHEME = "sentinel://"


@dataclass(frozen=True)
class SentinelURL:
    hosts: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> SentinelURL | None:
        """The parts of a sentinel URL; None for any other URL."""
        if not url.startswith(SCHEME):
            return None
        parsed = urlparse(url)
        auth, _, hostlist = parsed.netloc.rpartition("@")
        password = unquote(auth.partition(":")[2]) if auth else None
        hosts = tuple((h.rpartition(":")[0] or h, int(h.rpartition(":")[2] or 26379))
                      for h in hostlist.split(","))
        parts = [p for p in parsed.path.split("/") if p]
        if not parts or not hosts:
            raise ValueError(f"{url!r}: expected sentinel://HOST:PORT[,HOST:PORT...]/MASTER[/DB]")
        return cls(hosts, parts[0], int(parts[1]) if len(parts) > 1 else 0, password or None)

    def kombu(self) -> tuple[str, dict[str, Any]]:
        """kombu's spelling: one `sentinel://` URL a sentinel, `;`-separated, plus its transport options."""
        auth = f":{self.password}@" if self.password else ""
        url = ";".join(f"sentinel://{auth}{host}:{port}/{self.db}" for host, port in self.hosts)
        return url, {"master_name": self.master}

    def _timeouts(self, options: dict[str, Any]) -> dict[str, Any]:
        return {k: options[k] for k in ("socket_timeout", "socket_connect_timeout") if k in options}

    def client(self, **options: Any) -> redis.Redis:
        """A client of the current primary (redis-py's `Sentinel.master_for`)."""
        timeouts = self._timeouts(options)
        sentinel = redis.sentinel.Sentinel(list(self.hosts), sentinel_kwargs=timeouts, **timeouts)
        client: redis.Redis = sentinel.master_for(self.master, db=self.db, password=self.password, **options)
        return client

    def async_client(self, **options: Any) -> redis.asyncio.Redis:
        """The same, for asyncio."""
        timeouts = self._timeouts(options)
        sentinel = redis.asyncio.sentinel.Sentinel(list(self.hosts), sentinel_kwargs=timeouts, **timeouts)
        client: redis.asyncio.Redis = sentinel.master_for(self.master, db=self.db, password=self.password, **options)
        return client
