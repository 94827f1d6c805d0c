"""Image quality scorers, chosen by `GENFLEET_SCORERS` (the registry, shared/registry.py, lists them and says
which families each can judge). Each gives a score in [0, 1] per image (higher is better) or None where it
cannot judge; an image's overall score is the lowest of them, and that is what the quality bar applies to.
Every scorer's score is recorded in the job record, the PNG and the manifest.

- technical: NaN or inf, all black (what safety checkers return), blank or near-constant, very low contrast;
- adherence: the embedded model's prompt-adherence scorer (embedded jobs only);
- clip: CLIP image-text similarity through transformers' CLIPModel, from weights already on disk or in the
  Hugging Face cache; without them it logs once what is missing and abstains, rather than failing jobs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from kombu.utils.imports import symbol_by_name
from PIL import Image

from genfleet.shared.registry import SCORERS, Registry

log = logging.getLogger(__name__)
Scores = dict[str, float | None]


class Scorer(Protocol):
    name: str

    def score(self, images: list[Image.Image], prompts: list[str]) -> list[float | None]: ...


@dataclass(frozen=True)
class ScorerOptions:
    """What a scorer may need to build itself (each entry of the registry's SCORERS is called with these)."""

    clip_model: str = "openai/clip-vit-large-patch14"
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


class TechnicalScorer:
    name = "technical"
    min_std = 4.0  # out of 255: below this a picture is one flat colour (black included)
    full_contrast_std = 16.0  # at or above this the picture has ordinary contrast: score 1

    def __init__(self, options: ScorerOptions | None = None) -> None:
        pass

    def score(self, images: list[Image.Image], prompts: list[str]) -> list[float | None]:
        return [self._one(np.asarray(im.convert("RGB"), dtype=np.float32)) for im in images]

    def _one(self, px: np.ndarray) -> float:
        if not np.isfinite(px).all():
            return 0.0
        std = float(px.reshape(-1, px.shape[-1]).std(axis=0).mean())  # spatial, per channel: a flat colour is 0
        return 0.0 if std < self.min_std else min(1.0, std / self.full_contrast_std)


class AdherenceScorer:
    name = "adherence"

    def __init__(self, options: ScorerOptions | None = None) -> None:
        from genfleet.workers.embedded.scorer import load_scorer

        self._model = load_scorer()

    def score(self, images: list[Image.Image], prompts: list[str]) -> list[float | None]:
        return self._model.score(images, prompts)


class ClipScorer:
    """Cosine similarity of CLIP image and text embeddings, mapped from [0.15, 0.35] to [0, 1]."""

    name = "clip"
    low, high = 0.15, 0.35  # typical similarities of unrelated and well-matched pairs for ViT-L/14

    def __init__(self, options: ScorerOptions) -> None:
        self.model_name, self.device = options.clip_model, options.device
        self._model: Any = None  # transformers' CLIPModel and CLIPProcessor, loaded on first use
        self._processor: Any = None
        self._missing = False

    def _load(self) -> bool:
        if self._model is None and not self._missing:
            from transformers import CLIPModel, CLIPProcessor

            try:
                self._model = CLIPModel.from_pretrained(self.model_name, local_files_only=True).to(self.device).eval()
                self._processor = CLIPProcessor.from_pretrained(self.model_name, local_files_only=True)
            except OSError as e:
                self._missing = True
                log.warning("CLIP scorer off: no local weights for %r (%s). Put them in the Hugging Face cache "
                            "or set GENFLEET_CLIP_MODEL to a folder; images get no CLIP score meanwhile.",
                            self.model_name, str(e).splitlines()[0])
        return self._model is not None

    @torch.no_grad()
    def score(self, images: list[Image.Image], prompts: list[str]) -> list[float | None]:
        if not self._load():
            return [None] * len(images)
        inputs = self._processor(text=prompts, images=images, return_tensors="pt", padding=True, truncation=True)
        out = self._model(**{k: v.to(self.device) for k, v in inputs.items()})
        sim = torch.nn.functional.cosine_similarity(out.image_embeds, out.text_embeds).float().cpu()
        return [float(v) for v in ((sim - self.low) / (self.high - self.low)).clamp(0, 1)]


class ScorerSet:
    """The scorers that apply to each model, loaded once, on first use."""

    def __init__(self, names: list[str] | None = None, options: ScorerOptions | None = None,
                 registry: Registry | None = None) -> None:
        self.names = names  # None: "auto", each model's own (the registry says which)
        self.options, self.registry = options or ScorerOptions(), registry or Registry()
        self._loaded: dict[str, Scorer] = {}

    def _get(self, name: str) -> Scorer:
        if name not in self._loaded:
            self._loaded[name] = symbol_by_name(SCORERS[name].factory)(self.options)
        return self._loaded[name]

    def names_for(self, model: str) -> list[str]:
        return self.registry.scorers_for(model, self.names)

    def score(self, model: str, images: list[Image.Image], prompts: list[str]) -> list[Scores]:
        per_scorer = {n: self._get(n).score(images, prompts) for n in self.names_for(model)}
        return [{n: s[i] for n, s in per_scorer.items()} for i in range(len(images))]


def overall(scores: Scores) -> float | None:
    known = [v for v in scores.values() if v is not None]
    return min(known) if known else None
