"""Messages being written borrow prefetch slots of their own, up to a batch, and give them back as their writes
end: so the prefetch holds one sampling batch and at most one waiting, whatever the writes (docs/fair-share.md).
The counter is kombu's own `QoS`, as the consumer makes it; the pool is the recording one of test_isolation."""

import pytest
from kombu.common import QoS

from genfleet.workers import batching
from genfleet.workers.batching import Report
from genfleet.workers.delivery import Event
from tests.unit.test_isolation import Recorded, request

pytestmark = pytest.mark.unit
BATCH = 8  # Recorded's flush_every


def consumer_qos() -> tuple[QoS, list[int]]:
    applied: list[int] = []
    qos = QoS(lambda prefetch_count: applied.append(prefetch_count), 2 * BATCH)
    qos.update()
    return qos, applied


def test_writes_borrow_slots_up_to_a_batch_and_give_them_back_as_they_end():
    task, (qos, applied) = Recorded(set()), consumer_qos()
    task.reconnected(qos)
    first = [request(f"a{i}") for i in range(BATCH)]
    task.flush(first)
    task.play(0, Report(now=[Event.writing] * BATCH, outstanding=BATCH))
    assert qos.value == 3 * BATCH  # the batch being written is out of the sampler's way
    qos.update()  # as the consumer's loop does
    assert applied[-1] == 3 * BATCH
    assert task.pool[1][0] == "drain"  # nothing else waits: a call that reports the writes as they end
    second = [request(f"b{i}") for i in range(BATCH)]
    task.flush(second)
    task.play(2, Report(now=[Event.writing] * BATCH, written={r.id: Event.recorded for r in first[:3]},
                        outstanding=2 * BATCH - 3))
    assert qos.value == 3 * BATCH  # 13 being written: still one batch lent, never more
    task.play(1, Report(now=[], written={r.id: Event.recorded for r in [*first[3:], *second]}))
    assert qos.value == 2 * BATCH and all(r.done == ["ack"] for r in [*first, *second])
    qos.update()
    assert applied == [2 * BATCH, 3 * BATCH, 2 * BATCH]  # what the channel was told, in order


def test_a_lost_batch_returns_its_slots_and_a_new_consumer_starts_from_its_own_count(monkeypatch):
    monkeypatch.setattr(batching, "discarded", lambda call: False)  # the pool kept its calls through the outage
    task, (qos, _) = Recorded(set()), consumer_qos()
    task.reconnected(qos)
    task.flush([request(f"a{i}") for i in range(3)])
    task.play(0, Report(now=[Event.writing] * 3, outstanding=3))
    assert qos.value == 2 * BATCH + 3
    fresh, _ = consumer_qos()  # the connection came back: Celery made a new counter at the configured prefetch
    task.reconnected(fresh)
    assert fresh.value == 2 * BATCH + 3  # the writes still out borrow again from the new one
    task.play(1, exc=RuntimeError("the pool process died"))  # the drain's call: its writes are lost
    assert fresh.value == 2 * BATCH and qos.value == 2 * BATCH + 3  # the old counter is left alone
