"""`POST /v1/images/edits` as OpenAI's SDK sends it (multipart), made into an image-to-image or inpaint job.

OpenAI's mask is a PNG whose transparent pixels mark what is repainted; genfleet's is white there. The mask is
converted here (alpha under half: repainted) and both images are stored as inputs (api/inputs.py), checked as any
input is: a damaged image, a size the model cannot take or a mask of another size is a 400 naming the field.
"""

from __future__ import annotations

import io
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from genfleet.api.auth import Caller
from genfleet.api.inputs import Unusable, store_input
from genfleet.api.openai_errors import OpenAIError
from genfleet.api.openai_schema import ImageEdit, ImageRequest, job_request, parse
from genfleet.api.state import State
from genfleet.shared.schema import JobRequest, Task

IMAGE_FIELDS = ("image", "image[]")
TRANSPARENT = 128  # alpha below this is "transparent": repainted


def white_where_transparent(data: bytes) -> bytes:
    """An OpenAI mask (transparent: repaint) as genfleet's (white: repaint), a greyscale PNG."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            if "A" not in im.getbands() and "transparency" not in im.info:
                raise Unusable("a mask with no alpha channel: its transparent pixels mark what is repainted")
            alpha = im.convert("RGBA").getchannel("A")
    except (OSError, ValueError) as e:
        raise Unusable(f"not an image this server can read ({e})") from None
    buf = io.BytesIO()
    alpha.point(lambda a: 255 if a < TRANSPARENT else 0).save(buf, format="PNG")
    return buf.getvalue()


def _invalid(field: str, message: str) -> RequestValidationError:
    return RequestValidationError([{"type": "value_error", "loc": ("body", field), "input": None, "msg": message}])


async def _read(upload: Any, field: str, limit: int) -> bytes:
    if not isinstance(upload, UploadFile):
        raise _invalid(field, f"{field} must be a file")
    data = await upload.read()
    if len(data) > limit:
        raise OpenAIError(413, f"{field} is {len(data)} bytes; the limit is {limit} (GENFLEET_MAX_INPUT_BYTES)",
                          param=field)
    return data


def _stored(data: bytes, field: str, state: State, convert: bool = False) -> str:
    try:
        return store_input(white_where_transparent(data) if convert else data, state).id
    except Unusable as e:
        raise _invalid(field, f"{field} is {e}") from None


async def edit_request(request: Request, state: State, who: Caller) -> tuple[ImageRequest, JobRequest]:
    """The OpenAI request and its job: image-to-image, or inpaint when a mask comes with it."""
    form = await request.form()
    images = [f for name in IMAGE_FIELDS for f in form.getlist(name)]
    if len(images) != 1:
        raise _invalid("image", f"send exactly one image (got {len(images)}): genfleet edits one picture a job")
    limit = state.settings.max_input_bytes
    image = await _read(images[0], "image", limit)
    mask = await _read(form["mask"], "mask", limit) if "mask" in form else None
    fields = {k: v for k, v in form.multi_items() if k not in (*IMAGE_FIELDS, "mask")}
    body = parse(ImageEdit, fields)
    image_id = await run_in_threadpool(_stored, image, "image", state)
    mask_id = None if mask is None else await run_in_threadpool(_stored, mask, "mask", state, True)
    task = Task.image_to_image if mask_id is None else Task.inpaint
    return body, job_request(body, state.settings.model, state.settings.registry, task, image_id, mask_id)
