"""Weighted fair share between tenants, within each priority of each model's queue.

kombu's Redis transport serves each priority list first come, first served, so one tenant's 10,000-job batch
would hold back every other tenant's job until it drained. Here a job's message first goes to its tenant's
backlog, and a dispatcher moves messages on into kombu's list (the *ready list*) in weighted fair order, only
while that list holds fewer than `window` messages. Everything after the ready list (delivery, leases, acks,
restores, the reconciler's checks) is kombu's and genfleet's as before; a message restored from a dead worker goes
straight back to the ready list, since it had its turn.

The order is start-time fair queueing: every tenant with a backlog has a virtual tag in a sorted set; the
dispatcher takes the lowest, moves one message, and raises that tenant's tag by 1 / weight. A tenant that arrives
starts at the clock (the tag last served), so its first job goes next whatever the others' backlogs. Choosing is
one ZRANGE and one ZADD: O(log tenants), whatever the queue's depth (docs/fair-share.md has the measurements).

Priorities still come first. Dispatch fills a queue's lists most urgent first, and while a more urgent list
still has messages waiting, whatever is ready in the less urgent lists is pulled back (to be sent on first
later): kombu's BRPOP names the lists in priority order, but it would take a low message the moment the high list
ran empty, before the next dispatch refilled it.

A per-tenant cap on jobs in flight parks a tenant that reaches it; the job store's terminal update releases a
slot (shared/jobstore.py), and the next dispatch unparks it. Dispatch runs inside every publish (the same Lua
call) and in each worker, on a thread woken as it receives messages (workers/refill.py).

The scripts build backlog and job key names from a prefix (which tenant is next is only known inside the
script), so they need a Redis that is not a Cluster: genfleet runs on one primary with replicas (Sentinel).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from genfleet.shared import keys
from genfleet.shared.schema import TERMINAL, Job
from genfleet.shared.settings import Settings

PUBLIC = "public"  # the tenant of open access (no GENFLEET_API_KEYS), and of a record without one
ANY_TENANT = "*"  # in GENFLEET_TENANT_MAX_RUNNING: the cap of every tenant not named
DRAIN = 2**31  # a window no list reaches: what dispatch uses with fair share off

LIST_PARTS = ("active", "parked", "clock", "waiting", "returned")  # a ready list's own keys (shared/keys.py `fair`)
PER_LIST = 1 + len(LIST_PARTS)  # the list and its keys, in the order the scripts take them (`fair_keys`)
SHARED = 4  # then the hashes every list shares


def fair_keys(ready_lists: Sequence[str]) -> list[str]:
    """The scripts' KEYS for one queue: per priority list, most urgent first, the list and its fair-share keys;
    then the shared hashes."""
    per = [k for name in ready_lists for k in (name, *(keys.fair(name, part) for part in LIST_PARTS))]
    return [*per, keys.FAIR_WEIGHTS, keys.FAIR_CAPS, keys.FAIR_INFLIGHT, keys.FAIR_DISPATCHED]


def prefixes(ready_lists: Sequence[str]) -> list[str]:
    """The scripts' ARGV prefixes for one queue: the job key's, then each list's backlog key's."""
    return [keys.job(""), *(keys.backlog(name, "") for name in ready_lists)]


def tenant_of(job: Job) -> str:
    return job.tenant or PUBLIC


# Functions the submit, publish and dispatch scripts share. A queue's lists come as Q, most urgent first, each a
# table of its keys (`fair_keys`, from offset 0) and prefixes (`prefixes`, from offset `a`).
LUA = """
local TERMINAL = {""" + ", ".join(f"{s.value} = true" for s in sorted(TERMINAL)) + """}
local function queue(k, a, n)
  local S, Q = """ + str(SHARED) + """, {}
  local shared = #k - S
  for i = 1, n do
    local o = (i - 1) * """ + str(PER_LIST) + """
    Q[i] = {ready = k[o + 1], active = k[o + 2], parked = k[o + 3], clock = k[o + 4], waiting = k[o + 5],
            returned = k[o + 6], weights = k[shared + 1], caps = k[shared + 2], inflight = k[shared + 3],
            dispatched = k[shared + 4], job_prefix = ARGV[a], backlog_prefix = ARGV[a + i]}
  end
  return Q
end
local function capped(F, t)
  local cap = tonumber(redis.call('HGET', F.caps, t) or '0')
  return cap > 0 and tonumber(redis.call('HGET', F.inflight, t) or '0') >= cap
