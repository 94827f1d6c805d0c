"""The job: what a client asks for (`JobRequest`) and the record that travels API -> queue -> worker (`Job`).

Both are pydantic models and cross every process boundary as JSON. Validation happens here, at the edge, so a
bad request is refused before anything is queued or stored.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any
from uuid import UUID, uuid4

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, model_validator

MAX_SEED = 2**63 - 1
EMBEDDED = "embedded"
# (smallest, largest) side in pixels; the embedded model is trained at 32x32 and convolutional beyond that.
_SIDE_LIMITS = {EMBEDDED: (16, 128)}
_DEFAULT_SIDE_LIMITS = (64, 2048)

Side = Annotated[int, Field(multiple_of=8, ge=8, le=2048, description="pixels, a multiple of 8")]


def side_limits(model: str) -> tuple[int, int]:
    return _SIDE_LIMITS.get(model, _DEFAULT_SIDE_LIMITS)


def schedulers_for(model: str) -> frozenset[Scheduler]:
    """The schedulers a model takes. The embedded model diffuses in pixel space on a cosine schedule: it needs a
    multistep solver with thresholding (Euler's first sigma there is enormous, and its pictures saturate)."""
    return _SCHEDULERS.get(model, frozenset(Scheduler))


class Priority(StrEnum):
    high = "high"
    normal = "normal"
    low = "low"


class Scheduler(StrEnum):
    """The samplers a job may ask for, by their usual names (diffusers' classes: workers/schedulers.py)."""

    euler = "euler"
    euler_a = "euler_a"  # Euler ancestral
    dpmpp_2m = "dpmpp_2m"  # DPM++ 2M
    ddim = "ddim"
    unipc = "unipc"


_SCHEDULERS = {EMBEDDED: frozenset({Scheduler.dpmpp_2m, Scheduler.unipc})}


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


# The statuses a job never leaves: the job store's update script (shared/jobstore.py) is built from this set.
TERMINAL: frozenset[JobStatus] = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled})


class JobParams(BaseModel):
    """Everything about a job but its prompt: what a batch's prompts share. Unknown fields are refused, so a
    typo is an error rather than a silent default."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    negative_prompt: str | None = Field(None, max_length=2000)
    width: Side | None = Field(None, description="unset: the model's native size")
    height: Side | None = Field(None, description="unset: the model's native size")
    steps: int | None = Field(None, ge=1, le=150, description="unset: the model's default")
    guidance: float | None = Field(None, ge=0.0, le=30.0, description="classifier-free guidance scale")
    scheduler: Scheduler | None = Field(None, description="the sampler; unset: the model's own")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="image n uses seed + n; unset: random")
    num_images: int = Field(1, ge=1, le=16)
    model: str | None = Field(None, min_length=1, max_length=200, description="unset: the server's default")
    priority: Priority = Field(Priority.normal, description="high runs before normal, normal before low")

    def misfits(self, model: str) -> list[tuple[str, Any, str]]:
        """What `model` cannot take here: (field, value, why) for each. The API asks with the model a job will
        run on (the server's default when `model` is unset)."""
        lo, hi = side_limits(model)
        found: list[tuple[str, Any, str]] = [(name, side, f"{name} {side} is outside {lo}..{hi} for model {model!r}")
                 for name, side in (("width", self.width), ("height", self.height))
                 if side is not None and not lo <= side <= hi]
        if self.scheduler is not None and self.scheduler not in schedulers_for(model):
            found.append(("scheduler", self.scheduler.value, f"model {model!r} takes the schedulers "
                          f"{sorted(s.value for s in schedulers_for(model))}"))
        return found

    @model_validator(mode="after")
    def _fits_model(self) -> JobParams:
        misfits = self.misfits(self.model) if self.model else []
        if misfits:
            raise ValueError(misfits[0][2])
        return self


class JobRequest(JobParams):
    """What a client asks for: one prompt, its parameters, and where to send its events."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, json_schema_extra={"examples": [
        {"prompt": "a purple cat with a red hat", "num_images": 2, "seed": 42, "priority": "high"}]})

    prompt: str = Field(min_length=1, max_length=2000)
    webhook_url: AnyHttpUrl | None = Field(None, description="receives signed `job.*` events (Standard Webhooks)")


class Attempt(BaseModel):
    """One try at an image: its seed, its scores (overall and by scorer), and why it was not good enough
    (None if it was)."""

    seed: int
    score: float | None = None
    scores: dict[str, float | None] = {}
    reason: str | None = None


class ImageOutput(BaseModel):
    index: int
    url: str
    key: str
    seed: int  # of the attempt kept
    score: float | None = None  # the lowest of `scores`: what the quality bar applies to
    scores: dict[str, float | None] = {}
    width: int
    height: int
    attempts: list[Attempt] = []
    nsfw: bool | None = Field(None, description="the safety checker's flag (GENFLEET_SAFETY); null: not checked")
    # Filled in by the API when it answers: a presigned GET URL (S3) or a local path; never stored.
    download_url: str | None = None


def _now() -> datetime:
    return datetime.now(UTC)


class Job(BaseModel):
    """The job record: stored in Redis, carried in the Celery message, returned by the API."""

    id: UUID = Field(default_factory=uuid4)
    status: JobStatus = JobStatus.queued
    request: JobRequest
    model: str
    seed: int
    tenant: str | None = None
    batch_id: UUID | None = None
    created_at: datetime = Field(default_factory=_now)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    outputs: list[ImageOutput] = []
    error: str | None = None
    attempts: int = 0
    worker: str | None = Field(None, description="the worker running it, or that ran it last")
    timings: dict[str, float] = {}

    @classmethod
    def new(cls, request: JobRequest, default_model: str, tenant: str | None = None, **fields: Any) -> Job:
        """A queued job. The seed is fixed here, so a redelivered message regenerates the same images."""
        seed = request.seed if request.seed is not None else secrets.randbelow(2**31)
        return cls(request=request, model=request.model or default_model, seed=seed, tenant=tenant, **fields)
