"""`POST /v1/verify`: an image's Content Credentials, validated, and its watermark (shared/verification.py).

The body is the image itself, as for `POST /v1/inputs`. Nothing is stored. It answers for any image, whoever
made it; a caller still needs a key, as for every `/v1` route, since reading a manifest and a watermark costs
CPU.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool

from genfleet.api.auth import Who
from genfleet.api.inputs import FORMATS, too_large_image
from genfleet.api.state import AppState
from genfleet.shared.verification import NotAnImage, Verification, verify

router = APIRouter(prefix="/v1", tags=["provenance"])


@router.post("/verify", response_model=Verification,
             responses={413: {"description": "over GENFLEET_MAX_INPUT_BYTES"},
                        422: {"description": "not a PNG, JPEG or WebP image"}},
             openapi_extra={"requestBody": {"required": True, "content": {
                 t: {"schema": {"type": "string", "format": "binary"}} for _, t in FORMATS.values()}}})
async def verify_image(request: Request, state: AppState, who: Who) -> Response:
    """Whether the image carries a valid manifest, who signed it, its assertions, and its watermark's payload
    with its bit accuracy."""
    data = await request.body()
    limit = state.settings.max_input_bytes
    if len(data) > limit:
        return too_large_image(len(data), limit)
    try:
        report = await run_in_threadpool(verify, data, state.settings)
    except NotAnImage as e:
        raise RequestValidationError([{"type": "value_error", "loc": ("body",), "input": None,
                                       "msg": f"the body is {e}"}]) from None
    return Response(report.model_dump_json(), media_type="application/json")
