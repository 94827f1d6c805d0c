"""DeepCache for UNet denoisers (Ma et al., 2023), on diffusers' own hooks.

A UNet's deep blocks change little from one sampling step to the next; its outermost ones carry the detail.
Every `interval`th step runs the whole UNet and keeps what its deep blocks returned; the steps between run only
the outermost down block and the outermost up block (with the stem and the head), and take the deep blocks'
outputs from the last whole step. It needs no training and keeps the weights; the pictures move a little away
from the uncached ones, which is the cost the scorers and the judge measure (docs/benchmarks.md).

The deep blocks are `down_blocks[1:]`, `mid_block` and `up_blocks[:-1]`: the up blocks that read the skipped
down blocks' residuals are skipped with them, so every residual a running block reads is fresh. Each block gets
a hook (`HookRegistry`, what diffusers' own caches use) that returns its stored output on a reused step; a
hook on the UNet itself keeps the step count, and starts a new sampling run when the caller says so (`reset`)
or when the input's shape changes or its timestep does not fall (a run the caller did not announce; a
scheduler that evaluates one timestep twice, such as Heun's, only gets more whole steps from that rule).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from diffusers.hooks import HookRegistry, ModelHook

NAME = "genfleet_deep_cache"


@dataclass
class Clock:
    """Where a sampling run is: which step, whether this step runs the whole UNet."""

    interval: int
    step: int = -1
    last_t: float | None = None
    shape: tuple[int, ...] | None = None

    @property
    def whole(self) -> bool:
        return self.step % self.interval == 0

    def reset(self) -> None:
        self.step, self.last_t, self.shape = -1, None, None

    def tick(self, t: float, shape: tuple[int, ...]) -> None:
        if shape != self.shape or (self.last_t is not None and t >= self.last_t):
            self.reset()  # a new run: its first step runs whole
        self.step, self.last_t, self.shape = self.step + 1, t, shape


def _timestep(args: tuple[Any, ...], kwargs: dict[str, Any]) -> float:
    t = kwargs["timestep"] if "timestep" in kwargs else args[1]
    return float(t.flatten()[0]) if isinstance(t, torch.Tensor) else float(t)


class _StepHook(ModelHook):
    """On the UNet: counts the steps of a run."""

    _is_stateful = True

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock

    def pre_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> tuple[tuple[Any], dict[str, Any]]:
        sample = kwargs["sample"] if "sample" in kwargs else args[0]
        self.clock.tick(_timestep(args, kwargs), tuple(sample.shape))
        return args, kwargs

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        self.clock.reset()
        return module


class _ReuseHook(ModelHook):
    """On a deep block: runs it on whole steps and keeps its output; returns that output on the others."""

    _is_stateful = True

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock, self.kept = clock, None

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        if self.clock.whole or self.kept is None:
            self.kept = self.fn_ref.original_forward(*args, **kwargs)
        return self.kept

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        self.kept = None
        return module


def deep_blocks(unet: Any) -> list[torch.nn.Module]:
    """The blocks a reused step skips; empty for a network that is not a UNet with two levels or more."""
    downs, ups = getattr(unet, "down_blocks", None), getattr(unet, "up_blocks", None)
    if not downs or not ups or len(downs) < 2 or len(downs) != len(ups):
        return []
    mid = getattr(unet, "mid_block", None)
    return [*downs[1:], *([mid] if mid is not None else []), *ups[:-1]]


def enable(unet: Any, interval: int) -> bool:
    """Turns DeepCache on with a whole step every `interval` steps; False where it cannot apply."""
    blocks = deep_blocks(unet)
    if interval < 2 or not blocks:
        return False
    disable(unet)
    clock = Clock(interval)
    HookRegistry.check_if_exists_or_initialize(unet).register_hook(_StepHook(clock), NAME)
    for block in blocks:
        HookRegistry.check_if_exists_or_initialize(block).register_hook(_ReuseHook(clock), NAME)
    return True


def disable(unet: Any) -> None:
    if hasattr(unet, "_diffusers_hook"):
        unet._diffusers_hook.remove_hook(NAME, recurse=True)


def enabled(unet: Any) -> bool:
    return hasattr(unet, "_diffusers_hook") and unet._diffusers_hook.get_hook(NAME) is not None


def reset(unet: Any) -> None:
    """A sampling run starts: forget the last run's deep features (the caller's word, not a guess)."""
    if enabled(unet):
        unet._diffusers_hook.reset_stateful_hooks(recurse=True)