end
-- a capped tenant's message goes on: its job counts in flight until its terminal update (once, however often
-- its message is sent), unless it is already terminal (cancelled while it waited)
local function count(F, t, msg)
  if redis.call('HEXISTS', F.caps, t) == 0 then return end
  local ok, m = pcall(cjson.decode, msg)
  local id = ok and type(m) == 'table' and type(m['headers']) == 'table' and m['headers']['id']
  if not id then return end
  local rec = redis.call('GET', F.job_prefix .. id)
  if not rec or TERMINAL[cjson.decode(rec)['status']] then return end
  if redis.call('HSETNX', F.dispatched, id, t) == 1 then redis.call('HINCRBY', F.inflight, t, 1) end
end
local function clock(F) return tonumber(redis.call('GET', F.clock) or '0') end
local function unpark(F)
  local parked = redis.call('ZRANGE', F.parked, 0, -1, 'WITHSCORES')
  for i = 1, #parked, 2 do
    if not capped(F, parked[i]) then
      redis.call('ZREM', F.parked, parked[i])
      redis.call('ZADD', F.active, math.max(tonumber(parked[i + 1]), clock(F)), parked[i])
    end
  end
end
local function move(F, msg)
  redis.call('LPUSH', F.ready, msg)
  redis.call('DECR', F.waiting)
end
-- one list: messages pulled back from it first (they had their turn), then the lowest tag's tenant, one at a time
local function fill(F, window)
  unpark(F)
  while redis.call('LLEN', F.ready) < window do
    local back = redis.call('RPOP', F.returned)
    if back then
      move(F, back)
    else
      local top = redis.call('ZRANGE', F.active, 0, 0, 'WITHSCORES')
      if #top == 0 then break end
      local t, tag = top[1], tonumber(top[2])
      local backlog = F.backlog_prefix .. t
      local msg = redis.call('RPOP', backlog)
      if msg then
        move(F, msg)
        redis.call('SET', F.clock, tag)
        count(F, t, msg)
      end
      if not msg or redis.call('LLEN', backlog) == 0 then
        redis.call('ZREM', F.active, t)
      else
        local next_tag = tag + 1 / (tonumber(redis.call('HGET', F.weights, t)) or 1)
        if capped(F, t) then
          redis.call('ZREM', F.active, t)
          redis.call('ZADD', F.parked, next_tag, t)
        else
          redis.call('ZADD', F.active, next_tag, t)
        end
      end
    end
  end
end
-- messages ready in a less urgent list go back while a more urgent one waits its turn (kombu's BRPOP would
-- otherwise take them the moment the urgent list runs empty, before the next dispatch)
local function pull_back(F)
  local n = 0
  while true do
    local msg = redis.call('RPOP', F.ready)
    if not msg then break end
    redis.call('LPUSH', F.returned, msg)
    n = n + 1
  end
  if n > 0 then redis.call('INCRBY', F.waiting, n) end
end
-- a queue, most urgent list first; a list still waiting after its fill holds every less urgent one back
local function dispatch(Q, window)
  for i = 1, #Q do
    fill(Q[i], window)
    if tonumber(redis.call('GET', Q[i].waiting) or '0') > 0 then
      for j = i + 1, #Q do pull_back(Q[j]) end
      return
    end
  end
