"""The model registry's light half: what each served model is, in one table, with no torch.

The API validates every job against it (sizes, steps, schedulers, tasks) before anything is queued; the worker
builds pipelines from the same entries (workers/models.py, the heavy half, imports each entry's `loader` by
name, so the API never imports it). Adding a model family is one entry in `FAMILIES`; adding a scorer is one
entry in `SCORERS`.

A model is named by a diffusers id or a local folder. Its family comes from, in order: `GENFLEET_MODEL_FAMILIES`
(JSON, name to family), the ids in `KNOWN`, a local folder's `model_index.json` (its pipeline class), else
`generic`: a diffusers text-to-image pipeline the registry knows nothing more about.

    >>> Registry().spec("stabilityai/sdxl-turbo").steps
    1
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any

from genfleet.shared.schema import EMBEDDED, JobParams, Scheduler, Task

Misfit = tuple[str, Any, str]  # (field, value, why)
_HUB = "genfleet.workers.models:from_pretrained"  # what loads a diffusers folder or hub id


class Family(StrEnum):
    embedded = "embedded"
    sd15 = "sd15"  # Stable Diffusion 1.x and 2.x: a UNet in a 4-channel latent space, CLIP text
    sd_turbo = "sd-turbo"  # SD 2.1 distilled to one to four steps, no guidance
    sdxl = "sdxl"
    sdxl_turbo = "sdxl-turbo"
    sd3 = "sd3"  # a flow-matching transformer (MMDiT)
    flux_dev = "flux-dev"
    flux_schnell = "flux-schnell"
    generic = "generic"


# OpenAI's `quality`, as a share of a model's default steps (`ModelSpec.steps_for`); `auto` leaves them unset
QUALITY_STEPS = {"low": 0.5, "medium": 1.0, "standard": 1.0, "high": 1.5, "hd": 1.5, "xhigh": 2.0, "max": 2.0}
PIPELINE_STEPS = 50  # what a diffusers pipeline runs when a family names no default
MAX_STEPS = 150  # JobParams' bound

_UNET_SCHEDULERS = frozenset(Scheduler)
_FLOW = frozenset[Scheduler]()  # flow-matching models keep their own scheduler: no other one applies
_ALL_TASKS = frozenset(Task)


@dataclass(frozen=True)
class ModelSpec:
    """What a family takes and defaults to. `steps` and `guidance` fill a job's unset fields; `scheduler` None
    means the model's own; `scorers` are the ones `GENFLEET_SCORERS=auto` applies to it."""

    family: Family
    native: int  # side in pixels when a job gives none
    sides: tuple[int, int] = (64, 2048)
    multiple: int = 8  # a side must be a multiple of this (the VAE's factor, times a transformer's patch)
    steps: int | None = None  # None: the pipeline's own default
    guidance: float | None = None
    schedulers: frozenset[Scheduler] = _UNET_SCHEDULERS
    tasks: frozenset[Task] = _ALL_TASKS
    scorers: tuple[str, ...] = ("technical",)
    loader: str = _HUB  # "module:callable", called with (name, dtype), returning the pipeline

    def steps_for(self, quality: str) -> int | None:
        """The steps an OpenAI `quality` asks of this model: a share of its default (`QUALITY_STEPS`), at least
        one; None for `auto` (the model's default)."""
        if quality == "auto":
            return None
        return max(1, min(MAX_STEPS, round((self.steps or PIPELINE_STEPS) * QUALITY_STEPS[quality])))

    def misfits(self, params: JobParams, name: str) -> list[Misfit]:
        """What this model cannot take in `params`: one entry per field at fault."""
        lo, hi = self.sides
        found: list[Misfit] = []
        for side_name, side in (("width", params.width), ("height", params.height)):
            if side is not None and not (lo <= side <= hi and side % self.multiple == 0):
                found.append((side_name, side, f"{side_name} {side} must be a multiple of {self.multiple} in "
                                               f"{lo}..{hi} for model {name!r}"))
        if params.scheduler is not None and params.scheduler not in self.schedulers:
            takes = sorted(s.value for s in self.schedulers) or "only its own"
            found.append(("scheduler", params.scheduler.value, f"model {name!r} takes the schedulers {takes}"))
        if params.task not in self.tasks:
            found.append(("task", params.task.value, f"model {name!r} serves the tasks "
                                                     f"{sorted(t.value for t in self.tasks)}"))
        return found


