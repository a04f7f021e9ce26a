-- compensation_failed.lua: the running claim of a compensation failed with a
-- retryable error (the service is down); it goes back to pending, and its own
-- message is sent again after `delay_us` (same message id).
-- A: id, action, claim, error_type, error, delay_us + common settings.
-- Replies v = retry | stale (reason).
local K = order_keys()
local A = cjson.decode(ARGV[1])
local id = A.id
local p = 'c:' .. A.action
local why = stale_claim(K.record, A)
if why then return reply({v = 'stale', reason = why}) end
local now = now_us()
redis.call('HSET', K.record, p, 'pending', p .. ':sent', int(now + A.delay_us),
  p .. ':error', A.error_type .. ': ' .. A.error)
emit(K, 'compensation_failed', {action = A.action, claim = A.claim, error_type = A.error_type,
  error = A.error, retry_in_us = int(A.delay_us)})
schedule_compensations(K, id, A)
return reply({v = 'retry'})
