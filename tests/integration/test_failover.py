"""Faults the way production has them, with default settings: a worker killed as a whole (an OOM kill, a lost
node, a spot preemption), a live worker running a job far longer than a lease, an S3 endpoint that dies in the
middle of a write, a poison job that keeps killing its process, a Redis connection reset while a popped message
is on the wire. Each test checks the records (attempt counts:
what ran twice) and the bucket (exactly the expected objects)."""

import json
import os
import signal
import statistics
import time
from datetime import datetime

import httpx
import pytest

from genfleet.shared import keys
from genfleet.shared.queue import queue_depth
from tests.faults import BrokenPop, FlakyEndpoint, die_holding_restore_lock
from tests.helpers import (
    alive,
    kombu_send,
    objects,
    pool_children,
    queued_messages,
    versions,
    wait_for,
    wait_status,
    wait_terminal,
)
from tests.integration.test_reliability import post

ONE_TRY = {"GENFLEET_QUALITY_ATTEMPTS": "1"}  # fixed work per job, whatever the model's scores


def kill_whole(worker) -> float:
    """SIGKILL the main process and its pool at once, as a kernel OOM kill or a lost node does; returns when."""
    pids = pool_children(worker) + [worker.pid]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    worker.wait()
    return time.time()


def test_jobs_of_a_worker_killed_whole_run_again_within_seconds(stack, s3, redis):
    """Default lease (GENFLEET_VISIBILITY_TIMEOUT_S unset): running and prefetched jobs come back in seconds, even
    when another consumer was killed in the middle of its restore sweep just before (kombu's lock then stayed
    held for its default 300 s, and no consumer swept: the chaos run found it)."""
    api = stack.start_api()
    worker = stack.start_worker(**ONE_TRY, GENFLEET_MAX_BATCH="2")
    jobs = [post(api, seed=i, steps=30, num_images=2) for i in range(8)]
    wait_status(api, jobs[0]["id"], "running")
    die_holding_restore_lock(stack.env["GENFLEET_REDIS_URL"], stack.env)
    assert redis.exists("unacked_mutex")  # left behind by the dead sweeper
    killed_at = kill_whole(worker)
    before = {j["id"]: httpx.get(f"{api}/v1/jobs/{j['id']}").json() for j in jobs}
    stranded = [i for i, b in before.items() if b["status"] in ("queued", "running")]
    assert len(stranded) >= 4  # the running batch and the prefetched ones
    stack.start_worker(**ONE_TRY, GENFLEET_MAX_BATCH="8")
    done = {j["id"]: wait_terminal(api, j["id"], timeout_s=240) for j in jobs}
    assert all(d["status"] == "succeeded" for d in done.values()), [d["error"] for d in done.values()]
    restarted = [datetime.fromisoformat(done[i]["started_at"]).timestamp() - killed_at for i in stranded]
    print(f"seconds from the kill to each stranded job running again: {sorted(round(s, 1) for s in restarted)}")
    assert statistics.median(restarted) <= 30 and max(restarted) <= 60, restarted
    for i in stranded:
        assert done[i]["attempts"] == before[i]["attempts"] + 1  # the interrupted ran again once, the rest once
    for j in jobs:
        assert objects(s3, stack, j["id"]) == ["0.png", "1.png", "manifest.json"]


