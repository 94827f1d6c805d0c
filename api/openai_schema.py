"""OpenAI's Images API requests, and the genfleet job each one becomes.

Only what genfleet can honour is accepted: a field OpenAI defines that genfleet cannot honour (`style`,
`output_compression`, a transparent `background`…) is refused with a 400 naming it, rather than ignored. Four
of genfleet's own fields may come along (`seed`, `negative_prompt`, `priority`, `steps`: the SDK's
`extra_body`). `quality` becomes steps as the model's registry entry says (shared/registry.py,
`ModelSpec.steps_for`), unless `steps` names them.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from genfleet.shared.registry import QUALITY_STEPS, Registry
from genfleet.shared.schema import JobRequest, OutputFormat, Priority, Task

Quality = Literal["auto", "low", "medium", "high", "standard", "hd", "xhigh", "max"]
SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")
assert set(Quality.__args__) == {"auto", *QUALITY_STEPS}  # type: ignore[attr-defined]


class ImageRequest(BaseModel):
    """What generations and edits share."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    prompt: str = Field(min_length=1)
    model: str | None = None
    n: int = Field(1, ge=1, le=16)
    size: str | None = Field(None, description="`WIDTHxHEIGHT`, or `auto`: the model's native size")
    response_format: Literal["url", "b64_json"] = "b64_json"
    output_format: OutputFormat = OutputFormat.png
    quality: Quality = "auto"
    background: Literal["auto", "opaque"] = "auto"  # genfleet's pictures are opaque
    moderation: Literal["auto"] = "auto"  # the server's GENFLEET_SAFETY applies
    user: str | None = Field(None, max_length=256, description="the end user, for the API's log")
    stream: bool = False
    partial_images: int | None = Field(None, ge=0, le=3, description="previews sent when streaming; unset: 2")
    # genfleet's own, through `extra_body`
    seed: int | None = None
    negative_prompt: str | None = None
    priority: Priority = Priority.normal
    steps: int | None = None

    def partials(self) -> int:
        return 2 if self.partial_images is None else self.partial_images


class ImageGeneration(ImageRequest):
    """`POST /v1/images/generations`."""


class ImageEdit(ImageRequest):
    """`POST /v1/images/edits`: its image and mask come as files beside these form fields."""


def parse(model: type[ImageRequest], data: dict[str, Any]) -> ImageRequest:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise RequestValidationError([{**err, "loc": ("body", *err["loc"])} for err in e.errors()]) from None


def size_of(size: str | None) -> tuple[int | None, int | None]:
    """(width, height) from `WIDTHxHEIGHT`; (None, None) for `auto` or unset; else 400 naming `size`."""
    if size is None or size == "auto":
        return None, None
    found = SIZE.match(size)
    if found is None:
        raise RequestValidationError([{"type": "value_error", "loc": ("body", "size"), "input": size,
                                       "msg": "size must be WIDTHxHEIGHT (such as 512x512) or auto"}])
    return int(found[1]), int(found[2])


def job_request(body: ImageRequest, default_model: str, registry: Registry, task: Task = Task.text_to_image,
                image: str | None = None, mask: str | None = None) -> JobRequest:
    """The genfleet job an OpenAI request asks for; a 400 (through RequestValidationError) names what does not
    fit, by the OpenAI request's names (api/openai_errors.py maps them)."""
    width, height = size_of(body.size)
    steps = body.steps if body.steps is not None else registry.spec(body.model or default_model).steps_for(body.quality)
    fields: dict[str, Any] = {
        "prompt": body.prompt, "model": body.model, "num_images": body.n, "width": width, "height": height,
        "steps": steps, "output_format": body.output_format,
        "seed": body.seed, "negative_prompt": body.negative_prompt, "priority": body.priority,
        "previews": body.stream and body.partials() > 0, "task": task, "image": image, "mask": mask}
    try:
        return JobRequest(**{k: v for k, v in fields.items() if v is not None})
    except ValidationError as e:
        raise RequestValidationError([{**err, "loc": ("body", *err["loc"])} for err in e.errors()]) from None