end
-- msgs go to tenant t's backlog of list F, then the queue Q dispatches; window 0: fair share off, straight on
local function push(Q, F, t, weight, cap, window, msgs)
  if window == 0 then
    for _, msg in ipairs(msgs) do redis.call('LPUSH', F.ready, msg) end
    return
  end
  redis.call('HSET', F.weights, t, weight)
  if cap > 0 then redis.call('HSET', F.caps, t, cap) else redis.call('HDEL', F.caps, t) end
  local backlog = F.backlog_prefix .. t
  for _, msg in ipairs(msgs) do redis.call('LPUSH', backlog, msg) end
  redis.call('INCRBY', F.waiting, #msgs)
  if not redis.call('ZSCORE', F.active, t) and not redis.call('ZSCORE', F.parked, t) then
    if capped(F, t) then redis.call('ZADD', F.parked, clock(F), t) else redis.call('ZADD', F.active, clock(F), t) end
  end
  dispatch(Q, window)
end
"""

# KEYS: the queue's fair keys. ARGV: lists in the queue, the target list's place in it (1: most urgent), tenant,
# weight, cap, window, then the prefixes, then the messages.
_PUBLISH = LUA + """
local n, at = tonumber(ARGV[1]), tonumber(ARGV[2])
local Q = queue(KEYS, 7, n)
local msgs = {}
for i = 8 + n, #ARGV do msgs[#msgs + 1] = ARGV[i] end
push(Q, Q[at], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), msgs)
return #msgs
"""

# KEYS: the queue's fair keys. ARGV: lists in the queue, window, then the prefixes.
_DISPATCH = LUA + """
dispatch(queue(KEYS, 3, tonumber(ARGV[1])), tonumber(ARGV[2]))
return 0
"""


@dataclass(frozen=True)
class Fairness:
    """What publishers tell the scripts: each tenant's weight and cap, and the ready list's window (0: off)."""

    window: int = 0
    weights: dict[str, float] = field(default_factory=dict)
    caps: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, settings: Settings) -> Fairness:
        window = settings.fair_share_window or max(1, settings.max_batch // 2)
        return cls(window if settings.fair_share else 0, settings.tenant_weights, settings.tenant_max_running)

    def args(self, tenant: str) -> list[Any]:
        """A push's tenant, weight, cap and window."""
        cap = self.caps.get(tenant, self.caps.get(ANY_TENANT, 0))
        return [tenant, self.weights.get(tenant, 1.0), cap, self.window]


class FairShare:
    """The publish and dispatch scripts on one Redis client."""

    def __init__(self, r: redis.Redis, fairness: Fairness) -> None:
        self.redis, self.fairness = r, fairness
        self.publish_script = r.register_script(_PUBLISH)
        self.dispatch_script = r.register_script(_DISPATCH)

    def publish_call(self, ready_lists: Sequence[str], at: int, tenant: str, messages: Sequence[str]
                     ) -> tuple[list[str], list[Any]]:
        """The publish script's KEYS and ARGV for `messages` of one tenant, bound for the list `ready_lists[at]`
        of a queue whose lists are `ready_lists`, most urgent first."""
        return fair_keys(ready_lists), [len(ready_lists), at + 1, *self.fairness.args(tenant),
                                        *prefixes(ready_lists), *messages]

    def dispatch(self, queues: Sequence[Sequence[str]]) -> None:
        """Moves backlogged messages on in each queue (its lists, most urgent first) until its lists hold the
        window, or a more urgent list still has messages waiting. With fair share off, it moves every one on:
        backlogs left from while it was on must not be stranded."""
        if not queues:
            return
        window = self.fairness.window or DRAIN
        pipe = self.redis.pipeline(transaction=False)
        for lists in queues:
            self.dispatch_script(keys=fair_keys(lists), args=[len(lists), window, *prefixes(lists)], client=pipe)
        pipe.execute()


def ask_waiting(pipe: Any, ready_lists: Sequence[str]) -> None:
    """Queues on `pipe` (a blocking or an asyncio pipeline) the reads that `waiting_counts` adds up."""
    for name in ready_lists:
        pipe.llen(name)
        pipe.get(keys.fair(name, "waiting"))


def waiting_counts(replies: Sequence[Any]) -> list[int]:
    """Per list, from the replies to `ask_waiting`: the list's length plus its backlogs' count."""
    return [int(replies[i]) + int(replies[i + 1] or 0) for i in range(0, len(replies), 2)]


def waiting(r: redis.Redis, ready_lists: Sequence[str]) -> list[int]:
    """Messages waiting in each of `ready_lists`: in the list itself, and behind it (its tenants' backlogs, and
    what was pulled back from it)."""
    pipe = r.pipeline(transaction=False)
    ask_waiting(pipe, ready_lists)
    return waiting_counts(pipe.execute())


def backlogs(r: redis.Redis, ready_list: str, most: int = 0) -> list[str]:
    """The tenants' backlogs of `ready_list` that hold messages: its active and parked tenants' (with `most`, that
    many of each at most, the next to be served first). A message leaves a backlog only onward, to the list."""
    pipe = r.pipeline(transaction=False)
    pipe.zrange(keys.fair(ready_list, "active"), 0, most - 1)
    pipe.zrange(keys.fair(ready_list, "parked"), 0, most - 1)
    return [keys.backlog(ready_list, t.decode()) for part in pipe.execute() for t in part]


def returned(ready_list: str) -> str:
    """What was pulled back from `ready_list` while a more urgent list waited; it goes on again first."""
    return keys.fair(ready_list, "returned")
