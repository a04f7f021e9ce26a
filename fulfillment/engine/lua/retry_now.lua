-- retry_now.lua: a step waiting out its backoff runs at once. It is queued again under
-- a new epoch, so the retry message a worker holds for later becomes stale.
-- A: id, by + common settings.
-- Replies v = dispatch (step, epoch, steps, summary) | noop (reason) | finished (status)
--   | missing.
local K, A = transition()
local id = A.id
local o = redis.call('HMGET', K.record, 'status', 'step', 'phase', 'epoch', 'steps', 'summary')
local status, step, phase, epoch = o[1], o[2], o[3], tonumber(o[4])
if not status then return reply({v = 'missing'}) end
if ENDED[status] then return reply({v = 'finished', status = status}) end
if phase ~= 'retry_wait' then
  return reply({v = 'noop', reason = 'no step waits for a retry (step ' .. tostring(step) ..
    ' is ' .. tostring(phase) .. ')'})
end
local now = now_us()
queue_step(K, id, step, epoch + 1, now, A, {phase = phase}, {'s:' .. step .. ':state', 'queued'})
emit(K, 'retried_now', {step = step, epoch = epoch + 1, by = A.by})
return reply({v = 'dispatch', step = step, epoch = epoch + 1, steps = split(o[5]),
  summary = decoded(o[6]), limits = limits_of(K)})
