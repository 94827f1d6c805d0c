"""Per-key rate limits and image quotas, and backpressure on queue depth. Counted in Redis, so they hold across
every API replica. Async, on the event loop: a POST's admission takes no thread-pool hop (on two cores a hop cost
a third of a millisecond, more than the Redis calls it made).

Fixed windows named by their start (`...:rate:{key}:{minute}`, `...:quota:{key}:{day}`): a counter is INCRBY'd
and, if that went over the limit, given back in the same script, so a limit never counts what it refused and
`Retry-After` is simply the time to the window's end.
"""

from __future__ import annotations

import time

import redis.asyncio
from fastapi import HTTPException, status

from genfleet.shared import keys, metrics
from genfleet.shared.fairshare import ask_waiting, waiting_counts
from genfleet.shared.queue import model_queues, priority_lists
from genfleet.shared.settings import Settings

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


def _refuse(reason: str, detail: str, retry_after_s: float,
            code: int = status.HTTP_429_TOO_MANY_REQUESTS) -> HTTPException:
    metrics.REJECTED.labels(reason).inc()
    return HTTPException(code, detail, headers={"Retry-After": str(max(1, int(retry_after_s + 0.999)))})


class Limits:
    def __init__(self, r: redis.asyncio.Redis, settings: Settings) -> None:
        self.redis, self.settings = r, settings
        self._take = r.register_script(_TAKE)

    @staticmethod
    def _counter(name: str, key_id: str, window_s: int, now: float) -> tuple[str, float]:
        """The counter of the window `now` falls in, and the seconds left in that window."""
        start = int(now // window_s) * window_s
        return keys.rate_window(name, key_id, start), start + window_s - now

    async def _take_from(self, counter: str, amount: int, limit: int, window_s: int) -> bool:
        """Takes `amount` from the window's allowance; False (and nothing taken) if that would pass `limit`."""
        return bool(await self._take(keys=[counter], args=[amount, limit, window_s + 60]) == 1)

    async def admit(self, key_id: str, images: int) -> None:
        """Raises 429 (rate or quota) before anything is recorded; call `refund` if the enqueue then fails."""
        s, now = self.settings, time.time()
        rate, rate_left = self._counter("rate", key_id, 60, now)
        if s.rate_limit_per_minute and not await self._take_from(rate, 1, s.rate_limit_per_minute, 60):
            raise _refuse("rate_limit", f"rate limit: {s.rate_limit_per_minute} requests a minute per API key",
                          rate_left)
        if s.quota_images_per_day:
            quota, left = self._counter("quota", key_id, 86400, now)
            if not await self._take_from(quota, images, s.quota_images_per_day, 86400):
                if s.rate_limit_per_minute:  # a refused request costs nothing: its rate unit goes back
                    await self.redis.decrby(rate, 1)
                raise _refuse("quota", f"daily quota: {s.quota_images_per_day} images per API key; "
                                       f"this request asks for {images}", left)

    async def refund(self, key_id: str, images: int, rate: bool = False) -> None:
        """Gives back what `admit` took: the images, and with `rate` the request's rate unit too."""
        now = time.time()
        if self.settings.quota_images_per_day:
            await self.redis.decrby(self._counter("quota", key_id, 86400, now)[0], images)
        if rate and self.settings.rate_limit_per_minute:
            await self.redis.decrby(self._counter("rate", key_id, 60, now)[0], 1)

    async def check_depth(self, adding: int = 1) -> None:
        """503 when the queue already holds more waiting messages than `GENFLEET_MAX_QUEUE_DEPTH`."""
        pipe = self.redis.pipeline(transaction=False)
        # each list, and its tenants' backlogs behind it (shared/fairshare.py)
        ask_waiting(pipe, [n for q in model_queues(self.settings) for n in priority_lists(q)])
        depth = sum(waiting_counts(await pipe.execute()))
        if depth + adding > self.settings.max_queue_depth:
            raise self.backpressure(depth)

    def backpressure(self, depth: int) -> HTTPException:
        return _refuse("backpressure", f"the queue holds {depth} waiting jobs (bound "
                                       f"{self.settings.max_queue_depth}); try again later", 10,
                       status.HTTP_503_SERVICE_UNAVAILABLE)
