"""Prompt adherence for the embedded domain: what does this picture show, and is it what was asked?

A small CNN reads an image and predicts the cat's colour (or no cat) and the hat's colour (or no hat). An
image's score against a prompt is the probability it gives to exactly what the prompt asks for. It reads at
32x32 whatever the picture's size: colours and layout are all it judges, and a quarter of the pixels trains it
four times faster.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from PIL import Image
from torch import nn

from genfleet.workers.embedded.data import COLOUR_NAMES, RESOLUTION, Scene

SCORER_DIR = Path(__file__).parent / "weights" / "scorer"
ABSENT = 0  # class 0 of each head means "not in the picture"; colour i is class i + 1
_CAT = re.compile(r"(?:\b(\w+)\s+)?\bcats?\b")
_HAT = re.compile(r"(?:\b(\w+)\s+)?\bhats?\b")


@dataclass(frozen=True)
class Ask:
    """What a prompt asks for: per thing, None (must be absent), "" (present, any colour) or a colour."""

    cat: str | None
    hat: str | None


def parse_prompt(prompt: str) -> Ask | None:
    """The cat and hat a prompt asks for, or None when it names neither (the scorer cannot judge it)."""
    text = prompt.lower()

    def find(pattern: re.Pattern[str]) -> str | None:
        m = pattern.search(text)
        if not m:
            return None
        return m.group(1) if m.group(1) in COLOUR_NAMES else ""

    ask = Ask(find(_CAT), find(_HAT))
    return None if ask.cat is None and ask.hat is None else ask


def scene_labels(scene: Scene) -> tuple[int, int]:
    def label(colour: str | None) -> int:
        return ABSENT if colour is None else COLOUR_NAMES.index(colour) + 1

    return label(scene.cat), label(scene.hat)


def to_tensor(images: list[Image.Image] | np.ndarray) -> torch.Tensor:
    """PIL images or uint8 (N, 3, H, W) arrays to floats in [-1, 1] at the scorer's resolution."""
    if isinstance(images, np.ndarray):
        x = torch.from_numpy(images).float()
    else:
        arrays = [np.asarray(im.convert("RGB").resize((RESOLUTION, RESOLUTION), Image.Resampling.BOX)) for im in images]
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def shrink(x: torch.Tensor, side: int) -> torch.Tensor:
    """A batch box-filtered to `side` (the renderer's own downsampling), unchanged when already there."""
    return x if x.shape[-1] == side else F.interpolate(x, size=(side, side), mode="area")


class AdherenceScorer(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, colours: int = len(COLOUR_NAMES), width: int = 32, resolution: int = 32) -> None:
        super().__init__()
        w = width

        def block(i: int, o: int, stride: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(i, o, 3, stride, 1), nn.GroupNorm(8, o), nn.SiLU())

        self.features_net = nn.Sequential(block(3, w, 1), block(w, w, 1), block(w, 2 * w, 2), block(2 * w, 2 * w, 1),
                                          block(2 * w, 4 * w, 2), block(4 * w, 4 * w, 1),
                                          nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.cat_head = nn.Linear(4 * w, colours + 1)
        self.hat_head = nn.Linear(4 * w, colours + 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features_net(shrink(x, self.config.resolution))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return self.cat_head(f), self.hat_head(f)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class probabilities for cat and hat, each (N, colours + 1)."""
        cat, hat = self(x.to(self.device, self.dtype))
        return cat.softmax(-1).float().cpu(), hat.softmax(-1).float().cpu()

    def score(self, images: list[Image.Image], prompts: list[str]) -> list[float | None]:
        """For each image, the probability that it shows what its prompt asks (None where nothing is asked)."""
        cat, hat = self.predict(to_tensor(images))
        return [_probability(c, h, parse_prompt(p)) for c, h, p in zip(cat, hat, prompts, strict=True)]


def _probability(cat: torch.Tensor, hat: torch.Tensor, ask: Ask | None) -> float | None:
    if ask is None:
        return None

    def p(probs: torch.Tensor, want: str | None) -> float:
        if want is None:
            return float(probs[ABSENT])
        if want == "":
            return float(1 - probs[ABSENT])
        return float(probs[COLOUR_NAMES.index(want) + 1])

    return p(cat, ask.cat) * p(hat, ask.hat)


def load_scorer(path: Path = SCORER_DIR) -> AdherenceScorer:
    return AdherenceScorer.from_pretrained(str(path), local_files_only=True).eval()
