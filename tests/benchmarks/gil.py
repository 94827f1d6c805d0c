"""The GIL alone: how much a pipeline call slows when Python work runs beside it on a thread of its process,
against the same work in another process (why `GENFLEET_WRITE_IN=process` exists; docs/benchmarks.md).

    python -m tests.benchmarks.gil [--rounds 5] [--busy-ms 4] [--every-ms 16] [--steps 12] [--switch-ms 0.1]

The sampling thread runs the embedded pipeline at batch 8 with one torch thread, pinned to the first core; the
Python work (JSON round trips, `--busy-ms` of every `--every-ms`, a stand-in for botocore signing a PUT) is
pinned to the second, so no core is shared and only the GIL is. Each round times a call alone, beside a thread,
beside a thread with the interpreter's switch interval cut from 5 ms to `--switch-ms` (how long a thread that
wants the GIL waits before it asks the holder to drop it), and beside a process; its line carries its slowdowns
(seconds beside over seconds alone), the last line their medians with their spread.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
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


def beside(where: str, call: Callable[[], float], work: tuple[float, float], switch_s: float) -> float:
    """One timed call: alone, or beside the Python work on a thread of this process (with the default switch
    interval, or `switch_s`) or in another process."""
    if where == "alone":
        return call()
    if where in ("thread", "thread_switch"):
        default_s = sys.getswitchinterval()
        started_t, stop_t = threading.Event(), threading.Event()
        threading.Thread(target=busy, args=(started_t, stop_t, *work), daemon=True).start()
        started_t.wait()
        sys.setswitchinterval(switch_s if where == "thread_switch" else default_s)
        try:
            return call()
        finally:
            stop_t.set()
            sys.setswitchinterval(default_s)
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
    ap.add_argument("--switch-ms", type=float, default=0.1)
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
                      "switch_ms": args.switch_ms, "default_switch_ms": sys.getswitchinterval() * 1000,
                      "cores": sorted(os.sched_getaffinity(0) | {BUSY_CORE})}), flush=True)
    order = ["alone", "thread", "thread_switch", "process"]
    slow: dict[str, list[float]] = {where: [] for where in order[1:]}
    for n in range(args.rounds):
        rotated = order[n % len(order):] + order[:n % len(order)]
        seconds = {where: beside(where, call, work, args.switch_ms / 1000) for where in rotated}
        line: dict[str, Any] = {"measure": "round", "round": n, "order": rotated, "alone_s": seconds["alone"]}
        for where, ratios in slow.items():
            ratios.append(seconds[where] / seconds["alone"])
            line |= {f"beside_{where}_s": seconds[where], f"{where}_slowdown": ratios[-1]}
        print(json.dumps(line), flush=True)
    summary: dict[str, Any] = {"measure": "summary", "rounds": args.rounds,
                               "switch_ms_after": sys.getswitchinterval() * 1000}  # each call restores it
    for where, ratios in slow.items():
        summary |= {f"{where}_slowdown": statistics.median(ratios), f"{where}_min": min(ratios),
                    f"{where}_max": max(ratios)}
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
