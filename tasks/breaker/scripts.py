"""The breaker's decisions, each one Lua script.

Every script is timed by Redis's own clock (``TIME``), so processes on hosts with skewed clocks still agree,
and exactly one caller sees each transition (it announces it; nobody else does). The keys and the ARGV
prefix are :data:`tasks.breaker.state.ALL_KEYS` and :meth:`tasks.breaker.state.BreakerConfig.args`; the
scripts are run by tasks/breaker/store.py.
"""

from __future__ import annotations

# KEYS: state, force, failures, latency, trial, sample.
# ARGV[1..10]: threshold, window_s, open_s, p95_s, latency_window_s, sample_every, min_samples,
# trial_ttl_ms, half_retry_ms, max_samples; the script's own arguments follow from ARGV[11].
PRELUDE = """
local K_STATE, K_FORCE, K_FAIL = KEYS[1], KEYS[2], KEYS[3]
local K_LAT, K_TRIAL, K_SAMPLE = KEYS[4], KEYS[5], KEYS[6]
local threshold, window, open_s = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local p95_limit, lat_window, every = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local min_samples, trial_ttl_ms, half_retry_ms = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local max_samples = tonumber(ARGV[10])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function fmt(x) return string.format('%.3f', x) end
local function p95(since)
  local members = redis.call('ZRANGEBYSCORE', K_LAT, '(' .. fmt(since), '+inf')
  local n = #members
  if n == 0 or n < min_samples then return nil, n end
  local values = {}
  for i, m in ipairs(members) do values[i] = tonumber(string.match(m, '^([^:]+)')) end
  table.sort(values)
  return values[math.ceil(0.95 * n)], n
end
local function move(before, after, reason)
  local fields = {'state', after, 'reason', reason, 'changed_at', fmt(now)}
  if after == 'open' then
    table.insert(fields, 'opened_at'); table.insert(fields, fmt(now))
    table.insert(fields, 'open_until')
    table.insert(fields, reason == 'forced' and '' or fmt(now + open_s))
    redis.call('HINCRBY', K_STATE, 'trips', 1)
  end
  redis.call('HSET', K_STATE, unpack(fields))
  if after ~= 'half' then redis.call('DEL', K_TRIAL) end
  redis.call('DEL', K_SAMPLE)
  if after == 'closed' then redis.call('DEL', K_FAIL) end
  return before .. '>' .. after
end
local st = redis.call('HMGET', K_STATE, 'state', 'reason', 'opened_at', 'open_until')
local state, reason = st[1] or 'closed', st[2] or ''
if not st[1] then redis.call('HSET', K_STATE, 'state', 'closed', 'reason', '', 'trips', 0) end
local forced = redis.call('EXISTS', K_FORCE) == 1
"""

# ARGV[11]: this call's token. Returns {admitted, state, reason, retry_after_ms (-1: until cleared), role,
# transition}.
ADMIT = (
    PRELUDE
    + """
local token = ARGV[11]
if forced then
  local tr = ''
  if state ~= 'open' or reason ~= 'forced' then tr = move(state, 'open', 'forced') end
  return {0, 'open', 'forced', -1, '', tr}
end
local tr = ''
if state == 'open' then
  local until_ = tonumber(st[4]) or ((tonumber(st[3]) or now) + open_s)
  if now < until_ then return {0, 'open', reason, math.ceil((until_ - now) * 1000), '', ''} end
  tr = move('open', 'half', 'errors')
  state, reason = 'half', 'errors'
end
if state == 'half' then
  if reason == 'latency' then
    local n = redis.call('INCR', K_SAMPLE)
    if (n - 1) % every == 0 then return {1, 'half', reason, 0, 'sample', tr} end
    return {0, 'half', reason, half_retry_ms, '', tr}
  end
  if redis.call('SET', K_TRIAL, token, 'NX', 'PX', trial_ttl_ms) then
    return {1, 'half', reason, 0, 'trial', tr}
  end
  return {0, 'half', reason, half_retry_ms, '', tr}
end
return {1, 'closed', '', 0, 'normal', tr}
"""
)

