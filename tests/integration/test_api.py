"""The HTTP API as a real uvicorn process, against a real Redis."""

import asyncio
import base64
import json
import uuid

import httpx
import pytest

from genfleet.shared.jobstore import JobStore
from genfleet.shared.queue import enqueue, priority_lists, publisher, task_message
from genfleet.shared.redis_server import async_client
from genfleet.shared.schema import Job, JobRequest, Priority
from tests.helpers import depth, kombu_send


@pytest.fixture
def api(stack):
    return stack.start_api()



def test_post_queues_a_job_with_location(api, stack, redis):
    r = httpx.post(f"{api}/v1/jobs", json={"prompt": "a purple cat with a red hat", "num_images": 2, "seed": 5})
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued" and job["seed"] == 5 and job["model"] == "embedded"
    assert depth(stack, redis) == 1
    got = httpx.get(f"{api}{r.headers['location']}")
    assert got.status_code == 200 and got.json()["id"] == job["id"]


@pytest.mark.parametrize("body, field", [
    ({"prompt": ""}, "prompt"),
    ({"prompt": "a cat", "width": 7}, "width"),
    ({"prompt": "a cat", "steps": 100000}, "steps"),
    ({"prompt": "a cat", "unknown": 1}, "unknown"),
    ({"prompt": "a cat", "model": "not/served"}, "model"),
    ({"prompt": "a cat", "scheduler": "plms"}, "scheduler"),  # not one of the list
    ({"prompt": "a cat", "scheduler": "ddim"}, "scheduler"),  # not one the default (embedded) model takes
    ({"prompt": "a cat", "width": 512}, "width"),  # beyond the default model's sides
    ({}, "prompt"),
])
def test_bad_input_is_refused_field_by_field_and_nothing_is_queued(api, stack, redis, body, field):
    keys_before = redis.dbsize()
    r = httpx.post(f"{api}/v1/jobs", json=body)
    assert r.status_code == 422, r.text
    assert field in {err["loc"][-1] for err in r.json()["detail"]}
    assert all(err["msg"] for err in r.json()["detail"])
    assert depth(stack, redis) == 0 and redis.dbsize() == keys_before


