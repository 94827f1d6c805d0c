"""The API keys of `GENFLEET_API_KEYS` (`tenant:key,tenant:key`). Unset: the API is open (embedded default).

Keys are kept only as SHA-256 digests and compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import logging

log = logging.getLogger(__name__)


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class KeyRing:
    def __init__(self, spec: str | None) -> None:
        self._keys: list[tuple[bytes, str]] = []
        for pair in (spec or "").split(","):
            if not pair.strip():
                continue
            tenant, sep, key = pair.strip().partition(":")
            if not sep or not tenant or not key:
                raise ValueError("GENFLEET_API_KEYS must be comma-separated tenant:key pairs")
            self._keys.append((key_digest(key), tenant))
        if not self._keys:
            log.warning("GENFLEET_API_KEYS is unset: the API is open (no auth), every caller is tenant 'public'")

    @property
    def open(self) -> bool:
        return not self._keys

    @property
    def tenants(self) -> set[str]:
        """The tenants the keys name; `public` alone when the API is open."""
        return {tenant for _, tenant in self._keys} or {"public"}

    def tenant(self, key: str) -> str | None:
        d = key_digest(key)
        found = None
        for digest, tenant in self._keys:  # no early exit: the time taken does not depend on which key matched
            if hmac.compare_digest(d, digest):
                found = tenant
        return found
