-- gate.lua: the run reaches a gate: it waits for a human signal until the deadline.
-- A: id, step (the gate), epoch, task_id, worker, grace_us + common settings.
-- Replies v = waiting (deadline, remaining_us), done (already passed), stale, finished,
--   missing.
local K, A = transition()
local id = A.id
local gk = 'g:' .. A.step .. ':'
local sk = 's:' .. A.step .. ':'

local o = redis.call('HMGET', K.record, 'status', 'step', 'phase', 'epoch', 'task_id',
  'p:' .. A.step, 'created', gk .. 'deadline', sk .. 'state', sk .. 'result')
local status, step, phase, epoch = o[1], o[2], o[3], tonumber(o[4])
if not status then return reply({v = 'missing'}) end
if ENDED[status] then return reply({v = 'finished', status = status}) end
if step ~= A.step then
  if o[9] == 'completed' then return reply({v = 'done', result = o[10]}) end
  return reply({v = 'stale', reason = 'run is at step ' .. step})
end
if epoch ~= tonumber(A.epoch) then
  return reply({v = 'stale', reason = 'superseded by epoch ' .. epoch})
end
local now = now_us()
if phase == 'waiting' then
  if o[5] == A.task_id then
    -- Redelivered after its worker died: the countdown it scheduled may be lost too.
    return reply({v = 'waiting', deadline = o[8], remaining_us = int(tonumber(o[8]) - now)})
  end
  return reply({v = 'stale', reason = 'already waiting at the gate'})
end
if phase ~= 'queued' then return reply({v = 'stale', reason = 'step is ' .. tostring(phase)}) end

local timeout = us(decode_policy(o[6]).timeout)
local deadline = now + timeout
redis.call('HSET', K.record, 'status', 'waiting', 'phase', 'waiting', gk .. 'deadline',
  int(deadline), sk .. 'state', 'waiting', sk .. 'attempts', 1, 'worker', A.worker,
  'task_id', A.task_id, 'started', int(now), 'updated', int(now))
set_status(K, id, status, 'waiting', o[7], false)
schedule(K, id, deadline + A.grace_us)
emit(K, 'gate_waiting', {gate = A.step, deadline = int(deadline), timeout_us = int(timeout),
  worker = A.worker, task_id = A.task_id})
return reply({v = 'waiting', deadline = int(deadline), remaining_us = int(timeout)})
