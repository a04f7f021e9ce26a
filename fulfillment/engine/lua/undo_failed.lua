-- undo_failed.lua: the running claim of a compensation failed with a retryable error
-- (the service is down); it goes back to pending, and its own message is sent again
-- after the delay its step's policy gives for its failures so far (same message id).
-- A: id, action, claim, step (whose policy applies), error_type, error + common settings.
-- Replies v = retry (delay_us) | stale (reason).
local K, A = transition()
local id = A.id
local p = 'c:' .. A.action
local why = stale_claim(K.record, A)
if why then return reply({v = 'stale', reason = why}) end
local now = now_us()
local pol = policy(K, A.step)
local failures = redis.call('HINCRBY', K.record, p .. ':failures', 1)
local delay = backoff(pol, failures)
redis.call('HSET', K.record, p, 'pending', p .. ':sent', int(now + delay),
  p .. ':error', A.error_type .. ': ' .. A.error)
emit(K, 'compensation_failed', {action = A.action, claim = A.claim, error_type = A.error_type,
  error = A.error, failures = failures, retry_in_us = int(delay)})
schedule_compensations(K, id, A)
return reply({v = 'retry', delay_us = int(delay)})
