"""Running one job: sample, score, encode, store, record. Plain functions; the Celery task only calls `run_job`.

Every effect is idempotent, so a redelivered message is harmless: images and manifest are create-if-absent
writes under fixed keys, the manifest is written last (a job is complete in storage when it exists), and the
job store keeps the first terminal status.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import torch
from PIL import Image

from shared.jobstore import JobStore
from shared.schema import MAX_SEED, ImageOutput, Job, JobStatus
from shared.settings import Settings
from shared.storage import Storage
from workers.encode import manifest_bytes, png_bytes
from workers.models import PipelineCache
from workers.scoring import ScorerSet

log = logging.getLogger(__name__)


@dataclass
class Context:
    """What a worker process holds for the jobs it runs."""

    settings: Settings
    store: JobStore
    storage: Storage
    pipelines: PipelineCache
    scorers: ScorerSet


def image_key(job: Job, index: int) -> str:
    return f"{job.id}/{index}.png"


def manifest_key(job: Job) -> str:
    return f"{job.id}/manifest.json"


def image_seed(job: Job, index: int) -> int:
    return (job.seed + index) % (MAX_SEED + 1)


def pipeline_kwargs(job: Job, device: torch.device) -> dict:
    """The diffusers call for this job: one prompt and one seeded generator per image."""
    req, n = job.request, job.request.num_images
    kwargs: dict = {
        "prompt": [req.prompt] * n,
        "generator": [torch.Generator(device).manual_seed(image_seed(job, i)) for i in range(n)],
    }
    optional = {"negative_prompt": [req.negative_prompt] * n if req.negative_prompt else None,
                "width": req.width, "height": req.height,
                "num_inference_steps": req.steps, "guidance_scale": req.guidance}
    kwargs.update({k: v for k, v in optional.items() if v is not None})
    return kwargs


def sample(job: Job, ctx: Context) -> list[Image.Image]:
    pipe = ctx.pipelines.get(job.model)
    return list(pipe(**pipeline_kwargs(job, ctx.pipelines.device)).images)


def store_outputs(job: Job, images: list[Image.Image], scores: list[float | None], ctx: Context) -> list[ImageOutput]:
    outputs = []
    for i, (image, score) in enumerate(zip(images, scores)):
        key, seed = image_key(job, i), image_seed(job, i)
        data = png_bytes(image, job, seed, score, ctx.settings.png_compress_level)
        ctx.storage.put(key, data, "image/png", if_absent=True)
        outputs.append(ImageOutput(index=i, url=ctx.storage.url(key), key=key, seed=seed, score=score,
                                   width=image.width, height=image.height))
    ctx.storage.put(manifest_key(job), manifest_bytes(job, outputs), "application/json", if_absent=True)
    return outputs


def _finish(job: Job, ctx: Context, status: JobStatus, **changes) -> Job:
    done = job.model_copy(update={"status": status, "finished_at": datetime.now(timezone.utc), **changes})
    if not ctx.store.update(done):
        return ctx.store.get(job.id) or done  # someone recorded an outcome first; theirs stands
    return done


def _from_manifest(job: Job, ctx: Context) -> Job | None:
    """A job whose manifest exists finished in storage before its record was written: record it now."""
    if not ctx.storage.exists(manifest_key(job)):
        return None
    body = json.loads(ctx.storage.get(manifest_key(job)))
    return _finish(job, ctx, JobStatus.succeeded, outputs=[ImageOutput(**o) for o in body["images"]])


def run_job(message: Job, ctx: Context) -> Job:
    """Runs a job to a terminal status and returns the record as stored."""
    job = ctx.store.get(message.id) or message
    if job.status.terminal:
        log.info("job %s is already %s; nothing to do", job.id, job.status)
        return job
    if (done := _from_manifest(job, ctx)) is not None:
        return done
    job = job.model_copy(update={"status": JobStatus.running, "started_at": datetime.now(timezone.utc),
                                 "attempts": job.attempts + 1})
    if not ctx.store.update(job):
        return ctx.store.get(job.id) or job  # cancelled or finished while it waited
    timings: dict[str, float] = {"queued_s": (job.started_at - job.created_at).total_seconds()}
    try:
        t0 = time.perf_counter()
        images = sample(job, ctx)
        t1 = time.perf_counter()
        scores = ctx.scorers.for_model(job.model).score(images, [job.request.prompt] * len(images))
        t2 = time.perf_counter()
        outputs = store_outputs(job, images, scores, ctx)
        t3 = time.perf_counter()
    except Exception as e:
        log.exception("job %s failed", job.id)
        return _finish(job, ctx, JobStatus.failed, error=f"{type(e).__name__}: {e}", timings=timings)
    timings.update(sample_s=t1 - t0, score_s=t2 - t1, store_s=t3 - t2)
    return _finish(job, ctx, JobStatus.succeeded, outputs=outputs, timings=timings)
