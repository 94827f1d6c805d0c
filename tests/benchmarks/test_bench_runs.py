"""`genfleet bench` keeps working: a tiny run prints well-formed JSON lines ending with the ratio.

This checks the benchmark's shape, not its speed: performance figures come from full runs of `genfleet bench`
(docs/benchmarks.md), never from a timed test.
"""

import json
import os
import shutil
import statistics
import subprocess
import sys

import pytest

from tests.helpers import ROOT, run_cli


# 20 s alone; beside the fair-share tests' backlogs on the other runner it once ran past the suite's 300 s, and
# pytest-timeout's kill left the bench's worker and API running on the runner's database
@pytest.mark.timeout(900)
@pytest.mark.parametrize(("through", "write_in"), [("queue", "threads"), ("api", "process")])
def test_bench_prints_interleaved_rounds_ending_with_the_median_ratio(tmp_path, redis_url, through, write_in):
    r = run_cli("bench", "--jobs", "4", "--batch", "2", "--steps", "2", "--repeats", "1", "--rounds", "3",
                "--through", through, "--write-in", write_in, cwd=tmp_path, env={"GENFLEET_REDIS_URL": redis_url})
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert [line.get("measure") for line in lines[:-1]] == ["setup", "raw", "round", "round", "round"]
    rounds, last = lines[2:5], lines[-1]
    for line in rounds:
        assert line["ratio"] == line["system_images_per_s"] / line["raw_batched_images_per_s"] > 0
        # the raw side brackets the system's run: its figure is both halves' images over both halves' time
        first, second = line["raw_halves_images_per_s"]
        assert line["raw_batched_images_per_s"] == pytest.approx(2 / (1 / first + 1 / second))
        cpu = line["cpu_s_per_image"]
        worker_parts = {"worker_main", "worker_sampling", "worker_writes"}
        assert set(cpu) == {"raw", "worker", "api", "redis", "s3", "other", "bench"} | worker_parts
        # the kernel's count must find the sampling where it runs, in the worker's pool (not its main process,
        # nor the threads that write)
        assert cpu["worker_sampling"] > cpu["raw"] / 2 > 0
        assert cpu["worker"] == pytest.approx(sum(cpu[part] for part in worker_parts))
        assert through == "api" or cpu["api"] == cpu["s3"] == 0
        system_cpu = sum(v for part, v in cpu.items() if part not in ("raw", "worker"))
        assert line["cpu_bound_ratio"] == pytest.approx(cpu["raw"] / system_cpu)
        assert line["worker_cpu_ratio"] == pytest.approx(cpu["worker"] / cpu["raw"])
    # the API's and moto's few milliseconds a round are counted in the kernel's 10 ms ticks: summed over the
    # rounds, not each; moto is its own process, so its requests are not charged to the watching
    for part in ("api", "s3"):
        assert (sum(x["cpu_s_per_image"][part] for x in rounds) > 0) == (through == "api"), part
    # the writes are found on threads named for them, or in the writer process, whichever writes
    assert sum(x["cpu_s_per_image"]["worker_writes"] for x in rounds) > 0
    assert last["worker_cpu_ratio"]["median"] == statistics.median(x["worker_cpu_ratio"] for x in rounds)
    assert last["cpu_s_per_image"]["worker"] == statistics.median(x["cpu_s_per_image"]["worker"] for x in rounds)
    assert last["cpu_bound_ratio"]["median"] == statistics.median(x["cpu_bound_ratio"] for x in rounds)
    ratios = sorted(line["ratio"] for line in rounds)
    assert (last["ratio_min"], last["ratio"], last["ratio_max"]) == tuple(ratios)  # median of three, and spread
    assert last["system_images_per_s"]["median"] == statistics.median(x["system_images_per_s"] for x in rounds)
    assert last["through"] == through and last["write_in"] == lines[0]["write_in"] == write_in


