"""What a client sees while its jobs run: SSE events, signed webhooks with retries, priority order, and
presigned links. Real API, worker and webhook-worker processes; a real HTTP receiver for webhooks."""

import itertools
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from genfleet import supervisor
from genfleet.shared.errors import UnsafeTarget
from genfleet.shared.webhooks import deliver
from tests.helpers import wait_for, wait_terminal

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class Receiver:
    """A webhook receiver on loopback that answers with the next scripted status (then 204)."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses, self.calls = list(statuses or []), []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # http.server's naming
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.calls.append((dict(self.headers), body.decode(), time.monotonic()))
                self.send_response(receiver.statuses.pop(0) if receiver.statuses else 204)
                self.end_headers()

            def log_message(self, *_):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def start_webhooks(stack, **env) -> None:
    log = stack.tmp / "webhooks.log"
    proc = supervisor.spawn(supervisor.webhooks_command(stack.settings), {**stack.env, **env}, log)
    stack.procs.append(proc)
    wait_for(lambda: "ready." in log.read_text(errors="replace"), 60, lambda: supervisor.tail(log), proc)


def sse_events(api: str, job_id: str, headers: dict | None = None) -> list[tuple[str, str, dict]]:
    events, current = [], {}
    with httpx.stream("GET", f"{api}/v1/jobs/{job_id}/events", headers=headers, timeout=120) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            line = line.rstrip("\r")
            if line.startswith(("id:", "event:", "data:")):
                name, _, value = line.partition(":")
                current[name] = value.strip()
            elif not line and "event" in current:
                events.append((current.get("id"), current["event"], json.loads(current["data"])))
                current = {}
    return events


def test_sse_streams_queued_running_progress_and_done(stack):
    api = stack.start_api()
    job = httpx.post(f"{api}/v1/jobs", json={"prompt": "a green cat", "num_images": 8, "steps": 100}).json()
    late_worker = threading.Timer(1.0, stack.start_worker)  # the client connects while its job is queued
    late_worker.start()
    first = sse_events(api, job["id"])  # returns after the terminal event
    late_worker.join()
    kinds = [kind for _, kind, _ in first]
    assert kinds[:2] == ["queued", "running"] and kinds[-1] == "succeeded", kinds
    progress = [data for _, kind, data in first if kind == "progress"]
    assert progress and all(0 < p["step"] <= p["steps"] == 100 for p in progress)
    # steps rise within a pipeline call (a quality retry is a new call, which starts again from step 1)
    assert progress[0]["step"] < progress[1]["step"]
    assert len(first[-1][2]["outputs"]) == 8
    # a listener gets previews (it marks the job watched); they are live, with no id to resume from
    previews = [(eid, data) for eid, kind, data in first if kind == "preview"]
    assert previews and all(eid is None for eid, _ in previews)
    assert {data["index"] for _, data in previews} <= set(range(8))
    # reconnecting with Last-Event-ID replays only the history that came after it, whole: the previews of eight
    # images never pushed it out
    replay = sse_events(api, job["id"], {"last-event-id": first[1][0]})
    assert [e[0] for e in replay if e[1] != "preview"] == [e[0] for e in first[2:] if e[1] != "preview"]


def test_signed_webhook_retried_with_backoff_until_delivered(stack):
    receiver = Receiver([500, 503])  # the first two deliveries fail; the third is taken
    env = {"GENFLEET_WEBHOOK_SECRET": SECRET, "GENFLEET_WEBHOOK_ALLOW_PRIVATE": "true"}
    stack.env.update(env)
    api = stack.start_api()
    stack.start_worker()
    start_webhooks(stack)
    job = httpx.post(f"{api}/v1/jobs", json={"prompt": "a red hat", "steps": 3, "webhook_url": receiver.url}).json()
    assert wait_terminal(api, job["id"])["status"] == "succeeded"
    wait_for(lambda: len(receiver.calls) == 3, 60, lambda: f"calls: {len(receiver.calls)}")
    ids = {headers["webhook-id"] for headers, _, _ in receiver.calls}
    assert ids == {f"{job['id']}.job.succeeded"}  # one event, three attempts, one id to dedupe on
    # Celery's own retry delay would be 180 s; the deliverer's backoff is 1 s then 2 s, fully jittered
    gaps = [b[2] - a[2] for a, b in itertools.pairwise(receiver.calls)]
    assert gaps[0] <= 1 + 5 and gaps[1] <= 2 + 5, gaps  # 5 s of slack for Celery's ETA scheduling
    headers, body, _ = receiver.calls[-1]
    event = Webhook(SECRET).verify(body, headers)  # the Standard Webhooks library checks the signature
    assert event["type"] == "job.succeeded" and event["data"]["id"] == job["id"]
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body.replace("succeeded", "failed"), headers)
    receiver.close()


def test_the_deliverer_refuses_private_targets_itself(receiver):
    event = {"id": "x.job.succeeded", "type": "job.succeeded", "data": {}}
    with pytest.raises(UnsafeTarget):
        deliver(receiver.url, event, SECRET, allow_private=False)
    assert receiver.calls == []
    assert deliver(receiver.url, event, SECRET, allow_private=True) == 204


def test_high_priority_jobs_run_before_low_ones_queued_earlier(stack):
    api = stack.start_api()
    low = [httpx.post(f"{api}/v1/jobs", json={"prompt": f"a cat {i}", "steps": 3, "priority": "low"}).json()
           for i in range(8)]
    high = [httpx.post(f"{api}/v1/jobs", json={"prompt": f"a hat {i}", "steps": 3, "priority": "high"}).json()
            for i in range(8)]
    stack.start_worker(GENFLEET_MAX_BATCH="4")
    done = {j["id"]: wait_terminal(api, j["id"]) for j in low + high}
    last_high = max(done[j["id"]]["started_at"] for j in high)
    first_low = min(done[j["id"]]["started_at"] for j in low)
    assert last_high < first_low, (last_high, first_low)


def test_finished_jobs_carry_presigned_links_with_a_bounded_expiry(stack, s3):
    api = stack.start_api(GENFLEET_PRESIGN_EXPIRY_S="120")
    stack.start_worker()
    job = wait_terminal(api, httpx.post(f"{api}/v1/jobs", json={"prompt": "a cat", "steps": 3}).json()["id"])
    link = job["outputs"][0]["download_url"]
    assert "X-Amz-Expires=120" in link and "X-Amz-Signature=" in link
    png = httpx.get(link)
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")


def test_batch_webhook_and_a_delivery_that_gives_up_as_a_dead_letter(stack, redis):
    ok, down = Receiver(), Receiver([500] * 10)
    stack.env.update({"GENFLEET_WEBHOOK_SECRET": SECRET, "GENFLEET_WEBHOOK_ALLOW_PRIVATE": "true",
                      "GENFLEET_WEBHOOK_ATTEMPTS": "2"})
    api = stack.start_api()
    stack.start_worker()
    start_webhooks(stack)
    batch = httpx.post(f"{api}/v1/batches", json={"prompts": ["a cat", "a hat"], "params": {"steps": 3},
                                                   "webhook_url": ok.url}).json()
    job = httpx.post(f"{api}/v1/jobs", json={"prompt": "a red hat", "steps": 3, "webhook_url": down.url}).json()
    wait_for(lambda: len(ok.calls) == 1 and len(down.calls) == 2, 60,
             lambda: f"batch hook {len(ok.calls)}, failing hook {len(down.calls)}")
    event = Webhook(SECRET).verify(ok.calls[0][1], ok.calls[0][0])
    assert event["type"] == "batch.finished" and event["data"]["id"] == batch["id"]
    assert event["data"]["counts"]["succeeded"] == 2
    wait_for(lambda: any(json.loads(e).get("kind") == "webhook" for e in redis.lrange("genfleet:dead-letter", 0, -1)),
             10, "no dead letter")
    dead = [json.loads(e) for e in redis.lrange("genfleet:dead-letter", 0, -1)]
    assert {d["event_id"] for d in dead if d["kind"] == "webhook"} == {f"{job['id']}.job.succeeded"}
    time.sleep(1)
    assert len(down.calls) == 2  # given up: no third attempt
    ok.close()
    down.close()
