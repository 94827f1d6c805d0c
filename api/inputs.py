"""Input images of image-to-image and inpaint jobs: uploaded with `POST /v1/inputs`, or named by a URL of an
object already in this server's storage. Every input is read and decoded here, at the edge, so a job whose
image is missing, not an image, too large, or whose mask does not match its image gets a 422 naming the field,
and nothing is queued.

Uploads are stored under `inputs/{sha256}.{ext}`: the id is the content's hash, so uploading the same picture
twice stores it once. An input is never fetched from elsewhere (no request to a URL a client chose): a URL is
mapped to a key of the configured storage, or refused.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import Any, TypeVar
from uuid import UUID

from fastapi import APIRouter, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from genfleet.api.admission import Loc
from genfleet.api.auth import Caller, Who
from genfleet.api.state import AppState, State
from genfleet.shared.schema import DEFAULT_STRENGTH, JobParams, Task

router = APIRouter(prefix="/v1", tags=["inputs"])
FORMATS = {"PNG": ("png", "image/png"), "JPEG": ("jpg", "image/jpeg"), "WEBP": ("webp", "image/webp")}
INPUTS = "inputs/"
P = TypeVar("P", bound=JobParams)  # a JobRequest, or a batch's shared JobParams


class InputView(BaseModel):
    """A stored input image: `id` is what a job's `image` or `mask` names."""

    id: str
    key: str
    url: str
    width: int
    height: int
    format: str


class Unusable(ValueError):
    """An input that is not an image this server takes; the message says why."""


@dataclass(frozen=True)
class Decoded:
    width: int
    height: int
    format: str


