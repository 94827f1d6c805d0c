"""The enqueue benchmark: `POST /v1/jobs` through a real uvicorn process against Celery's bare publish of the
same jobs, and one 10,000-prompt batch. Loopback only; one JSON line a measure, the last with the ratio.

    python -m tests.benchmarks.enqueue [--jobs 2000] [--rounds 5] [--loaded-s 3] [--connections 16]
                                       [--batch 10000] [--redis-url URL]

Each round runs each side, one after the other, in rotating order (the machine's noise then falls on all):
- api: N sequential POSTs on one keep-alive connection (each records the job and publishes its message);
  throughput, p50 and p99 latency as the client sees them;
- loaded: `--loaded-s` seconds of POSTs from wrk, an HTTP load generator in C, with `--connections` requests in
  flight, so the API process is kept busy, as a replica behind a load balancer is: the jobs/s one API process
  admits, counted from the messages it pushed to Redis (wrk's own count must agree), and the API's share of a
  core while it did (near 1: the API was the bottleneck, not wrk or Redis beside it);
- bare: Celery `send_task` of N job messages, the same bodies, sequentially, in this process;
- the round's `api_cost_ratio`: the API's seconds per job over the bare publish's (target: at most 2), and
  `loaded_cost_ratio`, the same for the loaded API;
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
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psutil
from redis import Redis

from genfleet import supervisor
from genfleet.shared import keys
from genfleet.shared.batches import Batch
from genfleet.shared.fairshare import waiting
from genfleet.shared.kombu_adapter import task_id
from genfleet.shared.queue import GENERATE_TASK, priority_lists, publisher
from genfleet.shared.redis_server import client
from genfleet.shared.schema import Job, JobRequest
from genfleet.shared.settings import Settings
from tests.helpers import free_port, healthy, queued_messages, tenant_state_written, wait_for


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


LOAD_SCRIPT = Path(__file__).with_name("enqueue_load.lua")




def bench_loaded(base: str, seconds: int, r: Redis, queue: str, pid: int, round_no: int, connections: int) -> dict:
    """wrk keeps `connections` requests in flight for `seconds`. Jobs/s are counted from the messages the API
    pushed to Redis, not from wrk's own count (the two must agree to within the requests in flight at the end)."""
    before = sum(waiting(r, priority_lists(queue)))  # its lists and, behind them, the tenants' backlogs
    t0, cpu0 = time.perf_counter(), cpu_seconds(pid)
    run = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(LOAD_SCRIPT),
                          f"{base}/v1/jobs", "--", str(round_no)],
                         capture_output=True, text=True, timeout=seconds + 60)
    if run.returncode:
        raise SystemExit(f"wrk failed ({run.returncode}):\n{run.stdout}{run.stderr}")
    wall, cpu = time.perf_counter() - t0, cpu_seconds(pid) - cpu0
    got = json.loads([line for line in run.stdout.splitlines() if line.startswith("{")][-1])
    pushed = sum(waiting(r, priority_lists(queue))) - before
    return {"jobs_per_s": pushed / (got["duration_us"] / 1e6), "messages": pushed, "wrk_requests": got["requests"],
            "non_2xx": got["non_2xx"], "socket_errors": got["socket_errors"], "p50_ms": got["p50_us"] / 1000,
            "p99_ms": got["p99_us"] / 1000, "api_cpu_share": cpu / wall}


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


def round_line(n: int, order: list[str], api: dict, loaded: dict, bare: dict) -> dict:
    return emit(measure="round", round=n, order=order, api_jobs_per_s=api["jobs_per_s"],
                bare_jobs_per_s=bare["jobs_per_s"], p50_ms=api["p50_ms"], p99_ms=api["p99_ms"],
                api_cost_ratio=bare["jobs_per_s"] / api["jobs_per_s"],
                api_cpu_ms_per_job=api["cpu_ms_per_job"], bare_cpu_ms_per_job=bare["cpu_ms_per_job"],
                cpu_cost_ratio=api["cpu_ms_per_job"] / bare["cpu_ms_per_job"],
                loaded_jobs_per_s=loaded["jobs_per_s"], loaded_api_cpu_share=loaded["api_cpu_share"],
                loaded_messages=loaded["messages"], loaded_wrk_requests=loaded["wrk_requests"],
                loaded_non_2xx=loaded["non_2xx"], loaded_socket_errors=loaded["socket_errors"],
                loaded_p99_ms=loaded["p99_ms"], loaded_cost_ratio=bare["jobs_per_s"] / loaded["jobs_per_s"])


