"""The enqueue benchmark: `POST /v1/jobs` through a real uvicorn process against Celery's bare publish of the
same jobs, and one 10,000-prompt batch. Loopback only; one JSON line a measure, the last with the ratio.

    python -m tests.benchmarks.enqueue [--jobs 2000] [--rounds 5] [--batch 10000] [--redis-url URL]

Each round runs both sides, one after the other, in alternating order (the machine's noise then falls on both):
- api: N sequential POSTs on one keep-alive connection (each records the job and publishes its message);
  throughput, p50 and p99 latency as the client sees them;
- bare: Celery `send_task` of N job messages, the same bodies, sequentially, in this process;
- the round's `api_cost_ratio`: the API's seconds per job over the bare publish's (target: at most 2);
- and `cpu_cost_ratio`: the CPU seconds per job of the API process over those of the publishing process, as the
  kernel counts them: what a job costs the process that admits it, without the HTTP client's own time or the
  latency of a request that waits for its answer before the next one is sent. The API's is read with psutil
  (from /proc/PID/stat, in clock ticks); the publisher's from its own clock, to the nanosecond, since a short run's
  bare publish can take less than a tick (it once read 0, and the ratio divided by it).
The summary gives the median of each ratio over the rounds, with its min and max. Then, once:
- batch: one `POST /v1/batches` of `--batch` prompts, seconds until its 202 (target: at most 5 s).
Queues are named per run and deleted afterwards; nothing runs the jobs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psutil

from genfleet import supervisor
from genfleet.shared import keys
from genfleet.shared.batches import Batch
from genfleet.shared.queue import GENERATE_TASK, priority_lists, publisher
from genfleet.shared.redis_server import client
from genfleet.shared.schema import Job, JobRequest
from genfleet.shared.settings import Settings
from tests.helpers import free_port


def emit(**fields) -> dict:
    print(json.dumps(fields), flush=True)
    return fields


def percentile(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def cpu_seconds(pid: int) -> float:
    """User and system CPU time the kernel has charged to process `pid` (psutil, as `genfleet bench` reads it)."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def bench_api(base: str, n: int, made: list[str], pid: int, round_no: int = 0) -> dict:
    latencies = []
    with httpx.Client(base_url=base, timeout=30) as http:
        for i in range(10):  # warm the connection and the server's code paths
            made.append(http.post("/v1/jobs", json={"prompt": f"warm {i}"}).raise_for_status().json()["id"])
        t0, cpu0 = time.perf_counter(), cpu_seconds(pid)
        for i in range(n):
            s = time.perf_counter()
            r = http.post("/v1/jobs", json={"prompt": f"a purple cat with a red hat {round_no} {i}", "seed": i})
            latencies.append(time.perf_counter() - s)
            made.append(r.raise_for_status().json()["id"])
        total, cpu = time.perf_counter() - t0, cpu_seconds(pid) - cpu0
    return {"jobs_per_s": n / total, "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * percentile(latencies, 0.99), "cpu_ms_per_job": 1000 * cpu / n}


def bench_bare(settings: Settings, redis_url: str, n: int, round_no: int = 0) -> dict:
    app = publisher(settings, redis_url)
    jobs = [Job.new(JobRequest(prompt=f"a purple cat with a red hat {round_no} {i}", seed=i), "embedded")
            for i in range(n)]
    for job in jobs[:10]:
        app.send_task(GENERATE_TASK, args=[job.model_dump(mode="json")], queue=settings.queue, task_id=str(job.id))
    t0, cpu0 = time.perf_counter(), time.process_time()
    for job in jobs:
        app.send_task(GENERATE_TASK, args=[job.model_dump(mode="json")], queue=settings.queue, task_id=str(job.id))
    total, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"jobs_per_s": n / total, "cpu_ms_per_job": 1000 * cpu / n}


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def bench_batch(base: str, n: int, made: list[str]) -> dict:
    prompts = [f"a purple cat with a red hat, take {i}" for i in range(n)]
    t0 = time.perf_counter()
    r = httpx.post(f"{base}/v1/batches", json={"prompts": prompts}, timeout=120)
    seconds = time.perf_counter() - t0
    batch = Batch.model_validate(r.raise_for_status().json())
    made += [keys.batch(batch.id), keys.batch_counts(batch.id), *(keys.job(i) for i in batch.job_ids())]
    return emit(measure="batch", prompts=n, seconds_to_accept=seconds)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batch", type=int, default=10_000)
    p.add_argument("--redis-url", default=os.environ.get("GENFLEET_REDIS_URL", "redis://127.0.0.1:6379/10"))
    args = p.parse_args(argv)
    queue = f"genfleet-bench-{uuid.uuid4().hex[:8]}"
    settings = Settings(redis_url=args.redis_url, queue=queue, log_format="text")
    port, log = free_port(), Path(tempfile.mkdtemp()) / "api.log"
    env = supervisor.child_env(args.redis_url, GENFLEET_QUEUE=queue, GENFLEET_LOG_FORMAT="text",
                              GENFLEET_STORAGE_URL=f"file://{log.parent}/out", GENFLEET_MAX_QUEUE_DEPTH="10000000")
    env.pop("GENFLEET_API_KEYS", None)
    api = supervisor.spawn(supervisor.api_command("127.0.0.1", port), env, log)
    base = f"http://127.0.0.1:{port}"
    made: list[str] = []  # what this run wrote to Redis, removed at the end (the queues are this run's own)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/healthz", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or api.poll() is not None:
                    raise SystemExit(f"API never came up:\n{supervisor.tail(log)}") from None
                time.sleep(0.2)
        emit(measure="setup", cpus=os.cpu_count(), jobs=args.jobs, rounds=args.rounds, batch=args.batch)
        rounds = []
        for n in range(args.rounds):
            if n % 2:  # alternate which side goes first
                bare = bench_bare(settings, args.redis_url, args.jobs, n)
                api_run = bench_api(base, args.jobs, made, api.pid, n)
            else:
                api_run = bench_api(base, args.jobs, made, api.pid, n)
                bare = bench_bare(settings, args.redis_url, args.jobs, n)
            rounds.append(emit(measure="round", round=n, api_jobs_per_s=api_run["jobs_per_s"],
                               bare_jobs_per_s=bare["jobs_per_s"], p50_ms=api_run["p50_ms"], p99_ms=api_run["p99_ms"],
                               api_cost_ratio=bare["jobs_per_s"] / api_run["jobs_per_s"],
                               api_cpu_ms_per_job=api_run["cpu_ms_per_job"], bare_cpu_ms_per_job=bare["cpu_ms_per_job"],
                               cpu_cost_ratio=api_run["cpu_ms_per_job"] / bare["cpu_ms_per_job"]))
        batch = bench_batch(base, args.batch, made) if args.batch else None
        ratios, cpu = spread([r["api_cost_ratio"] for r in rounds]), spread([r["cpu_cost_ratio"] for r in rounds])
        emit(measure="summary", api_jobs_per_s=spread([r["api_jobs_per_s"] for r in rounds]),
             bare_jobs_per_s=spread([r["bare_jobs_per_s"] for r in rounds]),
             p99_ms=spread([r["p99_ms"] for r in rounds]), batch_seconds=batch and batch["seconds_to_accept"],
             api_cpu_ms_per_job=spread([r["api_cpu_ms_per_job"] for r in rounds]),
             bare_cpu_ms_per_job=spread([r["bare_cpu_ms_per_job"] for r in rounds]),
             cpu_cost_ratio=cpu["median"], cpu_ratio_min=cpu["min"], cpu_ratio_max=cpu["max"],
             api_cost_ratio=ratios["median"], ratio_min=ratios["min"], ratio_max=ratios["max"])
    finally:
        supervisor.stop(api, grace_s=5)
        r = client(args.redis_url)
        written = [*priority_lists(queue), f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}",
                   *(k if k.startswith("genfleet:") else keys.job(k) for k in made),
                   *(keys.events(k) for k in made if not k.startswith("genfleet:"))]
        for start in range(0, len(written), 1000):
            r.unlink(*written[start:start + 1000])
        record = keys.job("")
        ids = [k.removeprefix(record) for k in made if k.startswith(record) or not k.startswith("genfleet:")]
        for start in range(0, len(ids), 1000):  # the jobs it left queued, from the job store's index
            r.zrem(keys.QUEUED, *ids[start:start + 1000])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
