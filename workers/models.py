"""The model registry's heavy half: pipelines built from the registry's entries (shared/registry.py), kept warm
in a least-recently-used cache bounded by memory.

A model's entry names what loads it (`loader`); a task other than text-to-image runs on diffusers' own pipeline
for it (`AutoPipelineForImage2Image` and `AutoPipelineForInpainting`, built `from_pipe`: they share the loaded
components, so a task costs no memory), or on the pipeline itself when it serves every task (the embedded one).

The cache holds pipelines whose weights fit `GENFLEET_MODEL_MEMORY_MB` (the bytes of their parameters and
buffers: on the GPU there, on the CPU otherwise). Loading one that does not fit evicts the least recently used
unpinned ones first; a model that cannot fit even alone is still loaded, with the rest evicted, so a job never
fails for want of room.
"""

from __future__ import annotations

import gc
import logging
import time
from collections import OrderedDict
from typing import Any

import torch
from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting, DiffusionPipeline
from kombu.utils.imports import symbol_by_name

from genfleet.shared import metrics
from genfleet.shared.fastpath import FastPath, fastpath_for
from genfleet.shared.registry import Registry
from genfleet.shared.schema import Task
from genfleet.workers.fastpath import apply

log = logging.getLogger(__name__)
_TASK_PIPELINES = {Task.image_to_image: AutoPipelineForImage2Image, Task.inpaint: AutoPipelineForInpainting}


def resolve_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def from_pretrained(name: str, dtype: torch.dtype) -> DiffusionPipeline:
    """A diffusers folder or hub id (the registry's default loader)."""
    return DiffusionPipeline.from_pretrained(name, dtype=dtype)


def load_pipeline(name: str, device: torch.device, registry: Registry | None = None) -> DiffusionPipeline:
    """Loads `name` onto `device`: half precision on a GPU (SDPA attention is diffusers' default there)."""
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    pipe = symbol_by_name((registry or Registry()).spec(name).loader)(name, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return without_own_watermark(pipe).to(device)


def without_own_watermark(pipe: Any) -> Any:
    """`pipe` without the watermark diffusers' SDXL pipelines add by themselves whenever `invisible-watermark`
    is installed (a fixed payload, `dwtDct`): genfleet marks every image itself, with its own payload and method,
    as settings say (shared/watermark.py), and one image must not carry two."""
    if getattr(pipe, "watermark", None) is not None:
        pipe.watermark = None
    return pipe


def weight_bytes(pipe: Any) -> int:
    """What a pipeline's weights occupy: the parameters and buffers of each of its torch modules."""
    modules = [m for m in getattr(pipe, "components", {}).values() if isinstance(m, torch.nn.Module)]
    return sum(t.numel() * t.element_size() for m in modules for t in (*m.parameters(), *m.buffers()))


def task_pipeline(pipe: Any, task: Task) -> Any:
    """The pipeline that runs `task` on `pipe`'s components."""
    if task is Task.text_to_image or getattr(pipe, "serves_tasks", False):
        return pipe
    return without_own_watermark(_TASK_PIPELINES[task].from_pipe(pipe))


class PipelineCache:
    """The warm pipelines of this process, by model name, least recently used first."""

    def __init__(self, device: torch.device, fastpath: dict[str, FastPath] | None = None,
                 registry: Registry | None = None, budget_bytes: int = 0, pinned: set[str] | None = None) -> None:
        self.device, self.fastpath, self.registry = device, fastpath or {}, registry or Registry()
        self.budget_bytes, self.pinned = budget_bytes, pinned or set()
        self._pipelines: OrderedDict[str, Any] = OrderedDict()
        self._tasks: dict[tuple[str, Task], Any] = {}
        self.sizes: dict[str, int] = {}
        self.load_seconds: dict[str, float] = {}

    def add(self, name: str, pipe: Any) -> None:
        """Serves `pipe` as `name` (tests wrap a real pipeline to count calls or inject faults)."""
        self._pipelines[name] = pipe
        self.sizes[name] = weight_bytes(pipe)

    @property
    def warm(self) -> list[str]:
        """The models loaded now, most recently used first (what the worker announces)."""
        return list(reversed(self._pipelines))

    def get(self, name: str, task: Task = Task.text_to_image) -> Any:
        if name in self._pipelines:
            self._pipelines.move_to_end(name)
        else:
            self._load(name)
        pipe = self._pipelines[name]
        if task is Task.text_to_image:
            return pipe
        if (name, task) not in self._tasks:
            self._tasks[(name, task)] = task_pipeline(pipe, task)
        return self._tasks[(name, task)]

    def _load(self, name: str) -> None:
        start = time.perf_counter()
        pipe = load_pipeline(name, self.device, self.registry)
        apply(pipe, fastpath_for(name, self.fastpath))
        size = weight_bytes(pipe)
        self._make_room(size)
        self._pipelines[name], self.sizes[name] = pipe, size
        self.load_seconds[name] = time.perf_counter() - start
        metrics.MODEL_LOADS.labels(name).inc()
        metrics.MODEL_LOAD_SECONDS.labels(name).set(self.load_seconds[name])
        log.info("loaded model %s on %s in %.1fs (%.0f MiB)", name, self.device, self.load_seconds[name], size / 2**20)

    def _make_room(self, size: int) -> None:
        """Evicts least recently used unpinned pipelines until `size` more bytes fit the budget."""
        if not self.budget_bytes:
            return
        for name in [n for n in self._pipelines if n not in self.pinned]:
            if sum(self.sizes[n] for n in self._pipelines) + size <= self.budget_bytes:
                break
            self.evict(name)

    def evict(self, name: str) -> None:
        self._pipelines.pop(name, None)
        for key in [k for k in self._tasks if k[0] == name]:
            del self._tasks[key]
        size = self.sizes.pop(name, 0)
        gc.collect()  # the pipeline's tensors go with its last reference
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        metrics.MODEL_EVICTIONS.labels(name).inc()
        log.info("evicted model %s (%.0f MiB) to stay within the memory budget", name, size / 2**20)
