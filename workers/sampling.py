"""Batched sampling: group jobs that can share a pipeline call, one generator per image, split on out-of-memory.

Jobs share a call when everything that must be equal inside one diffusers call is equal: model, size, steps,
guidance and scheduler. Prompts, negative prompts and seeds are per image.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import torch
from PIL import Image

from genfleet.shared.fastpath import FastPath, fastpath_for
from genfleet.shared.schema import MAX_SEED, Job, Scheduler
from genfleet.workers.fastpath import bucket, slice_vae
from genfleet.workers.results import Failed, Ok, attempt
from genfleet.workers.schedulers import use_scheduler

log = logging.getLogger(__name__)


class GroupKey(NamedTuple):
    model: str
    width: int | None
    height: int | None
    steps: int | None
    guidance: float | None
    scheduler: Scheduler | None = None  # None: the model's own


def group_key(job: Job) -> GroupKey:
    r = job.request
    return GroupKey(job.model, r.width, r.height, r.steps, r.guidance, r.scheduler)


def group_jobs(jobs: Iterable[Job]) -> dict[GroupKey, list[Job]]:
    groups: dict[GroupKey, list[Job]] = defaultdict(list)
    for job in jobs:
        groups[group_key(job)].append(job)
    return dict(groups)


def image_seed(job: Job, index: int) -> int:
    return (job.seed + index) % (MAX_SEED + 1)


@dataclass(frozen=True)
class ImageSpec:
    prompt: str
    negative: str | None
    seed: int


def image_specs(job: Job) -> list[ImageSpec]:
    r = job.request
    return [ImageSpec(r.prompt, r.negative_prompt, image_seed(job, i)) for i in range(r.num_images)]


class StopCheck(Protocol):
    """Asked with (step, steps) at most every half second during a call, and with no arguments between calls:
    True means stop (every job of the call was cancelled)."""

    def __call__(self, step: int | None = None, steps: int | None = None) -> bool: ...


class Pipeline(Protocol):
    """A diffusers pipeline (or the embedded one): called with batched prompts, generators and options, it
    returns an output whose `images` are PIL images."""

    def __call__(self, **kwargs: Any) -> Any: ...


def interrupter(should_stop: StopCheck, every_s: float = 0.5) -> Callable[..., dict[str, Any]]:
    """A diffusers step-end callback that sets the pipeline's interrupt flag once `should_stop()` says so
    (asked at most every `every_s`, so a cancel costs a Redis read per half second, not per step)."""
    last = [time.monotonic()]

    def callback(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        if time.monotonic() - last[0] >= every_s:
            last[0] = time.monotonic()
            if should_stop(step + 1, getattr(pipe, "num_timesteps", None)):
                pipe._interrupt = True
        return tensors

    return callback


def call_kwargs(key: GroupKey, specs: list[ImageSpec], device: torch.device,
                should_stop: StopCheck | None = None) -> dict[str, Any]:
    """One diffusers call for these images; unset options are left to the pipeline's defaults."""
    kwargs: dict[str, Any] = {"prompt": [s.prompt for s in specs],
                    "generator": [torch.Generator(device).manual_seed(s.seed) for s in specs]}
    if any(s.negative for s in specs):
        kwargs["negative_prompt"] = [s.negative or "" for s in specs]
    optional = {"width": key.width, "height": key.height, "num_inference_steps": key.steps,
                "guidance_scale": key.guidance}
    kwargs.update({k: v for k, v in optional.items() if v is not None})
    if should_stop is not None:
        kwargs["callback_on_step_end"] = interrupter(should_stop)
    return kwargs


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError)


class Sampler:
    """Runs pipeline calls for a group, chunked to the largest batch known to fit for (model, size).

    After an out-of-memory error at n images the call is split in halves, and from then on batches for that
    (model, size) are capped at the largest size that has run without one.
    """

    def __init__(self, device: torch.device, max_batch: int, fastpath: dict[str, FastPath] | None = None) -> None:
        self.device, self.max_batch, self.fastpath = device, max_batch, fastpath or {}
        self.too_big: dict[tuple, int] = {}  # smallest batch that ran out of memory
        self.fits: dict[tuple, int] = {}  # largest batch that ran, for sizes that have run out of memory

    @staticmethod
    def _size_key(key: GroupKey) -> tuple:
        return key.model, key.width, key.height

    def limit(self, key: GroupKey) -> int:
        k = self._size_key(key)
        return min(self.max_batch, self.fits.get(k, 1)) if k in self.too_big else self.max_batch

    def sample(self, pipe: Pipeline, key: GroupKey, specs: list[ImageSpec], should_stop: StopCheck | None = None
               ) -> list[Image.Image]:
        images: list[Image.Image] = []
        start = 0
        while start < len(specs):
            size = self.limit(key)
            images += self._call(pipe, key, specs[start:start + size], should_stop)
            start += size
        return images

    def _call(self, pipe: Pipeline, key: GroupKey, specs: list[ImageSpec], should_stop: StopCheck | None = None
              ) -> list[Image.Image]:
        k, n = self._size_key(key), len(specs)
        fast = fastpath_for(key.model, self.fastpath)
        size = min(bucket(n), self.max_batch) if fast.buckets else n
        slice_vae(pipe, fast, size)
        use_scheduler(pipe, key.scheduler)
        padded = specs + [specs[-1]] * (size - n)  # padding's images are computed and dropped
        try:
            images = list(pipe(**call_kwargs(key, padded, self.device, should_stop)).images)[:n]
        except Exception as e:
            if not is_oom(e) or n == 1:
                raise
        else:
            if n < self.too_big.get(k, n + 1):
                self.fits[k] = max(self.fits.get(k, 0), n)
            return images
        self.too_big[k] = min(self.too_big.get(k, n), n)
        log.warning("out of memory at batch %d for %s; splitting it in halves", n, k)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return self._call(pipe, key, specs[: n // 2], should_stop) + self._call(pipe, key, specs[n // 2:], should_stop)


def sample_group(sampler: Sampler, pipe: Pipeline, key: GroupKey, jobs: list[Job],
                 should_stop: StopCheck | None = None) -> list[Ok[list[Image.Image]] | Failed]:
    """Images for each job of a group, in one call where possible. If the shared call fails, each job is
    retried alone, so one bad job fails by itself and its batch-mates still succeed."""
    specs = [image_specs(job) for job in jobs]
    sampled = attempt(sampler.sample, pipe, key, [s for job_specs in specs for s in job_specs], should_stop)
    if isinstance(sampled, Failed):
        if len(jobs) == 1:
            return [sampled]
        log.warning("batched call for %d jobs failed (%r); running each alone", len(jobs), sampled.error)
        return [sample_group(sampler, pipe, key, [job], should_stop)[0] for job in jobs]
    flat = sampled.value
    out: list[Ok[list[Image.Image]] | Failed] = []
    for job_specs in specs:
        out.append(Ok(flat[: len(job_specs)]))
        flat = flat[len(job_specs):]
    return out
