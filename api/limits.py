"""Per-key rate limits and image quotas, and backpressure on queue depth. Counted in Redis, so they hold across
every API replica.

Fixed windows named by their start (`...:rate:{key}:{minute}`, `...:quota:{key}:{day}`): a counter is INCRBY'd
and, if that went over the limit, given back in the same script, so a limit never counts what it refused and
`Retry-After` is simply the time to the window's end.
"""

from __future__ import annotations

import time

import redis
from fastapi import HTTPException, status

from shared import metrics
from shared.queue import queue_depth
from shared.settings import Settings

# KEYS[1] counter; ARGV: amount, limit, expiry seconds. Returns 1 admitted, 0 refused.
_TAKE = """
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if n == tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
if n > tonumber(ARGV[2]) then
  redis.call('DECRBY', KEYS[1], ARGV[1])
  return 0
end
return 1
"""


def _refuse(reason: str, detail: str, retry_after_s: float, code: int = status.HTTP_429_TOO_MANY_REQUESTS):
    metrics.REJECTED.labels(reason).inc()
    return HTTPException(code, detail, headers={"Retry-After": str(max(1, int(retry_after_s + 0.999)))})


class Limits:
    def __init__(self, r: redis.Redis, settings: Settings) -> None:
        self.redis, self.settings = r, settings
        self._take = r.register_script(_TAKE)

    @staticmethod
    def _counter(name: str, key_id: str, window_s: int, now: float) -> tuple[str, float]:
        """The counter of the window `now` falls in, and the seconds left in that window."""
        start = int(now // window_s) * window_s
        return f"genfleet:{name}:{key_id}:{start}", start + window_s - now

    def _take_from(self, name: str, key_id: str, amount: int, limit: int, window_s: int) -> float | None:
        """Takes `amount` from this window's allowance; None if admitted, else the seconds to the window's end."""
        counter, left = self._counter(name, key_id, window_s, time.time())
        return None if self._take(keys=[counter], args=[amount, limit, window_s + 60]) == 1 else left

    def admit(self, key_id: str, images: int) -> None:
        """Raises 429 (rate or quota) before anything is recorded; call `refund` if the enqueue then fails."""
        s = self.settings
        if s.rate_limit_per_minute:
            left = self._take_from("rate", key_id, 1, s.rate_limit_per_minute, 60)
            if left is not None:
                raise _refuse("rate_limit", f"rate limit: {s.rate_limit_per_minute} requests a minute per API key",
                              left)
        if s.quota_images_per_day:
            left = self._take_from("quota", key_id, images, s.quota_images_per_day, 86400)
            if left is not None:
                raise _refuse("quota", f"daily quota: {s.quota_images_per_day} images per API key; "
                                       f"this request asks for {images}", left)

    def refund(self, key_id: str, images: int) -> None:
        if self.settings.quota_images_per_day:
            self.redis.decrby(self._counter("quota", key_id, 86400, time.time())[0], images)

    def check_depth(self, adding: int = 1) -> None:
        """503 when the queue already holds more waiting messages than `GENFLEET_MAX_QUEUE_DEPTH`."""
        depth = sum(queue_depth(self.redis, self.settings.queue).values())
        if depth + adding > self.settings.max_queue_depth:
            raise _refuse("backpressure", f"the queue holds {depth} waiting jobs (bound "
                                          f"{self.settings.max_queue_depth}); try again later", 10,
                          status.HTTP_503_SERVICE_UNAVAILABLE)
