"""What a 202 promises: the rule by which an accepted job has reached more than one Redis server's memory.

`GENFLEET_DURABILITY`:
- `replicas`: `WAIT` until `GENFLEET_DURABILITY_REPLICAS` replicas have the job (a Sentinel or managed-Redis
  failover then promotes a replica that has it);
- `fsync`: the job is on the primary's disk: free with `appendfsync always` (the embedded server's setting),
  else `WAITAOF` (Redis 7.2 or newer);
- `none`: in the primary's memory only (fine when losing the last second of jobs to a host crash is);
- `auto` (default): `replicas` when the primary reports a connected replica, else `fsync` when the server can
  give it, else `none`, logged as a warning at start.

The wait rides on the command that marks the job published, on the same connection, after the publish: a
`WAIT` covers every write before it in the replication stream, the message included. A job the rule could not
confirm in `GENFLEET_DURABILITY_TIMEOUT_MS` is cancelled and the caller gets 503, so no 202 is ever given for
a job that a failover could lose.

A worker holds each job's outcome to the same rule before it acknowledges the job's message (see
shared/jobstore.py), so a failover cannot lose an outcome whose message is gone.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any

import redis
import redis.asyncio

from genfleet.shared.errors import NotDurable

log = logging.getLogger(__name__)


class Rule(StrEnum):
    auto = "auto"
    none = "none"
    fsync = "fsync"
    replicas = "replicas"


def _version(info: dict[str, Any]) -> tuple[int, ...]:
    return tuple(int(p) for p in str(info.get("redis_version", "0")).split(".")[:2])


def _appendfsync(r: redis.Redis) -> str | None:
    try:
        return r.config_get("appendfsync").get("appendfsync")
    except redis.ResponseError:  # CONFIG is often disabled on managed Redis
        return None


class Durability:
    def __init__(self, r: redis.Redis, rule: str, replicas: int = 1, timeout_ms: int = 1000) -> None:
        self.replicas, self.timeout_ms = replicas, timeout_ms
        self.rule, self._wait = self._resolve(r, Rule(rule))
        log.log(logging.WARNING if self.rule is Rule.none else logging.INFO,
                "durability of accepted jobs and outcomes: %s%s", self.rule.value,
                " (a Redis crash can lose the last second of them)" if self.rule is Rule.none else "")

    def _resolve(self, r: redis.Redis, rule: Rule) -> tuple[Rule, tuple[str | int, ...] | None]:
        """The rule in force, and the command that confirms it (None: nothing to wait for)."""
        info, fsync_always = r.info(), _appendfsync(r) == "always"
        if rule is Rule.auto:
            rule = Rule.replicas if int(info.get("connected_slaves", 0)) >= 1 else Rule.fsync
            if rule is Rule.fsync and not fsync_always and not (_version(info) >= (7, 2) and info.get("aof_enabled")):
                rule = Rule.none
        if rule is Rule.replicas:
            return rule, ("WAIT", self.replicas, self.timeout_ms)
        if rule is Rule.fsync:
            if fsync_always:
                return rule, None  # Redis fsyncs each write before it replies
            if _version(info) >= (7, 2):
                return rule, ("WAITAOF", 1, 0, self.timeout_ms)
            raise ValueError("GENFLEET_DURABILITY=fsync needs `appendfsync always` or Redis 7.2+ (WAITAOF)")
        return rule, None

    def wait_on(self, pipe: redis.client.Pipeline | redis.asyncio.client.Pipeline) -> None:
        """Adds the confirming command to `pipe`, after the write it must cover (see `check`)."""
        if self._wait is not None:
            pipe.execute_command(*self._wait)

    def check(self, replies: list[Any]) -> None:
        """Raises NotDurable unless the last reply of a pipeline given to `wait_on` confirms the rule."""
        if self._wait is None:
            return
        got = replies[-1][0] if isinstance(replies[-1], list) else replies[-1]  # WAITAOF: [local, replicas]
        if int(got) < (self.replicas if self.rule is Rule.replicas else 1):
            raise NotDurable(f"durability rule {self.rule.value!r} not confirmed in {self.timeout_ms} ms "
                             f"(acknowledged by {got})")
