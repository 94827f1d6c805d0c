"""Contract tests of the three adapter modules: each private name of kombu, celery-batches and billiard that
genfleet's delivery rests on, used the way the adapter uses it, against the installed library. When an upgrade
moves one, the failing assertion names it, and the adapter's `check()` (run as a worker starts) says the same."""

import inspect
from types import SimpleNamespace

import pytest
from billiard.pool import ApplyResult
from celery_batches import Batches
from celery_batches.trace import apply_batches_task
from kombu.transport import virtual

from genfleet.shared import kombu_adapter
from genfleet.shared.errors import MissingInterface
from genfleet.workers import batches_adapter, billiard_adapter
from genfleet.workers.batches_adapter import BufferedBatches

pytestmark = pytest.mark.unit


# kombu ------------------------------------------------------------------------------------------------------------

def qos() -> virtual.QoS:
    return virtual.QoS(SimpleNamespace(do_restore=False))


def test_kombu_qos_keeps_delivered_messages_in_delivered_and_acked_tags_in_dirty():
    q = qos()
    assert isinstance(getattr(q, "_delivered", None), dict), "kombu moved virtual.QoS._delivered"
    assert isinstance(getattr(q, "_dirty", None), set), "kombu moved virtual.QoS._dirty"
    first, second = SimpleNamespace(headers={"id": "a"}), SimpleNamespace(headers={"id": "b"})
    q.append(first, "tag-1")
    q.append(second, "tag-2")
    assert kombu_adapter.held(q) == {"tag-1": first, "tag-2": second}
    q.ack("tag-1")  # the base ack: marks it dirty, to be forgotten later
    assert kombu_adapter.held(q) == {"tag-2": second}, "an acked message is still held: virtual.QoS._dirty changed"


def test_releasing_forgets_a_message_through_the_base_qos_ack_only(monkeypatch):
    assert "delivery_tag" in inspect.signature(virtual.QoS.ack).parameters, "kombu changed virtual.QoS.ack(tag)"
    seen: list[tuple[object, str]] = []
    monkeypatch.setattr(virtual.QoS, "ack", lambda self, tag: seen.append((self, tag)))
    channel = SimpleNamespace(qos=object())
    kombu_adapter.release(SimpleNamespace(channel=channel, delivery_tag="tag-9"))
    assert seen == [(channel.qos, "tag-9")]


def test_a_task_id_reads_from_a_waiting_envelope_and_from_an_unacked_triple():
    raw = kombu_adapter.envelope({"id": "job-1", "task": "t"}, {"correlation_id": "job-1"}, [[{}], {}, {}], "q", 3)
    assert kombu_adapter.task_id(raw) == "job-1"
    assert kombu_adapter.task_id(f"[{raw}, \"\", \"q\"]") == "job-1"
    assert kombu_adapter.task_id(b"not json") is None
    assert [kombu_adapter.priority_list_name("q", step, ":") for step in (0, 3)] == ["q", "q:3"]


def test_the_kombu_check_passes_here_and_names_a_missing_attribute(monkeypatch):
    kombu_adapter.check()
    init = virtual.QoS.__init__

    def without_dirty(self, *args, **kwargs):
        init(self, *args, **kwargs)
        del self._dirty

    monkeypatch.setattr(virtual.QoS, "__init__", without_dirty)
    monkeypatch.setattr(virtual.QoS, "restore_unacked_once", lambda self, stderr=None: None)  # its exit finalizer
    with pytest.raises(MissingInterface, match="`_dirty`"):
        kombu_adapter.check()


# celery-batches ---------------------------------------------------------------------------------------------------

class Probe(BufferedBatches):
    abstract = True
    holding = False

    def __init__(self) -> None:
        super().__init__()
        self.flushed: list[list[str]] = []

    def hold_flush(self) -> bool:
        return self.holding

    def flush(self, requests):
        self.flushed.append([r.id for r in requests])


def test_celery_batches_buffer_flush_and_timer_are_where_the_adapter_reads_them():
    task = Probe()
    for name in ("_buffer", "_tref", "_pool"):
        assert hasattr(task, name), f"celery-batches moved Batches.{name}"
    task._buffer.put(SimpleNamespace(id="r1", eta=None))
    task._buffer.put(SimpleNamespace(id="r2", eta=None))
    assert task.buffered() == 2
    task.holding = True
    task.flush_buffer()
    assert task.flushed == [] and task.buffered() == 2, "Batches._do_flush no longer goes through hold_flush"
    task.holding = False
    task.flush_buffer()
    assert task.flushed == [["r1", "r2"]] and task.buffered() == 0, "Batches._do_flush no longer calls flush"
    task._tref = object()
    task.forget_timer()
    assert task._tref is None


def test_celery_batches_pool_and_batch_runner_take_what_the_adapter_passes():
    task = Probe()
    calls: list[tuple] = []
    task._pool = SimpleNamespace(apply_async=lambda fn, args, **kw: calls.append((fn, args, kw)) or "call")
    assert task.pool_call(print, (1,), "on-return", "on-error", timeout=5) == "call"
    assert calls == [(print, (1,), {"callback": "on-return", "error_callback": "on-error", "timeout": 5})]
    assert list(inspect.signature(apply_batches_task).parameters)[:4] == ["task", "args", "loglevel", "logfile"], \
        "celery-batches changed apply_batches_task(task, args, loglevel, logfile)"


def test_the_celery_batches_check_passes_here_and_names_a_missing_attribute(monkeypatch):
    batches_adapter.check()
    init = Batches.__init__

    def without_buffer(self):
        init(self)
        del self._buffer

    monkeypatch.setattr(Batches, "__init__", without_buffer)
    with pytest.raises(MissingInterface, match="`_buffer`"):
        batches_adapter.check()


# billiard ---------------------------------------------------------------------------------------------------------

def test_billiard_drops_a_discarded_call_from_its_cache_under_its_job():
    cache: dict = {}
    call = ApplyResult(cache, None)
    assert hasattr(call, "_job") and hasattr(call, "_cache"), "billiard moved ApplyResult._job or ._cache"
    assert not billiard_adapter.discarded(call)
    cache.pop(call._job)  # what the pool does to a call it discards
    assert billiard_adapter.discarded(call)


def test_the_billiard_check_passes_here_and_names_a_missing_attribute(monkeypatch):
    billiard_adapter.check()
    init = ApplyResult.__init__

    def without_job(self, cache, *args, **kwargs):
        init(self, cache, *args, **kwargs)
        cache.pop(self._job)
        del self._job

    monkeypatch.setattr(ApplyResult, "__init__", without_job)
    with pytest.raises(MissingInterface, match="`_job`"):
        billiard_adapter.check()