# ARGV[11..13]: token, failed (1|0), latency seconds. Returns {state, reason, transition, failures, p95}.
RECORD = (
    PRELUDE
    + """
local token, failed, seconds = ARGV[11], ARGV[12] == '1', tonumber(ARGV[13])
redis.call('ZADD', K_LAT, fmt(now), fmt(seconds) .. ':' .. token)
redis.call('ZREMRANGEBYSCORE', K_LAT, '-inf', fmt(now - lat_window))
local extra = redis.call('ZCARD', K_LAT) - max_samples
if extra > 0 then redis.call('ZREMRANGEBYRANK', K_LAT, 0, extra - 1) end
if failed then
  redis.call('ZADD', K_FAIL, fmt(now), token)
  redis.call('HSET', K_STATE, 'last_fail', fmt(now))
end
redis.call('ZREMRANGEBYSCORE', K_FAIL, '-inf', fmt(now - window))
local failures = redis.call('ZCARD', K_FAIL)
local p = p95(now - lat_window)
local is_trial = redis.call('GET', K_TRIAL) == token
if is_trial then redis.call('DEL', K_TRIAL) end
local tr = ''
if not forced then
  local tripped = failed and failures >= threshold
  if state == 'half' and reason ~= 'latency' then
    if is_trial and failed then tr = move('half', 'open', 'errors')
    elseif is_trial then tr = move('half', 'closed', '')
    elseif tripped then tr = move('half', 'open', 'errors') end
  elseif state == 'half' then
    if tripped then tr = move('half', 'open', 'errors')
    elseif p == nil or p <= p95_limit then tr = move('half', 'closed', '') end
  elseif state == 'closed' then
    if tripped then tr = move('closed', 'open', 'errors')
    elseif p ~= nil and p > p95_limit then tr = move('closed', 'half', 'latency') end
  end
  if tr ~= '' then
    local after = redis.call('HMGET', K_STATE, 'state', 'reason')
    state, reason = after[1], after[2]
  end
end
return {state, reason, tr, failures, p and fmt(p) or ''}
"""
)

# ARGV[11..13]: command (force | clear | set), target state, by/reason. Returns the transition or ''.
CONTROL = (
    PRELUDE
    + """
local cmd, target, extra = ARGV[11], ARGV[12], ARGV[13]
if cmd == 'force' then
  redis.call('SET', K_FORCE, extra)
  if state ~= 'open' or reason ~= 'forced' then return move(state, 'open', 'forced') end
  return ''
end
if cmd == 'clear' then
  redis.call('DEL', K_FORCE, K_FAIL, K_LAT, K_TRIAL, K_SAMPLE)
  if state ~= 'closed' or reason ~= '' then return move(state, 'closed', '') end
  return ''
end
if forced then return '' end
if state ~= target then return move(state, target, extra) end
return ''
"""
)

# Read-only: everything GET /ops/breaker shows, as JSON, from one consistent moment.
SNAPSHOT = (
    PRELUDE
    + """
local h = redis.call('HGETALL', K_STATE)
local out = {}
for i = 1, #h, 2 do out[h[i]] = h[i + 1] end
local p, samples = p95(now - lat_window)
out.state, out.reason = state, reason
if forced then out.state, out.reason = 'open', 'forced' end
out.forced = forced and (redis.call('GET', K_FORCE) or '') or ''
out.failures = redis.call('ZCOUNT', K_FAIL, '(' .. fmt(now - window), '+inf')
out.samples = samples
out.p95_s = p and fmt(p) or ''
out.trial_in_progress = redis.call('EXISTS', K_TRIAL)
out.sample_counter = redis.call('GET', K_SAMPLE) or '0'
out.now = fmt(now)
return cjson.encode(out)
"""
)
