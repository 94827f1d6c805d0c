"""Pipelines: loaded once per worker process and kept warm.

`embedded` is the model genfleet trains and ships; any other name is a diffusers model id or local folder,
loaded with `DiffusionPipeline.from_pretrained`. Both are called the same way by the runner.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from diffusers import DiffusionPipeline

from genfleet.shared.fastpath import FastPath, fastpath_for
from genfleet.shared.schema import EMBEDDED
from genfleet.workers.fastpath import apply

log = logging.getLogger(__name__)


def resolve_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def load_pipeline(name: str, device: torch.device) -> DiffusionPipeline:
    """Loads `name` onto `device`: half precision on a GPU (SDPA attention is diffusers' default there)."""
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    if name == EMBEDDED:
        from genfleet.workers.embedded.pipeline import load_embedded

        pipe = load_embedded(dtype=dtype)
    else:
        pipe = DiffusionPipeline.from_pretrained(name, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


class PipelineCache:
    """The warm pipelines of this process, by model name."""

    def __init__(self, device: torch.device, fastpath: dict[str, FastPath] | None = None) -> None:
        self.device, self.fastpath = device, fastpath or {}
        self._pipelines: dict[str, DiffusionPipeline] = {}
        self.load_seconds: dict[str, float] = {}

    def add(self, name: str, pipe: Any) -> None:
        """Serves `pipe` as `name` (tests wrap a real pipeline to count calls or inject faults)."""
        self._pipelines[name] = pipe

    def get(self, name: str) -> DiffusionPipeline:
        if name not in self._pipelines:
            start = time.perf_counter()
            pipe = load_pipeline(name, self.device)
            apply(pipe, fastpath_for(name, self.fastpath))
            self._pipelines[name] = pipe
            self.load_seconds[name] = time.perf_counter() - start
            log.info("loaded model %s on %s in %.1fs", name, self.device, self.load_seconds[name])
        return self._pipelines[name]
