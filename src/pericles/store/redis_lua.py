"""The Redis store's scripts: every write that must be atomic runs as one Lua script.

The scripts hold no lifecycle rule of their own: which state may follow which is generated
from `model.TRANSITIONS`, and the caller (the service) has already decided the move. The
scripts only make "check the stored state, then write" one step, so two processes (a worker
and a reaper, two workers given the same message) can never both win.
"""

from __future__ import annotations

from pericles.model import TERMINAL, TRANSITIONS, Status

#: The states whose payloads a worker keeps alive: they carry a liveness deadline.
LIVE = (Status.WORKING, Status.PAUSED)
#: The order of the per-state index keys passed to the scripts after the fixed keys.
STATES = tuple(Status)


def _lua_set(names: list[str]) -> str:
    return "{" + ", ".join(f'["{name}"] = true' for name in sorted(names)) + "}"


def _tables() -> str:
    allowed = ", ".join(
        f'["{state.value}"] = {_lua_set([s.value for s in TRANSITIONS[state]])}' for state in STATES
    )
    return (
        f"local allowed = {{{allowed}}}\n"
        f"local terminal = {_lua_set([s.value for s in TERMINAL])}\n"
        f"local live = {_lua_set([s.value for s in LIVE])}\n"
        f"local states = {{{', '.join(repr(s.value) for s in STATES)}}}\n"
    )


_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

#: KEYS: record, seq counter, all-records index, state index of pending, and optionally
#: the broker's list of the payload's queue. ARGV: id, state, wire status, record JSON,
#: changes channel, and the Celery message to push on that list. Returns 1, or 0 when the
#: id is taken. Record and message in one step: none is stored but not queued.
ADD = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local seq = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'status', ARGV[3], 'rec', ARGV[4], 'seq', seq)
redis.call('ZADD', KEYS[3], seq, ARGV[1])
redis.call('ZADD', KEYS[4], seq, ARGV[1])
if KEYS[5] then redis.call('LPUSH', KEYS[5], ARGV[6]) end
redis.call('PUBLISH', ARGV[5], 's' .. ARGV[1] .. '\\n' .. ARGV[4])
return 1
"""

#: KEYS: record, deadlines, then one index per state in `STATES` order, then the ended index.
#: ARGV: id, state before ('' for any), new state, wire status, record JSON, ttl ms,
#: '1' to move only if the liveness deadline has passed (the reaper), changes channel,
#: the worker that runs it ('' for none).
#: Returns {'ok'} or {'gone'} / {'stale', state, status} / {'alive'}.
MOVE = (
    _tables()
    + _NOW_MS
    + """
local id = ARGV[1]
local cur = redis.call('HGET', KEYS[1], 'state')
if not cur then return {'gone'} end
local status = redis.call('HGET', KEYS[1], 'status')
local new = ARGV[3]
local owner = redis.call('HGET', KEYS[1], 'worker')
-- Compare and set (what the service always asks): the state must still be the one the move
-- was decided on, the move one the transition table allows (staying in a state that is not
-- terminal is an update), and a claimed payload is moved only by its claimant (who may have
-- started it) or the reaper. Without a state before, a put replaces, as in every store.
if ARGV[2] ~= '' then
  if cur ~= ARGV[2] then return {'stale', cur, status} end
  if cur == 'pending' and owner and owner ~= ARGV[9] then return {'stale', cur, status} end
  if not (allowed[cur][new] or (cur == new and not terminal[cur])) then
    return {'stale', cur, status}
  end
end
if ARGV[7] == '1' then
  local due = redis.call('ZSCORE', KEYS[2], id)
  if (not due) or tonumber(due) > now then return {'alive'} end
end
redis.call('HSET', KEYS[1], 'state', new, 'status', ARGV[4], 'rec', ARGV[5])
if ARGV[9] ~= '' then redis.call('HSET', KEYS[1], 'worker', ARGV[9]) end
if cur ~= new then
  local seq = redis.call('HGET', KEYS[1], 'seq')
  for i, name in ipairs(states) do
    if name == cur then redis.call('ZREM', KEYS[2 + i], id) end
    if name == new then redis.call('ZADD', KEYS[2 + i], seq, id) end
  end
end
-- Retention's order: when each payload ended, in microseconds by Redis's clock (see EVICT):
-- scripts run one at a time, so two ends never share a score and the order is exact.
if terminal[new] and not terminal[cur] then
  redis.call('ZADD', KEYS[3 + #states], tonumber(t[1]) * 1000000 + tonumber(t[2]), id)
end
if live[new] or (new == 'pending' and owner) then
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[6]), id)
else
  redis.call('ZREM', KEYS[2], id)
