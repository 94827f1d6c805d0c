"""Recording a job's outcome: its images and manifest stored, manifest last, then its record.

Torch-free, so a writer process (workers/write_process.py) can run it without loading the sampling stack.
Every effect is idempotent: images and manifest are create-if-absent writes under fixed keys, and the job
store keeps the first terminal status, so a redelivered job that writes again changes nothing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from PIL import Image

from genfleet.shared.batches import BatchStore
from genfleet.shared.durability import Durability
from genfleet.shared.failpoints import failpoint
from genfleet.shared.jobstore import JobStore
from genfleet.shared.outcomes import Notify, Outcomes
from genfleet.shared.queue import given_redis, publisher
from genfleet.shared.redis_server import client
from genfleet.shared.schema import Attempt, ImageOutput, Job, JobStatus
from genfleet.shared.settings import Safety, Settings
from genfleet.shared.storage import RideOut, Storage, open_storage
from genfleet.shared.webhooks import notify
from genfleet.workers.encode import encoded, manifest_bytes
from genfleet.workers.marking import Marker, SigningFailed

log = logging.getLogger(__name__)


class Recording(Protocol):
    """What writing a job needs (a worker's `Context` has it; so does a writer process's `Recorder`)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def store(self) -> JobStore: ...
    @property
    def storage(self) -> Storage: ...
    @property
    def outcomes(self) -> Outcomes: ...
    @property
    def marker(self) -> Marker: ...


@dataclass(frozen=True)
class Recorder:
    settings: Settings
    store: JobStore
    storage: Storage
    outcomes: Outcomes
    marker: Marker


def open_recorder(settings: Settings, notify_with: Notify | None = None) -> Recorder:
    """A worker's job store, storage and outcomes, from its settings. Outcomes are held to the rule a 202 is: a
    message is acked only once its job's outcome is durable. Webhooks go out through `notify_with`, or a
    publisher of this process's own."""
    url = given_redis(settings, "worker")
    r = client(url)
    durability = Durability(r, settings.durability, settings.durability_replicas, settings.durability_timeout_ms)
    store = JobStore(r, settings.job_ttl_s, durability)
    storage = RideOut(open_storage(settings.storage_url, settings.s3_endpoint_url), settings.storage_outage_s)
    if notify_with is None:
        app = publisher(settings, url)
        notify_with = lambda url, event: notify(app, settings.queue, url, event)  # noqa: E731
    return Recorder(settings, store, storage, Outcomes(BatchStore(store), storage, notify_with), Marker(settings))


@dataclass(frozen=True)
class Slot:
    """One kept image of a job and how it was chosen: what its write needs of a quality-retry candidate."""

    image: Image.Image
    seed: int
    score: float | None
    scores: dict[str, float | None]
    attempts: list[Attempt]
    nsfw: bool | None


def image_key(job: Job, index: int, flagged: bool = False) -> str:
    """Where an image is stored; under `flagged/` when the safety checker flagged it and GENFLEET_SAFETY=separate."""
    return f"{'flagged/' if flagged else ''}{job.id}/{index}.{job.request.output_format.extension}"


def manifest_key(job: Job) -> str:
    return f"{job.id}/manifest.json"


def finish(job: Job, ctx: Recording, status: JobStatus, **changes) -> Job:
    done = job.model_copy(update={"status": status, "finished_at": datetime.now(UTC), **changes})
    written = ctx.store.update(done)
    if not written:
        return ctx.store.get(job.id) or done  # someone recorded an outcome first; theirs stands
    log.info("job %s", status.value, extra={"job_id": str(job.id), "batch_id": job.batch_id and str(job.batch_id),
                                            "tenant": job.tenant, "model": job.model, "error": done.error})
    ctx.outcomes(done, written)
    return done


def write_job(job: Job, slots: list[Slot], timings: dict[str, float], ctx: Recording) -> Job:
    """Encodes and stores one job's images, manifest last, then records success (off the sampling thread)."""
    if ctx.store.status(job.id) is JobStatus.cancelled:
        return ctx.store.get(job.id) or job  # cancelled while it ran: nothing is written
    t0 = time.perf_counter()
    encode_s = 0.0
    try:
        outputs = []
        ingredient = ctx.marker.ingredient(job, ctx.storage)  # once a job, not once an image
        for i, slot in enumerate(slots):
            key = image_key(job, i, bool(slot.nsfw) and ctx.settings.safety is Safety.separate)
            t_enc = time.perf_counter()
            image, watermarked = ctx.marker.pixels(slot.image, job)
            output = ImageOutput(index=i, url=ctx.storage.url(key), key=key, seed=slot.seed, score=slot.score,
                                 scores=slot.scores, width=image.width, height=image.height, attempts=slot.attempts,
                                 nsfw=slot.nsfw, marks=ctx.marker.marks(watermarked))
            data = ctx.marker.sign(encoded(image, job, output, ctx.settings.png_compress_level), job, output,
                                   watermarked, ingredient)
            encode_s += time.perf_counter() - t_enc
            ctx.storage.put(key, data, job.request.output_format.content_type, if_absent=True)
            failpoint("write.after-image", whole_worker=True)
            outputs.append(output)
        ctx.storage.put(manifest_key(job), manifest_bytes(job, outputs), "application/json", if_absent=True)
        failpoint("write.after-manifest", whole_worker=True)
    except Exception as e:  # storage still down after the outage window (RideOut), or signing still failing
        signing = isinstance(e, SigningFailed)
        reason = str(e) if signing else f"storing images: {type(e).__name__}: {e}"
        log.exception("storing job %s failed", job.id)
        ctx.store.dead_letter(job, "signing" if signing else "storage", reason)
        return finish(job, ctx, JobStatus.failed, error=reason, timings=timings)
    store_s = time.perf_counter() - t0
    timings = {**timings, "store_s": store_s, "encode_s": encode_s, "upload_s": store_s - encode_s}
    return finish(job, ctx, JobStatus.succeeded, outputs=outputs, timings=timings)
