"""Publishing again the unfinished jobs that no message carries any more.

kombu's Redis transport pops a message (BRPOP) and only then records it as unacked, from the client. If the
connection breaks in between (a Redis failover; a reset while the reply is on the wire), the pop has happened
on the server and the message is gone: its job stays `queued` for ever (kombu#305; reliability.md, "kombu's
pop-then-record window"). A redelivered message can be lost the same way, and its job is then `running`, named
for the worker that died under it. That can only happen to a consumer whose connection broke, so every
consumer asks for a check as it (re)connects (shared/leases.py, `HoldMessages.start`), and the next sweep
(shared/sweeper.py) runs `reconcile` once.

The check reads the queued and running indexes first, then every message Redis holds (the priority lists, then
kombu's unacked hash), then the records again: a job still `queued`, or still `running` on a worker that no
longer holds it, whose id no message carries is published again. A live run's message is always in the unacked
hash (it is recorded there before the worker sees it, and acked only after the outcome), so a running job
with no message has no live run.
A job recorded but not yet published (a batch being sent) is the sweeper's, and is left to it. A message that
moves between the two reads (restored from unacked to a list) can be missed and its job sent twice; the job
store's rules make the second message a no-op.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import cast

import redis
from celery import Celery

from genfleet.shared import keys
from genfleet.shared.fairshare import backlogs, returned
from genfleet.shared.jobstore import JobStore
from genfleet.shared.kombu_adapter import UNACKED, task_id
from genfleet.shared.leases import holds
from genfleet.shared.metrics import RECONCILED
from genfleet.shared.queue import model_queues, priority_lists, publish
from genfleet.shared.schema import JobStatus
from genfleet.shared.settings import Settings

log = logging.getLogger(__name__)
_CHUNK = 1000


def _take_request(r: redis.Redis) -> bool:
    """Whether a reconciliation was asked for, clearing the request (atomically: one sweeper takes it)."""
    pipe = r.pipeline(transaction=True)
    pipe.exists(keys.RECONCILE)
    pipe.delete(keys.RECONCILE)
    asked, _ = pipe.execute()
    return bool(asked)


def _list_messages(r: redis.Redis, name: str) -> Iterator[bytes]:
    for start in range(0, r.llen(name), _CHUNK):
        yield from cast(list[bytes], r.lrange(name, start, start + _CHUNK - 1))


def carried(r: redis.Redis, queues: list[str]) -> set[str]:
    """The task ids of every message Redis holds for `queues`: waiting in their lists or their tenants'
    backlogs, or delivered and unacked."""
    ids: set[str | None] = set()
    for ready in (n for queue in queues for n in priority_lists(queue)):
        # Backlogs first: their messages only move on, to the list. Between the list and what was pulled back
        # from it they move both ways, so that is read on both sides of the list.
        for name in (*backlogs(r, ready), returned(ready), ready, returned(ready)):
            ids.update(task_id(m) for m in _list_messages(r, name))
    ids.update(task_id(m) for _, m in r.hscan_iter(UNACKED, count=_CHUNK))
    ids.discard(None)
    return cast(set[str], ids)


def reconcile(store: JobStore, app: Celery, settings: Settings) -> int:
    """One check; returns how many jobs it published again."""
    listed = store.unfinished_ids()
    unpublished = {i.decode() for i in cast(list[bytes], store.redis.zrange(keys.UNPUBLISHED, 0, -1))}
    held = carried(store.redis, model_queues(settings))
    lost, gone = [], []
    for start in range(0, len(listed), _CHUNK):
        chunk = [i for i in listed[start:start + _CHUNK] if i not in held and i not in unpublished]
        for job_id, job in zip(chunk, store.get_many(chunk), strict=True):
            if job is None:
                gone.append(job_id)
            elif job.status is JobStatus.queued or (
                    # the holds check is cheap insurance: only a job that no message carries gets here
                    job.status is JobStatus.running and not holds(store.redis, job.worker, job_id)):
                lost.append(job)
    store.unlist(gone)
    if lost:
        publish(lost, store, app, settings)
        log.warning("published %d unfinished job(s) whose message was lost", len(lost),
                    extra={"job_ids": [str(j.id) for j in lost[:20]]})
    RECONCILED.inc(len(lost))
    return len(lost)


def reconcile_if_asked(store: JobStore, app: Celery, settings: Settings) -> int:
    """`reconcile` once if a consumer asked for it; a check that fails leaves the request for the next sweep."""
    if not _take_request(store.redis):
        return 0
    try:
        return reconcile(store, app, settings)
    except BaseException:
        store.redis.set(keys.RECONCILE, "1")
        raise