def test_gil_bench_times_each_call_alone_beside_a_thread_and_beside_a_process():  # and with a short switch
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("the GIL bench pins its two sides to two cores; this machine gives one")
    r = subprocess.run([sys.executable, "-m", "tests.benchmarks.gil", "--rounds", "3", "--steps", "1"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert [line["measure"] for line in lines] == ["setup", "round", "round", "round", "summary"]
    rounds, summary = lines[1:4], lines[-1]
    assert lines[0]["switch_ms"] == 0.1 and lines[0]["default_switch_ms"] == summary["switch_ms_after"] == 5.0
    assert [x["order"][0] for x in rounds] == ["alone", "thread", "thread_switch"]  # each round starts elsewhere
    for x in rounds:
        for side in ("thread", "thread_switch", "process"):
            assert x[f"{side}_slowdown"] == x[f"beside_{side}_s"] / x["alone_s"] > 0
    for side in ("thread", "thread_switch", "process"):
        ratios = sorted(x[f"{side}_slowdown"] for x in rounds)
        assert (summary[f"{side}_min"], summary[f"{side}_slowdown"], summary[f"{side}_max"]) == tuple(ratios)


def test_enqueue_bench_prints_the_api_cost_ratio_and_cleans_up(redis, redis_url):
    if shutil.which("wrk") is None:
        pytest.skip("the enqueue bench's loaded side needs wrk (Debian: apt-get install wrk)")
    r = subprocess.run([sys.executable, "-m", "tests.benchmarks.enqueue", "--jobs", "20", "--rounds", "3",
                        "--loaded-s", "1", "--batch", "100", "--redis-url", redis_url], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert [line["measure"] for line in lines] == ["setup", "round", "round", "round", "batch", "summary"]
    rounds, summary = lines[1:4], lines[-1]
    for line in rounds:
        assert line["api_cost_ratio"] == line["bare_jobs_per_s"] / line["api_jobs_per_s"] > 0
        assert line["p99_ms"] >= line["p50_ms"] > 0
        # the publishing side's CPU is read to the nanosecond, so even 20 publishes give a ratio
        assert line["cpu_cost_ratio"] == line["api_cpu_ms_per_job"] / line["bare_cpu_ms_per_job"] >= 0
        assert line["loaded_cost_ratio"] == line["bare_jobs_per_s"] / line["loaded_jobs_per_s"] > 0
        assert line["loaded_api_cpu_share"] > 0 and line["loaded_non_2xx"] == line["loaded_socket_errors"] == 0
        # counted from Redis: every request wrk saw answered pushed a message; those in flight at its end may too
        assert line["loaded_wrk_requests"] <= line["loaded_messages"] <= line["loaded_wrk_requests"] + 16
    assert [line["order"][0] for line in rounds] == ["api", "loaded", "bare"]  # each side goes first in turn
    for name, key in (("ratio", "api_cost_ratio"), ("loaded_ratio", "loaded_cost_ratio")):
        ratios = sorted(line[key] for line in rounds)
        assert (summary[f"{name}_min"], summary[key], summary[f"{name}_max"]) == tuple(ratios)
    assert summary["bare_jobs_per_s"]["median"] == statistics.median(x["bare_jobs_per_s"] for x in rounds)
    assert summary["batch_seconds"] > 0
    assert redis.dbsize() == 0  # every key it wrote is gone


def test_web_page_bench_opens_every_size_each_round_and_cleans_up(redis, redis_url):
    from tests.ui.conftest import CHROMIUM

    if CHROMIUM is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium)")
    r = subprocess.run([sys.executable, "-m", "tests.benchmarks.web_page", "--sizes", "3,60", "--rounds", "2",
                        "--redis-url", redis_url], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert [line["measure"] for line in lines] == ["setup", "round", "round", "summary"]
    for size in (3, 60):
        seconds = sorted(line[f"jobs_{size}_s"] for line in lines[1:3])
        spread = lines[-1][f"jobs_{size}_s"]
        assert (spread["min"], spread["max"]) == (seconds[0], seconds[1]) and seconds[0] > 0
    assert redis.dbsize() == 0  # every key it wrote is gone


def test_fair_share_bench_times_every_configuration_each_round_and_cleans_up(redis, redis_url):
    r = subprocess.run([sys.executable, "-m", "tests.benchmarks.fair_share", "--tenants", "1,50", "--depths", "200",
                        "--rounds", "2", "--moves", "100", "--redis-url", redis_url], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    rounds = [line for line in lines if line["event"] == "round" and "tenants" in line]
    assert sorted((line["round"], line["tenants"]) for line in rounds) == [(0, 1), (0, 50), (1, 1), (1, 50)]
    summary = {line["config"]: line for line in lines if line["event"] == "summary"}
    assert set(summary) == {"1x200", "50x200", "floor"}
    for name in ("1x200", "50x200"):
        medians = sorted(line["median_us"] for line in rounds if f"{line['tenants']}x200" == name)
        assert (summary[name]["min_us"], summary[name]["max_us"]) == (round(medians[0], 1), round(medians[1], 1))
    assert redis.dbsize() == 0  # every key it wrote is gone


@pytest.mark.timeout(900)
def test_bench_alternates_previews_and_reports_their_cost(tmp_path):
    # steps enough that a call outlasts the half second between step hooks, so the rounds with previews make some
    # on a Redis of its own (the bench starts the embedded one): its worker never shares the runner's database
    r = run_cli("bench", "--jobs", "4", "--batch", "2", "--steps", "40", "--repeats", "1", "--rounds", "2",
                "--no-batch1", "--previews", "alternate", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    rounds, last = [line for line in lines if line.get("measure") == "round"], lines[-1]
    assert [line["previews"] for line in rounds] == [False, True]
    assert rounds[0]["previews_published"] == 0 < rounds[1]["previews_published"]
    assert last["previews_cost"] == pytest.approx(rounds[1]["ratio"] / rounds[0]["ratio"])
