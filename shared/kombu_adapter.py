"""Everything genfleet knows of kombu beyond its public API, in one place.

genfleet's guarantees rest on three things kombu's Redis transport does not expose:
- which delivered messages a consumer still holds (to renew their leases: shared/leases.py). kombu keeps them in
  its virtual QoS's `_delivered` map, minus those acked since in `_dirty`;
- forgetting a message locally without acking it in Redis (`release`): the base `virtual.QoS.ack`, which skips
  the Redis QoS's removal from the unacked hash;
- how the transport lays messages out in Redis: its priority lists, its unacked hash and index, the envelope of
  a waiting message and the [message, exchange, routing key] triple of a held one (the submit script pushes a
  ready envelope; the reconciler and the fleet view read them back).

Each use has a contract test in tests/unit/test_kombu_adapter.py that names the attribute when an upgrade moves
it, and `check()` runs as a worker starts, so a kombu without them stops it at once, saying why, instead of
every lease silently lapsing later (tests/unit/test_private_names.py keeps such names out of every other module).
"""

from __future__ import annotations

import base64
import json
import uuid
from types import SimpleNamespace
from typing import Any

from kombu.transport import virtual

from genfleet.shared.errors import MissingInterface

Message = Any  # kombu.transport.virtual.Message (kombu ships no types)
QoS = Any  # kombu.transport.virtual.QoS

UNACKED = "unacked"  # the Redis transport's hash of delivered, unacked messages (its default `unacked_key`)
UNACKED_INDEX = "unacked_index"  # and its index of them, scored by delivery time (`unacked_index_key`)


def priority_list_name(queue: str, step: int, sep: str) -> str:
    """The Redis list that holds one priority step of `queue`: kombu names step 0 by the queue alone."""
    return queue if step == 0 else f"{queue}{sep}{step}"


def held(qos: QoS) -> dict[str, Message]:
    """The messages a consumer has delivered and not yet acked, rejected or released, by delivery tag."""
    delivered, acked = qos._delivered, qos._dirty
    return {tag: m for tag in list(delivered) if tag not in acked and (m := delivered.get(tag)) is not None}


def release(message: Message) -> None:
    """Forgets a delivered message locally, without acking it in Redis: it stays in the unacked index, no longer
    renewed, and comes back to the queue once its lease runs out."""
    virtual.QoS.ack(message.channel.qos, message.delivery_tag)


def envelope(headers: dict[str, Any], properties: dict[str, Any], body: Any, queue: str, priority: int) -> str:
    """A task message as the Redis transport pushes it onto a list (tests/integration/test_api.py holds it equal,
    field for field, to what kombu itself pushes)."""
    return json.dumps({
        "body": base64.b64encode(json.dumps(body).encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {**properties, "delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": queue},
                       "priority": priority, "body_encoding": "base64", "delivery_tag": str(uuid.uuid4())},
    })


def task_id(raw: bytes | str) -> str | None:
    """The task id (a job's id) of a message as the transport keeps it in Redis: waiting in a list, or held in
    its unacked hash as [message, exchange, routing key]; None for what is not a task message."""
    try:
        message = json.loads(raw)
        if isinstance(message, list):
            message = message[0]
        return str(message["headers"]["id"])
    except (ValueError, KeyError, TypeError, IndexError):
        return None


def check() -> None:
    """Raises MissingInterface, naming it, when this kombu lacks what `held` and `release` use."""
    qos = virtual.QoS(SimpleNamespace(do_restore=False))  # a channel that restores nothing when the probe goes
    for name, kind in (("_delivered", dict), ("_dirty", set)):
        if not isinstance(getattr(qos, name, None), kind):
            raise MissingInterface(f"kombu: virtual.QoS has no {kind.__name__} `{name}` (held messages' leases)")
    if not callable(getattr(virtual.QoS, "ack", None)):
        raise MissingInterface("kombu: virtual.QoS has no `ack` (releasing a message without acking it)")
