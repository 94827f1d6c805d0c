"""The GIL alone: how much a pipeline call slows when Python work runs beside it on a thread of its process,
against the same work in another process (why `GENFLEET_WRITE_IN=process` exists; docs/benchmarks.md).

    python -m tests.benchmarks.gil [--rounds 5] [--busy-ms 4] [--every-ms 16] [--steps 12]

The sampling thread runs the embedded pipeline at batch 8 with one torch thread, pinned to the first core; the
Python work (JSON round trips, `--busy-ms` of every `--every-ms`, a stand-in for botocore signing a PUT) is
pinned to the second, so no core is shared and only the GIL is. Each round times a call alone, beside a thread,
beside a process; its line carries its slowdowns (seconds beside over seconds alone), the last line their
medians with their spread.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

SAMPLER_CORE, BUSY_CORE = 0, 1


def busy(started: Any, stop: Any, busy_s: float, every_s: float) -> None:
    """`busy_s` of pure Python every `every_s`, on the second core, until `stop` is set."""
    os.sched_setaffinity(0, {BUSY_CORE})  # 0: the calling thread (Linux)
    payload = {"a": list(range(200)), "b": "x" * 100}
    started.set()
    while not stop.is_set():
        start = time.perf_counter()
        while time.perf_counter() - start < busy_s:
            json.loads(json.dumps(payload))
        time.sleep(max(every_s - busy_s, 0.0))


def beside(where: str, call: Callable[[], float], work: tuple[float, float]) -> float:
    """One timed call: alone, or beside the Python work on a thread of this process or in another process."""
    if where == "alone":
        return call()
    if where == "thread":
        started_t, stop_t = threading.Event(), threading.Event()
        threading.Thread(target=busy, args=(started_t, stop_t, *work), daemon=True).start()
        started_t.wait()
        try:
            return call()
        finally:
            stop_t.set()
    spawn = multiprocessing.get_context("spawn")
    started_p, stop_p = spawn.Event(), spawn.Event()
    proc = spawn.Process(target=busy, args=(started_p, stop_p, *work), daemon=True)
    proc.start()
    started_p.wait(60)  # it has imported and is working
    try:
        return call()
    finally:
        stop_p.set()
        proc.join()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m tests.benchmarks.gil", description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--busy-ms", type=float, default=4.0)
    ap.add_argument("--every-ms", type=float, default=16.0)
    ap.add_argument("--steps", type=int, default=12)
    args = ap.parse_args(argv)
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("needs two cores: one for the sampling thread, one for the Python work beside it")
    import torch

    from genfleet.workers.models import PipelineCache
    from genfleet.workers.sampling import GroupKey, ImageSpec, call_kwargs

    torch.set_num_threads(1)
    os.sched_setaffinity(0, {SAMPLER_CORE})
    device = torch.device("cpu")
    pipe = PipelineCache(device).get("embedded")
    key = GroupKey("embedded", None, None, args.steps, None)
    specs = [ImageSpec("a red cat with a blue hat", None, seed) for seed in range(8)]

    def call() -> float:
        start = time.perf_counter()
        pipe(**call_kwargs(key, specs, device))
        return time.perf_counter() - start

    call()  # warm
    work = (args.busy_ms / 1000, args.every_ms / 1000)
    print(json.dumps({"measure": "setup", "busy_share": args.busy_ms / args.every_ms, "steps": args.steps,
                      "cores": sorted(os.sched_getaffinity(0) | {BUSY_CORE})}), flush=True)
    thread_slow, process_slow = [], []
    order = ["alone", "thread", "process"]
    for n in range(args.rounds):
        seconds = {where: beside(where, call, work) for where in order[n % 3:] + order[:n % 3]}  # rotated
        thread_slow.append(seconds["thread"] / seconds["alone"])
        process_slow.append(seconds["process"] / seconds["alone"])
        print(json.dumps({"measure": "round", "round": n, "order": list(seconds), "alone_s": seconds["alone"],
                          "beside_thread_s": seconds["thread"], "beside_process_s": seconds["process"],
                          "thread_slowdown": thread_slow[-1], "process_slowdown": process_slow[-1]}), flush=True)
    print(json.dumps({"measure": "summary", "rounds": args.rounds,
                      "thread_slowdown": statistics.median(thread_slow), "thread_min": min(thread_slow),
                      "thread_max": max(thread_slow), "process_slowdown": statistics.median(process_slow),
                      "process_min": min(process_slow), "process_max": max(process_slow)}), flush=True)


if __name__ == "__main__":
    main()
