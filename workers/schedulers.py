"""A job's scheduler: the sampler that turns the denoiser's predictions into steps, chosen per job from a
fixed list of diffusers' own.

A pipeline keeps the scheduler it was loaded with as the model's default. Each other choice is built once from
that scheduler's config (diffusers' `from_config`, so the model's noise schedule and prediction type carry
over) and kept; a call sets the one its group asked for. Batching groups jobs by scheduler, so a call never mixes
two.
"""

from __future__ import annotations

from typing import Any

from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)

from genfleet.shared.schema import Scheduler

# each name's class, and what it needs beyond the model's own config
SCHEDULERS: dict[Scheduler, tuple[Any, dict[str, Any]]] = {
    Scheduler.euler: (EulerDiscreteScheduler, {}),
    Scheduler.euler_a: (EulerAncestralDiscreteScheduler, {}),
    Scheduler.dpmpp_2m: (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    Scheduler.ddim: (DDIMScheduler, {}),
    Scheduler.unipc: (UniPCMultistepScheduler, {}),
}


def use_scheduler(pipe: Any, name: Scheduler | None) -> None:
    """Sets `pipe`'s scheduler to `name`'s (None: the one it was loaded with)."""
    own: dict[Scheduler | None, Any] | None = getattr(pipe, "_genfleet_schedulers", None)
    if own is None:
        if name is None:
            return  # never switched: it has its own (and a wrapped or custom pipeline need not expose one)
        own = pipe._genfleet_schedulers = {None: pipe.scheduler}
    if name is not None and name not in own:
        cls, extra = SCHEDULERS[name]
        own[name] = cls.from_config(own[None].config, **extra)
    pipe.scheduler = own[name]
