"""`Idempotency-Key` on POSTs, scoped to the caller's tenant.

The first request with a key claims it (SET NX) as `pending` with the request's fingerprint; when its job or
batch is queued the claim becomes `done` with the resource id and lives for `GENFLEET_IDEMPOTENCY_TTL_S`.
A repeat with the same body gets the same resource and nothing is queued again; another body gets 422; a
repeat while the first is still in progress gets 409. A pending claim expires within a minute, so a crashed
request does not block its key for a day. Async, on the event loop, as admission is (api/limits.py).
"""

from __future__ import annotations

import hashlib
import json

import redis.asyncio
from fastapi import HTTPException, status
from fastapi.exceptions import RequestValidationError

from genfleet.shared import keys

_PENDING_TTL_S = 60


def fingerprint(path: str, body: str) -> str:
    return hashlib.sha256(f"{path}\n{body}".encode()).hexdigest()


class Idempotency:
    def __init__(self, r: redis.asyncio.Redis, ttl_s: int) -> None:
        self.redis, self.ttl_s = r, ttl_s

    @staticmethod
    def _key(tenant: str, key: str) -> str:
        return keys.idempotency(tenant, hashlib.sha256(key.encode()).hexdigest())

    async def begin(self, tenant: str, key: str, fp: str) -> str | None:
        """Claims `key`; returns None to go ahead, or the id of what an earlier identical request made."""
        name = self._key(tenant, key)
        if await self.redis.set(name, json.dumps({"fp": fp, "state": "pending"}), nx=True, ex=_PENDING_TTL_S):
            return None
        raw = await self.redis.get(name)
        if raw is None:  # expired between the two calls: claim it now
            return await self.begin(tenant, key, fp)
        held = json.loads(raw)
        if held["fp"] != fp:
            raise RequestValidationError([{"type": "value_error", "loc": ("header", "idempotency-key"),
                                           "input": key, "msg": "this Idempotency-Key was used with another "
                                                                "request body; use a new key"}])
        if held["state"] == "pending":
            raise HTTPException(status.HTTP_409_CONFLICT, "a request with this Idempotency-Key is in progress")
        return str(held["id"])

    async def complete(self, tenant: str, key: str, fp: str, resource_id: str) -> None:
        await self.redis.set(self._key(tenant, key), json.dumps({"fp": fp, "state": "done", "id": resource_id}),
                             ex=self.ttl_s)

    async def abandon(self, tenant: str, key: str) -> None:
        await self.redis.delete(self._key(tenant, key))
