"""The Celery side that publishers and workers share: broker config, the task name, and the enqueue helper.

The API publishes by task name, so it never imports the worker (nor torch).
"""

from __future__ import annotations

from celery import Celery

from shared.jobstore import JobStore
from shared.redis_server import kombu_url
from shared.schema import Job
from shared.settings import Settings

GENERATE_TASK = "genfleet.generate"


def celery_config(settings: Settings, redis_url: str) -> dict:
    """Settings both ends of the queue must agree on."""
    return {
        "broker_url": kombu_url(redis_url),
        "broker_connection_retry_on_startup": True,
        # Redis redelivers unacked messages after this; it must outlast the hard time limit (Settings checks).
        "broker_transport_options": {"visibility_timeout": settings.visibility_timeout_s},
        "task_serializer": "json",
        "accept_content": ["json"],  # a pickle message is refused, never deserialised
        "result_serializer": "json",
        "task_ignore_result": True,  # outcomes live in the job store, not a result backend
        "task_default_queue": settings.queue,
        "task_create_missing_queues": True,
    }


def publisher(settings: Settings, redis_url: str) -> Celery:
    app = Celery("genfleet-publisher", set_as_current=False)
    app.conf.update(celery_config(settings, redis_url))
    return app


def enqueue(job: Job, store: JobStore, app: Celery, queue: str) -> None:
    """Records the job, then publishes it. If the publish fails the record is removed again, so a job the
    caller was told failed never lingers as `queued`."""
    if not store.create(job):
        raise ValueError(f"job {job.id} exists")
    try:
        app.send_task(GENERATE_TASK, args=[job.model_dump(mode="json")], queue=queue, task_id=str(job.id))
    except Exception:
        store.delete(job.id)
        raise
