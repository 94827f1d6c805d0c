"""Batches: many prompts with shared parameters, accepted in one request, run as ordinary jobs.

A batch's jobs have ids derived from the batch id and their index (uuid5), so they need no list of their own.
Its progress lives in one Redis hash that the job store's update script moves atomically with each job's
status; whoever records the last outcome (a worker, or the API cancelling) writes the batch's manifest to
storage, create-if-absent. A reader that finds a finished batch without its manifest (its writer crashed in
between) writes it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TypeVar, cast
from uuid import UUID, uuid4, uuid5

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field

from genfleet.shared import keys
from genfleet.shared.jobstore import JobStore, Written
from genfleet.shared.schema import MAX_SEED, Job, JobParams, JobRequest, JobStatus
from genfleet.shared.storage import Storage

MAX_PROMPTS = 10_000
_CHUNK = 1000  # records per MGET or pipeline


class BatchItem(BaseModel):
    """One prompt of a batch; a bare string is the same as `{"prompt": ...}`."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    prompt: str = Field(min_length=1, max_length=2000)
    negative_prompt: str | None = Field(None, max_length=2000)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, json_schema_extra={"examples": [
        {"prompts": ["a purple cat with a red hat", {"prompt": "a green cat", "seed": 7}],
         "params": {"num_images": 2, "priority": "low"}}]})

    prompts: list[str | BatchItem] = Field(min_length=1, max_length=MAX_PROMPTS)
    params: JobParams = Field(default_factory=JobParams, description="what every prompt of the batch shares")
    webhook_url: AnyHttpUrl | None = Field(None, description="receives one signed `batch.finished` event")

    def job_requests(self) -> list[JobRequest]:
        shared = self.params.model_dump(exclude_none=True)
        items = [BatchItem(prompt=p) if isinstance(p, str) else p for p in self.prompts]
        return [JobRequest(**{**shared, **item.model_dump(exclude_none=True)}) for item in items]


class BatchCounts(BaseModel):
    total: int
    queued: int
    running: int
    succeeded: int
    failed: int
    cancelled: int

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed + self.cancelled


class Batch(BaseModel):
    id: UUID = Field(default_factory=uuid4)
    tenant: str | None = None
    model: str
    total: int
    webhook_url: AnyHttpUrl | None = None
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    # Filled in when the batch is read: not stored with the record.
    status: str = "queued"  # queued | running | finished
    counts: BatchCounts | None = None
    progress: float = 0.0
    manifest_key: str | None = None
    manifest_url: str | None = None

    def job_id(self, index: int) -> UUID:
        return uuid5(self.id, str(index))

    def job_ids(self) -> list[UUID]:
        return [self.job_id(i) for i in range(self.total)]


def manifest_key(batch_id: UUID | str) -> str:
    return f"batches/{batch_id}/manifest.json"


T = TypeVar("T")


def _chunks(items: list[T], size: int = _CHUNK) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class BatchStore:
    def __init__(self, jobs: JobStore) -> None:
        self.jobs, self.redis = jobs, jobs.redis

    def create(self, batch: Batch, jobs: list[Job]) -> None:
        """Records the batch, its counts and every job record, in pipelines of a thousand."""
        ttl = self.jobs.ttl_s
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(keys.batch(batch.id), batch.model_dump_json(include=set(Batch.model_fields) - {"counts"}), ex=ttl)
        pipe.hset(keys.batch_counts(batch.id), mapping={"total": batch.total})
        pipe.expire(keys.batch_counts(batch.id), ttl)
        pipe.execute()
        for chunk in _chunks(jobs):
            self.jobs.create_many(chunk)

    def get(self, batch_id: UUID | str) -> Batch | None:
        raw = self.redis.get(keys.batch(batch_id))
        if raw is None:
            return None
        batch = Batch.model_validate_json(raw)
        counted = cast(dict[bytes, bytes], self.redis.hgetall(keys.batch_counts(batch_id)))
        c = {k.decode(): int(v) for k, v in counted.items()}
        done = {s: max(0, c.get(s, 0)) for s in ("running", "succeeded", "failed", "cancelled")}
        counts = BatchCounts(total=batch.total, queued=batch.total - sum(done.values()), **done)
        status = ("finished" if counts.finished >= batch.total
                  else "running" if counts.queued < batch.total else "queued")
        return batch.model_copy(update={"counts": counts, "status": status,
                                        "progress": round(counts.finished / batch.total, 4),
                                        "manifest_key": manifest_key(batch.id) if status == "finished" else None})

    def records(self, batch: Batch) -> Iterator[Job | None]:
        for chunk in _chunks(batch.job_ids()):
            yield from self.jobs.get_many(chunk)

    def cancel_queued(self, batch: Batch) -> tuple[int, bool]:
        """Cancels every job of the batch still queued; (how many, whether that finished the batch)."""
        now, cancelled, finished = datetime.now(UTC), 0, False
        for chunk in _chunks(list(self.records(batch))):
            queued = [j for j in chunk if j is not None and j.status is JobStatus.queued]
            results = self.jobs.update_many([
                job.model_copy(update={"status": JobStatus.cancelled, "finished_at": now,
                                       "error": "cancelled with its batch"}) for job in queued])
            cancelled += sum(1 for r in results if r)
            finished = finished or Written.batch_done in results
        return cancelled, finished

    def finished_manifest(self, batch: Batch, storage: Storage) -> str:
        """The key of a finished batch's manifest, written here first if its writer died between recording the
        last outcome and writing it."""
        key = manifest_key(batch.id)
        if not storage.exists(key):
            self.write_manifest(batch.id, storage)
        return key

    def write_manifest(self, batch_id: UUID | str, storage: Storage) -> bool:
        """The batch's results manifest, create-if-absent; False if the batch is unknown or not finished."""
        batch = self.get(batch_id)
        if batch is None or batch.status != "finished":
            return False
        jobs = [{"id": str(j.id), "index": i, "prompt": j.request.prompt, "status": j.status.value,
                 "error": j.error, "images": [o.key for o in j.outputs]}
                for i, j in enumerate(self.records(batch)) if j is not None]
        counts = batch.counts.model_dump() if batch.counts else None
        body = {"batch_id": str(batch.id), "tenant": batch.tenant, "counts": counts,
                "created_at": batch.created_at.isoformat(), "jobs": jobs}
        storage.put(manifest_key(batch.id), json.dumps(body, indent=1).encode(), "application/json", if_absent=True)
        return True


def new_jobs(batch: Batch, body: BatchRequest, default_model: str) -> list[Job]:
    return [Job.new(req, default_model, batch.tenant, id=batch.job_id(i), batch_id=batch.id)
            for i, req in enumerate(body.job_requests())]

