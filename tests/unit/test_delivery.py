"""The delivery state machine: its drawing, its transitions, and the one place a message is settled."""

import re
from concurrent.futures import Future

import pytest

from genfleet.shared.errors import NotDurable
from genfleet.shared.schema import Job, JobRequest
from genfleet.workers import delivery as delivery_module
from genfleet.workers.delivery import (
    END_STATES,
    TRANSITIONS,
    Delivery,
    Event,
    IllegalTransition,
    State,
    started,
    written,
)
from tests.helpers import ROOT

pytestmark = pytest.mark.unit


class FakeRequest:
    """What a Delivery asks of Celery's Request: the calls it makes are recorded."""

    def __init__(self) -> None:
        self.id = "task-1"
        self.message = object()
        self.calls: list[str] = []

    def acknowledge(self) -> None:
        self.calls.append("ack")

    def reject(self, requeue: bool = False) -> None:
        self.calls.append(f"reject(requeue={requeue})")


@pytest.fixture
def released(monkeypatch) -> list[object]:
    seen: list[object] = []
    monkeypatch.setattr(delivery_module, "release", seen.append)
    return seen


def drawn() -> set[tuple[str, str, str]]:
    text = (ROOT / "docs" / "delivery.md").read_text()
    diagram = text.split("```mermaid", 1)[1].split("```", 1)[0]
    return {m.groups() for m in re.finditer(r"^\s*(\w+) --> (\w+) : (\w+)\s*$", diagram, re.M)}


def test_the_drawing_names_the_same_states_and_transitions_as_the_code():
    coded = {(a.value, b.value, e.value) for (a, e), b in TRANSITIONS.items()}
    assert drawn() == coded
    states = {s for a, b, _ in drawn() for s in (a, b)}
    assert states == {s.value for s in State}


def test_every_state_but_the_end_states_leads_somewhere_and_every_end_state_is_reachable():
    sources = {a for a, _ in TRANSITIONS}
    assert sources == set(State) - END_STATES
    assert set(TRANSITIONS.values()) >= END_STATES


@pytest.mark.parametrize(("events", "end", "calls"), [
    ([Event.recorded], State.acked, ["ack"]),
    ([Event.writing, Event.recorded], State.acked, ["ack"]),
    ([Event.writing, Event.write_failed], State.requeued, ["reject(requeue=True)"]),
    ([Event.deferred], State.released, []),
    ([Event.writing, Event.deferred], State.released, []),
])
def test_a_report_settles_the_message_once_in_its_end_state(events, end, calls, released):
    req = FakeRequest()
    d = Delivery(req)
    d.batched()
    for event in events:
        assert req.calls == [] and released == []  # nothing is settled before the end state
        d.report(event)
    assert d.state is end and req.calls == calls
    assert released == ([req.message] if end is State.released else [])


@pytest.mark.parametrize("before", [[], [Event.writing]])
def test_a_lost_pool_process_requeues_what_it_held(before, released):
    req = FakeRequest()
    d = Delivery(req)
    d.batched()
    for event in before:
        d.report(event)
    d.lost()
    assert d.state is State.requeued and req.calls == ["reject(requeue=True)"] and released == []


def test_a_settled_delivery_refuses_any_further_event():
    req = FakeRequest()
    d = Delivery(req)
    d.batched()
    d.report(Event.recorded)
    for late in (Event.recorded, Event.write_failed, Event.deferred):
        with pytest.raises(IllegalTransition):
            d.report(late)
    with pytest.raises(IllegalTransition):
        d.lost()  # a lost process after the ack must not reject an acked message
    assert req.calls == ["ack"]


def test_the_pool_process_cannot_report_the_main_process_events_nor_skip_sampling():
    d = Delivery(FakeRequest())
    with pytest.raises(IllegalTransition):
        d.report(Event.recorded)  # not yet batched
    d.batched()
    for own in (Event.batched, Event.lost):
        with pytest.raises(IllegalTransition):
            d.report(own)
    with pytest.raises(IllegalTransition):
        d.report(Event.write_failed)  # only a write that was started can fail


def test_what_the_pool_process_reports_for_each_outcome():
    job = Job.new(JobRequest(prompt="a cat"), "embedded")
    future: Future[Job] = Future()
    assert started(job) is Event.recorded
    assert started(future) is Event.writing
    assert started(None) is Event.deferred
    assert written(job) is Event.recorded
    assert written(NotDurable("WAIT reached 0 of 1 replicas")) is Event.deferred
    assert written(OSError("S3 went away")) is Event.write_failed
