"""Content Credentials and the watermark through the whole system: a real API and worker on the embedded model,
images stored in S3 over HTTP, every output read back with c2pa-python's own Reader."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import c2pa
import httpx
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from genfleet import supervisor
from genfleet.shared.signing import development
from tests.helpers import BUCKET, ROOT, free_port, objects, run_cli, wait_for, wait_terminal
from tests.provenance_helpers import one_pixel_changed

QUICK = {"steps": 4}


def stored(s3, stack, out: dict) -> bytes:
    prefix = stack.env["GENFLEET_STORAGE_URL"].removeprefix(f"s3://{BUCKET}/")
    return s3.get_object(Bucket=BUCKET, Key=f"{prefix}/{out['key']}")["Body"].read()


def trusted_reader(stack, data: bytes, mime: str) -> c2pa.Reader:
    ca = (stack.tmp / "data" / "provenance" / "ca.pem").read_text()  # the stack's development CA
    settings = c2pa.Settings.from_dict({"trust": {"trust_anchors": ca}, "verify": {"verify_trust": True}})
    return c2pa.Reader(mime, io.BytesIO(data), context=c2pa.Context(settings))


def test_every_stored_image_carries_valid_credentials_and_the_watermark_where_it_fits(stack, s3, tmp_path):
    api = stack.start_api()
    worker_metrics = free_port()
    stack.start_worker(GENFLEET_METRICS_PORT=str(worker_metrics))
    small = wait_terminal(api, httpx.post(f"{api}/v1/jobs", json={"prompt": "a red cat", "num_images": 2,
                                                                  **QUICK}).json()["id"])
    big = {"prompt": "a blue cat", "width": 256, "height": 256, "output_format": "jpeg", **QUICK}
    large = wait_terminal(api, httpx.post(f"{api}/v1/jobs", json=big).json()["id"])
    assert small["status"] == large["status"] == "succeeded", (small, large)
    assert [o["marks"] for o in small["outputs"]] == [["c2pa"]] * 2  # 64x64: too small for a watermark
    assert large["outputs"][0]["marks"] == ["watermark", "c2pa"]
    for job, mime in ((small, "image/png"), (large, "image/jpeg")):
        for out in job["outputs"]:
            data = stored(s3, stack, out)
            reader = trusted_reader(stack, data, mime)
            assert reader.get_validation_state() == "Trusted", reader.get_validation_results()
            active = reader.get_active_manifest()
            labels = {a["label"]: a["data"] for a in active["assertions"]}
            assert labels["org.genfleet.generation"]["job_id"] == job["id"] and "prompt" not in labels[
                "org.genfleet.generation"]
            action = labels["c2pa.actions.v2"]["actions"][0]
            assert action["digitalSourceType"].endswith("/trainedAlgorithmicMedia")
            assert active["claim_generator_info"][0]["name"] == "genfleet"
    # the job's manifest.json says the same marks
    manifest = json.loads(stored(s3, stack, {"key": f"{large['id']}/manifest.json"}))
    assert manifest["images"][0]["marks"] == ["watermark", "c2pa"]

    # verify, through the API and the CLI: the stored JPEG, then a re-encode (no manifest; the watermark holds)
    jpeg = stored(s3, stack, large["outputs"][0])
    report = httpx.post(f"{api}/v1/verify", content=jpeg, headers={"content-type": "image/jpeg"}).json()
    assert report["manifest"]["valid"] and report["watermark"]["detected"], report
    (tmp_path / "out.jpg").write_bytes(jpeg)
    cli = run_cli("verify", str(tmp_path / "out.jpg"), cwd=tmp_path,
                  env={"GENFLEET_DATA_DIR": str(stack.tmp / "data")})
    assert cli.returncode == 0 and json.loads(cli.stdout)["manifest"]["state"] == "Trusted", cli.stdout + cli.stderr
    link = large["outputs"][0]["download_url"]  # a presigned URL: the CLI fetches it
    by_url = run_cli("verify", link, cwd=tmp_path, env={"GENFLEET_DATA_DIR": str(tmp_path / "elsewhere")})
    assert by_url.returncode == 0, by_url.stdout + by_url.stderr
    assert json.loads(by_url.stdout)["manifest"]["state"] == "Valid"  # no development CA trusted over there
    screenshot = io.BytesIO()
    Image.open(io.BytesIO(jpeg)).save(screenshot, format="PNG")
    again = httpx.post(f"{api}/v1/verify", content=screenshot.getvalue()).json()
    assert not again["manifest"]["present"] and again["watermark"]["bit_accuracy"] >= 0.9, again
    forged = one_pixel_changed(stored(s3, stack, small["outputs"][0]))
    assert httpx.post(f"{api}/v1/verify", content=forged).json()["manifest"]["state"] == "Invalid"
    assert httpx.post(f"{api}/v1/verify", content=b"not an image").status_code == 422

    samples = {(s.name, s.labels.get("model")): s.value for f in text_string_to_metric_families(
        httpx.get(f"http://127.0.0.1:{worker_metrics}/metrics").text) for s in f.samples}
    assert samples[("genfleet_images_signed_total", "embedded")] == 3
    assert samples[("genfleet_images_watermarked_total", "embedded")] == 1


def test_an_inpainted_output_names_its_signed_input_as_an_ingredient(stack, s3):
    api = stack.start_api()
    stack.start_worker()
    first = wait_terminal(api, httpx.post(f"{api}/v1/jobs", json={"prompt": "a red cat", **QUICK}).json()["id"])
    mask = io.BytesIO()
    Image.new("L", (64, 64), 255).save(mask, format="PNG")
    mask_id = httpx.post(f"{api}/v1/inputs", content=mask.getvalue(), headers={"content-type": "image/png"}).json()
    body = {"prompt": "a green cat", "task": "inpaint", "image": first["outputs"][0]["url"], "mask": mask_id["id"],
            **QUICK}
    second = wait_terminal(api, httpx.post(f"{api}/v1/jobs", json=body).json()["id"])
    assert second["status"] == "succeeded", second
    reader = trusted_reader(stack, stored(s3, stack, second["outputs"][0]), "image/png")
    assert reader.get_validation_state() == "Trusted"
    ingredients = reader.get_active_manifest()["ingredients"]
    assert [i["relationship"] for i in ingredients] == ["inputTo"]
    earlier = trusted_reader(stack, stored(s3, stack, first["outputs"][0]), "image/png").get_active_manifest()
    assert ingredients[0]["active_manifest"] == earlier["label"]  # the very manifest of the first job's image


def test_a_signing_failure_fails_the_write_and_stores_nothing_unsigned(stack, s3, redis, tmp_path):
    api = stack.start_api()
    good, other = development(tmp_path / "a"), development(tmp_path / "b")
    (tmp_path / "chain.pem").write_bytes(good.certs)
    (tmp_path / "key.pem").write_bytes(other.key)  # a rotated key deployed without its certificate
    worker_metrics = free_port()
    stack.start_worker(GENFLEET_SIGNING_CERTS=str(tmp_path / "chain.pem"),
                       GENFLEET_SIGNING_KEY=str(tmp_path / "key.pem"), GENFLEET_PROVENANCE="on",
                       GENFLEET_STORAGE_OUTAGE_S="3", GENFLEET_METRICS_PORT=str(worker_metrics))
    job = wait_terminal(api, httpx.post(f"{api}/v1/jobs", json={"prompt": "a red cat", **QUICK}).json()["id"])
    assert job["status"] == "failed" and job["error"].startswith("signing:"), job
    assert objects(s3, stack, job["id"]) == []  # not one image, nor its manifest.json
    letter = json.loads(redis.lindex("genfleet:dead-letter", 0))
    assert letter["job_id"] == job["id"] and letter["kind"] == "signing", letter
    failures = [s.value for f in text_string_to_metric_families(httpx.get(
        f"http://127.0.0.1:{worker_metrics}/metrics").text) for s in f.samples
        if s.name == "genfleet_signing_failures_total"]
    assert failures and failures[0] >= 2  # retried before it gave up


def test_a_production_worker_without_a_signer_refuses_to_start(stack, tmp_path):
    env = {**supervisor.worker_env(stack.env["GENFLEET_REDIS_URL"], 0), **stack.env, "GENFLEET_PROVENANCE": "on"}
    proc = supervisor.spawn(supervisor.worker_command(stack.settings), env, tmp_path / "worker.log")
    try:
        wait_for(lambda: proc.poll() is not None, 60, "the worker kept running with no signer", None)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert "no signer is configured" in (tmp_path / "worker.log").read_text()


def test_a_worker_with_provenance_off_never_imports_c2pa(tmp_path):
    """A lent GPU machine gets genfleet's packages as wheels in a 64 MiB transfer, which c2pa-python's does not
    fit (tests/benchmarks/gpu_wheels.sh); with provenance off the worker and its writes run without it."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "import genfleet.workers.app\n"
        "from genfleet.shared.settings import Settings\n"
        "from genfleet.workers.marking import Marker\n"
        f"marker = Marker(Settings(provenance='off', data_dir=Path({str(tmp_path)!r})))\n"
        "assert marker.signer is None and marker.marks([]) == []\n"
        "print('c2pa' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"
