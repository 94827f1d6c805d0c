"""Metrics and logs as operators see them: a real Prometheus server (Debian's package) scrapes a real API and
worker while jobs run, and what it reports matches what is in storage; every process logs one JSON object a
line, with job, batch and tenant ids."""

import json
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import BUCKET, free_port, wait_for, wait_terminal

PROMETHEUS = shutil.which("prometheus")


def start_prometheus(tmp_path, targets: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    jobs = "\n".join(f"  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']"
                     for job, target in targets.items())
    config = tmp_path / "prometheus.yml"
    config.write_text(f"global:\n  scrape_interval: 1s\nscrape_configs:\n{jobs}\n")
    with open(tmp_path / "prometheus.log", "wb") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                 f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=log)
    return proc, f"http://127.0.0.1:{port}"


def query(prometheus: str, expr: str) -> list[dict]:
    r = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=5)
    if r.status_code == 503:  # still starting: no answer yet
        return []
    body = r.json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def _answers(prometheus: str) -> bool:
    try:
        return httpx.get(f"{prometheus}/-/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def json_lines(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


@pytest.mark.skipif(PROMETHEUS is None, reason="no Prometheus server (apt-get install prometheus)")
def test_prometheus_counts_every_image_in_storage(stack, s3, tmp_path):
    api = stack.start_api()
    worker_port = free_port()
    stack.start_worker(GENFLEET_METRICS_PORT=str(worker_port))
    proc, prometheus = start_prometheus(tmp_path, {"genfleet-api": api.removeprefix("http://"),
                                                   "genfleet-worker": f"127.0.0.1:{worker_port}"})
    stack.procs.append(proc)
    wait_for(lambda: _answers(prometheus) and len(query(prometheus, "up == 1")) == 2, 60,
             lambda: (tmp_path / "prometheus.log").read_text())
    jobs = [httpx.post(f"{api}/v1/jobs", json={"prompt": f"a cat {i}", "steps": 3, "num_images": 1 + i % 3}).json()
            for i in range(6)]
    jobs.append(httpx.post(f"{api}/v1/batches", json={"prompts": ["a red hat", "a blue cat"],
                                                       "params": {"steps": 3}}).json())
    for job in jobs[:6]:
        assert wait_terminal(api, job["id"])["status"] == "succeeded"
    run = stack.env["GENFLEET_STORAGE_URL"].rsplit("/", 1)[-1]
    wait_for(lambda: httpx.get(f"{api}/v1/batches/{jobs[6]['id']}").json()["status"] == "finished", 60, "batch")
    pngs = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{run}/")["Contents"]
            if o["Key"].endswith(".png")]
    assert len(pngs) == sum(1 + i % 3 for i in range(6)) + 2

    def counted() -> float:
        result = query(prometheus, "sum(genfleet_images_generated_total)")
        return float(result[0]["value"][1]) if result else -1

    wait_for(lambda: counted() == len(pngs), 30, lambda: f"Prometheus counts {counted()}, storage has {len(pngs)}")
    finished = query(prometheus, 'sum(genfleet_jobs_finished_total{status="succeeded"})')
    assert float(finished[0]["value"][1]) == 8
    assert query(prometheus, "genfleet_queue_depth")  # read from Redis at scrape time
    accepted = query(prometheus, 'sum(genfleet_http_requests_total{route="/v1/jobs",status="202"})')
    assert float(accepted[0]["value"][1]) == 6


def test_worker_metrics_cover_the_data_path(stack):
    """The worker's own exposition (prefork children, multiprocess mode) after a job."""
    api = stack.start_api()
    port = free_port()
    stack.start_worker(GENFLEET_METRICS_PORT=str(port))
    job = httpx.post(f"{api}/v1/jobs", json={"prompt": "a green cat", "steps": 3, "num_images": 2}).json()
    assert wait_terminal(api, job["id"])["status"] == "succeeded"
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    samples = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples["genfleet_images_generated_total"] == 2
    for name in ("genfleet_sample_seconds_count", "genfleet_encode_seconds_count", "genfleet_upload_seconds_count",
                 "genfleet_queue_wait_seconds_count", "genfleet_job_duration_seconds_count",
                 "genfleet_batch_images_count", "genfleet_quality_score_count", "genfleet_model_load_seconds",
                 "genfleet_jobs_in_flight"):
        assert name in samples, name
    assert samples["genfleet_quality_score_count"] == 2 and samples["genfleet_jobs_in_flight"] == 0


def test_logs_are_json_lines_with_ids(stack):
    api = stack.start_api(GENFLEET_API_KEYS="team-a:key-a")
    stack.start_worker()
    auth = {"authorization": "Bearer key-a"}
    batch = httpx.post(f"{api}/v1/batches", json={"prompts": ["a cat"], "params": {"steps": 3}}, headers=auth).json()
    deadline = time.monotonic() + 60
    while httpx.get(f"{api}/v1/batches/{batch['id']}", headers=auth).json()["status"] != "finished":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    for log in ("api-0.log", "worker-1.log"):
        lines = [line for line in (stack.tmp / log).read_text().splitlines() if line.startswith("{")]
        records = [json.loads(line) for line in lines]
        assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
    api_records = json_lines(stack.tmp / "api-0.log")
    queued = next(r for r in api_records if r["message"] == "batch queued")
    assert queued["batch_id"] == batch["id"] and queued["tenant"] == "team-a"
    worker_records = json_lines(stack.tmp / "worker-1.log")
    done = next(r for r in worker_records if r["message"] == "job succeeded")
    assert done["batch_id"] == batch["id"] and done["tenant"] == "team-a" and done["job_id"]
