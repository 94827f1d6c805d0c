"""`genfleet bench`: the whole system's images/s against the raw batched pipeline's, in interleaved rounds.

One JSON line each:
1. setup, then the raw pipeline at batch 1 (warm, for reference; `--no-batch1` leaves it out);
2. `--rounds` rounds, each timing the system (N single-image jobs at once, one worker process batching at B,
   scoring on, quality retries off, PNGs written to storage, timed from the first publish to the last recorded
   outcome) between two halves of the raw pipeline at batch B (`--repeats` calls each, in this process, warm):
   the round's raw figure is both halves' images over both halves' time, so a steady drift in the machine's
   speed over the round (a shared VM's neighbours) moves both sides of its ratio alike; each round's line
   carries its own ratio, system over raw, and each half's images/s, which show that drift;
3. the last line: the median ratio over the rounds with its min and max, and each side's median, min and max.

`--previews on` has every job ask for live previews (workers/previews.py); `--previews alternate` turns them on
in every other round (off first), and the last line then gives each side's median ratio and `previews_cost`,
the on side's over the off side's: what previews cost the whole system, measured against the same raw side.

Each round also says where the CPU went, as the kernel counts it (not as the system reports itself): CPU
seconds per image of the raw pipeline, and of each part of the system (the worker, and within it its main
process, its sampling and its writes, from the kernel's per-thread counts; the API, Redis, the S3 server when
started here, and this process's watching), and `cpu_bound_ratio`, the raw side's over the system's. When
sampling keeps every core busy on both sides, that is the ratio the cores allow: the system cannot come closer
to the raw pipeline than the extra CPU it spends per image lets it. `worker_cpu_ratio` is the worker's CPU per
image over the raw side's: what the worker spends beyond the pipeline itself. The last line gives its median
and spread, and each part's median CPU seconds per image.

`--through api` sends the jobs as one `POST /v1/batches` to an API process, with images going to S3-compatible
storage: `--storage-url s3://bucket/prefix` and `--s3-endpoint` (or `GENFLEET_STORAGE_URL` and
`GENFLEET_S3_ENDPOINT_URL`), or, when none is named, moto's S3 server started here on loopback as a process of
its own (from the `test` extra). Either way a round's end is read from the batch's counts in Redis, one small
read a poll, and confirmed with one `GET /v1/batches/{id}`: polling the API itself twenty times a second would
charge the watching to the API, on the cores the worker shares. `--model` takes `embedded`, an architecture built
from config with random weights (`sd15`, `sd-turbo`; see workers/architectures.py), or any diffusers model id
or folder.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from genfleet.bench_system import InProcess, System, ThroughAPI
from genfleet.shared.settings import Settings
from genfleet.workers.architectures import ARCHITECTURES, save
from genfleet.workers.models import PipelineCache, resolve_device
from genfleet.workers.sampling import GroupKey, ImageSpec, call_kwargs


def emit(**fields) -> dict:
    print(json.dumps(fields), flush=True)
    return fields


def raw_images_per_s(pipe, key: GroupKey, batch: int, device: torch.device, repeats: int) -> float:
    specs = [ImageSpec("a red cat with a blue hat", None, i) for i in range(batch)]
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        pipe(**call_kwargs(key, specs, device))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * repeats / (time.perf_counter() - start)


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def resolve_model(name: str, cache: Path) -> str:
    return str(save(name, cache / name)) if name in ARCHITECTURES else name


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="genfleet bench", description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded", help="embedded, sd15, sd-turbo, or a diffusers id/folder")
    ap.add_argument("--batch", type=int, default=8, help="B: the raw batch and the worker's max batch")
    ap.add_argument("--jobs", type=int, default=64, help="N single-image jobs a system round")
    ap.add_argument("--repeats", type=int, default=3, help="timed raw calls in each half of a round")
    ap.add_argument("--rounds", type=int, default=5, help="rounds: raw, system, raw")
    ap.add_argument("--through", choices=["queue", "api"], default="queue",
                    help="queue: publish in-process, local storage; api: HTTP API and S3-compatible storage")
    ap.add_argument("--storage-url", default=os.environ.get("GENFLEET_STORAGE_URL"))
    ap.add_argument("--s3-endpoint", default=os.environ.get("GENFLEET_S3_ENDPOINT_URL"))
    ap.add_argument("--write-in", choices=["threads", "process"],
                    help="where the worker writes (GENFLEET_WRITE_IN): threads of the sampling process, or a process")
    ap.add_argument("--batch1", action=argparse.BooleanOptionalAction, default=True,
                    help="time the raw pipeline at batch 1 too (compiled, that is one more compile)")
    ap.add_argument("--previews", choices=["off", "on", "alternate"], default="off",
                    help="jobs ask for live previews: never, always, or in every other round")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--guidance", type=float)
    ap.add_argument("--size", type=int, help="width and height; default: the model's native size")
    ap.add_argument("--cache", type=Path, default=Path(".genfleet/models"), help="where built architectures go")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.write_in:
        os.environ["GENFLEET_WRITE_IN"] = args.write_in  # the worker's environment is this process's
    settings = Settings(redis_url=os.environ.get("GENFLEET_REDIS_URL"))
    device = resolve_device(settings.device)
    model = resolve_model(args.model, args.cache)
    request = {"prompt": "a red cat with a blue hat", "model": model, "steps": args.steps,
               "guidance": args.guidance, "width": args.size, "height": args.size}
    request = {k: v for k, v in request.items() if v is not None}
    request["previews"] = args.previews != "off"  # so the warm-up round fits the preview projection, if any
    key = GroupKey(model, args.size, args.size, args.steps, args.guidance)
    emit(measure="setup", model=args.model, device=str(device), batch=args.batch, jobs=args.jobs,
         rounds=args.rounds, through=args.through, torch_threads=torch.get_num_threads(), cpus=os.cpu_count(),
         write_in=settings.write_in.value)
    pipe = PipelineCache(device, settings.fastpath).get(model)  # the worker's fast path, on both sides
    raw1 = None
    if args.batch1:
        raw_images_per_s(pipe, key, 1, device, 1)  # warm-up: kernels, allocator, autotuning
        raw1 = raw_images_per_s(pipe, key, 1, device, args.repeats)
        emit(measure="raw", batch=1, images_per_s=raw1)
    raw_images_per_s(pipe, key, args.batch, device, 1)
    kind: type[System] = ThroughAPI if args.through == "api" else InProcess
    raws, systems, ratios, bounds, with_previews = [], [], [], [], []
    worker_ratios: list[float] = []
    cpus: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="genfleet-bench-") as tmp, \
            kind(model, request, args.batch, settings, Path(tmp), args.storage_url, args.s3_endpoint) as system:
        for n in range(args.rounds):
            request["previews"] = args.previews == "on" or (args.previews == "alternate" and n % 2 == 1)
            with_previews.append(request["previews"])
            first, first_cpu = _raw_half(pipe, key, args, device)
            before, wall0 = system.cpu_by_part(), time.perf_counter()
            sys_rate = system.images_per_s(args.jobs)
            wall, after = time.perf_counter() - wall0, system.cpu_by_part()
            second, second_cpu = _raw_half(pipe, key, args, device)
            raw, raw_cpu = 2 / (1 / first + 1 / second), (first_cpu + second_cpu) / 2  # equal images a half
            per_image = {part: (after[part] - before[part]) / args.jobs for part in after}
            worker_cpu = sum(v for part, v in per_image.items() if part.startswith("worker_"))
            raws.append(raw)
            systems.append(sys_rate)
            ratios.append(sys_rate / raw)
            bounds.append(raw_cpu / sum(per_image.values()))
            worker_ratios.append(worker_cpu / raw_cpu)
            cpus.append({"raw": raw_cpu, "worker": worker_cpu, **per_image})
            # bench_process_cpu_share: what the measurement itself (the watching) took from the cores the
            # worker shares
            emit(measure="round", round=n, previews=request["previews"], previews_published=system.previews_published(),
                 raw_batched_images_per_s=raw,
                 raw_halves_images_per_s=[first, second],
                 system_images_per_s=sys_rate, ratio=ratios[-1],
                 bench_process_cpu_share=(after["bench"] - before["bench"]) / wall,
                 cpu_s_per_image=cpus[-1], cpu_bound_ratio=bounds[-1], worker_cpu_ratio=worker_ratios[-1])
    emit(model=args.model, device=str(device), through=args.through, write_in=settings.write_in.value,
         rounds=args.rounds, batch=args.batch,
         raw_batch1_images_per_s=raw1, raw_batched_images_per_s=spread(raws),
         system_images_per_s=spread(systems), cpu_bound_ratio=spread(bounds), worker_cpu_ratio=spread(worker_ratios),
         cpu_s_per_image={part: statistics.median(c[part] for c in cpus) for part in cpus[0]}, ratio_min=min(ratios),
         ratio_max=max(ratios), ratio=statistics.median(ratios), **_previews_summary(ratios, with_previews))


def _previews_summary(ratios: list[float], with_previews: list[bool]) -> dict:
    """With previews in some rounds and not in others: each side's ratio, and the on side's median over the off
    side's."""
    on = [r for r, p in zip(ratios, with_previews, strict=True) if p]
    off = [r for r, p in zip(ratios, with_previews, strict=True) if not p]
    if not on or not off:
        return {}
    return {"ratio_previews_off": spread(off), "ratio_previews_on": spread(on),
            "previews_cost": statistics.median(on) / statistics.median(off)}


def _raw_half(pipe, key: GroupKey, args: argparse.Namespace, device: torch.device) -> tuple[float, float]:
    """Half a round's raw side: the pipeline's images/s at batch B, and the CPU seconds per image this process
    spent on it."""
    cpu0 = time.process_time()
    rate = raw_images_per_s(pipe, key, args.batch, device, args.repeats)
    return rate, (time.process_time() - cpu0) / (args.batch * args.repeats)


if __name__ == "__main__":
    main()
