"""The API's edge against a real Redis and a real uvicorn process: auth, tenancy, idempotency, rate limits,
quotas, backpressure and webhook-target checks. No worker runs, so every job stays queued."""

import asyncio
import time
import uuid

import httpx
import pytest

from genfleet.api.idempotency import Idempotency, fingerprint
from genfleet.shared.batches import BatchRequest
from genfleet.shared.redis_server import async_client
from tests.helpers import depth

A = {"authorization": "Bearer key-a"}
B = {"authorization": "Bearer key-b"}
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"



@pytest.fixture
def api(stack):
    return stack.start_api(GENFLEET_API_KEYS="team-a:key-a,team-b:key-b", GENFLEET_WEBHOOK_SECRET=SECRET)


def test_every_v1_route_needs_a_key_and_hides_other_tenants(api):
    job = httpx.post(f"{api}/v1/jobs", json={"prompt": "a cat"}, headers=A).json()
    batch = httpx.post(f"{api}/v1/batches", json={"prompts": ["a cat"]}, headers=A).json()
    routes = [("GET", f"/v1/jobs/{job['id']}"), ("GET", f"/v1/jobs/{job['id']}/events"),
              ("DELETE", f"/v1/jobs/{job['id']}"), ("GET", f"/v1/batches/{batch['id']}"),
              ("DELETE", f"/v1/batches/{batch['id']}")]
    for method, path in routes:
        assert httpx.request(method, f"{api}{path}").status_code == 401, path
        assert httpx.request(method, f"{api}{path}", headers={"authorization": "Bearer nope"}).status_code == 401
        assert httpx.request(method, f"{api}{path}", headers=B).status_code == 404, path
    assert httpx.post(f"{api}/v1/batches", json={"prompts": ["a cat"]}).status_code == 401


def test_idempotent_replay_returns_the_same_job_and_queues_once(api, stack, redis):
    body = {"prompt": "a green cat", "seed": 3}
    first = httpx.post(f"{api}/v1/jobs", json=body, headers={**A, "idempotency-key": "k1"})
    again = httpx.post(f"{api}/v1/jobs", json=body, headers={**A, "idempotency-key": "k1"})
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
    assert depth(stack, redis) == 1
    # keys are scoped to the tenant: team-b's "k1" is a different key
    other = httpx.post(f"{api}/v1/jobs", json=body, headers={**B, "idempotency-key": "k1"})
    assert other.status_code == 202 and other.json()["id"] != first.json()["id"]
    changed = httpx.post(f"{api}/v1/jobs", json={**body, "seed": 4}, headers={**A, "idempotency-key": "k1"})
    assert changed.status_code == 422 and changed.json()["detail"][0]["loc"] == ["header", "idempotency-key"]
    assert depth(stack, redis) == 2
    keys = [k for k in redis.scan_iter("genfleet:idem:*")]
    assert keys and all(0 < redis.ttl(k) <= 24 * 3600 for k in keys)  # keys expire


def test_a_concurrent_duplicate_gets_409(api, stack, redis):
    # The first request holds its key as `pending` for as long as it queues. Rather than race a real request
    # (on a fast machine it finishes first), the ledger is claimed here exactly as that request claims it.
    body = {"prompts": ["a cat", "a hat"]}
    fp = fingerprint("/v1/batches", BatchRequest.model_validate(body).model_dump_json())

    def ledger(method: str, *args: str) -> str | None:
        async def call() -> str | None:
            r = async_client(stack.env["GENFLEET_REDIS_URL"])
            try:
                return await getattr(Idempotency(r, 600), method)(*args)
            finally:
                await r.aclose()

        return asyncio.run(call())

    assert ledger("begin", "team-a", "dup", fp) is None  # claimed: "in progress"
    second = httpx.post(f"{api}/v1/batches", json=body, headers={**A, "idempotency-key": "dup"})
    assert second.status_code == 409, second.text
    assert depth(stack, redis) == 0  # the duplicate queued nothing
    ledger("abandon", "team-a", "dup")  # the first request failed: its key is free again
    third = httpx.post(f"{api}/v1/batches", json=body, headers={**A, "idempotency-key": "dup"})
    assert third.status_code == 202 and depth(stack, redis) == 2


