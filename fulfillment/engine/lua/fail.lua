-- fail.lua: a non-retryable error (a business error, or a failure around the activity
-- such as input the workflow's model refuses): the run fails now, or is cancelled if a
-- cancel was accepted while the attempt ran.
-- A: id, step, epoch, attempt, error_type, error, refused (false: the step's effect may
--    have happened, so it is undone too; default true: the service refused, so it did
--    nothing) + common settings.
-- Replies v = failed | cancelled (compensating, compensations, send), stale.
local K, A = transition()
local id = A.id
A.outcome = 'failed: ' .. A.error_type
local sk = 's:' .. A.step .. ':'
local o = redis.call('HMGET', K.record, 'status', 'step', 'phase', 'epoch', sk .. 'attempts',
  'started', 'cancel_requested', 'cancel_reason', 'created', 'steps', 'cancel_by')
local why = stale_fields(o, A)
if why then return discard(K, A, why, o[1] ~= nil) end

local now = now_us()
redis.call('HSET', K.record, sk .. 'state', 'failed', sk .. 'error', A.error_type .. ': ' .. A.error)
emit(K, 'attempt_failed', {step = A.step, attempt = A.attempt, error_type = A.error_type,
  error = A.error, duration_us = int(now - tonumber(o[6])), retryable = false})
local cur = {status = o[1], created = o[9], phase = 'running', steps = o[10]}
local cancel = nil
if o[7] == '1' then cancel = {reason = o[8], by = o[11]} end
return fail_run(K, id, now, {type = A.error_type, message = A.error, step = A.step,
  refused = A.refused ~= false}, A, cur, cancel)
