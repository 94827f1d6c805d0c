"""The job store's two Lua scripts (shared/jobstore.py): the update every status change goes through, and the
atomic submit of a single job. Each is one atomic step, so a record and everything counted from it (the batch's
counts, the indexes, fair share's slots, the tenant's usage) change together or not at all."""

from __future__ import annotations

from genfleet.shared.fairshare import LUA, PER_LIST, SHARED
from genfleet.shared.schema import TERMINAL

# KEYS: job, event stream, batch counts (a hash: total, running, succeeded, failed, cancelled), queued index,
# running index, queued by tenant, fair share's in-flight and dispatched hashes, the tenant's usage hash for the
# hour, lifetime usage. ARGV: new JSON, ttl seconds, new status, stream maxlen, "1" if the job belongs to a batch,
# job id, now, tenant, images, accelerator seconds, queue seconds, usage ttl.
# Returns -1 no record, 0 refused (already terminal), 1 written, 2 written and it was the batch's last job.
# A terminal update also frees the job's slot under its tenant's cap (shared/fairshare.py) and, for a job that
# ran (succeeded or failed), adds it to its tenant's usage: in the same step, so usage is the sum of the records.
UPDATE = LUA + """
local function terminal(s) return TERMINAL[s] == true end
local cur = redis.call('GET', KEYS[1])
if not cur then return -1 end
local old = cjson.decode(cur)['status']
if terminal(old) then return 0 end
local new = ARGV[3]
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
if old == 'queued' and new ~= 'queued' and redis.call('ZREM', KEYS[4], ARGV[6]) == 1 then
  redis.call('HINCRBY', KEYS[6], ARGV[8], -1)
end
if terminal(new) then
  local t = redis.call('HGET', KEYS[8], ARGV[6])
  if t then
    redis.call('HDEL', KEYS[8], ARGV[6])
    redis.call('HINCRBY', KEYS[7], t, -1)
  end
  if new == 'succeeded' or new == 'failed' then
    local fields = {images = ARGV[9], jobs = 1, accelerator_s = ARGV[10], queue_s = ARGV[11]}
    for f, v in pairs(fields) do
      redis.call('HINCRBYFLOAT', KEYS[9], f, v)
      redis.call('HINCRBYFLOAT', KEYS[10], ARGV[8] .. '|' .. f, v)
    end
    redis.call('EXPIRE', KEYS[9], ARGV[12])
  end
end
if new == 'running' then redis.call('ZADD', KEYS[5], ARGV[7], ARGV[6])
elseif old == 'running' then redis.call('ZREM', KEYS[5], ARGV[6]) end
if old ~= new or new == 'running' then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'event', new, 'data', ARGV[1])
  redis.call('EXPIRE', KEYS[2], ARGV[2])
end
if ARGV[5] ~= '1' or old == new then return 1 end
if old == 'running' then redis.call('HINCRBY', KEYS[3], 'running', -1) end
redis.call('HINCRBY', KEYS[3], new, 1)
if not terminal(new) then return 1 end
local c = redis.call('HMGET', KEYS[3], 'total', """ + ", ".join(f"'{s.value}'" for s in sorted(TERMINAL)) + """)
local finished = 0
for i = 2, #c do finished = finished + (tonumber(c[i]) or 0) end
if finished >= (tonumber(c[1]) or 0) then return 2 end
return 1
"""

# KEYS: job, queued index, queued by tenant, the fair keys of the job's queue (shared/fairshare.py), then pairs
# (ready list, its backlog's count) whose waiting messages count against the bound. ARGV: record JSON, ttl
# seconds, message, now, job id, bound (0: none), the queue's lists, the job's list's place among them, the
# fair-share push's tenant, weight, cap and window, then the prefixes.
# 1 if stored and sent on, 0 if the id exists, -(depth) - 1 if as many messages wait as the bound allows.
SUBMIT = LUA + """
local bound, n, at = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local fair_keys = n * PER_LIST + SHARED
if bound > 0 then
  local depth = 0
  for i = 4 + fair_keys, #KEYS, 2 do
    depth = depth + redis.call('LLEN', KEYS[i]) + tonumber(redis.call('GET', KEYS[i + 1]) or '0')
  end
  if depth + 1 > bound then return -depth - 1 end
end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5])
redis.call('HINCRBY', KEYS[3], ARGV[9], 1)
local k = {}
for i = 4, 3 + fair_keys do k[#k + 1] = KEYS[i] end
local Q = queue(k, 13, n)
push(Q, Q[at], ARGV[9], tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12]), {ARGV[3]})
return 1
""".replace("PER_LIST", str(PER_LIST)).replace("SHARED", str(SHARED))
USAGE_TTL_S = 400 * 24 * 3600  # a year and a month of hourly usage: GET /v1/usage reads it
