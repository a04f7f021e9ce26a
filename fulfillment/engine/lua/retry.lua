-- retry.lua: record a failed attempt whose error is retryable, and when to retry it
-- (the step's policy in the run's plan decides the delay and the attempts allowed).
-- A: id, step, epoch, attempt, error_type, error, grace_us + common settings.
-- Replies v = retry (next_at, delay_us), failed (attempts exhausted) | cancelled
--   (compensating, compensations, send), stale.
local K, A = transition()
local id = A.id
A.outcome = 'failed: ' .. A.error_type
local sk = 's:' .. A.step .. ':'
local o = redis.call('HMGET', K.record, 'status', 'step', 'phase', 'epoch', sk .. 'attempts',
  'started', 'cancel_requested', 'cancel_reason', 'created', 'p:' .. A.step, 'steps',
  'cancel_by')
local why = stale_fields(o, A)
if why then return discard(K, A, why, o[1] ~= nil) end

local now = now_us()
local pol = decode_policy(o[10])
local err = A.error_type .. ': ' .. A.error
local event = {step = A.step, attempt = A.attempt, error_type = A.error_type, error = A.error,
  duration_us = int(now - tonumber(o[6])), retryable = true}
local cur = {status = o[1], created = o[9], phase = 'running', steps = o[11]}
if o[7] == '1' then
  redis.call('HSET', K.record, sk .. 'state', 'failed', sk .. 'error', err)
  emit(K, 'attempt_failed', event)
  return fail_run(K, id, now, {type = A.error_type, message = A.error, step = A.step}, A, cur,
    {reason = o[8], by = o[12]})
end
if pol.maximum_attempts > 0 and A.attempt >= pol.maximum_attempts then
  redis.call('HSET', K.record, sk .. 'state', 'failed', sk .. 'error', err)
  event.exhausted = true
  emit(K, 'attempt_failed', event)
  return fail_run(K, id, now, {type = A.error_type,
    message = A.error .. ' (gave up after ' .. A.attempt .. ' attempts)', step = A.step}, A, cur,
    nil)
end

local delay = backoff(pol, A.attempt)
local next_at = now + delay
redis.call('HSET', K.record, 'phase', 'retry_wait', 'next_at', int(next_at),
  sk .. 'state', 'retrying', sk .. 'error', err, 'updated', int(now))
schedule(K, id, next_at + A.grace_us)
redis.call('ZADD', K.retrying, now, id)
event.retry_in_us = int(delay)
event.next_at = int(next_at)
emit(K, 'attempt_failed', event)
return reply({v = 'retry', next_at = int(next_at), delay_us = int(delay)})
