"""Every Redis key genfleet writes, in one place, so that one list says what lives in Redis.

Celery's own keys (the queues, `unacked`, `unacked_index`) are kombu's and are named in shared/queue.py.
"""

from __future__ import annotations

from uuid import UUID

PREFIX = "genfleet:"

DEAD_LETTER = f"{PREFIX}dead-letter"  # a list, newest first, capped: what exhausted its retries, with the reason
# A sorted set (by time of recording) of jobs recorded but not yet known to be published: the publisher removes
# each once its message is out; the sweeper (shared/sweeper.py) publishes what a crash left in between.
UNPUBLISHED = f"{PREFIX}unpublished"
SWEEPER_LOCK = f"{PREFIX}sweeper:lock"  # one API process sweeps at a time
# A sorted set (by time queued) of the jobs whose status is `queued`, kept by the job store's scripts; the
# reconciler (shared/reconcile.py) checks it against the messages Redis holds.
QUEUED = f"{PREFIX}queued"
# The same for the jobs whose status is `running`, by the time of their latest start: a job whose worker died and
# whose redelivered message a broken pop then lost is `running` with no message (shared/reconcile.py).
RUNNING = f"{PREFIX}running"
# Set by a consumer as it (re)connects: the next sweep looks for unfinished jobs that no message carries any more.
RECONCILE = f"{PREFIX}reconcile"
# A throwaway write whose replication stands for every write before it (JobStore.confirm)
DURABILITY_MARK = f"{PREFIX}durability-mark"


def job(job_id: UUID | str) -> str:
    """A job's record (JSON)."""
    return f"{PREFIX}job:{job_id}"


def events(job_id: UUID | str) -> str:
    """A job's event stream: status changes and step progress, read by the SSE endpoint."""
    return f"{PREFIX}events:{job_id}"


def previews(job_id: UUID | str) -> str:
    """A job's live previews: a short stream of its own, so they never push its history out of `events`."""
    return f"{PREFIX}previews:{job_id}"


def watch(job_id: UUID | str) -> str:
    """Set, with a short expiry, while a client listens to a job's events: its worker then publishes previews."""
    return f"{PREFIX}watch:{job_id}"


def suspect(job_id: UUID | str) -> str:
    """Set when a pool process died under the job while its worker lived: it runs alone on redelivery."""
    return f"{PREFIX}suspect:{job_id}"


def batch(batch_id: UUID | str) -> str:
    """A batch's record (JSON, without its counts)."""
    return f"{PREFIX}batch:{batch_id}"


def batch_counts(batch_id: UUID | str) -> str:
    """A hash of a batch's counts (total, running, succeeded, failed, cancelled), moved by the job updates."""
    return f"{PREFIX}batch:{batch_id}:counts"


def worker(worker_id: str) -> str:
    """The set of job ids a live worker holds (shared/leases.py); it expires when the worker stops renewing."""
    return f"{PREFIX}worker:{worker_id}"


def idempotency(tenant: str, digest: str) -> str:
    """The job or batch an `Idempotency-Key` (hashed) already created for a tenant."""
    return f"{PREFIX}idem:{tenant}:{digest}"


def rate_window(limit: str, key_id: str, window_start: int) -> str:
    """A counter of one rate or quota limit for one key, in one fixed window."""
    return f"{PREFIX}{limit}:{key_id}:{window_start}"


# A hash of live workers: worker id -> JSON {seen (unix time), models, held}; rewritten every lease renewal.
WORKERS = f"{PREFIX}workers"


# Fair share (shared/fairshare.py), per ready list (a kombu priority list): each tenant's backlog, the tenants
# with a backlog by virtual time, those held back by their cap, the virtual clock and the backlog's size.
def fair(ready_list: str, part: str) -> str:
    """One of a ready list's fair-share keys: active, parked, clock, waiting, returned, or `backlog:` (a prefix)."""
    return f"{PREFIX}fair:{ready_list}:{part}"


def backlog(ready_list: str, tenant: str) -> str:
    """A tenant's messages for one ready list, waiting their turn (LPUSH in, RPOP out)."""
    return fair(ready_list, "backlog:") + tenant


FAIR_WEIGHTS = f"{PREFIX}fair:weights"  # a hash: tenant -> weight, as the last publisher's settings said
FAIR_CAPS = f"{PREFIX}fair:caps"  # a hash: tenant -> most jobs in flight at once (absent: no cap)
FAIR_INFLIGHT = f"{PREFIX}fair:inflight"  # a hash: tenant -> jobs of a capped tenant sent on, not yet finished
FAIR_DISPATCHED = f"{PREFIX}fair:dispatched"  # a hash: job id -> tenant, for each job counted in FAIR_INFLIGHT
QUEUED_BY_TENANT = f"{PREFIX}queued-by-tenant"  # a hash: tenant -> jobs whose status is `queued`
USAGE_TOTAL = f"{PREFIX}usage:total"  # a hash: `tenant|field` -> lifetime total, for the Prometheus counters


def usage(tenant: str, hour: int) -> str:
    """A hash of one tenant's usage in one UTC hour (unix time // 3600): images, jobs, accelerator_s, queue_s."""
    return f"{PREFIX}usage:{tenant}:{hour}"


def images_minute(minute: int) -> str:
    """Images stored in one UTC minute (unix time // 60), for the web page's images-per-minute chart."""
    return f"{PREFIX}images:{minute}"