def test_a_live_workers_long_job_is_never_run_twice(stack, s3, redis):
    """A 5 s lease, a job of many times that, a second worker sweeping for expired leases, and a duplicate
    message of the job (as a lease lost to a Redis outage would produce): the second worker leaves it unacked
    while the first holds the job, and it is dropped once the job has ended."""
    from genfleet.shared.queue import publisher
    from genfleet.shared.schema import Job

    lease = {"GENFLEET_VISIBILITY_TIMEOUT_S": "5", **ONE_TRY}
    api = stack.start_api()
    stack.start_worker(**lease)
    job = post(api, steps=60, num_images=8, width=128, height=128)  # ~4x a 64x64 job: well past three leases
    wait_status(api, job["id"], "running")
    # a second worker, idle, restoring any message whose lease ran out every 2 s; it alone consumes a queue of
    # its own, where the duplicate goes (the first worker would otherwise take it itself, behind the job)
    dup_queue = f"{stack.settings.queue}-dup"
    stack.start_worker(**lease, GENFLEET_QUEUE=dup_queue)
    kombu_send(publisher(stack.settings, stack.env["GENFLEET_REDIS_URL"]), Job.model_validate(job), dup_queue)
    second = stack.tmp / "worker-2.log"
    wait_for(lambda: "leaving this delivery" in second.read_text(), 30, lambda: "the duplicate never reached worker 2")
    done = wait_terminal(api, job["id"], timeout_s=300)
    took = (datetime.fromisoformat(done["finished_at"]) - datetime.fromisoformat(done["started_at"])).total_seconds()
    print(f"the job ran {took:.1f}s under a 5 s lease")
    assert took > 15, f"the job ran {took:.0f}s: too short to outlive three leases"
    assert done["status"] == "succeeded" and done["attempts"] == 1, done
    assert "job succeeded" not in second.read_text()  # the second worker never ran it
    assert len(objects(s3, stack, job["id"])) == 9
    # the released duplicate comes back a lease later, meets a finished job, and is acked: nothing is left
    wait_for(lambda: redis.hlen("unacked") == 0 and sum(queue_depth(redis, dup_queue).values()) == 0,
             30, lambda: f"unacked: {redis.hlen('unacked')}")
    assert sum(queue_depth(redis, stack.settings.queue).values()) == 0
    assert "is already succeeded; nothing to do" in second.read_text()
    assert httpx.get(f"{api}/v1/jobs/{job['id']}").json()["attempts"] == 1



@pytest.mark.parametrize("write_in", ["threads", "process"])
def test_a_worker_killed_mid_upload_leaves_one_set_of_objects(stack, s3, write_in):
    api = stack.start_api()
    # killed from its writer thread, or from its writer process: either way the main and pool processes go too
    worker = stack.start_worker(**ONE_TRY, GENFLEET_FAILPOINTS="write.after-image", GENFLEET_WRITE_IN=write_in)
    pool = pool_children(worker)
    job = post(api, steps=3, num_images=3)
    wait_for(lambda: worker.poll() is not None, 60, "the worker never reached its failpoint")
    assert objects(s3, stack, job["id"]) == ["0.png"]  # killed whole, one PNG in
    wait_for(lambda: not any(alive(pid) for pid in pool), 10, "its pool process outlived the worker")
    assert ("writes for pool process" in stack.logs[worker.pid].read_text()) is (write_in == "process")
    stack.start_worker(**ONE_TRY)
    done = wait_terminal(api, job["id"], timeout_s=120)
    assert done["status"] == "succeeded" and done["attempts"] == 2
    assert versions(s3, stack, job["id"]) == {"0.png": 1, "1.png": 1, "2.png": 1, "manifest.json": 1}


def test_a_worker_killed_between_manifest_and_record_is_finished_without_regenerating(stack, s3):
    api = stack.start_api()
    stack.start_worker(**ONE_TRY, GENFLEET_FAILPOINTS="write.after-manifest")
    job = post(api, steps=3, num_images=2)
    wait_for(lambda: stack.procs[-1].poll() is not None, 60, "the worker never reached its failpoint")
    assert httpx.get(f"{api}/v1/jobs/{job['id']}").json()["status"] == "running"  # stored, not recorded
    stack.start_worker(**ONE_TRY)
    done = wait_terminal(api, job["id"], timeout_s=120)
    assert done["status"] == "succeeded" and done["attempts"] == 1 and len(done["outputs"]) == 2
    assert versions(s3, stack, job["id"]) == {"0.png": 1, "1.png": 1, "manifest.json": 1}