def test_rate_limit_gives_429_with_retry_after(stack, redis):
    api = stack.start_api(GENFLEET_API_KEYS="team-a:key-a,team-b:key-b", GENFLEET_RATE_LIMIT_PER_MINUTE="3")
    if time.time() % 60 > 55:  # windows are whole minutes: keep all five requests inside one
        time.sleep(60 - time.time() % 60 + 0.1)
    codes = [httpx.post(f"{api}/v1/jobs", json={"prompt": "a cat"}, headers=A) for _ in range(5)]
    assert [r.status_code for r in codes[:3]] == [202] * 3
    refused = codes[3]
    assert refused.status_code == 429 and 1 <= int(refused.headers["retry-after"]) <= 60
    assert "rate limit" in refused.json()["detail"]
    assert httpx.post(f"{api}/v1/jobs", json={"prompt": "a cat"}, headers=B).status_code == 202  # per key
    assert depth(stack, redis) == 4


def test_daily_image_quota_counts_images_and_refunds_nothing_on_refusal(stack, redis):
    api = stack.start_api(GENFLEET_QUOTA_IMAGES_PER_DAY="10")
    assert httpx.post(f"{api}/v1/jobs", json={"prompt": "a cat", "num_images": 8}).status_code == 202
    over = httpx.post(f"{api}/v1/batches", json={"prompts": ["a", "b", "c"]})
    assert over.status_code == 429 and int(over.headers["retry-after"]) <= 86400
    assert "quota" in over.json()["detail"]
    assert httpx.post(f"{api}/v1/batches", json={"prompts": ["a", "b"]}).status_code == 202  # exactly 10
    assert depth(stack, redis) == 3


def test_a_request_the_quota_refuses_gives_its_rate_unit_back(stack, redis):
    api = stack.start_api(GENFLEET_QUOTA_IMAGES_PER_DAY="2", GENFLEET_RATE_LIMIT_PER_MINUTE="3")
    if time.time() % 60 > 55:  # windows are whole minutes: keep every request inside one
        time.sleep(60 - time.time() % 60 + 0.1)
    codes = [httpx.post(f"{api}/v1/jobs", json={"prompt": "a cat", "num_images": 4}).status_code for _ in range(5)]
    assert codes == [429] * 5  # each over the quota; none of them used up the rate limit
    assert [httpx.post(f"{api}/v1/jobs", json={"prompt": "a cat"}).status_code for _ in range(3)] == [202, 202, 429]
    assert depth(stack, redis) == 2


def test_backpressure_when_the_queue_is_deep(stack, redis):
    api = stack.start_api(GENFLEET_MAX_QUEUE_DEPTH="2")
    assert httpx.post(f"{api}/v1/jobs", json={"prompt": "a cat"}).status_code == 202
    assert httpx.post(f"{api}/v1/batches", json={"prompts": ["a", "b"]}).status_code == 503
    assert httpx.post(f"{api}/v1/jobs", json={"prompt": "a cat"}).status_code == 202
    full = httpx.post(f"{api}/v1/jobs", json={"prompt": "a cat"})
    assert full.status_code == 503 and full.headers["retry-after"] == "10"
    assert depth(stack, redis) == 2


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/hook", "http://localhost/hook", "http://10.1.2.3/x",
                                 "http://169.254.169.254/latest/meta-data", "http://[::1]/x",
                                 "http://192.168.0.10/x", "http://metadata.internal/x", "ftp://example.com/x"])
def test_webhook_targets_that_are_not_public_are_refused(api, stack, redis, url):
    r = httpx.post(f"{api}/v1/jobs", json={"prompt": "a cat", "webhook_url": url}, headers=A)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "webhook_url", r.text
    assert depth(stack, redis) == 0


def test_webhooks_need_a_secret(stack):
    api = stack.start_api()
    r = httpx.post(f"{api}/v1/jobs", json={"prompt": "a cat", "webhook_url": "https://example.com/hook"})
    assert r.status_code == 422 and "GENFLEET_WEBHOOK_SECRET" in r.json()["detail"][0]["msg"]


def test_unknown_batch_and_bad_ids(api):
    assert httpx.get(f"{api}/v1/batches/{uuid.uuid4()}", headers=A).status_code == 404
    assert httpx.get(f"{api}/v1/batches/nope", headers=A).status_code == 422
