"""Job records in Redis, one JSON string a job, written so that a job has exactly one terminal status.

Every update goes through one Lua script: it refuses to change a record that is already terminal, so a
redelivered message, a late worker or a cancel racing a finish can never flip an outcome.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from uuid import UUID

import redis

from shared.metrics import DEAD_LETTERS
from shared.schema import Job, JobStatus

KEY_PREFIX = "genfleet:job:"
DEAD_LETTER = "genfleet:dead-letter"  # newest first, capped: jobs that exhausted their retries, with the reason
_DEAD_LETTER_CAP = 10_000

# KEYS[1] job key; ARGV[1] new JSON; ARGV[2] ttl seconds. Returns 1 if written, 0 if the record was terminal,
# -1 if there is no record.
_UPDATE = """
local cur = redis.call('GET', KEYS[1])
if not cur then return -1 end
local status = cjson.decode(cur)['status']
if status == 'succeeded' or status == 'failed' or status == 'cancelled' then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""


def job_key(job_id: UUID | str) -> str:
    return f"{KEY_PREFIX}{job_id}"


class JobStore:
    def __init__(self, r: redis.Redis, ttl_s: int) -> None:
        self.redis, self.ttl_s = r, ttl_s
        self._update = r.register_script(_UPDATE)

    def create(self, job: Job) -> bool:
        """Stores a new record; False (and nothing written) if the id exists."""
        return bool(self.redis.set(job_key(job.id), job.model_dump_json(), nx=True, ex=self.ttl_s))

    def get(self, job_id: UUID | str) -> Job | None:
        raw = self.redis.get(job_key(job_id))
        return Job.model_validate_json(raw) if raw else None

    def get_many(self, job_ids: list) -> list[Job | None]:
        """Records for many ids in one round trip (MGET), None where there is none."""
        raws = self.redis.mget([job_key(i) for i in job_ids]) if job_ids else []
        return [Job.model_validate_json(r) if r else None for r in raws]

    def update(self, job: Job) -> bool:
        """Writes `job` unless the stored record is already terminal; True if written."""
        return self._update(keys=[job_key(job.id)], args=[job.model_dump_json(), self.ttl_s]) == 1

    def delete(self, job_id: UUID | str) -> None:
        self.redis.delete(job_key(job_id))

    def dead_letter(self, job: Job, kind: str, reason: str) -> None:
        """Keeps a record of a job failed for good; `kind` is a short label (worker_lost, storage)."""
        entry = json.dumps({"job_id": str(job.id), "kind": kind, "reason": reason, "attempts": job.attempts,
                            "at": datetime.now(timezone.utc).isoformat()})
        self.redis.pipeline().lpush(DEAD_LETTER, entry).ltrim(DEAD_LETTER, 0, _DEAD_LETTER_CAP - 1).execute()
        DEAD_LETTERS.labels(kind).inc()

    def dead_letters(self, count: int = 100) -> list[dict]:
        return [json.loads(e) for e in self.redis.lrange(DEAD_LETTER, 0, count - 1)]

    def status(self, job_id: UUID | str) -> JobStatus | None:
        job = self.get(job_id)
        return job.status if job else None