def decode(data: bytes, max_pixels: int) -> Decoded:
    """Checks that `data` is a whole PNG, JPEG or WebP picture of at most `max_pixels` pixels."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format not in FORMATS:
                raise Unusable(f"a {im.format} image; send PNG, JPEG or WebP")
            if im.width * im.height > max_pixels:
                raise Unusable(f"{im.width}x{im.height} is over {max_pixels} pixels (GENFLEET_MAX_INPUT_PIXELS)")
            im.load()  # the whole picture: a truncated file fails here, not on the worker
            return Decoded(im.width, im.height, im.format)
    except (UnidentifiedImageError, Image.DecompressionBombError) as e:
        raise Unusable(f"not an image this server can read ({e})") from None
    except OSError as e:
        raise Unusable(f"a damaged image ({e})") from None


def store_input(data: bytes, state: State) -> InputView:
    """Checks and stores an input image (blocking); Unusable says why it cannot be one."""
    decoded = decode(data, state.settings.max_input_pixels)
    digest = hashlib.sha256(data).hexdigest()
    ext, content_type = FORMATS[decoded.format]
    key = f"{INPUTS}{digest}.{ext}"
    state.storage.put(key, data, content_type, if_absent=True)
    return InputView(id=digest, key=key, url=state.storage.url(key), width=decoded.width, height=decoded.height,
                     format=decoded.format.lower())


@router.post("/inputs", status_code=status.HTTP_201_CREATED, response_model=InputView,
             responses={413: {"description": "over GENFLEET_MAX_INPUT_BYTES"},
                        422: {"description": "not a PNG, JPEG or WebP image, or too many pixels"}},
             openapi_extra={"requestBody": {"required": True, "content": {
                 t: {"schema": {"type": "string", "format": "binary"}} for _, t in FORMATS.values()}}})
async def upload_input(request: Request, state: AppState, who: Who) -> Response:
    """Stores an input image (the request body, as is) and returns its id."""
    data = await request.body()
    limit = state.settings.max_input_bytes
    if len(data) > limit:
        return too_large_image(len(data), limit)
    try:
        view = await run_in_threadpool(store_input, data, state)
    except Unusable as e:
        raise RequestValidationError([{"type": "value_error", "loc": ("body",), "input": None,
                                       "msg": f"the upload is {e}"}]) from None
    return Response(view.model_dump_json(), status.HTTP_201_CREATED, media_type="application/json")


def too_large_image(size: int, limit: int) -> JSONResponse:
    return JSONResponse({"detail": [{"type": "too_large", "loc": ["body"], "input": None, "msg": f"the image is "
                                     f"{size} bytes; the limit is {limit} (GENFLEET_MAX_INPUT_BYTES)"}]}, 413)


def _owned_key(key: str, state: State, who: Caller) -> bool:
    """Whether the caller may use `key` as an input: an upload, an object outside genfleet's own layout, or an
    image of one of the caller's own jobs (another tenant's job reads as absent)."""
    first, _, rest = key.partition("/")
    if first == "flagged":
        first = rest.partition("/")[0]
    try:
        job_id = UUID(first)
    except ValueError:
        return first != "batches"
    job = state.store.get(job_id)
    return job is not None and job.tenant == who.tenant


def _key(ref: str, state: State, who: Caller) -> str:
    if len(ref) == 64 and all(c in "0123456789abcdef" for c in ref):  # an upload's id
        for ext, _ in FORMATS.values():
            if state.storage.exists(f"{INPUTS}{ref}.{ext}"):
                return f"{INPUTS}{ref}.{ext}"
        raise Unusable(f"no input {ref} was uploaded here")
    key = state.storage.key_of(ref)
    if key is None:
        raise Unusable("not an input id, nor a URL of an object in this server's storage")
    if not _owned_key(key, state, who) or not state.storage.exists(key):
        raise Unusable(f"no object {key!r} in this server's storage")
    return key


def _read(ref: str, state: State, who: Caller) -> tuple[str, Decoded]:
    key = _key(ref, state, who)
    return key, decode(state.storage.get(key), state.settings.max_input_pixels)


def resolve(params: P, model: str, state: State, who: Caller, loc: Loc = ("body",)) -> P:
    """`params` with its inputs named by storage key, its size the image's and its strength set; or a 422 with
    one entry per field at fault (an image whose size `model` cannot take is one). A text-to-image job comes
    back as it is."""
    if params.task is Task.text_to_image:
        return params
    errors: list[dict[str, Any]] = []
    found: dict[str, tuple[str, Decoded]] = {}
    for name in ("image", "mask"):
        ref = getattr(params, name)
        if ref is None:
            continue
        try:
            found[name] = _read(ref, state, who)
        except Unusable as e:
            errors.append({"type": "value_error", "loc": (*loc, name), "input": ref, "msg": f"{name}: {e}"})
    if "image" in found:
        image = found["image"][1]
        if "mask" in found and (found["mask"][1].width, found["mask"][1].height) != (image.width, image.height):
            mask = found["mask"][1]
            errors.append({"type": "value_error", "loc": (*loc, "mask"), "input": params.mask,
                           "msg": f"the mask is {mask.width}x{mask.height}; the image is {image.width}x{image.height}"})
        for side, asked, has in (("width", params.width, image.width), ("height", params.height, image.height)):
            if asked is not None and asked != has:
                errors.append({"type": "value_error", "loc": (*loc, side), "input": asked,
                               "msg": f"{params.task.value} keeps the input's size: {side} is {has}"})
    if errors:
        raise RequestValidationError(errors)
    image = found["image"][1]
    resolved = params.model_copy(update={
        "image": found["image"][0], "mask": found["mask"][0] if "mask" in found else None,
        "width": image.width, "height": image.height,
        "strength": params.strength if params.strength is not None else DEFAULT_STRENGTH[params.task]})
    sizes = [why for field, _, why in state.settings.registry.spec(model).misfits(resolved, model)
             if field in ("width", "height")]
    if sizes:
        raise RequestValidationError([{"type": "value_error", "loc": (*loc, "image"), "input": params.image,
                                       "msg": f"the image is {image.width}x{image.height}: {'; '.join(sizes)}"}])
    return resolved
