"""What follows a recorded status change, wherever it happened (a worker finishing, the API cancelling): a
terminal job's webhook, its images in the per-minute count, and for the last job of a batch the batch's
manifest and webhook."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from uuid import UUID

import redis

from genfleet.shared import fleet
from genfleet.shared.batches import BatchStore
from genfleet.shared.jobstore import Written
from genfleet.shared.schema import Job, JobStatus
from genfleet.shared.storage import Storage
from genfleet.shared.webhooks import batch_event, job_event

log = logging.getLogger(__name__)

Notify = Callable[[str | None, dict[str, Any]], None]  # (url, event): queue one webhook delivery


class Outcomes:
    def __init__(self, batches: BatchStore, storage: Storage, notify: Notify) -> None:
        self.batches, self.storage, self.notify = batches, storage, notify

    def __call__(self, job: Job, written: Written) -> None:
        if not written or not job.status.terminal:
            return
        if job.status is JobStatus.succeeded:
            try:
                fleet.count_images(self.batches.redis, len(job.outputs))
            except redis.RedisError:  # a chart's count: never worth sending a recorded job round again
                log.warning("could not count job %s's images for the web page's chart", job.id)
        if job.request.webhook_url:
            self.notify(str(job.request.webhook_url), job_event(job))
        if written is Written.batch_done and job.batch_id:
            self.batch_finished(job.batch_id)

    def batch_finished(self, batch_id: UUID) -> None:
        self.batches.write_manifest(batch_id, self.storage)
        batch = self.batches.get(batch_id)
        log.info("batch finished", extra={"batch_id": str(batch_id), "tenant": batch.tenant if batch else None})
        if batch is not None and batch.webhook_url:
            self.notify(str(batch.webhook_url), batch_event(batch))
