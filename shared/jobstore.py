"""Job records in Redis, one JSON string a job, written so that a job has exactly one terminal status.

Every update goes through one Lua script: it refuses to change a record that is already terminal, so a
redelivered message, a late worker or a cancel racing a finish can never flip an outcome. The same atomic step
appends the status event to the job's stream and, for a job of a batch, moves the batch's counts, so each
transition is counted exactly once.

With a durability rule (shared/durability.py), a terminal update returns only once the rule holds, and raises
NotDurable otherwise. A worker acknowledges a message only after its job's outcome is recorded, so without the
wait, a primary that dies before replicating the outcome leaves a promoted replica with the job `running` and
no message left to run it again.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any, NamedTuple, cast
from uuid import UUID

import redis
import redis.asyncio
from redis.commands.core import Script

from genfleet.shared import keys
from genfleet.shared.durability import Durability
from genfleet.shared.errors import QueueFull
from genfleet.shared.events import MAXLEN
from genfleet.shared.fairshare import Fairness, FairShare, fair_keys, prefixes, tenant_of
from genfleet.shared.jobstore_lua import SUBMIT, UPDATE, USAGE_TTL_S
from genfleet.shared.metrics import DEAD_LETTERS
from genfleet.shared.schema import Job, JobStatus, Usage

_SUSPECT_TTL_S = 24 * 3600
_DEAD_LETTER_CAP = 10_000



class Outgoing(NamedTuple):
    """A job's message (shared/queue.py `outgoing`): its queue's lists, most urgent first, the one it is bound for
    (an index), the message, and its tenant."""

    lists: tuple[str, ...]
    at: int
    message: str
    tenant: str


class Written(IntEnum):
    """What `JobStore.update` did."""

    missing = -1
    refused = 0  # the record was already terminal; the first outcome stands
    written = 1
    batch_done = 2  # written, and it was the last job of its batch to finish

    def __bool__(self) -> bool:
        return self > 0


class JobStore:
    def __init__(self, r: redis.Redis, ttl_s: int, durability: Durability | None = None,
                 fairness: Fairness | None = None) -> None:
        """`fairness`: how the jobs this store publishes share their queues (shared/fairshare.py); None, first
        come, first served."""
        self.redis, self.ttl_s, self.durability = r, ttl_s, durability
        self.fair = FairShare(r, fairness or Fairness())
        self._update = r.register_script(UPDATE)
        self._submit = r.register_script(SUBMIT)

    def create(self, job: Job, to_publish: bool = True) -> bool:
        """Stores a new record, listed as unpublished until `published` (unless `to_publish` is False: its
        message is already out); False (and nothing written) if the id exists."""
        if not to_publish:
            return bool(self.redis.set(keys.job(job.id), job.model_dump_json(), nx=True, ex=self.ttl_s))
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(keys.job(job.id), job.model_dump_json(), nx=True, ex=self.ttl_s)
        pipe.zadd(keys.UNPUBLISHED, {str(job.id): time.time()}, nx=True)
        pipe.zadd(keys.QUEUED, {str(job.id): time.time()}, nx=True)
        pipe.hincrby(keys.QUEUED_BY_TENANT, tenant_of(job), 1)
        created, *_ = pipe.execute()
        return bool(created)

    async def submit(self, ar: redis.asyncio.Redis, job: Job, out: Outgoing, bound: int = 0,
                     counted: Sequence[str] = ()) -> bool:
        """Stores a new record and sends its message on (`out`, through its tenant's fair share), atomically,
        in one round trip; with a
        durability rule, returns once it holds (else raises NotDurable). False (nothing written) if the id
        exists; QueueFull (nothing written) if the lists `counted` already hold `bound` waiting messages.
        On an asyncio client, for the API's event loop: the async twin of `_script_durably` (the same EVALSHA,
        wait and NOSCRIPT retry), since a thread-pool hop to the blocking one cost more than the call."""
        script_keys, args = self._submit_call(job, out, bound, counted)
        for loaded in (False, True):
            pipe = ar.pipeline(transaction=False)
            pipe.evalsha(self._submit.sha, len(script_keys), *script_keys, *args)
            if self.durability is not None:
                self.durability.wait_on(pipe)
            try:
                replies = await pipe.execute()
            except redis.exceptions.NoScriptError:
                if loaded:
                    raise
                await ar.script_load(self._submit.script)
                continue
            if self.durability is not None:
                self.durability.check(replies)
            return self._submitted(replies[0])
        raise AssertionError("unreachable: the second try returns or raises")

    def _submit_call(self, job: Job, out: Outgoing, bound: int, counted: Sequence[str]
                     ) -> tuple[list[str], list[Any]]:
        return ([keys.job(job.id), keys.QUEUED, keys.QUEUED_BY_TENANT, *fair_keys(out.lists),
                 *(k for name in counted for k in (name, keys.fair(name, "waiting")))],
                [job.model_dump_json(), self.ttl_s, out.message, time.time(), str(job.id), bound, len(out.lists),
                 out.at + 1, *self.fair.fairness.args(out.tenant), *prefixes(out.lists)])

    @staticmethod
    def _submitted(reply: int) -> bool:
        if reply < 0:
            raise QueueFull(-reply - 1)
        return bool(reply)

    def _script_durably(self, script: Script, script_keys: list[str], args: list[Any]) -> Any:
        """One call of `script` with the durability rule's wait pipelined behind it, in one round trip, and its
        reply. EVALSHA by hand: a redis-py pipeline holding a Script first asks the server whether it has it
        (SCRIPT EXISTS, a round trip of its own on every call). A server without it (restarted, or a replica
        just promoted) answers NOSCRIPT without running anything; the script is then loaded and called again."""
        for loaded in (False, True):
            pipe = self.redis.pipeline(transaction=False)
            pipe.evalsha(script.sha, len(script_keys), *script_keys, *args)
            try:
                return self._execute_durably(pipe)[0]
            except redis.exceptions.NoScriptError:
                if loaded:
                    raise
                self.redis.script_load(script.script)

    def _execute_durably(self, pipe: redis.client.Pipeline) -> list[Any]:
        """Runs `pipe` with the durability rule's wait behind its writes, on the same connection, and returns
        its replies once the rule holds (else raises NotDurable)."""
        if self.durability is not None:
            self.durability.wait_on(pipe)
        replies = pipe.execute()
        if self.durability is not None:
            self.durability.check(replies)
        return replies

    def create_many(self, jobs: list[Job]) -> None:
        """Stores new records, listed as unpublished, in one transaction (ids are fresh: a batch's are derived
        from a new batch id)."""
        pipe = self.redis.pipeline(transaction=True)
        for job in jobs:
            pipe.set(keys.job(job.id), job.model_dump_json(), nx=True, ex=self.ttl_s)
        listed = dict.fromkeys((str(j.id) for j in jobs), time.time())
        pipe.zadd(keys.UNPUBLISHED, listed, nx=True)
        pipe.zadd(keys.QUEUED, listed, nx=True)
        for tenant, n in Counter(tenant_of(j) for j in jobs).items():
            pipe.hincrby(keys.QUEUED_BY_TENANT, tenant, n)
        pipe.execute()

    def publish(self, messages: Sequence[Outgoing], job_ids: Sequence[UUID | str]) -> None:
        """Sends recorded jobs' messages on, through their tenants' fair share, and marks the jobs published, in
        one round trip; with a durability rule, returns once it holds for both (else raises NotDurable)."""
        pipe = self.redis.pipeline(transaction=False)
        groups: dict[tuple[tuple[str, ...], int, str], list[str]] = {}
        for out in messages:
            groups.setdefault((out.lists, out.at, out.tenant), []).append(out.message)
        if groups:  # loaded first on the same connection, so the EVALSHAs cannot meet NOSCRIPT after a failover
            pipe.script_load(self.fair.publish_script.script)
        for (lists, at, tenant), group in groups.items():
            script_keys, args = self.fair.publish_call(lists, at, tenant, group)
            pipe.evalsha(self.fair.publish_script.sha, len(script_keys), *script_keys, *args)
        if job_ids:
            pipe.zrem(keys.UNPUBLISHED, *(str(i) for i in job_ids))
        self._execute_durably(pipe)

    def published(self, job_ids: Sequence[UUID | str]) -> None:
        """Marks jobs published; with a durability rule, returns once it holds (else raises NotDurable)."""
        if job_ids:
            self.publish([], job_ids)

    def unpublished(self, older_than_s: float, count: int = 1000) -> list[str]:
        """Ids recorded more than `older_than_s` ago whose publishing was never confirmed."""
        ids = self.redis.zrange(keys.UNPUBLISHED, 0, time.time() - older_than_s, byscore=True, offset=0, num=count)
        return [i.decode() for i in cast(list[bytes], ids)]

    def unfinished_ids(self) -> list[str]:
        """Every job whose status is queued, oldest first, then every running one (one read of each index, in
        one transaction: the reconciler wants a snapshot, and a job moving between them is in one or the other)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.zrange(keys.QUEUED, 0, -1)
        pipe.zrange(keys.RUNNING, 0, -1)
        queued, running = pipe.execute()
        return [i.decode() for i in [*queued, *running]]

    def unlist(self, job_ids: Sequence[str]) -> None:
        """Drops ids from the queued and running indexes (their records expired)."""
        if job_ids:
            pipe = self.redis.pipeline(transaction=False)
            pipe.zrem(keys.QUEUED, *job_ids)
            pipe.zrem(keys.RUNNING, *job_ids)
            pipe.execute()

    def get(self, job_id: UUID | str) -> Job | None:
        raw = self.redis.get(keys.job(job_id))
        return Job.model_validate_json(raw) if raw else None

    def get_many(self, job_ids: Sequence[UUID | str]) -> list[Job | None]:
        """Records for many ids in one round trip (MGET), None where there is none."""
        raws = self.redis.mget([keys.job(i) for i in job_ids]) if job_ids else []
        return [Job.model_validate_json(r) if r else None for r in raws]

    def _update_call(self, job: Job) -> tuple[list[str], list[str | int | float]]:
        """The update script's KEYS and ARGV for `job`."""
        counts = keys.batch_counts(job.batch_id) if job.batch_id else keys.job(job.id)
        in_batch = "1" if job.batch_id else "0"
        tenant, usage = tenant_of(job), job.usage or Usage()
        hour = int((job.finished_at or datetime.now(UTC)).timestamp()) // 3600
        return ([keys.job(job.id), keys.events(job.id), counts, keys.QUEUED, keys.RUNNING, keys.QUEUED_BY_TENANT,
                 keys.FAIR_INFLIGHT, keys.FAIR_DISPATCHED, keys.usage(tenant, hour), keys.USAGE_TOTAL],
                [job.model_dump_json(), self.ttl_s, job.status.value, MAXLEN, in_batch, str(job.id), time.time(),
                 tenant, len(job.outputs), usage.accelerator_s, usage.queue_s, USAGE_TTL_S])

    def update(self, job: Job) -> Written:
        """Writes `job` unless the stored record is already terminal (falsy then). A terminal status returns once
        the durability rule holds (else raises NotDurable: the record is on the primary, maybe nowhere else)."""
        script_keys, args = self._update_call(job)
        if self.durability is None or not job.status.terminal:
            return Written(self._update(keys=script_keys, args=args))
        return Written(self._script_durably(self._update, script_keys, args))

    def confirm(self, job_id: UUID | str) -> None:
        """Returns once the durability rule holds for every write made so far, the job's included (else raises
        NotDurable). WAIT counts only the caller's own writes, so a cheap one goes first: replication is in
        order, and a replica that has it has everything written before it."""
        if self.durability is None:
            return
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(keys.DURABILITY_MARK, str(job_id), ex=60)
        self._execute_durably(pipe)

    def update_many(self, jobs: Sequence[Job]) -> list[Written]:
        """`update` for many jobs, in one round trip."""
        if not jobs:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for job in jobs:
            script_keys, args = self._update_call(job)
            self._update(keys=script_keys, args=args, client=pipe)
        return [Written(r) for r in pipe.execute()]

    def delete(self, job_id: UUID | str) -> None:
        self.redis.delete(keys.job(job_id))

    def mark_suspects(self, job_ids: Sequence[UUID | str]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.set(keys.suspect(job_id), 1, ex=_SUSPECT_TTL_S)
        pipe.execute()

    def suspects(self, job_ids: Sequence[UUID | str]) -> set[str]:
        """Of `job_ids` (all still to run), those to run alone: marked by a pool death, or left `running` by
        two dead runs or more (a job that takes its whole worker down with it)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.mget([keys.suspect(i) for i in job_ids])
        pipe.mget([keys.job(i) for i in job_ids])
        marks, raws = pipe.execute()
        records = [Job.model_validate_json(raw) if raw else None for raw in raws]
        return {str(i) for i, mark, job in zip(job_ids, marks, records, strict=True)
                if mark or (job is not None and job.status is JobStatus.running and job.attempts >= 2)}

    def dead_letter(self, job: Job, kind: str, reason: str) -> None:
        """Keeps a record of a job failed for good; `kind` is a short label (worker_lost, storage)."""
        entry = json.dumps({"job_id": str(job.id), "kind": kind, "reason": reason, "attempts": job.attempts,
                            "at": datetime.now(UTC).isoformat()})
        pipe = self.redis.pipeline()
        pipe.lpush(keys.DEAD_LETTER, entry)
        pipe.ltrim(keys.DEAD_LETTER, 0, _DEAD_LETTER_CAP - 1)
        pipe.execute()
        DEAD_LETTERS.labels(kind).inc()

    def dead_letters(self, count: int = 100) -> list[dict[str, Any]]:
        return [json.loads(e) for e in self.redis.lrange(keys.DEAD_LETTER, 0, count - 1)]

    def statuses(self, job_ids: Sequence[UUID | str]) -> list[JobStatus | None]:
        return [j.status if j else None for j in self.get_many(job_ids)]

    def status(self, job_id: UUID | str) -> JobStatus | None:
        job = self.get(job_id)
        return job.status if job else None
