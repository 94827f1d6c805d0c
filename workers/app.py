"""The Celery app and its one task. Start it with `genfleet worker` (or `celery -A genfleet.workers.app worker`).

Reliability settings come from Celery's own docs and bug tracker: JSON only, late acks, a message whose worker
died goes back to the queue, one job at a time per process with a prefetch deep enough to batch from.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from celery import signals
from prometheus_client import multiprocess, start_http_server

from genfleet.shared import metrics
from genfleet.shared.errors import NotDurable
from genfleet.shared.jobstore import JobStore
from genfleet.shared.leases import ANNOUNCE_MODELS
from genfleet.shared.logs import configure_celery_logging
from genfleet.shared.queue import GENERATE_TASK, consumer, given_redis
from genfleet.shared.redis_server import client
from genfleet.shared.schema import Job, JobStatus
from genfleet.shared.settings import WriteIn, get_settings
from genfleet.shared.webhooks import notify
from genfleet.workers.batching import AcceleratorBatches, Reconnected, Report, Settle
from genfleet.workers.fastpath import use_compile_cache
from genfleet.workers.models import PipelineCache, resolve_device
from genfleet.workers.recording import open_recorder
from genfleet.workers.runner import Context, start_batch
from genfleet.workers.safety import SafetyChecker
from genfleet.workers.sampling import Sampler
from genfleet.workers.scoring import ScorerOptions, ScorerSet
from genfleet.workers.write_process import ProcessWrites
from genfleet.workers.writer import Outstanding, ThreadWrites, Writes

log = logging.getLogger(__name__)
settings = get_settings()
app = consumer(
    "genfleet", settings, "worker",
    task_time_limit=settings.hard_time_limit_s,
    task_soft_time_limit=settings.soft_time_limit_s,
    worker_concurrency=1,  # one warm pipeline per process, one process per accelerator
    # room for the batch being written, the one sampling and the next one filling behind it (a message stays
    # unacknowledged, and counts against the prefetch, until its write ends)
    worker_prefetch_multiplier=3 * settings.max_batch,
    worker_cancel_long_running_tasks_on_connection_loss=True,
    **{ANNOUNCE_MODELS: settings.serving[:1]},  # the one it loads as it starts (`_warm`); then what it holds
)
app.steps["consumer"].add(Reconnected)
configure_celery_logging(settings.log_format)

_context: Context | None = None


def context() -> Context:
    global _context
    if _context is None:
        device = resolve_device(settings.device)
        use_compile_cache(settings.compile_cache_dir)
        recorder = open_recorder(settings, lambda url, event: notify(app, settings.queue, url, event))
        writer: Writes
        if settings.write_in is WriteIn.process:
            writer = ProcessWrites(settings, settings.write_threads, settings.write_queue)
            writer.start()
        else:
            writer = ThreadWrites(settings.write_threads, settings.write_queue)
        _context = Context(
            settings=settings,
            store=recorder.store,
            storage=recorder.storage,
            pipelines=PipelineCache(device, settings.fastpath, settings.registry, settings.model_memory_mb * 2**20,
                                    settings.pinned),
            scorers=ScorerSet(settings.scorer_names, ScorerOptions(settings.clip_model, device), settings.registry),
            sampler=Sampler(device, settings.max_batch, settings.fastpath),
            writer=writer,
            outcomes=recorder.outcomes,
            safety=SafetyChecker(settings.safety_checker, device),
        )
    return _context


def observe(job: Job) -> None:
    """Metrics of one finished job (read off its record, so what is exported is what was recorded)."""
    model = job.model
    metrics.JOBS_FINISHED.labels(model, job.status.value).inc()
    if job.finished_at is not None:
        metrics.JOB_SECONDS.labels(model).observe((job.finished_at - job.created_at).total_seconds())
    if job.status is JobStatus.succeeded:
        metrics.IMAGES_GENERATED.labels(model).inc(len(job.outputs))
        for out in job.outputs:
            if out.score is not None:
                metrics.QUALITY_SCORE.labels(model).observe(out.score)
            for attempt in out.attempts[:-1]:  # every attempt but the last was regenerated
                worst = min(attempt.scores, key=lambda k: attempt.scores[k] or 0.0, default="unscored")
                metrics.QUALITY_RETRIES.labels(model, worst).inc()
    if "batch_images" in job.timings:
        metrics.BATCH_IMAGES.labels(model).observe(job.timings["batch_images"])
    for name, hist in (("sample_s", metrics.SAMPLE_SECONDS), ("store_s", metrics.STORE_SECONDS),
                       ("queued_s", metrics.QUEUE_WAIT_SECONDS), ("encode_s", metrics.ENCODE_SECONDS),
                       ("upload_s", metrics.UPLOAD_SECONDS)):
        if name in job.timings:
            hist.labels(model).observe(job.timings[name])


def observe_device(ctx: Context, groups: dict[str, float]) -> None:
    """Accelerator metrics after a batch: memory, and GPU-seconds by model."""
    if ctx.sampler.device.type != "cuda":
        return
    import torch

    for model, seconds in groups.items():
        metrics.GPU_SECONDS.labels(model).inc(seconds)
    name = str(ctx.sampler.device)
    try:
        free, total = torch.cuda.mem_get_info(ctx.sampler.device)
    except RuntimeError as e:  # a metric never fails a batch whose images are sampled and being written
        log.warning("GPU memory unreadable: %s", e)
        return
    metrics.GPU_MEMORY_USED.labels(name).set(total - free)
    metrics.GPU_MEMORY_TOTAL.labels(name).set(total)


class JobBatches(AcceleratorBatches):
    abstract = True
    _store: JobStore | None = None  # the main process's own: `context()` would load models before the fork

    @classmethod
    def _jobs(cls) -> JobStore:
        if cls._store is None:
            cls._store = JobStore(client(given_redis(settings, "worker")), settings.job_ttl_s)
        return cls._store

    def suspects(self, ids: list[str]) -> set[str]:
        return self._jobs().suspects(ids)

    def lost(self, ids: list[str]) -> None:
        self._jobs().mark_suspects(ids)

    def drain(self) -> Callable[[], Report]:
        return drain


# This pool process's writes not yet reported to the main process (see workers/batching.py).
_writes: Outstanding[Job] = Outstanding()


def _written(finished: dict[str, Job | BaseException]) -> dict[str, Settle]:
    """Settles writes that ended: observed and acked; left unacked to come back after the lease, if the outcome
    is recorded but not confirmed durable; or requeued if the write itself raised."""
    settled: dict[str, Settle] = {}
    for task_id, job in finished.items():
        if isinstance(job, NotDurable):
            log.warning("job of task %s: %s; its message comes back after its lease", task_id, job)
            settled[task_id] = Settle.release
        elif isinstance(job, BaseException):
            log.error("writing job %s raised %r; its message goes back to the queue", task_id, job)
            settled[task_id] = Settle.requeue
        else:
            observe(job)
            settled[task_id] = Settle.ack
        metrics.IN_FLIGHT.dec()
    return settled


def drain() -> Report:
    """Waits for this process's outstanding writes and reports them (run when no batch follows)."""
    written = _written(_writes.wait())
    return Report(now=[], written=written, outstanding=len(_writes), warm=context().pipelines.warm)