def test_an_endpoint_dying_mid_write_is_waited_out(stack, s3, s3_server):
    endpoint = FlakyEndpoint(s3_server._port)
    stack.env["GENFLEET_S3_ENDPOINT_URL"] = endpoint.url
    api = stack.start_api()
    stack.start_worker(**ONE_TRY)
    wait_terminal(api, post(api, steps=3)["id"])  # warm
    endpoint.die_at("PUT", 3, down_s=6)  # two PNGs written, the third cut mid-upload, 6 s of refused connections
    job = post(api, steps=3, num_images=4)
    done = wait_terminal(api, job["id"], timeout_s=120)
    assert endpoint.deaths == 1
    assert done["status"] == "succeeded" and done["attempts"] == 1, done
    assert objects(s3, stack, job["id"]) == ["0.png", "1.png", "2.png", "3.png", "manifest.json"]
    endpoint.kill()


def test_storage_down_past_the_outage_window_fails_the_job_once_with_a_dead_letter(stack, s3, s3_server, redis):
    endpoint = FlakyEndpoint(s3_server._port)
    stack.env["GENFLEET_S3_ENDPOINT_URL"] = endpoint.url
    api = stack.start_api()
    stack.start_worker(**ONE_TRY, GENFLEET_STORAGE_OUTAGE_S="4")
    wait_terminal(api, post(api, steps=3)["id"])  # warm
    endpoint.kill()
    job = post(api, steps=3, num_images=2)
    done = wait_terminal(api, job["id"], timeout_s=120)
    assert done["status"] == "failed" and "StorageUnavailable" in done["error"] and done["attempts"] == 1, done
    endpoint.revive()
    assert wait_terminal(api, post(api, steps=3)["id"])["status"] == "succeeded"  # the worker went on
    assert httpx.get(f"{api}/v1/jobs/{job['id']}").json()["status"] == "failed"  # and was not sent round again
    assert sum(queue_depth(redis, stack.settings.queue).values()) == 0
    assert job["id"] in redis.lindex(keys.DEAD_LETTER, 0).decode() and b'"storage"' in redis.lindex(keys.DEAD_LETTER, 0)
    assert objects(s3, stack, job["id"]) == []
    endpoint.kill()


def test_a_poison_job_is_isolated_and_its_batch_mates_succeed_on_their_first_redelivery(stack, s3, redis):
    api = stack.start_api()
    worker = stack.start_worker(**ONE_TRY, GENFLEET_MAX_BATCH="4", GENFLEET_MAX_DELIVERIES="2")
    warm = post(api, steps=3)
    wait_terminal(api, warm["id"])
    # Four jobs that make one batch; whichever runs, its process is killed, as a segfaulting kernel would do.
    # The poison is the 40x40 one: alone in its pool call after the first death, only it dies again.
    mates = [post(api, seed=i, steps=40, num_images=2) for i in range(3)]
    poison = post(api, seed=9, steps=40, num_images=2, width=40, height=40)
    ids = [m["id"] for m in mates] + [poison["id"]]
    kills = 0
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        records = [httpx.get(f"{api}/v1/jobs/{i}").json() for i in ids]
        if all(r["status"] in ("succeeded", "failed") for r in records):
            break
        running = [r for r in records if r["status"] == "running"]
        if any(r["id"] == poison["id"] and r["attempts"] > kills for r in running):
            for pid in pool_children(worker):
                os.kill(pid, signal.SIGKILL)
            kills += 1
        time.sleep(0.1)
    records = {i: httpx.get(f"{api}/v1/jobs/{i}").json() for i in ids}
    assert records[poison["id"]]["status"] == "failed" and "died 2 times" in records[poison["id"]]["error"]
    assert kills == 2 and worker.poll() is None
    for m in mates:
        assert records[m["id"]]["status"] == "succeeded" and records[m["id"]]["attempts"] <= 2, records[m["id"]]
        assert objects(s3, stack, m["id"]) == ["0.png", "1.png", "manifest.json"]
    dead = [e for e in redis.lrange(keys.DEAD_LETTER, 0, -1)]
    assert len(dead) == 1 and poison["id"] in dead[0].decode()


