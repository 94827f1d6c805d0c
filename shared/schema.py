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

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator

MAX_SEED = 2**63 - 1
EMBEDDED = "embedded"
MAX_ADAPTERS = 4

Side = Annotated[int, Field(multiple_of=8, ge=8, le=2048, description="pixels, a multiple of 8")]


class OutputFormat(StrEnum):
    """How a job's images are encoded and stored: PNG (lossless, with the job's provenance in text chunks), or
    JPEG and WebP (smaller; the provenance in EXIF)."""

    png = "png"
    jpeg = "jpeg"
    webp = "webp"

    @property
    def extension(self) -> str:
        return "jpg" if self is OutputFormat.jpeg else self.value

    @property
    def content_type(self) -> str:
        return f"image/{self.value}"


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


class Task(StrEnum):
    """What a job asks of its model: a picture from a prompt, one redrawn from an input image, or an input image
    with the region its mask marks (white) repainted."""

    text_to_image = "text-to-image"
    image_to_image = "image-to-image"
    inpaint = "inpaint"


# How far an input image is noised when a job gives no `strength`: diffusers' own defaults.
DEFAULT_STRENGTH = {Task.image_to_image: 0.8, Task.inpaint: 1.0}


class AdapterRef(BaseModel):
    """A LoRA adapter a job asks for, by the name the server declares it under (GENFLEET_ADAPTERS)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    name: str = Field(min_length=1, max_length=100)
    weight: float = Field(1.0, ge=-4.0, le=4.0, description="how strongly it applies; 1 as trained")


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

    task: Task = Field(Task.text_to_image, description="image-to-image and inpaint take an input `image`")
    image: str | None = Field(None, min_length=1, max_length=4000, description="the input image: an id from "
                              "`POST /v1/inputs`, or an s3:// or presigned URL of an object in this server's storage")
    mask: str | None = Field(None, min_length=1, max_length=4000, description="inpaint only: white is repainted; "
                             "given as `image` is, the same size as the image")
    strength: float | None = Field(None, gt=0.0, le=1.0, description="how far the input image is noised before "
                                   "it is redrawn; unset: 0.8 for image-to-image, 1 for inpaint")
    adapters: list[AdapterRef] = Field(default_factory=list, max_length=MAX_ADAPTERS,
                                       description="LoRA adapters by declared name, with weights")
    output_format: OutputFormat = Field(OutputFormat.png, description="how the images are encoded and stored")
    previews: bool = Field(False, description="publish a small preview to the job's events every few steps "
                           "(`preview` events); a job with a listener on its events gets them anyway")

    @field_validator("adapters")
    @classmethod
    def _distinct(cls, adapters: list[AdapterRef]) -> list[AdapterRef]:
        names = [a.name for a in adapters]
        if len(set(names)) != len(names):
            raise ValueError(f"each adapter may be named once: {names}")
        return adapters

    def task_misfits(self) -> list[tuple[str, Any, str]]:
        """What the job's task needs and lacks, or has and does not take: (field, value, why) for each."""
        needs, takes = _TASK_INPUTS[self.task]
        found: list[tuple[str, Any, str]] = []
        for name in ("image", "mask", "strength"):
            value = getattr(self, name)
            if value is None and name in needs:
                found.append((name, None, f"task {self.task.value} needs {name!r}"))
            elif value is not None and name not in takes:
                found.append((name, value, f"task {self.task.value} takes no {name!r}"))
        return found


# task: (the inputs it needs, the inputs it takes)
_TASK_INPUTS: dict[Task, tuple[set[str], set[str]]] = {
    Task.text_to_image: (set(), set()),
    Task.image_to_image: ({"image"}, {"image", "strength"}),
    Task.inpaint: ({"image", "mask"}, {"image", "mask", "strength"}),
}


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
    marks: list[str] = Field(default_factory=list, description="what the stored image carries: `c2pa` (signed "
                             "Content Credentials), `watermark` (an invisible watermark in its pixels)")
    # Filled in by the API when it answers: a presigned GET URL (S3) or a local path; never stored.
    download_url: str | None = None


class Usage(BaseModel):
    """What a job cost: its images' share of the accelerator time of each pipeline call that made them, quality
    retries included, and how long it waited in the queue before its first start."""

    accelerator_s: float = 0.0
    queue_s: float = 0.0


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
    usage: Usage | None = None  # set when it has run

    @classmethod
    def new(cls, request: JobRequest, default_model: str, tenant: str | None = None, **fields: Any) -> Job:
        """A queued job. The seed is fixed here, so a redelivered message regenerates the same images."""
        seed = request.seed if request.seed is not None else secrets.randbelow(2**31)
        return cls(request=request, model=request.model or default_model, seed=seed, tenant=tenant, **fields)
