"""`genfleet gpu-check`: the GPU figures of the fast path, one JSON line each, for whoever holds a GPU.

Stable Diffusion 1.5 and SDXL are built from their configs with random weights (nothing is downloaded; the
compute is the real one). In order:

- `raw`: the pipeline called directly, eager, at batch 1 and batch B; then compiled (regional) at batch B, with
  the seconds its first call took to compile, and how far its pictures are from eager's at the same seeds;
- `deep_cache`: SD 1.5 eager at batch B without and with DeepCache (a whole UNet step every 3), alternating
  `--repeats` times: the median speed-up with its spread, and how far its pictures are from the uncached ones;
- `cold_start`: a fresh process loading the model and making its first batch, compiled, first with an empty
  compile cache and then with the cache the first left (what a scaled-up worker pays);
- `system`: `genfleet bench` through the queue at batch B with the fast path, interleaved rounds, once with the
  writes on threads of the sampling process and once in a writer process (`GENFLEET_WRITE_IN`);
- `sdxl`: SDXL raw, eager and compiled at batch B;
- `summary`: the figures against their targets.

`--toy` runs the same sequence on toy-width architectures at 64x64 on whatever device there is (the suite runs
it on the CPU). A full run takes about 8 minutes on one H100 or H200.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genfleet.bench import emit
from genfleet.shared.fastpath import Compile, FastPath
from genfleet.workers import deepcache
from genfleet.workers.architectures import build, save
from genfleet.workers.fastpath import apply, use_compile_cache
from genfleet.workers.models import resolve_device
from genfleet.workers.sampling import GroupKey, ImageSpec, call_kwargs

PLANS = {  # model: (architecture, size, steps), full and toy
    False: {"sd15": ("sd15", 512, 25), "sdxl": ("sdxl", 1024, 20)},
    True: {"sd15": ("tiny-sd", 64, 4), "sdxl": ("tiny-sdxl", 64, 4)},
}
TARGETS = {"sd15_system_images_per_s": 7.4, "sdxl_compiled_images_per_s": 1.5, "cold_start_cached_s": 60.0}
FAST = FastPath(compile=Compile.regional, fuse_qkv=True, channels_last=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def pictures(pipe: Any, arch: tuple[str, int, int], batch: int, device: torch.device) -> np.ndarray:
    _, size, steps = arch
    specs = [ImageSpec("a red cat with a blue hat", None, seed) for seed in range(batch)]
    kwargs = call_kwargs(GroupKey("check", size, size, steps, None), specs, device)
    return np.asarray(pipe(**kwargs, output_type="np").images, dtype=np.float32)


def timed(pipe: Any, arch: tuple[str, int, int], batch: int, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    pictures(pipe, arch, batch, device)
    _sync(device)
    return time.perf_counter() - start


def images_per_s(pipe: Any, arch: tuple[str, int, int], batch: int, device: torch.device, repeats: int) -> float:
    pictures(pipe, arch, batch, device)  # warm: kernels, allocator, autotuning
    return statistics.median(batch / timed(pipe, arch, batch, device) for _ in range(repeats))


def load(arch: str, device: torch.device) -> Any:
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    pipe = build(arch).to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def raw(name: str, arch: tuple[str, int, int], device: torch.device, batch: int, repeats: int,
        batch1: bool = True) -> float:
    """Eager at batch 1 (optional) and B, then compiled at B: returns the compiled images/s."""
    pipe = load(arch[0], device)
    if batch1:
        emit(measure="raw", model=name, mode="eager", batch=1,
             images_per_s=images_per_s(pipe, arch, 1, device, repeats))
    emit(measure="raw", model=name, mode="eager", batch=batch,
         images_per_s=images_per_s(pipe, arch, batch, device, repeats))
    eager = pictures(pipe, arch, 2, device)
    applied = apply(pipe, FAST)
    start = time.perf_counter()
    compiled = pictures(pipe, arch, 2, device)
    first = time.perf_counter() - start
    rate = images_per_s(pipe, arch, batch, device, repeats)
    emit(measure="raw", model=name, mode="compiled", batch=batch, images_per_s=rate, applied=applied,
         first_call_s=first, max_abs_diff_vs_eager=float(np.abs(compiled - eager).max()),
         mean_abs_diff_vs_eager=float(np.abs(compiled - eager).mean()))
    del pipe
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rate


def deep_cache(name: str, arch: tuple[str, int, int], device: torch.device, batch: int, repeats: int,
               interval: int = 3) -> None:
    """DeepCache's speed-up, as seconds uncached over seconds cached in alternating rounds, and its distance."""
    pipe = load(arch[0], device)
    plain = pictures(pipe, arch, 2, device)
    ratios = []
    pictures(pipe, arch, batch, device)  # warm both ways
    deepcache.enable(pipe.unet, interval)
    pictures(pipe, arch, batch, device)
    for _ in range(max(repeats, 1)):
        deepcache.disable(pipe.unet)
        off = timed(pipe, arch, batch, device)
        deepcache.enable(pipe.unet, interval)
        ratios.append(off / timed(pipe, arch, batch, device))
    cached = pictures(pipe, arch, 2, device)
    emit(measure="deep_cache", model=name, interval=interval, batch=batch, rounds=len(ratios),
         speedup=statistics.median(ratios), speedup_min=min(ratios), speedup_max=max(ratios),
         mean_abs_diff_vs_uncached=float(np.abs(cached - plain).mean()))
    del pipe
    if device.type == "cuda":
        torch.cuda.empty_cache()