def test_the_rest_of_a_half_published_batch_is_published_exactly_once(stack, redis):

    dying = stack.start_api(GENFLEET_FAILPOINTS="publish.after-chunk")
    prompts = [f"a cat number {i}" for i in range(1500)]
    try:
        httpx.post(f"{dying}/v1/batches", json={"prompts": prompts}, timeout=60)
        raise AssertionError("the API should have died after its first thousand messages")
    except httpx.HTTPError:
        pass
    assert stack.procs[-1].wait(timeout=10) == -signal.SIGKILL
    assert sum(queue_depth(redis, stack.settings.queue).values()) == 1000 and redis.zcard(keys.UNPUBLISHED) == 500
    stack.start_api(GENFLEET_PUBLISH_GRACE_S="1")
    deadline = time.monotonic() + 30
    while redis.zcard(keys.UNPUBLISHED) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert redis.zcard(keys.UNPUBLISHED) == 0
    queued = queued_messages(redis, stack.settings.queue)
    ids = [json.loads(m)["headers"]["id"] for m in queued]
    assert len(ids) == 1500 and len(set(ids)) == 1500  # every job once, none twice


def broken_pop(redis_url: str) -> tuple[BrokenPop, str]:
    """A BrokenPop proxy in front of the suite's Redis, and the URL that goes through it."""
    _, _, port = redis_url.removeprefix("redis://").partition("/")[0].partition(":")
    if not port:
        pytest.skip(f"the proxy needs Redis over TCP, not {redis_url}")
    proxy = BrokenPop(int(port))
    return proxy, redis_url.replace(f":{port}/", f":{proxy.port}/")


def test_a_message_whose_pop_reply_was_cut_is_published_again_and_runs(stack, redis, redis_url):
    proxy, proxied_url = broken_pop(redis_url)
    api = stack.start_api()
    proxy.armed.set()  # the worker's first BRPOP that returns a message never reaches it
    worker = stack.start_worker(GENFLEET_REDIS_URL=proxied_url, **ONE_TRY)
    job = post(api)
    wait_for(lambda: proxy.lost == 1, 30, "the proxy never cut a BRPOP reply", worker)
    # kombu had popped the message on the server and recorded nothing: before the fix, the job stayed queued
    # for good. The worker reconnects, asks for a reconciliation, and the API's sweeper publishes it again.
    done = wait_terminal(api, job["id"], timeout_s=60)
    assert done["status"] == "succeeded" and done["attempts"] == 1
    api_log = next(p for p in stack.tmp.glob("api-*.log")).read_text()
    assert "published 1 unfinished job(s) whose message was lost" in api_log
    assert redis.zcard(keys.QUEUED) == 0
    wait_for(lambda: redis.hlen("unacked") == 0, 10, "the message that ran was never acked")  # it acks after the record


def test_a_dead_workers_job_whose_redelivery_was_cut_on_the_wire_is_published_again(stack, s3, redis, redis_url):
    """The same cut, on a redelivery: a worker SIGKILLed whole while it runs a job, the job's message restored
    after its lease, and the next worker's pop of it reset on the wire. The job is then `running`, named for the
    dead worker, with no message anywhere; the reconciler once looked only at `queued` jobs, and it stayed so."""
    proxy, proxied_url = broken_pop(redis_url)
    lease = {"GENFLEET_VISIBILITY_TIMEOUT_S": "5", **ONE_TRY}
    api = stack.start_api()
    first = stack.start_worker(**lease)
    job = post(api, steps=60, num_images=2)  # long enough to be caught running
    wait_status(api, job["id"], "running")
    kill_whole(first)
    proxy.armed.set()  # the second worker's first BRPOP that returns a message: the restored one
    stack.start_worker(GENFLEET_REDIS_URL=proxied_url, **lease)
    wait_for(lambda: proxy.lost == 1, 60, "the proxy never cut a BRPOP reply")
    assert httpx.get(f"{api}/v1/jobs/{job['id']}").json()["status"] == "running"
    done = wait_terminal(api, job["id"], timeout_s=90)
    assert done["status"] == "succeeded" and done["attempts"] == 2, done  # the killed run, then this one
    api_log = next(p for p in stack.tmp.glob("api-*.log")).read_text()
    assert "published 1 unfinished job(s) whose message was lost" in api_log
    assert redis.zcard(keys.RUNNING) == 0 and redis.zcard(keys.QUEUED) == 0
    assert objects(s3, stack, job["id"]) == ["0.png", "1.png", "manifest.json"]
