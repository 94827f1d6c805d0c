"""A suspect (a job whose process died under it) runs alone: in a pool call of its own, and only once the pool is
idle and every other job's write has ended, ahead of new batches. The pool here records calls and the test plays
its callbacks, so the order is exact; the real fault runs in test_failover.py."""

from types import SimpleNamespace

import pytest

from genfleet.workers import delivery as delivery_module
from genfleet.workers.batching import AcceleratorBatches, Report
from genfleet.workers.delivery import Event

pytestmark = pytest.mark.unit


def request(task_id: str, redelivered: bool = False) -> SimpleNamespace:
    done: list[str] = []
    return SimpleNamespace(id=task_id, eta=None, delivery_info={"redelivered": redelivered}, message=None, done=done,
                           acknowledge=lambda: done.append("ack"), reject=lambda requeue: done.append("requeue"))


class Recorded(AcceleratorBatches):
    abstract = True
    flush_every = 8

    def __init__(self, suspect_ids: set[str]) -> None:
        super().__init__()
        self.suspect_ids, self.pool = suspect_ids, []  # each call: (what, on_return, on_error)

    def suspects(self, ids):
        return self.suspect_ids & set(ids)

    def drain(self):
        return "drain"

    def batch_call(self, requests):
        return "batch", ([r.id for r in requests],)

    def pool_call(self, fn, args, callback, error_callback, **limits):
        call = object()
        self.pool.append((args[0] if fn == "batch" else fn, callback, error_callback))
        return call

    def play(self, n: int, report: Report | None = None, exc: BaseException | None = None) -> None:
        _, on_return, on_error = self.pool[n]
        on_error(exc) if exc else on_return(report)


@pytest.fixture(autouse=True)
def _no_kombu(monkeypatch):
    monkeypatch.setattr(delivery_module, "release", lambda message: None)


def test_a_suspect_waits_for_its_fresh_batch_mates_writes_then_runs_alone_before_new_batches():
    task = Recorded({"poison"})
    mates = [request(f"mate-{i}", redelivered=True) for i in range(3)]
    poison = request("poison", redelivered=True)
    task.flush([*mates, poison])
    assert [what for what, *_ in task.pool] == [["mate-0", "mate-1", "mate-2"]]  # the suspect waits
    task.play(0, Report(now=[Event.writing] * 3, outstanding=3))
    assert [what for what, *_ in task.pool][1:] == ["drain"]  # their writes first, never beside the suspect
    later = request("later")
    task._buffer.put(later)
    task.flush_buffer()
    assert len(task.pool) == 2, "a new batch went ahead of the waiting suspect"
    task.play(1, Report(now=[], written={m.id: Event.recorded for m in mates}))
    assert [m.done for m in mates] == [["ack"]] * 3
    assert [what for what, *_ in task.pool][2:] == [["poison"]]  # alone, with nothing else in the process
    task.play(2, exc=RuntimeError("the poison killed its process"))
    assert poison.done == ["requeue"] and all(m.done == ["ack"] for m in mates)  # no mate went down with it
    assert [what for what, *_ in task.pool][3:] == [["later"]]  # then the batch that waited


def test_suspects_alone_run_one_by_one_and_a_write_already_out_is_drained_first():
    task = Recorded({"a", "b"})
    task.flush([request("fresh")])
    task.play(0, Report(now=[Event.writing], outstanding=1))  # its write is still out
    assert [what for what, *_ in task.pool][1:] == ["drain"]
    task.play(1, Report(now=[], written={"fresh": Event.recorded}))
    task.flush([request("a", True), request("b", True)])
    assert [what for what, *_ in task.pool][2:] == [["a"]]
    task.play(2, Report(now=[Event.recorded]))
    assert [what for what, *_ in task.pool][3:] == [["b"]]