def summary_line(rounds: list[dict], batch: dict | None) -> dict:
    def of(key: str) -> dict:
        return spread([x[key] for x in rounds])

    ratios, cpu, loaded = of("api_cost_ratio"), of("cpu_cost_ratio"), of("loaded_cost_ratio")
    return emit(measure="summary", api_jobs_per_s=of("api_jobs_per_s"), bare_jobs_per_s=of("bare_jobs_per_s"),
                p99_ms=of("p99_ms"), batch_seconds=batch and batch["seconds_to_accept"],
                api_cpu_ms_per_job=of("api_cpu_ms_per_job"), bare_cpu_ms_per_job=of("bare_cpu_ms_per_job"),
                cpu_cost_ratio=cpu["median"], cpu_ratio_min=cpu["min"], cpu_ratio_max=cpu["max"],
                loaded_jobs_per_s=of("loaded_jobs_per_s"), loaded_api_cpu_share=of("loaded_api_cpu_share"),
                loaded_cost_ratio=loaded["median"], loaded_ratio_min=loaded["min"], loaded_ratio_max=loaded["max"],
                api_cost_ratio=ratios["median"], ratio_min=ratios["min"], ratio_max=ratios["max"])


def clean(redis: Redis, queue: str, made: list[str]) -> None:
    """Removes what the run wrote: its queues, and the records of every job it made (the loaded side's, whose ids
    only their messages carry, too)."""
    made = [*made, *(i for i in map(task_id, queued_messages(redis, queue)) if i)]
    written = [*priority_lists(queue), f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}",
               *tenant_state_written(redis, queue, "public"),
               *(k if k.startswith("genfleet:") else keys.job(k) for k in made),
               *(keys.events(k) for k in made if not k.startswith("genfleet:"))]
    for start in range(0, len(written), 1000):
        redis.unlink(*written[start:start + 1000])
    record = keys.job("")
    jobs = [k.removeprefix(record) for k in made if k.startswith(record) or not k.startswith("genfleet:")]
    for start in range(0, len(jobs), 1000):  # the jobs it left queued, from the job store's index
        redis.zrem(keys.QUEUED, *jobs[start:start + 1000])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--loaded-s", type=int, default=3, help="whole seconds of each round's loaded side (wrk's unit)")
    p.add_argument("--connections", type=int, default=16, help="requests in flight on the loaded side")
    p.add_argument("--batch", type=int, default=10_000)
    p.add_argument("--redis-url", default=os.environ.get("GENFLEET_REDIS_URL", "redis://127.0.0.1:6379/10"))
    args = p.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("the loaded side needs wrk, an HTTP load generator (Debian: apt-get install wrk)")
    queue = f"genfleet-bench-{uuid.uuid4().hex[:8]}"
    settings = Settings(redis_url=args.redis_url, queue=queue, log_format="text")
    port, log = free_port(), Path(tempfile.mkdtemp()) / "api.log"
    env = supervisor.child_env(args.redis_url, GENFLEET_QUEUE=queue, GENFLEET_LOG_FORMAT="text",
                              GENFLEET_STORAGE_URL=f"file://{log.parent}/out", GENFLEET_MAX_QUEUE_DEPTH="10000000")
    env.pop("GENFLEET_API_KEYS", None)
    api = supervisor.spawn(supervisor.api_command("127.0.0.1", port), env, log)
    base, redis = f"http://127.0.0.1:{port}", client(args.redis_url)
    made: list[str] = []  # what this run wrote to Redis, removed at the end (the queues are this run's own)
    try:
        wait_for(lambda: healthy(base), 30, lambda: f"API never came up:\n{supervisor.tail(log)}", api)
        emit(measure="setup", cpus=os.cpu_count(), jobs=args.jobs, rounds=args.rounds, batch=args.batch,
             loaded_s=args.loaded_s, connections=args.connections)
        sides = {"api": lambda n: bench_api(base, args.jobs, made, api.pid, n),
                 "loaded": lambda n: bench_loaded(base, args.loaded_s, redis, queue, api.pid, n, args.connections),
                 "bare": lambda n: bench_bare(settings, args.redis_url, args.jobs, n)}
        rounds = []
        for n in range(args.rounds):
            order = list(sides)[n % 3:] + list(sides)[:n % 3]  # each side goes first in turn
            got = {side: sides[side](n) for side in order}
            rounds.append(round_line(n, order, got["api"], got["loaded"], got["bare"]))
        summary_line(rounds, bench_batch(base, args.batch, made) if args.batch else None)
    finally:
        supervisor.stop(api, grace_s=5)
        clean(redis, queue, made)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