def cold_start(args: argparse.Namespace) -> None:
    """In a fresh process: load, apply the fast path, make the first batch (the compile); seconds and cache
    counters."""
    start = time.perf_counter()
    use_compile_cache(args.cache_dir)
    device = resolve_device("auto")
    arch = PLANS[args.toy]["sd15"]
    pipe = load(arch[0], device)
    loaded = time.perf_counter() - start
    apply(pipe, FAST)
    pictures(pipe, arch, args.batch, device)
    _sync(device)
    from torch._dynamo.utils import counters

    emit(measure="cold_start", seconds=time.perf_counter() - start, load_s=loaded,
         compile_and_first_batch_s=time.perf_counter() - start - loaded,
         fxgraph_cache_hit=counters["inductor"]["fxgraph_cache_hit"],
         fxgraph_cache_miss=counters["inductor"]["fxgraph_cache_miss"])


def cold_starts(args: argparse.Namespace, cache: Path) -> list[dict[str, Any]]:
    """Two fresh processes on one cache folder: the first finds it empty, the second finds the first's kernels."""
    results = []
    for state in ("empty", "warm"):
        out = subprocess.run([sys.executable, "-m", "genfleet.gpucheck", "--cold-start", "--cache-dir", str(cache),
                              "--batch", str(args.batch), *(["--toy"] if args.toy else [])],
                             capture_output=True, text=True, timeout=900, check=True).stdout
        figure = json.loads(out.strip().splitlines()[-1])
        results.append(emit(**{**figure, "cache": state}))
    return results


def system(args: argparse.Namespace, work: Path, cache: Path, write_in: str) -> float:
    """`genfleet bench` through the queue with the fast path on both sides; the system's median images/s."""
    arch, size, steps = PLANS[args.toy]["sd15"]
    folder = save(arch, work / "models" / arch)
    env = {**os.environ, "GENFLEET_FASTPATH": json.dumps({"*": FAST.model_dump(mode="json")}),
           "GENFLEET_COMPILE_CACHE_DIR": str(cache), "GENFLEET_DATA_DIR": str(work / "data")}
    out = subprocess.run([sys.executable, "-m", "genfleet.bench", "--model", str(folder), "--batch", str(args.batch),
                          "--jobs", str(4 * args.batch), "--rounds", str(args.rounds), "--steps", str(steps),
                          "--size", str(size), "--write-in", write_in],
                         capture_output=True, text=True, timeout=1800, env=env, check=True)
    last = json.loads(out.stdout.strip().splitlines()[-1])
    emit(measure="system", model="sd15", write_in=write_in, batch=args.batch, rounds=args.rounds,
         ratio=last["ratio"],
         ratio_min=last["ratio_min"], ratio_max=last["ratio_max"], system_images_per_s=last["system_images_per_s"],
         raw_batched_images_per_s=last["raw_batched_images_per_s"])
    return float(last["system_images_per_s"]["median"])


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="genfleet gpu-check", description=__doc__.splitlines()[0])
    ap.add_argument("--toy", action="store_true", help="toy-width architectures at 64x64 (the suite, on CPU)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the system benchmark")
    ap.add_argument("--work-dir", type=Path, default=Path(".genfleet/gpu-check"))
    ap.add_argument("--cache-dir", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--cold-start", action="store_true", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.cold_start:
        cold_start(args)
        return
    device = resolve_device("auto")
    work = args.work_dir.resolve()
    cache = work / f"compile-cache-{time.time_ns()}"  # empty: the first cold start must compile
    emit(measure="setup", device=str(device), name=torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
         torch=torch.__version__, toy=args.toy, batch=args.batch)
    plan = PLANS[args.toy]
    raw("sd15", plan["sd15"], device, args.batch, args.repeats)
    deep_cache("sd15", plan["sd15"], device, args.batch, args.repeats)
    starts = cold_starts(args, cache)
    by_writer = {write_in: system(args, work, cache, write_in) for write_in in ("threads", "process")}
    system_rate = max(by_writer.values())
    sdxl_rate = raw("sdxl", plan["sdxl"], device, args.batch, args.repeats, batch1=False)
    figures = {"sd15_system_images_per_s": system_rate, "sdxl_compiled_images_per_s": sdxl_rate,
               "cold_start_cached_s": starts[1]["seconds"]}
    met = {k: (v <= TARGETS[k]) if k.endswith("_s") and not k.endswith("per_s") else v >= TARGETS[k]
           for k, v in figures.items()}
    emit(measure="summary", device=str(device), toy=args.toy, **figures, targets=TARGETS,
         met=met if not args.toy else "toy run: targets apply to a full run on one H100 or H200",
         cold_start_uncached_s=starts[0]["seconds"], system_images_per_s_by_write_in=by_writer)


if __name__ == "__main__":
    main()
