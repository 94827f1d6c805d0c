"""`genfleet bench`: the whole system's images/s against the raw batched pipeline's. One JSON line each.

1. raw: the pipeline called directly in this process, warm, at batch 1 and at batch B, same parameters;
2. system: N single-image jobs published to the queue at once, run by one worker process (batching at B,
   writing PNGs to storage), timed from the first publish to the last recorded outcome;
3. the last line carries "ratio": system images/s over raw batched images/s.

`--model` takes `embedded`, an architecture built from config with random weights (`sd15`, `sd-turbo`; see
workers/architectures.py) or any diffusers model id or folder.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import tempfile
import time
import uuid
from pathlib import Path

import torch

from shared import processes
from shared.jobstore import JobStore
from shared.queue import enqueue, publisher
from shared.redis_server import client
from shared.schema import Job, JobRequest
from shared.settings import Settings
from workers.architectures import ARCHITECTURES, save
from workers.models import load_pipeline, resolve_device
from workers.sampling import GroupKey, ImageSpec, call_kwargs


def emit(**fields) -> dict:
    print(json.dumps(fields), flush=True)
    return fields


def raw_images_per_s(pipe, key: GroupKey, batch: int, device: torch.device, repeats: int) -> float:
    specs = [ImageSpec("a red cat with a blue hat", None, i) for i in range(batch)]
    pipe(**call_kwargs(key, specs, device))  # warm-up: kernels, allocator, autotuning
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        pipe(**call_kwargs(key, specs, device))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * repeats / (time.perf_counter() - start)


def _wait_all(store: JobStore, ids: list[str], timeout_s: float, worker, log: Path) -> list[Job]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise RuntimeError(f"the worker exited with code {worker.returncode}:\n{processes.tail(log)}")
        jobs = store.get_many(ids)
        if all(j is not None and j.status.terminal for j in jobs):
            return jobs  # type: ignore[return-value]
        time.sleep(0.05)
    raise TimeoutError(f"jobs not done after {timeout_s}s")


def system_images_per_s(model: str, request: dict, batch: int, jobs: int, settings: Settings, workdir: Path) -> float:
    """N single-image jobs through Redis and one worker process, storage writes included."""
    queue = f"genfleet-bench-{uuid.uuid4().hex[:6]}"
    env_settings = settings.model_copy(update={"queue": queue})
    with processes.redis_for(settings.model_copy(update={"data_dir": workdir / "redis"})) as url:
        store = JobStore(client(url), 3600)
        app = publisher(env_settings, url)
        # Scoring stays on (it is part of the system); quality retries are off: they are extra images that the
        # raw pipeline never makes, so they would not compare like with like.
        env = {**processes.worker_env(url, 0), "GENFLEET_MODEL": model, "GENFLEET_QUEUE": queue,
               "GENFLEET_MAX_BATCH": str(batch), "GENFLEET_STORAGE_URL": (workdir / "out").as_uri(),
               "GENFLEET_QUALITY_ATTEMPTS": "1"}
        log = workdir / "worker.log"
        worker = processes.spawn(processes.worker_command(env_settings, "WARNING"), env, log)
        try:
            warm = [Job.new(JobRequest(**request), model) for _ in range(batch)]
            for job in warm:
                enqueue(job, store, app, queue)
            _wait_all(store, [str(j.id) for j in warm], 1800, worker, log)
            stream = [Job.new(JobRequest(**{**request, "seed": i}), model) for i in range(jobs)]
            start = time.perf_counter()
            for job in stream:
                enqueue(job, store, app, queue)
            done = _wait_all(store, [str(j.id) for j in stream], 3600, worker, log)
            elapsed = time.perf_counter() - start
        finally:
            processes.stop(worker)
    failed = [j for j in done if j.status.value != "succeeded"]
    if failed:
        raise RuntimeError(f"{len(failed)} bench jobs failed: {failed[0].error}")
    return jobs / elapsed


def resolve_model(name: str, cache: Path) -> str:
    return str(save(name, cache / name)) if name in ARCHITECTURES else name


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="genfleet bench", description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded", help="embedded, sd15, sd-turbo, or a diffusers id/folder")
    ap.add_argument("--batch", type=int, default=8, help="B: the raw batch and the worker's max batch")
    ap.add_argument("--jobs", type=int, default=64, help="N single-image jobs for the system measurement")
    ap.add_argument("--repeats", type=int, default=3, help="timed raw calls at each batch size")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--guidance", type=float)
    ap.add_argument("--size", type=int, help="width and height; default: the model's native size")
    ap.add_argument("--cache", type=Path, default=Path(".genfleet/models"), help="where built architectures go")
    args = ap.parse_args(argv)
    settings = Settings(redis_url=os.environ.get("GENFLEET_REDIS_URL"))
    device = resolve_device(settings.device)
    model = resolve_model(args.model, args.cache)
    request = {"prompt": "a red cat with a blue hat", "model": model, "steps": args.steps,
               "guidance": args.guidance, "width": args.size, "height": args.size}
    request = {k: v for k, v in request.items() if v is not None}
    key = GroupKey(model, args.size, args.size, args.steps, args.guidance)
    emit(measure="setup", model=args.model, device=str(device), batch=args.batch, jobs=args.jobs,
         torch_threads=torch.get_num_threads())
    pipe = load_pipeline(model, device)
    raw1 = emit(measure="raw", batch=1, images_per_s=raw_images_per_s(pipe, key, 1, device, args.repeats))
    rawb = emit(measure="raw", batch=args.batch,
                images_per_s=raw_images_per_s(pipe, key, args.batch, device, args.repeats))
    del pipe
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the worker process needs the memory now
    with tempfile.TemporaryDirectory(prefix="genfleet-bench-") as tmp:
        system = system_images_per_s(model, request, args.batch, args.jobs, settings, Path(tmp))
    emit(measure="system", jobs=args.jobs, images_per_s=system)
    emit(model=args.model, device=str(device), raw_batch1_images_per_s=raw1["images_per_s"],
         raw_batched_images_per_s=rawb["images_per_s"], system_images_per_s=system,
         batching_speedup=rawb["images_per_s"] / raw1["images_per_s"],
         system_vs_batch1=system / raw1["images_per_s"], ratio=system / rawb["images_per_s"])


if __name__ == "__main__":
    main()
