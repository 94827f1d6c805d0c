"""`genfleet bench` keeps working: a tiny run prints well-formed JSON lines ending with the ratio.

This checks the benchmark's shape, not its speed: performance figures come from full runs of `genfleet bench`
(see the README), never from a timed test.
"""

import json
import subprocess
import sys

from tests.conftest import ROOT, run_cli


def test_bench_prints_json_lines_ending_with_ratio(tmp_path, redis_url):
    r = run_cli("bench", "--jobs", "4", "--batch", "2", "--steps", "2", "--repeats", "1", cwd=tmp_path,
                env={"GENFLEET_REDIS_URL": redis_url})
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert [line.get("measure") for line in lines[:4]] == ["setup", "raw", "raw", "system"]
    last = lines[-1]
    assert last["ratio"] > 0 and last["system_images_per_s"] > 0
    assert abs(last["ratio"] - last["system_images_per_s"] / last["raw_batched_images_per_s"]) < 1e-9


def test_enqueue_bench_prints_the_api_cost_ratio_and_cleans_up(redis, redis_url):
    r = subprocess.run([sys.executable, "-m", "tests.benchmarks.enqueue", "--jobs", "20", "--batch", "100",
                        "--redis-url", redis_url], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert [line["measure"] for line in lines] == ["setup", "api", "bare_apply_async", "batch", "summary"]
    summary = lines[-1]
    assert summary["api_cost_ratio"] == summary["bare_jobs_per_s"] / summary["api_jobs_per_s"] > 0
    assert lines[1]["p99_ms"] >= lines[1]["p50_ms"] > 0 and summary["batch_seconds"] > 0
    assert redis.dbsize() == 0  # every key it wrote is gone
