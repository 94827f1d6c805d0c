"""Reading what a batch produced: its jobs a page at a time (ordered and filtered as the web page asks), and its
manifest through the API, for storage a browser cannot reach itself (a local folder)."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel

from genfleet.api.auth import Who, owned
from genfleet.api.jobs import with_links
from genfleet.api.state import AppState
from genfleet.shared.schema import Job, JobStatus

router = APIRouter(prefix="/v1", tags=["batches"])


class Order(StrEnum):
    submitted = "submitted"
    score = "score"  # lowest score first; jobs without a score last


class Only(StrEnum):
    all = "all"
    retried = "retried"  # an image was regenerated for its score, or the job was delivered more than once
    failed = "failed"


class JobPage(BaseModel):
    total: int  # jobs that pass the filter
    offset: int
    items: list[Job]


def _score(job: Job) -> float:
    scores = [o.score for o in job.outputs if o.score is not None]
    return min(scores) if scores else float("inf")


def _keep(job: Job, only: Only) -> bool:
    if only is Only.retried:
        return job.attempts > 1 or any(len(o.attempts) > 1 for o in job.outputs)
    if only is Only.failed:
        return job.status is JobStatus.failed
    return True


@router.get("/batches/{batch_id}/jobs", response_model=JobPage, responses={404: {"description": "no such batch"}})
def batch_jobs(batch_id: UUID, state: AppState, who: Who, offset: Annotated[int, Query(ge=0)] = 0,
               limit: Annotated[int, Query(ge=1, le=200)] = 50, order: Order = Order.submitted,
               only: Only = Only.all) -> JobPage:
    """A page of the batch's jobs, with download links on the page's images only. In the batch's own order and
    unfiltered, only the page's records are read; ordering by score or filtering reads them all."""
    batch = owned(state.batches.get(batch_id), who, "batch", batch_id)
    if order is Order.submitted and only is Only.all:
        ids = [batch.job_id(i) for i in range(offset, min(offset + limit, batch.total))]
        found = [with_links(j, state) for j in state.batches.jobs.get_many(ids) if j is not None]
        return JobPage(total=batch.total, offset=offset, items=found)
    jobs = [j for j in state.batches.records(batch) if j is not None and _keep(j, only)]
    if order is Order.score:
        jobs.sort(key=_score)  # stable: equal scores keep the batch's order
    page = [with_links(j, state) for j in jobs[offset:offset + limit]]
    return JobPage(total=len(jobs), offset=offset, items=page)


@router.get("/batches/{batch_id}/manifest", responses={
    200: {"content": {"application/json": {}}, "description": "the manifest"},
    404: {"description": "no such batch"}, 409: {"description": "the batch has not finished"}})
def batch_manifest(batch_id: UUID, state: AppState, who: Who) -> dict[str, Any]:
    batch = owned(state.batches.get(batch_id), who, "batch", batch_id)
    if batch.status != "finished":
        raise HTTPException(status.HTTP_409_CONFLICT, f"batch {batch_id} has not finished")
    key = state.batches.finished_manifest(batch, state.storage)
    manifest: dict[str, Any] = json.loads(state.storage.get(key))
    return manifest
