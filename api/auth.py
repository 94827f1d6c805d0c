"""Bearer API keys from `GENFLEET_API_KEYS` (`tenant:key,tenant:key`). Unset: the API is open (embedded default).

Keys are kept only as SHA-256 digests and compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass

from fastapi import HTTPException, Request, status

log = logging.getLogger(__name__)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


@dataclass(frozen=True)
class Caller:
    tenant: str
    key_id: str  # what limits are counted by: a prefix of the key's digest, never the key


class KeyRing:
    def __init__(self, spec: str | None) -> None:
        self._keys: list[tuple[bytes, str]] = []
        for pair in (spec or "").split(","):
            if not pair.strip():
                continue
            tenant, sep, key = pair.strip().partition(":")
            if not sep or not tenant or not key:
                raise ValueError("GENFLEET_API_KEYS must be comma-separated tenant:key pairs")
            self._keys.append((_digest(key), tenant))
        if not self._keys:
            log.warning("GENFLEET_API_KEYS is unset: the API is open (no auth), every caller is tenant 'public'")

    @property
    def open(self) -> bool:
        return not self._keys

    def tenant(self, key: str) -> str | None:
        d = _digest(key)
        found = None
        for digest, tenant in self._keys:  # no early exit: the time taken does not depend on which key matched
            if hmac.compare_digest(d, digest):
                found = tenant
        return found


async def caller(request: Request) -> Caller:
    """Who is calling; 401 for a missing or wrong key when keys are configured. (async: pure CPU, so no
    thread hop for it)"""
    ring: KeyRing = request.app.state.keys
    if ring.open:
        return Caller("public", "public")
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    tenant = ring.tenant(key.strip()) if scheme.lower() == "bearer" else None
    if tenant is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or invalid API key",
                            headers={"WWW-Authenticate": "Bearer"})
    return Caller(tenant, _digest(key.strip()).hex()[:16])