FAMILIES: dict[Family, ModelSpec] = {
    # Trained and shipped by genfleet: a latent diffusion model on SD's noise schedule. Every scheduler but DDIM
    # draws it right (docs/embedded-model.md); DDIM clips its x0 estimate to [-1, 1] unless its config says not
    # to, and in this latent space (unit variance) that ruins every picture.
    Family.embedded: ModelSpec(Family.embedded, native=64, sides=(32, 256), steps=12, guidance=5.0,
                               schedulers=_UNET_SCHEDULERS - {Scheduler.ddim},
                               scorers=("technical", "adherence"),
                               loader="genfleet.workers.embedded.pipeline:load_named"),
    Family.sd15: ModelSpec(Family.sd15, native=512, steps=25, guidance=7.5),
    Family.sd_turbo: ModelSpec(Family.sd_turbo, native=512, steps=1, guidance=0.0),
    Family.sdxl: ModelSpec(Family.sdxl, native=1024, steps=30, guidance=5.0),
    Family.sdxl_turbo: ModelSpec(Family.sdxl_turbo, native=512, steps=1, guidance=0.0),
    Family.sd3: ModelSpec(Family.sd3, native=1024, multiple=16, steps=28, guidance=7.0, schedulers=_FLOW),
    Family.flux_dev: ModelSpec(Family.flux_dev, native=1024, multiple=16, steps=28, guidance=3.5, schedulers=_FLOW),
    Family.flux_schnell: ModelSpec(Family.flux_schnell, native=1024, multiple=16, steps=4, guidance=0.0,
                                   schedulers=_FLOW),
    Family.generic: ModelSpec(Family.generic, native=512, tasks=frozenset({Task.text_to_image})),
}

KNOWN: dict[str, Family] = {
    EMBEDDED: Family.embedded,
    "stable-diffusion-v1-5/stable-diffusion-v1-5": Family.sd15,
    "runwayml/stable-diffusion-v1-5": Family.sd15,
    "stable-diffusion-v1-5/stable-diffusion-inpainting": Family.sd15,
    "stabilityai/stable-diffusion-2-1": Family.sd15,
    "stabilityai/sd-turbo": Family.sd_turbo,
    "stabilityai/stable-diffusion-xl-base-1.0": Family.sdxl,
    "stabilityai/sdxl-turbo": Family.sdxl_turbo,
    "stabilityai/stable-diffusion-3-medium-diffusers": Family.sd3,
    "stabilityai/stable-diffusion-3.5-medium": Family.sd3,
    "stabilityai/stable-diffusion-3.5-large": Family.sd3,
    "black-forest-labs/FLUX.1-dev": Family.flux_dev,
    "black-forest-labs/FLUX.1-schnell": Family.flux_schnell,
}

# A local folder's pipeline class (its model_index.json), for models named by path
_CLASSES: dict[str, Family] = {
    "CatHatPipeline": Family.embedded,
    "StableDiffusionPipeline": Family.sd15,
    "StableDiffusionXLPipeline": Family.sdxl,
    "StableDiffusion3Pipeline": Family.sd3,
    "FluxPipeline": Family.flux_dev,
}


@dataclass(frozen=True)
class ScorerEntry:
    """A scorer: what builds it (workers/scoring.py), and the families it can judge (None: every one)."""

    factory: str  # "module:callable", called with the worker's ScorerOptions
    families: frozenset[Family] | None = None

    def judges(self, family: Family) -> bool:
        return self.families is None or family in self.families


SCORERS: dict[str, ScorerEntry] = {
    # non-finite, black (what safety checkers return), flat, very low contrast
    "technical": ScorerEntry("genfleet.workers.scoring:TechnicalScorer"),
    # the probability the picture shows the cat and hat the prompt asks for: it knows only the embedded world
    "adherence": ScorerEntry("genfleet.workers.scoring:AdherenceScorer", frozenset({Family.embedded})),
    # CLIP image-text similarity, from local weights only
    "clip": ScorerEntry("genfleet.workers.scoring:ClipScorer"),
}


@lru_cache(maxsize=256)
def _folder_family(name: str) -> Family | None:
    index = Path(name) / "model_index.json"
    try:
        return _CLASSES.get(json.loads(index.read_text()).get("_class_name", ""))
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class Registry:
    """Resolves model names to their specs; `families` is GENFLEET_MODEL_FAMILIES."""

    families: dict[str, Family] = field(default_factory=dict)

    def family(self, name: str) -> Family:
        return self.families.get(name) or KNOWN.get(name) or _folder_family(name) or Family.generic

    def spec(self, name: str) -> ModelSpec:
        return FAMILIES[self.family(name)]

    def scorers_for(self, name: str, chosen: list[str] | None) -> list[str]:
        """The scorers that judge `name`'s images: `chosen` (GENFLEET_SCORERS), or the model's own for `auto`,
        less those that cannot judge its family."""
        family = self.family(name)
        names = chosen if chosen is not None else list(self.spec(name).scorers)
        return [n for n in names if SCORERS[n].judges(family)]
