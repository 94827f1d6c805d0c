"""Image quality scores in [0, 1], higher is better: one number an image for the job record, PNG and manifest.

`embedded` jobs are scored for prompt adherence by the scorer trained with the embedded model; other models
get the technical score (flat, black or non-finite pictures score 0).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from PIL import Image

from shared.schema import EMBEDDED


class Scorer(Protocol):
    def score(self, images: list[Image.Image], prompts: list[str]) -> list[float | None]: ...


class TechnicalScorer:
    """Catches the failures every model has: all black (what safety checkers return), blank, washed out."""

    min_std = 4.0  # out of 255: below this a picture is one flat colour

    def score(self, images: list[Image.Image], prompts: list[str]) -> list[float | None]:
        return [self._one(np.asarray(im.convert("RGB"), dtype=np.float32)) for im in images]

    def _one(self, px: np.ndarray) -> float:
        if not np.isfinite(px).all():
            return 0.0
        std = float(px.std())
        return float(min(1.0, std / (4 * self.min_std))) if std >= self.min_std else 0.0


class ScorerSet:
    """Picks and lazily loads the scorer for each model."""

    def __init__(self) -> None:
        self._technical = TechnicalScorer()
        self._adherence: Scorer | None = None

    def for_model(self, model: str) -> Scorer:
        if model != EMBEDDED:
            return self._technical
        if self._adherence is None:
            from workers.embedded.scorer import load_scorer

            self._adherence = load_scorer()
        return self._adherence
