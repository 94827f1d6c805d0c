"""One job through every real part: HTTP API -> Redis -> Celery worker process -> pipeline -> S3 over HTTP."""

import io
import json

import httpx
import numpy as np
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import BUCKET, free_port, kill_tree, make_safety_checker, objects, wait_for, wait_terminal


def test_job_lands_in_s3_with_metadata_and_manifest(stack, s3):
    api = stack.start_api()
    stack.start_worker()
    body = {"prompt": "a purple cat with a red hat", "num_images": 2, "seed": 11, "width": 48, "height": 40}
    job = wait_terminal(api, httpx.post(f"{api}/v1/jobs", json=body).json()["id"])
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 1 and job["started_at"] and job["finished_at"]
    assert {"queued_s", "sample_s", "store_s"} <= set(job["timings"])
    prefix = stack.env["GENFLEET_STORAGE_URL"].removeprefix(f"s3://{BUCKET}/")
    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=f"{prefix}/{job['id']}/manifest.json")["Body"].read())
    assert [m["key"] for m in manifest["images"]] == [f"{job['id']}/0.png", f"{job['id']}/1.png"]
    for i, out in enumerate(job["outputs"]):
        assert out["url"] == f"s3://{BUCKET}/{prefix}/{job['id']}/{i}.png" and out["attempts"][0]["seed"] == 11 + i
        png = Image.open(io.BytesIO(s3.get_object(Bucket=BUCKET, Key=f"{prefix}/{out['key']}")["Body"].read()))
        png.load()
        assert png.format == "PNG" and png.size == (48, 40)
        assert png.text["prompt"] == body["prompt"] and png.text["seed"] == str(out["seed"])
        assert json.loads(png.text["scores"]) == out["scores"]
        assert png.text["model"] == "embedded" and float(png.text["score"]) == round(out["score"], 4)
        assert manifest["images"][i]["seed"] == out["seed"]


def test_failing_job_is_recorded_failed_with_reason(stack):
    # A model the worker cannot load: the job fails with a readable reason, the worker keeps serving.
    api = stack.start_api(GENFLEET_EXTRA_MODELS="/nonexistent/model")
    stack.start_worker(GENFLEET_EXTRA_MODELS="/nonexistent/model")  # it consumes that model's queue too
    bad = httpx.post(f"{api}/v1/jobs", json={"prompt": "a cat", "model": "/nonexistent/model"}).json()
    good = httpx.post(f"{api}/v1/jobs", json={"prompt": "a cat"}).json()
    bad, good = wait_terminal(api, bad["id"]), wait_terminal(api, good["id"])
    assert bad["status"] == "failed" and "/nonexistent/model" in bad["error"]
    assert good["status"] == "succeeded"


def test_same_seed_same_pixels_across_jobs_and_a_scheduler_changes_them(stack, s3):
    api = stack.start_api()
    stack.start_worker()
    bodies = [{"prompt": "a green cat", "seed": 3}] * 2 + [{"prompt": "a green cat", "seed": 3, "scheduler": "unipc"}]
    ids = [httpx.post(f"{api}/v1/jobs", json=body).json()["id"] for body in bodies]
    prefix = stack.env["GENFLEET_STORAGE_URL"].removeprefix(f"s3://{BUCKET}/")
    pixels, schedulers = [], []
    for job_id in ids:
        job = wait_terminal(api, job_id)
        assert job["status"] == "succeeded", job["error"]
        stored = s3.get_object(Bucket=BUCKET, Key=f"{prefix}/{job['outputs'][0]['key']}")["Body"].read()
        image = Image.open(io.BytesIO(stored))
        pixels.append(image.tobytes())
        schedulers.append(image.text["scheduler"])
    assert pixels[0] == pixels[1] and pixels[2] != pixels[0]
    assert schedulers == ["", "", "unipc"]


def test_worker_metrics_count_what_the_pool_process_did(stack):
    api = stack.start_api()
    port = free_port()
    stack.start_worker(GENFLEET_METRICS_PORT=str(port))
    job = wait_terminal(api, httpx.post(f"{api}/v1/jobs", json={"prompt": "a green cat", "num_images": 3,
                                                                "steps": 4}).json()["id"])
    assert job["status"] == "succeeded"

    def samples() -> dict:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    wait_for(lambda: samples().get(("genfleet_images_generated_total", (("model", "embedded"),))) == 3.0, 10,
             "images counter never reached 3")
    got = samples()
    assert got[("genfleet_jobs_finished_total", (("model", "embedded"), ("status", "succeeded")))] == 1.0
    assert got[("genfleet_sample_seconds_count", (("model", "embedded"),))] == 1.0
    assert got[("genfleet_model_load_seconds", (("model", "embedded"),))] > 0


def test_the_safety_flag_stores_flagged_images_apart_or_fails_the_job(stack, s3, tmp_path):
    # a checker built from config (no real one can be downloaded here) whose thresholds flag every image
    checker = str(make_safety_checker(tmp_path / "checker", flags=True))
    api = stack.start_api()
    worker = stack.start_worker(GENFLEET_SAFETY="separate", GENFLEET_SAFETY_CHECKER=checker)
    job = wait_terminal(api, httpx.post(f"{api}/v1/jobs", json={"prompt": "a red hat", "num_images": 2}).json()["id"])
    assert job["status"] == "succeeded" and [o["nsfw"] for o in job["outputs"]] == [True, True]
    prefix = stack.env["GENFLEET_STORAGE_URL"].removeprefix(f"s3://{BUCKET}/")
    for out in job["outputs"]:
        assert out["key"] == f"flagged/{job['id']}/{out['index']}.png"
        png = Image.open(io.BytesIO(s3.get_object(Bucket=BUCKET, Key=f"{prefix}/{out['key']}")["Body"].read()))
        assert png.text["nsfw"] == "true"
        assert np.asarray(png.convert("RGB")).std() > 4  # flagged, never blacked out
    assert objects(s3, stack, job["id"]) == ["manifest.json"]  # only the manifest under the job's own prefix

    kill_tree(worker)  # idle: its job has ended
    stack.start_worker(GENFLEET_SAFETY="fail", GENFLEET_SAFETY_CHECKER=checker)
    failed = wait_terminal(api, httpx.post(f"{api}/v1/jobs", json={"prompt": "a red hat"}).json()["id"])
    assert failed["status"] == "failed" and "safety checker flagged image(s) [0]" in failed["error"]
    assert objects(s3, stack, failed["id"]) == [] and failed["outputs"] == []