end
-- The terminal state is the output's end marker: APPEND refuses anything after it.
-- The record as written goes with the news: a reader sees each state, however fast.
-- With the state before: API replicas tell callback events ("started") from updates.
redis.call('PUBLISH', ARGV[8], 's' .. id .. ' ' .. cur .. '\\n' .. ARGV[5])
return {'ok'}
"""
)

#: KEYS: record, the stream's output log. ARGV: id, stream, entry id, coff, data, total,
#: head end, tail start, combined total, changes channel, entry ids to delete...
#: Returns 1, 0 once the record is terminal (nothing written), -1 when it is gone.
APPEND = (
    _tables()
    + """
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return -1 end
if terminal[st] then return 0 end
local s = ARGV[2]
if ARGV[3] ~= '' then redis.call('XADD', KEYS[2], ARGV[3], 'c', ARGV[4], 'd', ARGV[5]) end
redis.call('HSET', KEYS[1], 'o:' .. s .. ':total', ARGV[6], 'o:' .. s .. ':head', ARGV[7],
  'o:' .. s .. ':tail', ARGV[8], 'o:total', ARGV[9])
for i = 11, #ARGV do redis.call('XDEL', KEYS[2], ARGV[i]) end
redis.call('PUBLISH', ARGV[10], 'o' .. ARGV[1])
return 1
"""
)

#: KEYS: record, deadlines, cancel flag. ARGV: id, worker, ttl ms. Renews the deadline of a
#: live record this worker runs. Returns {state, worker, cancel flag} ('' when absent).
RENEW = (
    _tables()
    + _NOW_MS
    + """
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return {'', '', ''} end
local owner = redis.call('HGET', KEYS[1], 'worker') or ''
if (live[st] or st == 'pending') and owner == ARGV[2] then
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
end
return {st, owner, redis.call('GET', KEYS[3]) or ''}
"""
)

#: KEYS: record, deadlines, and optionally the worker's host set. ARGV: id, worker, ttl ms.
#: The start guard: a pending payload no worker has claimed becomes this worker's, with a
#: liveness deadline, noted in the host set (for the host janitor). Returns 1, else 0.
CLAIM = (
    _NOW_MS
    + """
if redis.call('HGET', KEYS[1], 'state') ~= 'pending' then return 0 end
if redis.call('HEXISTS', KEYS[1], 'worker') == 1 then return 0 end
redis.call('HSET', KEYS[1], 'worker', ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
if KEYS[3] then redis.call('SADD', KEYS[3], ARGV[1]) end
return 1
"""
)

#: KEYS: deadlines. Returns the ids whose liveness deadline has passed (by Redis's clock).
EXPIRED = (
    _NOW_MS
    + """
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 1000)
"""
)

#: KEYS: the ended index, the all-records index, deadlines, then one index per state in
#: `STATES` order. ARGV: ended payloads to keep, seconds to keep them ('' for ever), changes
#: channel, key prefix, most to evict in one call. Forgets the ended payloads past either
#: bound, oldest first, as `delete` does; one script, so replicas running it at once evict
#: each payload once. Returns how many it evicted.
EVICT = (
    _tables()
    + _NOW_MS
    + """
local ended, limit = KEYS[1], tonumber(ARGV[5])
local ids = {}
local over = redis.call('ZCARD', ended) - tonumber(ARGV[1])
if over > 0 then ids = redis.call('ZRANGE', ended, 0, math.min(over, limit) - 1) end
if ARGV[2] ~= '' and #ids < limit then
  -- Both lists are prefixes of the same order: skip those the count took already.
  local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local horizon = now_us - math.floor(tonumber(ARGV[2]) * 1000000)
  local old = redis.call('ZRANGEBYSCORE', ended, '-inf', horizon, 'LIMIT', #ids, limit - #ids)
  for _, id in ipairs(old) do ids[#ids + 1] = id end
end
local evicted = 0
for _, id in ipairs(ids) do
  local rec = ARGV[4] .. '{' .. id .. '}'
  local st = redis.call('HGET', rec, 'state')
  redis.call('ZREM', ended, id)
  if (not st) or terminal[st] then
    redis.call('DEL', rec, rec .. ':out:stdout', rec .. ':out:stderr', rec .. ':cancel',
      rec .. ':deliveries')
    for i = 2, #KEYS do redis.call('ZREM', KEYS[i], id) end
    if st then
      redis.call('PUBLISH', ARGV[3], 's' .. id)
      evicted = evicted + 1
    end
  end
end
return evicted
"""
)

#: KEYS: record. ARGV: the claim's field. 1 for the first caller while the record exists.
CLAIM_EVENT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
return redis.call('HSETNX', KEYS[1], ARGV[1], '1')
"""
