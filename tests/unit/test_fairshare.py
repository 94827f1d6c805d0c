"""Fair share's scripts on a real Redis: the order they serve tenants in, the cap, the counts that see the
backlogs, and the usage the job store adds up. A worker is played by RPOP on the ready list, as kombu's BRPOP."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime

import pytest

from genfleet.shared import keys
from genfleet.shared.errors import QueueFull
from genfleet.shared.fairshare import Fairness, FairShare, waiting
from genfleet.shared.jobstore import JobStore
from genfleet.shared.kombu_adapter import task_id
from genfleet.shared.queue import outgoing, priority_lists, publisher
from genfleet.shared.reconcile import carried
from genfleet.shared.redis_server import async_client
from genfleet.shared.schema import Job, JobRequest, JobStatus, Priority, Usage
from genfleet.shared.settings import Settings

QUEUE = "fair-test"
LISTS = priority_lists(QUEUE)  # high, normal, low
READY = LISTS[1]  # the normal priority's list


def jobs_of(tenant: str, n: int) -> list[Job]:
    return [Job.new(JobRequest(prompt=f"{tenant} {i}"), "embedded", tenant=tenant) for i in range(n)]


def send(store: JobStore, jobs: list[Job]) -> None:
    """Records and publishes, as a batch is sent."""
    app = publisher(Settings(queue=QUEUE), "redis://unused")
    store.create_many(jobs)
    store.publish([outgoing(app, j, QUEUE) for j in jobs], [j.id for j in jobs])


def pop(r) -> bytes | None:
    """kombu's BRPOP over the queue's lists, most urgent first, without the wait."""
    return next((raw for name in LISTS if (raw := r.rpop(name)) is not None), None)


def take(store: JobStore, n: int, what: str = "tenant") -> list[str]:
    """What a worker would receive next, `n` messages, with the dispatcher topping up after each."""
    got = []
    for _ in range(n):
        raw = pop(store.redis)
        if raw is None:
            break
        job = store.get(task_id(raw))
        got.append(job.tenant if what == "tenant" else job.request.priority.value)
        store.fair.dispatch([LISTS])
    return got


@pytest.fixture
def store(redis):
    return JobStore(redis, 600, fairness=Fairness(window=2, weights={"a": 3.0, "b": 1.0}))


def test_weights_split_the_service_three_to_one(store):
    send(store, jobs_of("a", 200))
    send(store, jobs_of("b", 200))
    served = Counter(take(store, 200)[4:])  # past the window that a alone filled before b arrived
    assert served["a"] / served["b"] == pytest.approx(3.0, rel=0.1), served


def test_a_newcomer_is_served_after_the_window_not_after_the_backlog(store):
    send(store, jobs_of("a", 1000))
    send(store, jobs_of("b", 1))
    order = take(store, 10)
    assert order.index("b") <= 2, order  # the window (2) of a's, then b's; not 1000 of a's
    assert waiting(store.redis, [READY]) == [1000 - order.count("a")]  # the rest of a's wait, counted


def test_equal_weights_alternate(redis):
    store = JobStore(redis, 600, fairness=Fairness(window=1))
    for tenant in "xyz":
        send(store, jobs_of(tenant, 30))
    order = take(store, 90)
    assert Counter(order[:60]) == {"x": 20, "y": 20, "z": 20}
    assert len(order) == 90 and store.redis.zcard(keys.fair(READY, "active")) == 0


def test_off_is_first_come_first_served(redis):
    store = JobStore(redis, 600)  # no fairness: window 0
    send(store, jobs_of("a", 20))
    send(store, jobs_of("b", 1))
    assert store.redis.llen(READY) == 21 and take(store, 21)[-1] == "b"


def test_turned_off_the_dispatcher_drains_what_waited_while_it_was_on(redis):
    store = JobStore(redis, 600, fairness=Fairness(window=2))
    send(store, jobs_of("a", 30))
    assert waiting(redis, LISTS) == [0, 30, 0] and redis.llen(READY) == 2
    FairShare(redis, Fairness()).dispatch([LISTS])  # a worker with GENFLEET_FAIR_SHARE=false
    assert redis.llen(READY) == 30 and waiting(redis, LISTS) == [0, 30, 0]  # all on kombu's list now


def test_a_capped_tenant_waits_until_a_job_of_its_own_finishes(redis):
    store = JobStore(redis, 600, fairness=Fairness(window=4, caps={"a": 2}))
    a, b = jobs_of("a", 6), jobs_of("b", 3)
    send(store, a)
    send(store, b)
    first = take(store, 10)
    assert Counter(first) == {"a": 2, "b": 3}  # a's two in flight, then only b's
    assert redis.hget(keys.FAIR_INFLIGHT, "a") == b"2"
    finished = store.get(a[0].id).model_copy(update={"status": JobStatus.succeeded})
    assert store.update(finished)
    assert redis.hget(keys.FAIR_INFLIGHT, "a") == b"1"
    store.fair.dispatch([LISTS])
    assert take(store, 10) == ["a"]  # one slot freed, one more of a's goes on


def test_a_job_cancelled_while_it_waited_takes_no_slot(redis):
    store = JobStore(redis, 600, fairness=Fairness(window=1, caps={"a": 1}))
    a = jobs_of("a", 3)
    send(store, a)
    store.update(store.get(a[1].id).model_copy(update={"status": JobStatus.cancelled}))  # in the backlog
    assert take(store, 1) == ["a"] and redis.hget(keys.FAIR_INFLIGHT, "a") == b"1"
    store.update(store.get(a[0].id).model_copy(update={"status": JobStatus.succeeded}))
    store.fair.dispatch([LISTS])
    assert take(store, 2) == ["a", "a"]  # the cancelled one went on without counting; the third counted
    assert redis.hget(keys.FAIR_INFLIGHT, "a") == b"1"


def test_a_waiting_urgent_job_holds_back_the_less_urgent_ones_already_ready(redis):
    store = JobStore(redis, 600, fairness=Fairness(window=2))
    low = [j.model_copy(update={"request": j.request.model_copy(update={"priority": Priority.low})})
           for j in jobs_of("a", 4)]
    send(store, low)
    assert redis.llen(LISTS[2]) == 2  # two low ones ready: nothing more urgent waits
    high = [j.model_copy(update={"request": j.request.model_copy(update={"priority": Priority.high})})
            for j in jobs_of("b", 5)]
    send(store, high)
    # the high list holds its window, three high jobs wait behind it: the ready low ones went back, so a worker
    # popping the high list empty (before any dispatch) finds nothing less urgent to take instead
    assert redis.llen(LISTS[0]) == 2 and redis.llen(LISTS[2]) == 0
    assert [pop(redis) is not None for _ in range(3)] == [True, True, False]
    store.fair.dispatch([LISTS])
    assert take(store, 9, what="priority") == ["high"] * 3 + ["low"] * 4
    assert waiting(redis, LISTS) == [0, 0, 0]


def test_the_reconciler_sees_messages_in_the_backlogs(redis):
    store = JobStore(redis, 600, fairness=Fairness(window=1))
    a = jobs_of("a", 5)
    send(store, a)
    assert carried(redis, [QUEUE]) == {str(j.id) for j in a}  # 1 ready, 4 waiting their turn


def test_the_bound_counts_the_backlogs(redis, redis_url):
    store = JobStore(redis, 600, fairness=Fairness(window=1))
    send(store, jobs_of("a", 3))
    app = publisher(Settings(queue=QUEUE), "redis://unused")
    job = jobs_of("b", 1)[0]

    async def submit(bound: int) -> bool:
        async with async_client(redis_url) as ar:
            return await store.submit(ar, job, outgoing(app, job, QUEUE), bound=bound, counted=LISTS)

    with pytest.raises(QueueFull):
        asyncio.run(submit(3))  # 1 ready and 2 in a's backlog
    assert asyncio.run(submit(4)) and take(store, 4).count("b") == 1


def test_usage_is_the_sum_of_the_records_of_its_tenant(redis):
    store = JobStore(redis, 600)
    now = datetime.now(UTC)
    hour = int(now.timestamp()) // 3600
    expected = Counter()
    for tenant, seconds in (("a", 1.5), ("a", 2.25), ("b", 7.0)):
        job = jobs_of(tenant, 1)[0]
        store.create(job)
        done = job.model_copy(update={"status": JobStatus.succeeded, "finished_at": now,
                                      "usage": Usage(accelerator_s=seconds, queue_s=0.5)})
        assert store.update(done) and not store.update(done)  # a second terminal update adds nothing
        if tenant == "a":
            expected.update({"accelerator_s": seconds, "queue_s": 0.5, "jobs": 1})
    usage = {k.decode(): float(v) for k, v in redis.hgetall(keys.usage("a", hour)).items()}
    assert usage == {"images": 0.0, **expected}
    assert float(redis.hget(keys.USAGE_TOTAL, "b|accelerator_s")) == 7.0
    assert redis.hget(keys.QUEUED_BY_TENANT, "a") == b"0"
