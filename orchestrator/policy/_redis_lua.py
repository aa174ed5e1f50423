"""The Lua scripts the Redis limit store runs on the server: each one atomic step.

Redis runs a script to its end with no other command in between, so reading
states, deciding and writing them is one step for every orchestrator sharing
the server. Numbers cross the boundary as strings: Redis turns a Lua number
in a reply into an integer, which would cut a TAT or a wait to whole seconds.
"""

from __future__ import annotations

__all__ = ["ACQUIRE", "ADD_TOKENS", "COUNT_CALL"]

# GCRA on the server's clock, the same arithmetic as
# orchestrator.policy._limitstore.gcra (clamp of a TAT too far ahead, epsilon,
# longest wait names the refusing cell), over every cell of a call: all
# charged only if all allow.
# KEYS: one state key per cell. ARGV: interval and tolerance of each cell, in
# KEYS' order. Reply: {allowed 0/1, retry_after, refused index (1-based, 0: none)}.
# Each written key expires when its TAT has passed (then it carries nothing:
# a fresh key behaves the same), plus a second of margin.
ACQUIRE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local epsilon = 1e-9
local charged, clamped = {}, {}
local wait, refused = 0, 0
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local tolerance = tonumber(ARGV[2 * i])
  local stored = tonumber(redis.call('GET', key))
  local tat = now
  if stored ~= nil and stored >= now then tat = stored end
  local ceiling = now + tolerance + interval
  if tat > ceiling then
    tat = ceiling
    clamped[#clamped + 1] = {key, tat}
  end
  local late = tat - tolerance - now
  if late > epsilon then
    if late > wait then wait, refused = late, i end
  else
    charged[#charged + 1] = {key, tat + interval}
  end
end
local writes = charged
if refused > 0 then writes = clamped end
for _, write in ipairs(writes) do
  local ttl_ms = math.ceil((write[2] - now) * 1000) + 1000
  redis.call('SET', write[1], string.format('%.17g', write[2]), 'PX', ttl_ms)
end
if refused > 0 then
  return {0, string.format('%.17g', wait), refused}
end
return {1, '0', 0}
"""

# One more call of a budget if it has used fewer than both maxima (-1: no limit).
# KEYS: the budget's hash. ARGV: max_calls, max_tokens, ttl seconds.
# Reply: {counted 0/1, calls, tokens} after the step.
COUNT_CALL = """
local used = redis.call('HMGET', KEYS[1], 'calls', 'tokens')
local calls = tonumber(used[1]) or 0
local tokens = tonumber(used[2]) or 0
local max_calls = tonumber(ARGV[1])
local max_tokens = tonumber(ARGV[2])
if (max_calls >= 0 and calls >= max_calls) or (max_tokens >= 0 and tokens >= max_tokens) then
  return {0, calls, tokens}
end
calls = redis.call('HINCRBY', KEYS[1], 'calls', 1)
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {1, calls, tokens}
"""

# Settle a call's tokens. KEYS: the budget's hash. ARGV: tokens, ttl seconds.
ADD_TOKENS = """
redis.call('HINCRBY', KEYS[1], 'tokens', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""
