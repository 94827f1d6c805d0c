"""`/v1/batches` against a real Redis, S3 (moto over HTTP) and, where jobs must run, a real worker."""

import json
import time

import httpx

from tests.helpers import BUCKET, depth


def manifest(s3, stack, batch_id: str) -> dict:
    run = stack.env["GENFLEET_STORAGE_URL"].rsplit("/", 1)[-1]
    return json.loads(s3.get_object(Bucket=BUCKET, Key=f"{run}/batches/{batch_id}/manifest.json")["Body"].read())


def wait_batch(api: str, batch_id: str, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        batch = httpx.get(f"{api}/v1/batches/{batch_id}").json()
        if batch["status"] == "finished":
            return batch
        time.sleep(0.2)
    raise AssertionError(f"batch {batch_id} not finished: {batch}")


def test_ten_thousand_prompts_are_queued_then_cancelled_with_a_manifest(stack, redis, s3):
    api = stack.start_api()
    prompts = [f"a purple cat with a red hat, take {i}" for i in range(10_000)]
    t0 = time.perf_counter()
    r = httpx.post(f"{api}/v1/batches", json={"prompts": prompts, "params": {"steps": 3}}, timeout=60)
    print(f"10,000-prompt batch accepted in {time.perf_counter() - t0:.2f}s")
    assert r.status_code == 202, r.text
    batch = r.json()
    assert r.headers["location"] == f"/v1/batches/{batch['id']}"
    assert batch["counts"] == {"total": 10_000, "queued": 10_000, "running": 0, "succeeded": 0, "failed": 0,
                               "cancelled": 0}
    assert depth(stack, redis) == 10_000
    cancelled = httpx.delete(f"{api}/v1/batches/{batch['id']}", timeout=60).json()
    assert cancelled["status"] == "finished" and cancelled["counts"]["cancelled"] == 10_000
    assert cancelled["progress"] == 1.0 and cancelled["manifest_url"].startswith("http")
    body = manifest(s3, stack, batch["id"])
    assert len(body["jobs"]) == 10_000 and {j["status"] for j in body["jobs"]} == {"cancelled"}
    assert body["jobs"][9_999]["prompt"] == prompts[9_999]
    assert httpx.get(cancelled["manifest_url"]).json()["batch_id"] == batch["id"]  # the presigned link works


def test_jsonl_upload_with_shared_params_and_a_bad_line(stack, redis):
    api = stack.start_api()
    lines = '"a green cat"\n{"prompt": "a red hat", "seed": 9}\n\n"a blue cat"\n'
    r = httpx.post(f"{api}/v1/batches", content=lines, params={"params": json.dumps({"num_images": 2})},
                   headers={"content-type": "application/x-ndjson"})
    assert r.status_code == 202, r.text
    assert r.json()["total"] == 3 and depth(stack, redis) == 3
    bad = httpx.post(f"{api}/v1/batches", content='"a cat"\n{"prompt": ""}\n',
                     headers={"content-type": "application/x-ndjson"})
    assert bad.status_code == 422 and "line 2" in bad.json()["detail"][0]["loc"]
    params = httpx.post(f"{api}/v1/batches", json={"prompts": ["a cat"], "params": {"steps": 0}})
    assert params.status_code == 422 and params.json()["detail"][0]["loc"] == ["body", "params", "steps"]
    empty = httpx.post(f"{api}/v1/batches", json={"prompts": []})
    assert empty.status_code == 422 and empty.json()["detail"][0]["loc"] == ["body", "prompts"]
    too_many = httpx.post(f"{api}/v1/batches", json={"prompts": ["a cat"] * 10_001})
    assert too_many.status_code == 422
    assert depth(stack, redis) == 3


def test_a_batch_runs_to_its_manifest(stack, s3):
    api = stack.start_api()
    stack.start_worker()
    r = httpx.post(f"{api}/v1/batches", json={"prompts": ["a green cat", {"prompt": "a red hat", "seed": 4},
                                                           "a yellow cat with a blue hat"],
                                               "params": {"steps": 3, "num_images": 2}})
    batch = wait_batch(api, r.json()["id"])
    assert batch["counts"]["succeeded"] == 3 and batch["counts"]["queued"] == batch["counts"]["running"] == 0
    body = manifest(s3, stack, batch["id"])
    assert [len(j["images"]) for j in body["jobs"]] == [2, 2, 2]
    second = httpx.get(f"{api}/v1/jobs/{body['jobs'][1]['id']}").json()
    assert second["seed"] == 4 and second["batch_id"] == batch["id"] and second["request"]["num_images"] == 2
