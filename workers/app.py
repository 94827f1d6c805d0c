"""The Celery app and its one task, built by `create_app(settings)`. Start it with `genfleet worker` (or
`celery -A genfleet.workers.app worker`, which builds it from the environment's settings on first use).

Importing this module builds nothing, starts nothing and edits no environment. Reliability settings come from
Celery's own docs and bug tracker: JSON only, late acks, a message whose worker died goes back to the queue, one
job at a time per process with a prefetch deep enough to batch from.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from celery import Celery, signals
from prometheus_client import multiprocess, start_http_server

from genfleet.shared import kombu_adapter, metrics
from genfleet.shared.errors import MissingInterface
from genfleet.shared.fairshare import Fairness, FairShare
from genfleet.shared.jobstore import JobStore
from genfleet.shared.leases import Warm
from genfleet.shared.logs import configure_celery_logging
from genfleet.shared.queue import GENERATE_TASK, built_on_access, consumer, given_redis, model_queues, priority_lists
from genfleet.shared.redis_server import client
from genfleet.shared.schema import Job, JobStatus
from genfleet.shared.settings import Settings, WriteIn
from genfleet.shared.signing import NoSigner, require
from genfleet.shared.webhooks import notify
from genfleet.workers import batches_adapter, billiard_adapter
from genfleet.workers.batching import AcceleratorBatches, Reconnected, Report
from genfleet.workers.delivery import Event, started, written
from genfleet.workers.fastpath import use_compile_cache
from genfleet.workers.models import PipelineCache, resolve_device
from genfleet.workers.recording import open_recorder
from genfleet.workers.refill import refilling
from genfleet.workers.runner import Context, start_batch
from genfleet.workers.safety import SafetyChecker
from genfleet.workers.sampling import Sampler
from genfleet.workers.scoring import ScorerOptions, ScorerSet
from genfleet.workers.write_process import ProcessWrites
from genfleet.workers.writer import Outstanding, ThreadWrites, Writes

log = logging.getLogger(__name__)


@dataclass
class Worker:
    """What a worker process holds: its settings and app; in its pool process, its models (`context`) and the
    writes it has started and not yet reported, by task id."""

    settings: Settings
    app: Celery
    warm: Warm  # the models its pool process holds, as its lease renewals announce them
    ctx: Context | None = None
    writes: Outstanding[Job] = field(default_factory=Outstanding)


# Set by `create_app`. The pool process is forked from the main process and runs the task and `drain` by
# reference (pickled by name), so they find the worker here rather than as an argument.
_worker: Worker | None = None


def check_interfaces() -> None:
    """Stops the worker at start, saying which, when an installed library lacks a name the delivery rests on."""
    try:
        for adapter in (kombu_adapter, batches_adapter, billiard_adapter):
            adapter.check()
    except MissingInterface as e:
        raise SystemExit(f"genfleet worker cannot start: {e}") from e


def create_app(settings: Settings) -> Celery:
    """The worker's Celery app, with its task, bootsteps and signal handlers."""
    global _worker
    check_interfaces()
    try:  # a worker that would store unsigned images stops here, saying why; a development signer is made here
        require(settings)
    except NoSigner as e:
        raise SystemExit(f"genfleet worker cannot start: {e}") from e
    # Celery's prefork pool forks its pool process from this process, which imports torch, and PyTorch refuses
    # CUDA in a child forked after the parent asked the CUDA runtime for its devices ("Cannot re-initialize CUDA
    # in forked subprocess": every batch of a worker failed so on an H200, docs/benchmarks.md). With this,
    # PyTorch's own switch, the question goes to NVML; the pool and writer processes inherit it.
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    warm = Warm(settings.serving[:1])  # the one it loads as it starts (`_warm`); then what it holds
    app = consumer(
        "genfleet", settings, "worker", warm,
        task_time_limit=settings.hard_time_limit_s,
        task_soft_time_limit=settings.soft_time_limit_s,
        worker_concurrency=1,  # one warm pipeline per process, one process per accelerator
        # the batch sampling and the next one filling behind it; messages being written borrow slots of their own
        # (workers/batching.py), so a newcomer's job waits behind one reserved batch at most
        worker_prefetch_multiplier=2 * settings.max_batch,
        worker_cancel_long_running_tasks_on_connection_loss=True,
    )
    app.steps["consumer"].add(Reconnected)
    # the tenants' backlogs of the queues this worker consumes, moved on in fair order as it takes messages
    queues = [priority_lists(queue) for queue in model_queues(settings, settings.serving)]
    app.steps["consumer"].add(refilling(FairShare(client(given_redis(settings, "worker")), Fairness.of(settings)),
                                        queues))
    configure_celery_logging(settings.log_format)
    _worker = Worker(settings, app, warm)
    app.task(name=GENERATE_TASK, base=JobBatches, flush_every=settings.max_batch,
             flush_interval=settings.max_wait_ms / 1000)(generate)
    signals.worker_process_init.connect(_warm, dispatch_uid="genfleet-warm")
    signals.worker_init.connect(_serve_metrics, dispatch_uid="genfleet-metrics")
    signals.worker_process_shutdown.connect(_forget_process, dispatch_uid="genfleet-forget")
    return app


