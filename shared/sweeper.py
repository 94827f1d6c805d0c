"""Publishing what a crash left recorded but unsent.

The API records a job, then publishes its message, then marks it published. A process that dies between the
first two steps (or half way through a batch) leaves `queued` records that no message will ever run. The
sweeper, run by every API process every `INTERVAL_S` under a Redis lock (one sweep at a time across replicas),
takes the records still unpublished after `GENFLEET_PUBLISH_GRACE_S`, publishes those still queued (a
cancelled one is only dropped from the list), then marks them published. A crash between those last two steps
publishes a job twice; the job store's rules make the second message a no-op.

When a consumer has asked for it (it reconnected: shared/reconcile.py), the same sweep, under the same lock,
also publishes again the queued jobs whose message a broken pop lost.
"""

from __future__ import annotations

import logging
import threading

from celery import Celery

from genfleet.shared import keys
from genfleet.shared.jobstore import JobStore
from genfleet.shared.metrics import SWEPT
from genfleet.shared.queue import publish
from genfleet.shared.reconcile import reconcile_if_asked
from genfleet.shared.schema import JobStatus
from genfleet.shared.settings import Settings

log = logging.getLogger(__name__)

INTERVAL_S = 5.0


def sweep(store: JobStore, app: Celery, settings: Settings) -> int:
    """One sweep; returns how many jobs it published."""
    if not store.redis.set(keys.SWEEPER_LOCK, "1", nx=True, ex=120):
        return 0  # another process is sweeping
    try:
        published = 0
        while ids := store.unpublished(settings.publish_grace_s):
            jobs = [j for j in store.get_many(ids) if j is not None and j.status is JobStatus.queued]
            if jobs:
                publish(jobs, store, app, settings)  # marks them published as it goes
                log.warning("published %d job(s) a crash had left unsent", len(jobs))
            sent = {str(j.id) for j in jobs}
            store.published([i for i in ids if i not in sent])  # cancelled or gone: only dropped from the list
            published += len(jobs)
        SWEPT.inc(published)
        return published + reconcile_if_asked(store, app, settings)
    finally:
        store.redis.delete(keys.SWEEPER_LOCK)


class Sweeper(threading.Thread):
    """Sweeps every `INTERVAL_S` until `stop()`; a failed sweep (Redis away) is logged and tried again."""

    def __init__(self, store: JobStore, app: Celery, settings: Settings) -> None:
        super().__init__(name="genfleet-sweeper", daemon=True)
        self.args, self.stopping = (store, app, settings), threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(INTERVAL_S):
            try:
                sweep(*self.args)
            except Exception:
                log.warning("sweep failed; trying again in %.0fs", INTERVAL_S, exc_info=True)

    def stop(self) -> None:
        self.stopping.set()
