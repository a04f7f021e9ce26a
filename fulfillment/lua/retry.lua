-- retry.lua: record a failed attempt whose error is retryable, and when to retry.
-- A: id, step, epoch, attempt, error_type, error, delay_us, grace_us, max_attempts
--    + common settings.
-- Replies v = retry (next_at), failed (attempts exhausted) | cancelled (compensations, send),
--   stale.
local K = order_keys()
local A = cjson.decode(ARGV[1])
local id = A.id
A.outcome = 'failed: ' .. A.error_type
local why = fence(K, A)
if why then return discard(K, A, why) end

local now = now_us()
local sk = 's:' .. A.step .. ':'
local o = redis.call('HMGET', K.record, 'started', 'cancel_requested', 'cancel_reason')
local duration = int(now - tonumber(o[1]))
local err = A.error_type .. ': ' .. A.error
redis.call('ZREM', K.leases, id)
redis.call('HSET', K.record, sk .. 'error', err, 'updated', int(now))

local event = {step = A.step, attempt = A.attempt, error_type = A.error_type, error = A.error,
  duration_us = duration, retryable = true}
if o[2] == '1' then
  redis.call('HSET', K.record, sk .. 'state', 'failed')
  emit(K, 'attempt_failed', event)
  local comps, send = finish(K, id, 'cancelled', now,
    {type = 'OrderCancelled', message = o[3], step = A.step}, A)
  emit(K, 'order_cancelled', {reason = o[3], step = A.step, compensations = comps})
  return reply({v = 'cancelled', compensations = comps, send = send})
end
if A.max_attempts > 0 and A.attempt >= A.max_attempts then
  redis.call('HSET', K.record, sk .. 'state', 'failed')
  event.exhausted = true
  emit(K, 'attempt_failed', event)
  local msg = A.error .. ' (gave up after ' .. A.attempt .. ' attempts)'
  local comps, send = finish(K, id, 'failed', now,
    {type = A.error_type, message = msg, step = A.step}, A)
  emit(K, 'order_failed', {type = A.error_type, message = msg, step = A.step,
    compensations = comps})
  return reply({v = 'failed', compensations = comps, send = send})
end

local next_at = now + A.delay_us
redis.call('HDEL', K.record, 'suspect')
redis.call('HSET', K.record, 'phase', 'retry_wait', 'next_at', int(next_at),
  sk .. 'state', 'retrying')
redis.call('ZADD', K.timers, next_at + A.grace_us, id)
redis.call('ZADD', K.retrying, now, id)
event.retry_in_us = int(A.delay_us)
event.next_at = int(next_at)
emit(K, 'attempt_failed', event)
return reply({v = 'retry', next_at = int(next_at)})
