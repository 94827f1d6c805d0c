"""The figures `genfleet eval-embedded` reports, as plain functions of verdicts, features and probabilities."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Rate:
    """A share of n trials, with its binomial standard error."""

    rate: float
    se: float
    n: int

    @classmethod
    def of(cls, hits: np.ndarray) -> Rate:
        n = len(hits)
        p = float(np.mean(hits)) if n else math.nan
        return cls(rate=round(p, 4), se=round(math.sqrt(p * (1 - p) / n), 4) if n else math.nan, n=n)

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (the FID formula, another feature space)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(cov_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.linalg.eigvalsh(root_a @ cov_b @ root_a)  # same trace-sqrt as sqrtm(cov_a @ cov_b)
    spread = np.trace(cov_a) + np.trace(cov_b) - 2 * np.sqrt(np.clip(cross, 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + spread)


def joint(cat: np.ndarray, hat: np.ndarray) -> np.ndarray:
    """Per image, probabilities over every (cat, hat) class pair, from the scorer's two heads: (N, C * H)."""
    return (cat[:, :, None] * hat[:, None, :]).reshape(len(cat), -1)


def inception_score(probs: np.ndarray, eps: float = 1e-12) -> float:
    """exp(E_x KL(p(y|x) || p(y))), Inception Score's formula over another classifier's classes: high when each
    picture is confidently one class (sharp) and the set covers many classes (diverse). Its ceiling is the
    number of classes the set was asked to cover, reached when every picture is read with certainty."""
    marginal = probs.mean(0, keepdims=True)
    kl = (probs * (np.log(probs + eps) - np.log(marginal + eps))).sum(1)
    return float(np.exp(kl.mean()))