@pytest.mark.parametrize("raw, field", [
    (b'{"prompt": "a cat", "guidance": NaN}', "guidance"),
    (b'{"prompt": "a cat", "guidance": 1e309}', "guidance"),  # JSON parsing makes it infinity
    (b'{"prompt": "a cat", "guidance": -Infinity}', "guidance"),
])
def test_non_finite_numbers_get_422_not_500(api, stack, redis, raw, field):
    r = httpx.post(f"{api}/v1/jobs", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert [e["loc"][-1] for e in r.json()["detail"]] == [field]
    batch = httpx.post(f"{api}/v1/batches", content=b'{"prompts": ["a"], "params": ' + raw + b"}",
                       headers={"content-type": "application/json"})
    assert batch.status_code == 422 and field in batch.json()["detail"][0]["loc"], batch.text
    assert depth(stack, redis) == 0


def test_a_huge_input_is_refused_without_being_echoed(api, stack, redis):
    r = httpx.post(f"{api}/v1/jobs", json={"prompt": "a cat " * 2_000_000})  # 12 MB, under the body limit
    assert r.status_code == 422 and [e["loc"][-1] for e in r.json()["detail"]] == ["prompt"]
    assert len(r.content) < 2000, len(r.content)
    assert depth(stack, redis) == 0


def test_a_body_over_the_limit_gets_413_with_or_without_a_length(stack, redis):
    api = stack.start_api(GENFLEET_MAX_BODY_BYTES="100000")
    body = ('{"prompts": [' + ",".join(['"a green cat"'] * 10_000) + "]}").encode()  # about 140 KB
    r = httpx.post(f"{api}/v1/batches", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "GENFLEET_MAX_BODY_BYTES" in r.json()["detail"][0]["msg"]

    def chunked():
        for start in range(0, len(body), 8192):
            yield body[start:start + 8192]

    r = httpx.post(f"{api}/v1/batches", content=chunked(), headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text
    small = httpx.post(f"{api}/v1/batches", content=chunked_small(), headers={"content-type": "application/json"})
    assert small.status_code == 202, small.text  # a chunked body under the limit reaches the route whole
    assert depth(stack, redis) == 2


def chunked_small():
    yield b'{"prompts": ["a green cat", '
    yield b'"a red hat"]}'


def test_non_json_body_is_refused(api, stack, redis):
    r = httpx.post(f"{api}/v1/jobs", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid"
    assert depth(stack, redis) == 0


def test_unknown_and_malformed_ids(api):
    assert httpx.get(f"{api}/v1/jobs/{uuid.uuid4()}").status_code == 404
    assert httpx.get(f"{api}/v1/jobs/not-a-uuid").status_code == 422


def test_probes_docs_and_metrics(api, stack):
    assert httpx.get(f"{api}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{api}/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"redis": "ok", "storage": "ok"}
    spec = httpx.get(f"{api}/openapi.json").json()
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/healthz", "/readyz"} <= set(spec["paths"])
    assert httpx.get(f"{api}/docs").status_code == 200
    httpx.post(f"{api}/v1/jobs", json={"prompt": "a cat"})
    text = httpx.get(f"{api}/metrics").text
    assert 'genfleet_http_requests_total{method="POST",route="/v1/jobs",status="202"} 1.0' in text
    assert 'genfleet_jobs_enqueued_total{model="embedded",priority="normal"} 1.0' in text
    assert f'genfleet_queue_depth{{priority="normal",queue="{stack.env["GENFLEET_QUEUE"]}"}} 1.0' in text


def test_readyz_fails_when_storage_is_unreachable(stack):
    api = stack.start_api(GENFLEET_STORAGE_URL="s3://no-such-bucket-here/x")
    r = httpx.get(f"{api}/readyz")
    assert r.status_code == 503 and r.json()["checks"]["redis"] == "ok" and r.json()["checks"]["storage"] != "ok"


def test_sizes_and_schedulers_are_checked_against_the_model_a_job_runs_on(stack, redis):
    """A job that names no model runs on the server's default: its limits apply, not the embedded model's."""
    api = stack.start_api(GENFLEET_MODEL="stable-diffusion-v1-5/stable-diffusion-v1-5",
                          GENFLEET_EXTRA_MODELS="embedded")
    sd = httpx.post(f"{api}/v1/jobs", json={"prompt": "a cat", "width": 512, "scheduler": "euler"})
    assert sd.status_code == 202, sd.text
    embedded = httpx.post(f"{api}/v1/jobs", json={"prompt": "a cat", "width": 512, "scheduler": "ddim",
                                                  "model": "embedded"})
    assert embedded.status_code == 422
    assert {tuple(e["loc"]) for e in embedded.json()["detail"]} == {("body", "width"), ("body", "scheduler")}
    batch = httpx.post(f"{api}/v1/batches", json={"prompts": ["a"], "params": {"width": 32, "scheduler": "ddim"}})
    assert batch.status_code == 422
    assert {tuple(e["loc"]) for e in batch.json()["detail"]} == {("body", "params", "width")}
    assert depth(stack, redis) == 1


def test_api_keys_and_tenants(stack):
    api = stack.start_api(GENFLEET_API_KEYS="team-a:key-a,team-b:key-b")
    body = {"prompt": "a cat"}
    assert httpx.post(f"{api}/v1/jobs", json=body).status_code == 401
    assert httpx.post(f"{api}/v1/jobs", json=body, headers={"authorization": "Bearer wrong"}).status_code == 401
    r = httpx.post(f"{api}/v1/jobs", json=body, headers={"authorization": "Bearer key-a"})
    assert r.status_code == 202 and r.json()["tenant"] == "team-a"
    url = f"{api}/v1/jobs/{r.json()['id']}"
    assert httpx.get(url, headers={"authorization": "Bearer key-a"}).status_code == 200
    assert httpx.get(url, headers={"authorization": "Bearer key-b"}).status_code == 404


def test_a_jobs_message_is_the_one_kombu_would_push(stack, redis):
    """The API pushes a job's message itself, with its record, in one script (shared/queue.py): the message must
    stay the one Celery and kombu would have pushed, field for field, whatever their versions do."""
    queue = stack.settings.queue
    app = publisher(stack.settings, stack.env["GENFLEET_REDIS_URL"])
    for priority in Priority:
        job = Job.new(JobRequest(prompt=f"a {priority} cat", seed=3, priority=priority), "embedded", tenant="t")
        kombu_send(app, job, queue)
        (theirs_list,) = [name for name in priority_lists(queue) if redis.llen(name)]
        theirs = json.loads(redis.rpop(theirs_list))
        ours_list, message = task_message(app, job, queue)
        ours = json.loads(message)
        assert ours_list == theirs_list
        for envelope in (ours, theirs):
            envelope["properties"].pop("delivery_tag")  # a fresh uuid each time
            envelope["body"] = json.loads(base64.b64decode(envelope["body"]))
        assert ours == theirs


def test_a_submit_sent_twice_records_and_queues_the_job_once(stack, redis):
    """redis-py sends a command again when the connection drops before its reply: the record-and-publish script
    can then meet its own record. The second submit is a success, and the queue holds one message."""
    job, url = Job.new(JobRequest(prompt="a cat"), "embedded"), stack.env["GENFLEET_REDIS_URL"]
    store, app = JobStore(redis, 600), publisher(stack.settings, url)

    async def twice() -> None:
        ar = async_client(url)
        try:
            for _ in range(2):
                await enqueue(job, store, ar, app, stack.settings.queue)
        finally:
            await ar.aclose()

    asyncio.run(twice())
    assert depth(stack, redis) == 1 and store.get(job.id).status.value == "queued"
