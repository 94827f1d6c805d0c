"""Running a batch of jobs: claim, sample and score by group, then encode, store and record off the sampling
thread.

Plain functions; the Celery task only decodes messages and calls `start_batch`, which returns once the batch is
sampled, with a future for each job still being written: the task reports a message for acknowledgement only
once its future is done, so messages are acked after their effects, never before, while the next batch
samples. Every effect is idempotent, so a redelivered message is harmless: images and manifest are
create-if-absent writes under fixed keys, the manifest is written last (a job is complete in storage when it
exists), and the job store keeps the first terminal status. `run_batch` waits for the writes too.
"""

from __future__ import annotations

import io
import json
import logging
import time
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum

from celery.exceptions import SoftTimeLimitExceeded
from PIL import Image

from genfleet.shared import leases
from genfleet.shared.errors import NotDurable, StorageUnavailable
from genfleet.shared.events import publish_previews, publish_progress, watched
from genfleet.shared.fastpath import Compile, fastpath_for
from genfleet.shared.jobstore import JobStore
from genfleet.shared.outcomes import Outcomes
from genfleet.shared.schema import ImageOutput, Job, JobStatus, Usage
from genfleet.shared.settings import Settings
from genfleet.shared.storage import Storage
from genfleet.workers import previews
from genfleet.workers.adapters import AdapterError, AdapterSlots
from genfleet.workers.marking import Marker
from genfleet.workers.models import PipelineCache
from genfleet.workers.quality import Candidate, sample_with_retries
from genfleet.workers.recording import Slot, finish, manifest_key
from genfleet.workers.results import Failed, Ok
from genfleet.workers.safety import SafetyChecker, check
from genfleet.workers.sampling import Frame, GroupKey, Inputs, Sampler, StopCheck, group_jobs
from genfleet.workers.scoring import ScorerSet
from genfleet.workers.writer import Writes

log = logging.getLogger(__name__)


@dataclass
class Context:
    """What a worker process holds for the jobs it runs."""

    settings: Settings
    store: JobStore
    storage: Storage
    pipelines: PipelineCache
    scorers: ScorerSet
    sampler: Sampler
    writer: Writes
    outcomes: Outcomes
    safety: SafetyChecker
    marker: Marker


class Claim(Enum):
    """What a delivery of a job comes to."""

    run = "run"  # marked running here: sample it
    done = "done"  # nothing to run: the job already has its outcome (or just got one)
    held = "held"  # a live worker still holds another delivery of this job: leave this one unacked
    later = "later"  # its outcome is recorded but not yet durable: leave it unacked, to come back after its lease


def claim(message: Job, ctx: Context) -> tuple[Job, Claim]:
    """Marks the job running, or says why there is nothing to run here."""
    job = ctx.store.get(message.id)
    ran_before = job is None or job.status is JobStatus.running  # only then can storage hold its manifest
    if job is None:  # the record expired or Redis lost it; the message carries the whole record
        ctx.store.create(message, to_publish=False)
        job = ctx.store.get(message.id) or message
    if job.status.terminal:
        log.info("job %s is already %s; nothing to do", job.id, job.status)
        ctx.store.confirm(job.id)  # an earlier run recorded it, maybe on the primary alone: ack only once durable
        return job, Claim.done
    if job.status is JobStatus.running and job.worker != leases.WORKER_ID \
            and leases.holds(ctx.store.redis, job.worker, str(job.id)):
        log.warning("job %s is running on %s, which is alive; leaving this delivery", job.id, job.worker)
        return job, Claim.held
    if ran_before and ctx.storage.exists(manifest_key(job)):  # finished in storage before it was recorded
        body = json.loads(ctx.storage.get(manifest_key(job)))
        return finish(job, ctx, JobStatus.succeeded, outputs=[ImageOutput(**o) for o in body["images"]]), Claim.done
    if job.status is JobStatus.running and job.attempts >= ctx.settings.max_deliveries:
        # Still `running` on delivery: every earlier run died with its worker. Stop the loop here.
        reason = f"the worker died {job.attempts} times while running this job; not trying again"
        ctx.store.dead_letter(job, "worker_lost", reason)
        return finish(job, ctx, JobStatus.failed, error=reason), Claim.done
    job = job.model_copy(update={"status": JobStatus.running, "started_at": datetime.now(UTC),
                                 "attempts": job.attempts + 1, "worker": leases.WORKER_ID})
    if not ctx.store.update(job):
        return ctx.store.get(job.id) or job, Claim.done  # cancelled or finished while it waited
    return job, Claim.run


