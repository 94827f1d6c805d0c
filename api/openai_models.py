"""`GET /v1/models` as OpenAI's SDK reads it: the models a job may ask for on this server."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from genfleet.api.auth import Who
from genfleet.api.openai_errors import OpenAIError, OpenAIRoute
from genfleet.api.state import AppState

router = APIRouter(prefix="/v1", tags=["openai"], route_class=OpenAIRoute)


def _model(name: str, default: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "genfleet", "default": name == default}


@router.get("/models")
def list_models(state: AppState, who: Who) -> dict[str, Any]:
    """Every model served here, the default first."""
    return {"object": "list", "data": [_model(m, state.settings.model) for m in state.settings.models]}


@router.get("/models/{model:path}")
def get_model(model: str, state: AppState, who: Who) -> dict[str, Any]:
    if model not in state.settings.models:
        raise OpenAIError(404, f"model {model!r} is not served here; choose one of {state.settings.models}",
                          param="model", code="model_not_found")
    return _model(model, state.settings.model)