__getattr__ = built_on_access(create_app)  # `celery -A genfleet.workers.app` builds the app on first access


def worker() -> Worker:
    if _worker is None:
        raise RuntimeError("no worker app in this process: call create_app(settings) first")
    return _worker


def context() -> Context:
    w = worker()
    if w.ctx is None:
        settings, app = w.settings, w.app
        device = resolve_device(settings.device)
        use_compile_cache(settings.compile_cache_dir)
        recorder = open_recorder(settings, lambda url, event: notify(app, settings.queue, url, event))
        writer: Writes
        if settings.write_in is WriteIn.process:
            writer = ProcessWrites(settings, settings.write_threads, settings.write_queue)
            writer.start()
        else:
            writer = ThreadWrites(settings.write_threads, settings.write_queue)
        w.ctx = Context(
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
            marker=recorder.marker,
        )
    return w.ctx


def observe(job: Job) -> None:
    """Metrics of one finished job (read off its record, so what is exported is what was recorded)."""
    model = job.model
    metrics.JOBS_FINISHED.labels(model, job.status.value).inc()
    if job.finished_at is not None:
        metrics.JOB_SECONDS.labels(model).observe((job.finished_at - job.created_at).total_seconds())
    if job.status is JobStatus.succeeded:
        metrics.IMAGES_GENERATED.labels(model).inc(len(job.outputs))
        metrics.IMAGES_SIGNED.labels(model).inc(sum("c2pa" in out.marks for out in job.outputs))
        metrics.IMAGES_WATERMARKED.labels(model).inc(sum("watermark" in out.marks for out in job.outputs))
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
            settings = worker().settings
            cls._store = JobStore(client(given_redis(settings, "worker")), settings.job_ttl_s)
        return cls._store

    def suspects(self, ids: list[str]) -> set[str]:
        return self._jobs().suspects(ids)

    def lost(self, ids: list[str]) -> None:
        self._jobs().mark_suspects(ids)

    def drain(self) -> Callable[[], Report]:
        return drain

    def holds(self, models: list[str]) -> None:
        worker().warm.models = models


def _written(finished: dict[str, Job | BaseException]) -> dict[str, Event]:
    """The events of writes that ended; a job recorded is observed."""
    events: dict[str, Event] = {}
    for task_id, result in finished.items():
        events[task_id] = written(result)
        if isinstance(result, Job):
            observe(result)
        metrics.IN_FLIGHT.dec()
    return events


def drain() -> Report:
    """Waits for this process's outstanding writes and reports them (run when no batch follows)."""
    writes = worker().writes
    finished = _written(writes.wait())
    return Report(now=[], written=finished, outstanding=len(writes), warm=context().pipelines.warm)


def generate(requests: list[Any]) -> Report:
    """One batch: each request's only argument is a job record (JSON). Returns once the batch is sampled, with an
    event for each message and for earlier messages whose writes have ended (workers/delivery.py)."""
    jobs = [Job.model_validate(r.args[0]) for r in requests]
    metrics.IN_FLIGHT.inc(len(jobs))
    try:
        batch = start_batch(jobs, context())
    except BaseException:
        metrics.IN_FLIGHT.dec(len(jobs))
        raise
    writes = worker().writes
    now: list[Event] = []
    for req, outcome in zip(requests, batch.outcomes, strict=True):
        now.append(started(outcome))
        if isinstance(outcome, Future):
            writes.add(req.id, outcome)
            continue
        metrics.IN_FLIGHT.dec()
        if outcome is not None:
            observe(outcome)
    observe_device(context(), batch.call_seconds)
    return Report(now=now, written=_written(writes.collect()), outstanding=len(writes),
                  warm=context().pipelines.warm)


def _warm(**_: Any) -> None:
    """Loads the default model as the process starts, so the first job does not pay for it."""
    context().pipelines.get(worker().settings.serving[0])


def _serve_metrics(**_: Any) -> None:
    port = worker().settings.metrics_port
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ and port:
        start_http_server(port, registry=metrics.multiprocess_registry())
        log.info("metrics on :%d/metrics", port)


def _forget_process(pid: int | None = None, **_: Any) -> None:
    # A warm shutdown ends after the batch in hand is sampled: let its writes finish, so its jobs are stored and
    # recorded. Their messages were not acknowledged; they come back, find their jobs ended, and are dropped.
    writes = worker().writes
    if len(writes):
        log.info("finishing %d write(s) before this process exits", len(writes))
        writes.wait(worker().settings.storage_outage_s)
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        multiprocess.mark_process_dead(pid or os.getpid())
