"""Who is calling: a Bearer key from `GENFLEET_API_KEYS` (api/keyring.py) names its tenant; with no keys
configured every caller is tenant `public`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, TypeVar
from uuid import UUID

from fastapi import Depends, HTTPException, Request, status

from genfleet.api.keyring import key_digest
from genfleet.api.state import AppState
from genfleet.shared.batches import Batch
from genfleet.shared.schema import Job

Owned = TypeVar("Owned", Job, Batch)


@dataclass(frozen=True)
class Caller:
    tenant: str
    key_id: str  # what limits are counted by: a prefix of the key's digest, never the key


async def caller(request: Request, state: AppState) -> Caller:
    """Who is calling; 401 for a missing or wrong key when keys are configured. (async: pure CPU, so no
    thread hop for it)"""
    ring = state.keys
    if ring.open:
        return Caller("public", "public")
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    tenant = ring.tenant(key.strip()) if scheme.lower() == "bearer" else None
    if tenant is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or invalid API key",
                            headers={"WWW-Authenticate": "Bearer"})
    return Caller(tenant, key_digest(key.strip()).hex()[:16])


Who = Annotated[Caller, Depends(caller)]


def owned(record: Owned | None, who: Caller, kind: str, record_id: UUID) -> Owned:
    """`record` if it exists and belongs to the caller's tenant; otherwise 404: another tenant's job or batch is
    reported as absent, not forbidden, so ids cannot be probed."""
    if record is None or record.tenant != who.tenant:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"{kind} {record_id} not found")
    return record
