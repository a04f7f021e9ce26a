-- fail.lua: a non-retryable error (a business error): the order fails now, or is
-- cancelled if a cancel was accepted while the attempt ran.
-- A: id, step, epoch, attempt, error_type, error + common settings.
-- Replies v = failed | cancelled (compensations, send), stale.
local K = order_keys()
local A = cjson.decode(ARGV[1])
local id = A.id
A.outcome = 'failed: ' .. A.error_type
local why = fence(K, A)
if why then return discard(K, A, why) end

local now = now_us()
local sk = 's:' .. A.step .. ':'
local o = redis.call('HMGET', K.record, 'started', 'cancel_requested', 'cancel_reason')
redis.call('HSET', K.record, sk .. 'state', 'failed', sk .. 'error', A.error_type .. ': ' .. A.error)
emit(K, 'attempt_failed', {step = A.step, attempt = A.attempt, error_type = A.error_type,
  error = A.error, duration_us = int(now - tonumber(o[1])), retryable = false})
if o[2] == '1' then
  local comps, send = finish(K, id, 'cancelled', now,
    {type = 'OrderCancelled', message = o[3], step = A.step, refused = true}, A)
  emit(K, 'order_cancelled', {reason = o[3], step = A.step, compensations = comps})
  return reply({v = 'cancelled', compensations = comps, send = send})
end
local comps, send = finish(K, id, 'failed', now,
  {type = A.error_type, message = A.error, step = A.step, refused = true}, A)
emit(K, 'order_failed', {type = A.error_type, message = A.error, step = A.step,
  compensations = comps})
return reply({v = 'failed', compensations = comps, send = send})
