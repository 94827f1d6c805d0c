"""The cost of choosing the next job under fair share, as the number of tenants and the queue's depth grow.

    python -m tests.benchmarks.fair_share [--tenants 1,100,10000] [--depths 10000,100000] [--rounds 5]
                                          [--moves 2000] [--redis-url URL]

Each configuration fills the tenants' backlogs of one ready list (equal shares of `depth` messages, through the
publish script, as a batch is sent), then plays a worker `moves` times: RPOP one message off the ready list,
then one dispatch call of the queue (window 1), which picks the tenant with the lowest tag and moves one message
on (and looks at the queue's other two lists, empty here). What is
timed is the dispatch call's round trip, on the client's clock (independent of the script): the median and the
99th percentile over the moves. Beside it, `floor`: a round trip of one LPUSH and one RPOP on the same
connection, the least a dispatch could cost. Rounds interleave every configuration, in an order that rotates;
the summary gives each configuration's median of the round medians, with min and max. Loopback only; it
flushes the database it is given (default 127.0.0.1:6379/12).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid

import redis

from genfleet.shared.fairshare import Fairness, FairShare, fair_keys, prefixes

LISTS = ["bench-fair", "bench-fair:3", "bench-fair:6"]  # one queue's lists, high to low: its normal one is used
READY = LISTS[1]
CHUNK = 1000


def message(job_id: str) -> str:
    return json.dumps({"headers": {"id": job_id}, "body": "x" * 64})


def fill(fair: FairShare, tenants: int, depth: int) -> None:
    fair.redis.flushdb()
    per = max(1, depth // tenants)
    pipe = fair.redis.pipeline(transaction=False)
    for t in range(tenants):
        for start in range(0, per, CHUNK):
            msgs = [message(str(uuid.uuid4())) for _ in range(min(CHUNK, per - start))]
            script_keys, args = fair.publish_call(LISTS, 1, f"tenant-{t}", msgs)
            fair.publish_script(keys=script_keys, args=args, client=pipe)
        if len(pipe) >= 100:
            pipe.execute()
    pipe.execute()


def moves(fair: FairShare, n: int) -> list[float]:
    r, took = fair.redis, []
    script_keys, args = fair_keys(LISTS), [len(LISTS), fair.fairness.window, *prefixes(LISTS)]
    for _ in range(n):
        r.rpop(READY)
        t0 = time.perf_counter()
        fair.dispatch_script(keys=script_keys, args=args)
        took.append(time.perf_counter() - t0)
    return took


def floor(r: redis.Redis, n: int) -> list[float]:
    took = []
    for _ in range(n):
        t0 = time.perf_counter()
        pipe = r.pipeline(transaction=False)
        pipe.lpush("bench-fair:floor", "x")
        pipe.rpop("bench-fair:floor")
        pipe.execute()
        took.append(time.perf_counter() - t0)
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tenants", default="1,100,10000")
    ap.add_argument("--depths", default="10000,100000")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--moves", type=int, default=2000)
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/12")
    args = ap.parse_args()
    r = redis.Redis.from_url(args.redis_url)
    fair = FairShare(r, Fairness(window=1))
    configs = [(t, d) for d in map(int, args.depths.split(",")) for t in map(int, args.tenants.split(","))]
    results: dict[str, list[tuple[float, float]]] = {}
    for n in range(args.rounds):
        order = configs[n % len(configs):] + configs[:n % len(configs)]
        for tenants, depth in order:
            fill(fair, tenants, depth)
            took = sorted(moves(fair, args.moves))
            row = {"event": "round", "round": n, "tenants": tenants, "depth": depth,
                   "median_us": took[len(took) // 2] * 1e6, "p99_us": took[int(len(took) * 0.99)] * 1e6}
            print(json.dumps(row), flush=True)
            results.setdefault(f"{tenants}x{depth}", []).append((row["median_us"], row["p99_us"]))
        base = sorted(floor(r, args.moves))
        print(json.dumps({"event": "round", "round": n, "floor_median_us": base[len(base) // 2] * 1e6}), flush=True)
        results.setdefault("floor", []).append((base[len(base) // 2] * 1e6, 0.0))
    for name, rows in results.items():
        medians = [m for m, _ in rows]
        print(json.dumps({"event": "summary", "config": name, "median_us": round(statistics.median(medians), 1),
                          "min_us": round(min(medians), 1), "max_us": round(max(medians), 1),
                          "p99_us": round(statistics.median(p for _, p in rows), 1)}))
    r.flushdb()


if __name__ == "__main__":
    main()
