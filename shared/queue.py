"""The Celery side that publishers and workers share: broker config, the task name, and the enqueue helper.

The API publishes by task name, so it never imports the worker (nor torch).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Callable
from contextlib import suppress
from functools import cache, lru_cache
from typing import Any

import redis
import redis.asyncio
from celery import Celery

from genfleet.shared.failpoints import failpoint
from genfleet.shared.fairshare import tenant_of, waiting
from genfleet.shared.jobstore import JobStore, Outgoing
from genfleet.shared.kombu_adapter import envelope, priority_list_name
from genfleet.shared.leases import Warm, holding, transport_options
from genfleet.shared.redis_server import kombu_url
from genfleet.shared.schema import Job, JobStatus, Priority
from genfleet.shared.settings import Settings, get_settings

log = logging.getLogger(__name__)
GENERATE_TASK = "genfleet.generate"
WEBHOOK_TASK = "genfleet.webhook"

# Priorities are kombu's Redis priority lists: each queue is one list per step, and a worker's BRPOP names
# them in this order, so a waiting high job is always taken before a normal one. Lower number, sooner.
PRIORITY_STEPS = {Priority.high: 0, Priority.normal: 3, Priority.low: 6}
PUBLISH_CHUNK = 1000  # messages per Redis pipeline when publishing many
_SEP = ":"  # kombu's default separator is "\x06\x16"; a colon keeps list names readable for KEDA and redis-cli


def priority_list(queue: str, step: int) -> str:
    """The Redis list of one priority step of `queue` (kombu's naming, with our separator)."""
    return priority_list_name(queue, step, _SEP)


def priority_lists(queue: str) -> list[str]:
    """The Redis lists that hold `queue`'s messages, most urgent first."""
    return [priority_list(queue, step) for step in PRIORITY_STEPS.values()]


def webhook_queue(queue: str) -> str:
    return f"{queue}.webhooks"


def queue_for(settings: Settings, model: str) -> str:
    """The queue of `model`'s jobs. The default model's is `GENFLEET_QUEUE`; every other model has one of its
    own, so a worker consumes only the models it serves (GENFLEET_WORKER_MODELS) and a job waits for a worker
    that holds, or may load, its model. `genfleet queues` prints them (KEDA's triggers name their lists)."""
    return _queue_name(settings.queue, settings.model, model)


@lru_cache(maxsize=1024)
def _queue_name(base: str, default_model: str, model: str) -> str:  # cached: every POST asks, for every model
    if model == default_model:
        return base
    slug = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")[-40:]
    return f"{base}.m.{slug}-{hashlib.sha256(model.encode()).hexdigest()[:6]}"


def model_queues(settings: Settings, models: list[str] | None = None) -> list[str]:
    """The queues of `models` (every model served, unset), the default model's first."""
    return [queue_for(settings, m) for m in (models if models is not None else settings.models)]


def celery_config(settings: Settings, redis_url: str) -> dict[str, Any]:
    """Settings both ends of the queue must agree on."""
    broker_url, broker_options = kombu_url(redis_url)
    return {
        "broker_url": broker_url,
        "broker_connection_retry_on_startup": True,
        # A message's lease: a live worker renews it, a dead worker's messages are requeued once it runs out.
        "broker_transport_options": {**transport_options(settings.visibility_timeout_s), **broker_options,
                                     "priority_steps": sorted(PRIORITY_STEPS.values()), "sep": _SEP,
                                     "queue_order_strategy": "priority"},
        "task_default_priority": PRIORITY_STEPS[Priority.normal],
        "task_serializer": "json",
        "accept_content": ["json"],  # a pickle message is refused, never deserialised
        "result_serializer": "json",
        "task_ignore_result": True,  # outcomes live in the job store, not a result backend
        "task_default_queue": settings.queue,
        "task_create_missing_queues": True,
    }


def given_redis(settings: Settings, command: str) -> str:
    """The Redis URL a consuming process was given by `genfleet COMMAND`, which starts the embedded Redis when
    none is configured."""
    if not settings.redis_url:
        raise SystemExit(f"GENFLEET_REDIS_URL is not set: run `genfleet {command}`, which starts the embedded Redis")
    return settings.redis_url


def consumer(name: str, settings: Settings, command: str, warm: Warm | None = None, **conf: Any) -> Celery:
    """A Celery app that consumes (a worker's): the shared config plus `conf`; a generating worker announces the
    models it keeps `warm`."""
    app = Celery(name)
    app.conf.update(celery_config(settings, given_redis(settings, command)))
    app.conf.update(task_acks_late=True, task_reject_on_worker_lost=True, **conf)
    app.steps["consumer"].add(holding(warm))
    return app


def built_on_access(create_app: Callable[[Settings], Celery]) -> Callable[[str], Celery]:
    """A module `__getattr__` for a consumer's module: `celery -A MODULE` asks it for `app`, which it builds from the
    environment's settings on first access. So importing the module builds nothing, exits nothing."""

    @cache
    def build() -> Celery:
        return create_app(get_settings())

    def __getattr__(name: str) -> Celery:
        if name == "app":
            return build()
        raise AttributeError(name)

    return __getattr__


def publisher(settings: Settings, redis_url: str) -> Celery:
    app = Celery("genfleet-publisher", set_as_current=False)
    app.conf.update(celery_config(settings, redis_url))
    return app


def task_message(app: Celery, job: Job, queue: str) -> tuple[str, str]:
    """The Redis list, and the message, that `_send` would have kombu push for `job`, built without sending it,
    so that the record and the message can go to Redis in one atomic step. Celery builds the task message
    (headers and body, `amqp.as_task_v2`); the envelope is the Redis transport's (shared/kombu_adapter.py)."""
    argsrepr = f"[job {job.id}]"
    headers, properties, body, _ = app.amqp.as_task_v2(str(job.id), GENERATE_TASK, args=[job.model_dump(mode="json")],
                                                       kwargs={}, argsrepr=argsrepr, kwargsrepr="{}")
    step = PRIORITY_STEPS[job.request.priority]
    properties = {**properties, "reply_to": app.thread_oid, "argsrepr": argsrepr, "kwargsrepr": "{}"}
    return priority_list(queue, step), envelope(headers, properties, body, queue, step)


def outgoing(app: Celery, job: Job, queue: str) -> Outgoing:
    """`job`'s message bound for `queue`, with what fair share needs: the queue's lists and its tenant."""
    lists = tuple(priority_lists(queue))
    name, message = task_message(app, job, queue)
    return Outgoing(lists, lists.index(name), message, tenant_of(job))


async def enqueue(job: Job, store: JobStore, ar: redis.asyncio.Redis, app: Celery, queue: str, bound: int = 0,
                  counted: list[str] | None = None) -> None:
    """Records the job and pushes its message in one atomic step, one Redis round trip (with the durability
    rule's wait pipelined behind it): no crash can leave one without the other, so a single job needs neither
    the unpublished ledger nor the sweeper (a batch, published in pipelines of a thousand, does). With a
    `bound`, the same step refuses the job (QueueFull) when the queues `counted` already hold that many."""
    lists = [name for q in (counted or []) for name in priority_lists(q)]
    try:
        if not await store.submit(ar, job, outgoing(app, job, queue), bound, lists):  # and waits on the rule
            # The id is fresh, so the record is this job's own: a first try ran and its reply was lost with the
            # connection, and redis-py sent the script again. Record and message went together; the retry's wait
            # covered none of it, so confirm the rule now.
            log.warning("job %s was already recorded by a retried submit; confirming it", job.id)
            await asyncio.to_thread(store.confirm, job.id)
    except redis.RedisError:
        # Not confirmed durable, or Redis went away with the outcome unknown. The caller will hear 503: cancel,
        # so a message that did go out runs nothing (best effort: with Redis away this fails too, and the job may
        # run; a retry with the same Idempotency-Key finds it).
        with suppress(redis.RedisError):
            cancelled = job.model_copy(update={"status": JobStatus.cancelled, "error": "not confirmed durable"})
            await asyncio.to_thread(store.update, cancelled)
        raise


def publish(jobs: list[Job], store: JobStore, app: Celery, settings: Settings) -> None:
    """The one way recorded jobs reach their queues: a batch's, the sweeper's and the reconciler's. Each job's
    message (`task_message`) goes onto its model's queue, a thousand to a Redis pipeline, with the mark that the
    thousand is published (and the durability rule's wait) in the same round trip. A single job takes `enqueue`,
    which records it and pushes the same message in one atomic step."""
    for start in range(0, len(jobs), PUBLISH_CHUNK):
        chunk = jobs[start:start + PUBLISH_CHUNK]
        store.publish([outgoing(app, job, queue_for(settings, job.model)) for job in chunk], [j.id for j in chunk])
        failpoint("publish.after-chunk")


def queue_depth(r: redis.Redis, queue: str) -> dict[str, int]:
    """Messages waiting in each priority of `queue`, in its ready list and its tenants' backlogs (reserved,
    unacked ones are not counted)."""
    return dict(zip((p.value for p in PRIORITY_STEPS), waiting(r, priority_lists(queue)), strict=True))