def finish_or_later(job: Job, ctx: Context, status: JobStatus, **changes) -> Job | None:
    """`finish`, or None when the outcome is recorded but the durability rule did not confirm it: its message is
    then left unacknowledged, and comes back after its lease to find the outcome and confirm it."""
    try:
        return finish(job, ctx, status, **changes)
    except NotDurable as e:
        log.warning("job %s: %s; its message comes back after its lease", job.id, e)
        return None


def claim_safely(message: Job, ctx: Context) -> tuple[Job, Claim]:
    """`claim`, except that storage still down after the outage window fails the job (with a dead letter)
    instead of sending the whole batch back to the queue, where it would meet the outage again, forever; and an
    outcome the durability rule does not confirm leaves the delivery for later."""
    try:
        return claim(message, ctx)
    except StorageUnavailable as e:
        job = ctx.store.get(message.id) or message
        reason = f"storage unavailable: {e}"
        ctx.store.dead_letter(job, "storage", reason)
        failed = finish_or_later(job, ctx, JobStatus.failed, error=reason)
        return (failed, Claim.done) if failed else (job, Claim.later)
    except NotDurable as e:
        log.warning("job %s: %s; its message comes back after its lease", message.id, e)
        return message, Claim.later


def step_hook(jobs: list[Job], ctx: Context) -> StopCheck:
    """Called by a pipeline call at most twice a second: publishes step progress to every job sharing it, and
    previews of the images of those that asked or have a listener; says to stop once all have been cancelled."""
    ids = [str(j.id) for j in jobs]
    asked = {str(j.id) for j in jobs if j.request.previews}

    def hook(step: int | None = None, steps: int | None = None, frame: Frame | None = None) -> bool:
        if step is not None and steps:
            r, ttl = ctx.store.redis, ctx.settings.job_ttl_s
            publish_progress(r, ids, step, steps, ttl)
            if frame is not None and ctx.settings.previews:
                wanted = asked | watched(r, [i for i in ids if i not in asked])
                shown = previews.of_frame(frame, wanted)
                if shown:
                    publish_previews(r, shown, step, steps, ttl)
        return all(s is JobStatus.cancelled for s in ctx.store.statuses(ids))

    return hook



def load_inputs(jobs: list[Job], storage: Storage) -> tuple[Inputs, dict[str, Failed]]:
    """The input images of image-to-image and inpaint jobs, decoded (RGB images, greyscale masks); and the jobs
    whose inputs could not be read, with why."""
    inputs: Inputs = {}
    unreadable: dict[str, Failed] = {}
    for job in jobs:
        for key, mode in ((job.request.image, "RGB"), (job.request.mask, "L")):
            if key is None or key in inputs:
                continue
            try:
                inputs[key] = Image.open(io.BytesIO(storage.get(key))).convert(mode)
            except (OSError, ValueError, StorageUnavailable) as e:
                unreadable[str(job.id)] = Failed(RuntimeError(f"input {key}: {type(e).__name__}: {e}"))
    return inputs, unreadable


def sample_jobs(key: GroupKey, jobs: list[Job], ctx: Context) -> list[Ok[list[Candidate]] | Failed]:
    """One group's images: its inputs read, its pipeline for its task, its adapters active, then sampled, scored,
    retried and checked. A job whose input cannot be read fails alone; an adapter that will not load fails the
    group (every job of it asked for that adapter)."""
    inputs, unreadable = load_inputs(jobs, ctx.storage)
    readable = [j for j in jobs if str(j.id) not in unreadable]
    pipe = ctx.pipelines.get(key.model)
    compiled = fastpath_for(key.model, ctx.settings.fastpath).compile is not Compile.off
    try:
        AdapterSlots.of(pipe, ctx.settings.adapter_slots, hotswap=compiled).activate(
            key.adapters, key.model, ctx.settings.adapters, ctx.storage, ctx.settings.adapter_download)
    except AdapterError as e:
        return [Failed(e)] * len(jobs)
    results = sample_with_retries(ctx.sampler, ctx.pipelines.get(key.model, key.task), key, readable, ctx.scorers,
                                  ctx.settings.quality_threshold, ctx.settings.quality_attempts,
                                  step_hook(readable, ctx), inputs) if readable else []
    checked = iter(check(results, ctx.safety, ctx.settings.safety))
    return [unreadable.get(str(j.id)) or next(checked) for j in jobs]