@app.task(name=GENERATE_TASK, base=JobBatches, flush_every=settings.max_batch,
          flush_interval=settings.max_wait_ms / 1000)
def generate(requests: list[Any]) -> Report:
    """One batch: each request's only argument is a job record (JSON). Returns once the batch is sampled, with
    what to do with each message and with earlier messages whose writes have ended."""
    jobs = [Job.model_validate(r.args[0]) for r in requests]
    metrics.IN_FLIGHT.inc(len(jobs))
    try:
        batch = start_batch(jobs, context())
    except BaseException:
        metrics.IN_FLIGHT.dec(len(jobs))
        raise
    now: list[Settle] = []
    for req, started in zip(requests, batch.outcomes, strict=True):
        if isinstance(started, Future):
            _writes.add(req.id, started)
            now.append(Settle.later)
            continue
        metrics.IN_FLIGHT.dec()
        if started is None:
            now.append(Settle.release)
        else:
            observe(started)
            now.append(Settle.ack)
    observe_device(context(), batch.call_seconds)
    return Report(now=now, written=_written(_writes.collect()), outstanding=len(_writes),
                  warm=context().pipelines.warm)


@signals.worker_process_init.connect
def _warm(**_) -> None:
    """Loads the default model as the process starts, so the first job does not pay for it."""
    context().pipelines.get(settings.serving[0])


@signals.worker_init.connect
def _serve_metrics(**_) -> None:
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ and settings.metrics_port:
        start_http_server(settings.metrics_port, registry=metrics.multiprocess_registry())
        log.info("metrics on :%d/metrics", settings.metrics_port)


@signals.worker_process_shutdown.connect
def _forget_process(pid: int | None = None, **_: Any) -> None:
    # A warm shutdown ends after the batch in hand is sampled: let its writes finish, so its jobs are stored and
    # recorded. Their messages were not acknowledged; they come back, find their jobs ended, and are dropped.
    if len(_writes):
        log.info("finishing %d write(s) before this process exits", len(_writes))
        _writes.wait(settings.storage_outage_s)
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        multiprocess.mark_process_dead(pid or os.getpid())
