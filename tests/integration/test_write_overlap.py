"""Writes overlap the next batch: with slow storage, a worker samples batch n+1 while batch n's images are still
being uploaded, and still acknowledges each message only once its images, manifest and record are stored.
Real worker process, Redis, and moto's S3 behind a proxy that holds every request half a second."""

import json
import threading

import pytest

from genfleet.shared import keys
from genfleet.shared.queue import priority_lists
from genfleet.shared.schema import TERMINAL, Job
from tests.faults import FlakyEndpoint
from tests.helpers import objects, wait_terminal
from tests.integration.test_reliability import post

QUICK = {"steps": 4, "num_images": 1}


class AckWatch(threading.Thread):
    """Polls Redis: a job whose message has left both the queue and kombu's `unacked` hash was acknowledged;
    at that moment its record must be terminal and, if it succeeded, its manifest stored.

    One exception is kombu's own: it pops a message (BRPOP) and only then records it in `unacked`, so for a
    moment a message just delivered is in neither (shared/reconcile.py). A job caught there, not yet written,
    is a suspect: it was in that window if its message shows up in `unacked` afterwards (it must, for a second
    or more: its upload alone takes that long), and it was acknowledged early if it is next seen gone and
    stored without having been held again. CI caught a job in that window once."""

    def __init__(self, redis, s3, stack, job_ids: list[str]) -> None:
        super().__init__(daemon=True)
        self.redis, self.s3, self.stack, self.pending = redis, s3, stack, set(job_ids)
        self.early: list[str] = []  # acknowledged before they were stored
        self.seen_writing = 0  # observations of a message held unacked while its job was being written
        self.suspects: set[str] = set()  # gone from Redis before being written: early, or in the pop window
        self.in_pop_window = 0  # suspects whose message showed up in `unacked` afterwards
        self.stop = threading.Event()

    def _held(self) -> set[str]:
        held = {json.loads(v)[0]["headers"]["id"] for v in self.redis.hvals("unacked")}
        for name in priority_lists(self.stack.env["GENFLEET_QUEUE"]):
            held |= {json.loads(m)["headers"]["id"] for m in self.redis.lrange(name, 0, -1)}
        return held

    def run(self) -> None:
        while self.pending and not self.stop.is_set():
            held = self._held()
            for job_id in list(self.pending):
                raw = self.redis.get(keys.job(job_id))
                job = Job.model_validate_json(raw) if raw else None
                if job_id in held:
                    if job_id in self.suspects:
                        self.suspects.discard(job_id)
                        self.in_pop_window += 1
                    if job is not None and job.status == "running":
                        self.seen_writing += "0.png" in objects(self.s3, self.stack, job_id)
                    continue
                stored = job is not None and "manifest.json" in objects(self.s3, self.stack, job_id)
                if job is None or job.status not in TERMINAL or (job.status == "succeeded" and not stored):
                    self.suspects.add(job_id)
                    continue
                self.pending.discard(job_id)
                if job_id in self.suspects:  # gone before it was written, and never held again
                    self.early.append(job_id)
            self.stop.wait(0.02)
        self.early += sorted(self.suspects & self.pending)


@pytest.mark.parametrize("write_in", ["threads", "process"])
def test_sampling_does_not_wait_for_writes_and_acks_wait_for_storage(stack, s3, s3_server, redis, write_in):
    endpoint = FlakyEndpoint(s3_server._port)
    endpoint.latency_s = 0.5
    stack.env["GENFLEET_S3_ENDPOINT_URL"] = endpoint.url
    api = stack.start_api()
    worker = stack.start_worker(GENFLEET_MAX_BATCH="2", GENFLEET_QUALITY_ATTEMPTS="1", GENFLEET_WRITE_IN=write_in)
    wait_terminal(api, post(api, **QUICK)["id"])  # warm
    jobs = [post(api, seed=i, **QUICK) for i in range(6)]  # three batches of two
    watch = AckWatch(redis, s3, stack, [j["id"] for j in jobs])
    watch.start()
    done = [wait_terminal(api, j["id"], timeout_s=120) for j in jobs]
    watch.join(timeout=30)
    assert [j["status"] for j in done] == ["succeeded"] * 6, [j["error"] for j in done]
    assert not watch.pending and watch.early == []
    assert watch.seen_writing > 0  # messages were held while their jobs were written: the check saw real cases
    # each job's upload takes at least a second (two PUTs, half a second each, before moto answers); sampling two
    # jobs of 4 steps takes a fraction of that. Had the next batch waited for the writes, only the first batch
    # would have started before the first job was stored.
    first_stored = min(j["finished_at"] for j in done)
    started_before = [j for j in done if j["started_at"] < first_stored]
    assert len(started_before) > 2, [(j["started_at"], j["finished_at"]) for j in done]
    writer_process = "writes for pool process" in stack.logs[worker.pid].read_text()
    assert writer_process is (write_in == "process")
    endpoint.kill()