def slots(candidates: list[Candidate]) -> list[Slot]:
    """What a job's write needs of its candidates (every one was offered an image before the job is written)."""
    kept = []
    for c in candidates:
        assert c.image is not None, "every slot was offered an image before the job is written"
        kept.append(Slot(c.image, c.seed, c.score, c.scores, c.attempts, c.nsfw))
    return kept


def shares(jobs: list[Job], results: list[Ok[list[Candidate]] | Failed], seconds: float) -> list[float]:
    """Each job's share of a group's `seconds`: the images it had made, quality retries included, over all the
    images the group's pipeline calls made (the images of one group have one size and step count, so each costs
    the same). A job that failed counts the images it asked for: they were in the call."""
    made = [sum(max(1, len(c.attempts)) for c in r.value) if isinstance(r, Ok) else j.request.num_images
            for j, r in zip(jobs, results, strict=True)]
    total = sum(made) or 1
    return [seconds * m / total for m in made]


def run_batch(messages: list[Job], ctx: Context) -> list[Job | None]:
    """`start_batch`, then waits for its writes: each job's record as stored, or None (left for later)."""
    return [o.result() if isinstance(o, Future) else o for o in start_batch(messages, ctx).outcomes]


@dataclass(frozen=True)
class Started:
    """A sampled batch. `outcomes`, in message order: each job's record as stored; a future of it while its
    images are being written (its message is acknowledged only once the future is done, and meanwhile the next
    batch samples); or None for a delivery to leave unacked, because a live worker holds the job (`Claim.held`)
    or its outcome is not yet durable (`Claim.later`). `call_seconds`: seconds spent in pipeline calls, per model."""

    outcomes: list[Job | Future[Job] | None]
    call_seconds: dict[str, float]


def start_batch(messages: list[Job], ctx: Context) -> Started:
    """Samples every job of a batch and starts writing what succeeded."""
    outcome: dict[int, Job | Future[Job] | None] = {}
    call_seconds: dict[str, float] = {}
    runnable: list[Job] = []
    for n, message in enumerate(messages):
        job, claimed = claim_safely(message, ctx)
        if claimed is Claim.run:
            runnable.append(job)
        outcome[n] = None if claimed in (Claim.held, Claim.later) else job
    order = {job.id: n for n, job in enumerate(messages)}
    groups = list(group_jobs(runnable, ctx.settings.registry).items())
    for g, (key, jobs) in enumerate(groups):
        t0 = time.perf_counter()
        try:
            results = sample_jobs(key, jobs, ctx)
        except SoftTimeLimitExceeded:
            reason = f"time limit: the batch ran past {ctx.settings.soft_time_limit_s}s"
            for _, left in groups[g:]:
                for j in left:
                    outcome[order[j.id]] = finish_or_later(j, ctx, JobStatus.failed, error=reason)
            break
        except Exception as e:  # the model itself would not load: every job of the group fails with it
            results = [Failed(e)] * len(jobs)
        sample_s = time.perf_counter() - t0  # sampling, scoring and quality retries of the whole group
        call_seconds[key.model] = call_seconds.get(key.model, 0.0) + sample_s
        for job, result, share in zip(jobs, results, shares(jobs, results, sample_s), strict=True):
            queued_s = ((job.started_at or job.created_at) - job.created_at).total_seconds()
            timings = {"queued_s": queued_s, "sample_s": sample_s,
                       "batch_images": float(sum(j.request.num_images for j in jobs))}
            job = job.model_copy(update={"usage": Usage(accelerator_s=share, queue_s=queued_s)})
            if isinstance(result, Failed):
                outcome[order[job.id]] = finish_or_later(job, ctx, JobStatus.failed, error=result.reason,
                                                         timings=timings)
            else:
                outcome[order[job.id]] = ctx.writer.write(job, slots(result.value), timings, ctx)
    return Started([outcome[n] for n in range(len(messages))], call_seconds)
