"""Quality retries: every image is scored; one under the bar is regenerated with a new seed, at most K attempts
in all, and the best attempt is kept. Each attempt's seed, score and reason is recorded.

Retry seeds are derived from the image's own seed and the attempt number, so a redelivered job repeats the
same attempts. The retries of a whole group go through the sampler together: one call, not one per image.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from PIL import Image

from genfleet.shared.schema import MAX_SEED, Attempt, Job
from genfleet.workers.results import Failed, Ok, attempt
from genfleet.workers.sampling import (
    GroupKey,
    ImageSpec,
    Inputs,
    Pipeline,
    Sampler,
    StopCheck,
    image_specs,
    sample_group,
)
from genfleet.workers.scoring import ScorerSet, Scores, overall

_RETRY_STRIDE = 1_000_003  # a prime: retry seeds never collide with the seeds of a job's other images


@dataclass
class Candidate:
    """One output slot of a job: the best picture so far and every attempt at it."""

    spec: ImageSpec
    image: Image.Image | None = None  # the kept picture
    best: Attempt | None = None  # the attempt that made it
    attempts: list[Attempt] = field(default_factory=list)
    nsfw: bool | None = None  # the safety checker's flag on the kept picture (workers/safety.py); None: unchecked

    @property
    def seed(self) -> int:
        return self.best.seed if self.best else self.spec.seed

    @property
    def score(self) -> float | None:
        return self.best.score if self.best else None

    @property
    def scores(self) -> Scores:
        return self.best.scores if self.best else {}

    def offer(self, image: Image.Image, seed: int, scores: Scores, threshold: float) -> None:
        score = overall(scores)
        low = [f"{name} {v:.3f}" for name, v in scores.items() if v is not None and v < threshold]
        reason = f"below {threshold}: {', '.join(low)}" if low else None
        attempt = Attempt(seed=seed, score=score, scores=scores, reason=reason)
        self.attempts.append(attempt)
        if self.best is None or (score is not None and (self.score is None or score > self.score)):
            self.image, self.best = image, attempt

    def wants_retry(self, threshold: float) -> bool:
        return self.score is not None and self.score < threshold


def retry_seed(spec: ImageSpec, attempt: int) -> int:
    return (spec.seed + attempt * _RETRY_STRIDE) % (MAX_SEED + 1)


def sample_with_retries(sampler: Sampler, pipe: Pipeline, key: GroupKey, jobs: list[Job], scorers: ScorerSet,
                        threshold: float, max_attempts: int, should_stop: StopCheck | None = None,
                        inputs: Inputs | None = None) -> list[Ok[list[Candidate]] | Failed]:
    """Per job: its candidates (best image per slot, with attempts), or how its sampling failed."""
    results: list[Ok[list[Candidate]] | Failed] = []
    for job, sampled in zip(jobs, sample_group(sampler, pipe, key, jobs, should_stop, inputs), strict=True):
        if isinstance(sampled, Failed):
            results.append(sampled)
            continue
        slots = [Candidate(spec) for spec in image_specs(job, inputs)]
        scores_of = scorers.score(key.model, sampled.value, [job.request.prompt] * len(sampled.value))
        for slot, image, scores in zip(slots, sampled.value, scores_of, strict=True):
            slot.offer(image, slot.spec.seed, scores, threshold)
        results.append(Ok(slots))
    for n in range(1, max_attempts):
        retry = [s for r in results if isinstance(r, Ok) for s in r.value if s.wants_retry(threshold)]
        if not retry or (should_stop is not None and should_stop()):
            break
        specs = [replace(s.spec, seed=retry_seed(s.spec, n)) for s in retry]
        retried = attempt(sampler.sample, pipe, key, specs, should_stop)
        if isinstance(retried, Failed):  # a failed retry keeps what the job already has
            break
        retry_scores = scorers.score(key.model, retried.value, [s.prompt for s in specs])
        for slot, spec, image, image_scores in zip(retry, specs, retried.value, retry_scores, strict=True):
            slot.offer(image, spec.seed, image_scores, threshold)
    return results
