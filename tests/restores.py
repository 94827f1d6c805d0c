"""When each message a killed worker held went back to its queue: the failover itself, apart from the backlog.

The chaos run's other figure, from a kill to each held job's next run, adds the wait in the queue behind every
other job, which grows with the backlog and shrinks with the machine's speed (on a slow day, half the jobs of
the 30-job run waited 55 s or more behind the rest). This one reads Redis only: a message a worker holds sits
in kombu's unacked index under its delivery tag, scored by its lease, until it is acked, and a dead worker acks
nothing and renews nothing. A live consumer's restore sweep takes the tag out of the index as it puts the
message back on its queue, in one transaction; the lease (shared/leases.py) promises that within about one
visibility timeout of the last renewal. The message keeps its tag (kombu assigns it at publish), so a worker
that pops it at once puts the same tag back, scored at its delivery: the restore is the moment the tag's
score stops being the one the dead worker's renewal gave it.

Which tags were the victim's: its renewal sets the lease of all it holds with one `ZADD` and one timestamp, just
before the heartbeat that names the time; the tags scored in that moment whose job ids the victim's held set
lists are its own.
"""

from __future__ import annotations

import threading
import time

import redis

from genfleet.shared.kombu_adapter import UNACKED, UNACKED_INDEX, task_id
from genfleet.shared.redis_server import client

_POLL_S = 0.2


def tags_renewed(r: redis.Redis, job_ids: set[str], renewed_at: float) -> dict[bytes, float]:
    """The delivery tags of `job_ids`' messages whose lease was set in the renewal whose heartbeat said
    `renewed_at` (its ZADD's clock read comes microseconds before the heartbeat's), with their scores."""
    scored = dict(r.zrangebyscore(UNACKED_INDEX, renewed_at - 0.5, renewed_at, withscores=True))
    payloads = r.hmget(UNACKED, list(scored)) if scored else []
    return {t: scored[t] for t, raw in zip(scored, payloads, strict=True) if raw and task_id(raw) in job_ids}


class Restores:
    """Watches, from a thread, the tags killed workers held, and times each from its kill to its restore."""

    def __init__(self, url: str) -> None:
        self.r = client(url)
        self.watched: dict[bytes, tuple[float, float]] = {}  # tag -> (when its holder was killed, its lease score)
        self.found: list[tuple[float, float, bytes]] = []  # (seconds from kill to restore, restore time, tag)
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="restores", daemon=True)
        self.thread.start()

    def watch(self, tags: dict[bytes, float], killed_at: float) -> None:
        """Watches tags, given with the score the dead worker's last renewal gave them."""
        with self.lock:
            self.watched.update({tag: (killed_at, score) for tag, score in tags.items()})

    def close(self) -> tuple[list[tuple[float, float, bytes]], int]:
        """(seconds from kill to restore, restore time, tag) of every restored tag, slowest last, and how many were
        never restored."""
        self.done.set()
        self.thread.join()
        return sorted(self.found), len(self.watched)

    def _run(self) -> None:
        while not self.done.wait(_POLL_S):
            with self.lock:
                tags = list(self.watched)
            if not tags:
                continue
            pipe = self.r.pipeline(transaction=False)
            for tag in tags:
                pipe.zscore(UNACKED_INDEX, tag)
            try:
                scores = pipe.execute()
            except redis.RedisError:  # Redis killed and not back yet: look again on the next tick
                continue
            now = time.time()
            with self.lock:
                for tag, score in zip(tags, scores, strict=True):
                    killed_at, leased = self.watched[tag]
                    if score != leased:
                        del self.watched[tag]
                        self.found.append((now - killed_at, now, tag))
