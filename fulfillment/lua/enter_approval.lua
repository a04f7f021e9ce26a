-- enter_approval.lua: the order reaches the approval wait.
-- A: id, epoch, task_id, worker, grace_us + common settings.
-- Replies v = waiting (deadline, timeout_us), done (already approved), stale, finished, missing.
local K = order_keys()
local A = cjson.decode(ARGV[1])
local id = A.id

local o = redis.call('HMGET', K.record, 'status', 'step', 'phase', 'epoch', 'task_id',
  'approval_timeout_us', 'total', 'created', 'approval:deadline')
local status, step, phase, epoch = o[1], o[2], o[3], tonumber(o[4])
if not status then return reply({v = 'missing'}) end
if TERMINAL[status] then return reply({v = 'finished', status = status}) end
if step ~= 'approval' then
  local st = redis.call('HMGET', K.record, 's:approval:state', 's:approval:result')
  if st[1] == 'completed' then return reply({v = 'done', result = st[2]}) end
  return reply({v = 'stale', reason = 'order is at step ' .. step})
end
if epoch ~= tonumber(A.epoch) then
  return reply({v = 'stale', reason = 'superseded by epoch ' .. epoch})
end
local now = now_us()
if phase == 'waiting' then
  if o[5] == A.task_id then
    -- Redelivered after its worker died: the countdown it scheduled may be lost too.
    return reply({v = 'waiting', deadline = o[9], remaining_us = int(tonumber(o[9]) - now)})
  end
  return reply({v = 'stale', reason = 'already waiting for approval'})
end
if phase ~= 'queued' then return reply({v = 'stale', reason = 'step is ' .. tostring(phase)}) end

local timeout = tonumber(o[6])
local deadline = now + timeout
redis.call('HSET', K.record, 'phase', 'waiting', 'approval:deadline', int(deadline),
  's:approval:state', 'waiting', 's:approval:attempts', 1, 'worker', A.worker,
  'task_id', A.task_id, 'started', int(now), 'updated', int(now))
set_status(K, id, status, 'awaiting_approval', o[8])
redis.call('ZREM', K.queued, id)
redis.call('ZADD', K.timers, deadline + A.grace_us, id)
emit(K, 'approval_requested', {total = o[7], deadline = int(deadline), timeout_us = int(timeout),
  worker = A.worker, task_id = A.task_id})
return reply({v = 'waiting', deadline = int(deadline), remaining_us = int(timeout)})
