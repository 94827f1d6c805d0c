"""Batched sampling: group jobs that can share a pipeline call, one generator per image, split on out-of-memory.

Jobs share a call when everything that must be equal inside one diffusers call is equal: model, task, size,
steps, guidance, scheduler, strength and adapters. Prompts, negative prompts, seeds and input images are per
image. A job's unset steps and guidance are its model's defaults (shared/registry.py), so a job that names them
and one that leaves them to the model share a call.
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
from genfleet.shared.registry import Registry
from genfleet.shared.schema import MAX_SEED, Job, Scheduler, Task
from genfleet.workers.fastpath import before_call, bucket
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
    task: Task = Task.text_to_image
    strength: float | None = None  # image-to-image and inpaint
    adapters: tuple[tuple[str, float], ...] = ()  # (name, weight), by name


def group_key(job: Job, registry: Registry | None = None) -> GroupKey:
    r, spec = job.request, (registry or Registry()).spec(job.model)
    steps = r.steps if r.steps is not None else spec.steps
    guidance = r.guidance if r.guidance is not None else spec.guidance
    adapters = tuple(sorted((a.name, a.weight) for a in r.adapters))
    return GroupKey(job.model, r.width, r.height, steps, guidance, r.scheduler, r.task, r.strength, adapters)


def group_jobs(jobs: Iterable[Job], registry: Registry | None = None) -> dict[GroupKey, list[Job]]:
    groups: dict[GroupKey, list[Job]] = defaultdict(list)
    for job in jobs:
        groups[group_key(job, registry)].append(job)
    return dict(groups)


def image_seed(job: Job, index: int) -> int:
    return (job.seed + index) % (MAX_SEED + 1)


@dataclass(frozen=True)
class ImageSpec:
    prompt: str
    negative: str | None
    seed: int
    image: Image.Image | None = None  # the input of an image-to-image or inpaint job
    mask: Image.Image | None = None
    job_id: str = ""  # whose image it is, and which of its images (a step's previews go to the job's events)
    index: int = 0


Inputs = dict[str, Image.Image]  # input images by storage key, loaded for a batch (workers/runner.py)


def image_specs(job: Job, inputs: Inputs | None = None) -> list[ImageSpec]:
    r, given = job.request, inputs or {}
    image, mask = given.get(r.image or ""), given.get(r.mask or "")
    return [ImageSpec(r.prompt, r.negative_prompt, image_seed(job, i), image, mask, str(job.id), i)
            for i in range(r.num_images)]


@dataclass(frozen=True)
class Frame:
    """A pipeline call between two steps: the pipeline, its latents as they stand, and whose images they are
    (padding's last rows repeat the last image)."""

    pipe: Any
    latents: torch.Tensor | None
    specs: list[ImageSpec]


class StopCheck(Protocol):
    """Asked with (step, steps, frame) at most every half second during a call, and with no arguments between
    calls: True means stop (every job of the call was cancelled)."""

    def __call__(self, step: int | None = None, steps: int | None = None, frame: Frame | None = None) -> bool: ...


class Pipeline(Protocol):
    """A diffusers pipeline (or the embedded one): called with batched prompts, generators and options, it
    returns an output whose `images` are PIL images."""

    def __call__(self, **kwargs: Any) -> Any: ...


def interrupter(should_stop: StopCheck, specs: list[ImageSpec], every_s: float = 0.5
                ) -> Callable[..., dict[str, Any]]:
    """A diffusers step-end callback that shows `should_stop` the call's progress and latents, and sets the
    pipeline's interrupt flag once it says so (asked at most every `every_s`, so a cancel costs a Redis read per
    half second, not per step)."""
    last = [time.monotonic()]

    def callback(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        if time.monotonic() - last[0] >= every_s:
            last[0] = time.monotonic()
            frame = Frame(pipe, tensors.get("latents"), specs)
            if should_stop(step + 1, getattr(pipe, "num_timesteps", None), frame):
                pipe._interrupt = True
        return tensors

    return callback


def call_kwargs(key: GroupKey, specs: list[ImageSpec], device: torch.device,
                should_stop: StopCheck | None = None) -> dict[str, Any]:
    """One diffusers call for these images; unset options are left to the pipeline's defaults. An input image
    sets the size (diffusers' image-to-image pipelines take no width or height)."""
    kwargs: dict[str, Any] = {"prompt": [s.prompt for s in specs],
                    "generator": [torch.Generator(device).manual_seed(s.seed) for s in specs]}
    if any(s.negative for s in specs):
        kwargs["negative_prompt"] = [s.negative or "" for s in specs]
    sized = key.task is not Task.image_to_image
    optional = {"width": key.width if sized else None, "height": key.height if sized else None,
                "num_inference_steps": key.steps, "guidance_scale": key.guidance}
    kwargs.update({k: v for k, v in optional.items() if v is not None})
    if key.task is not Task.text_to_image:
        kwargs.update(image=[s.image for s in specs], strength=key.strength)
    if key.task is Task.inpaint:
        kwargs["mask_image"] = [s.mask for s in specs]
    if should_stop is not None:
        kwargs["callback_on_step_end"] = interrupter(should_stop, specs)
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
        before_call(pipe, fast, size)
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
                 should_stop: StopCheck | None = None, inputs: Inputs | None = None
                 ) -> list[Ok[list[Image.Image]] | Failed]:
    """Images for each job of a group, in one call where possible. If the shared call fails, each job is
    retried alone, so one bad job fails by itself and its batch-mates still succeed."""
    specs = [image_specs(job, inputs) for job in jobs]
    sampled = attempt(sampler.sample, pipe, key, [s for job_specs in specs for s in job_specs], should_stop)
    if isinstance(sampled, Failed):
        if len(jobs) == 1:
            return [sampled]
        log.warning("batched call for %d jobs failed (%r); running each alone", len(jobs), sampled.error)
        return [sample_group(sampler, pipe, key, [job], should_stop, inputs)[0] for job in jobs]
    flat = sampled.value
    out: list[Ok[list[Image.Image]] | Failed] = []
    for job_specs in specs:
        out.append(Ok(flat[: len(job_specs)]))
        flat = flat[len(job_specs):]
    return out
