-- begin.lua: a worker starts an attempt of A.step under A.epoch.
-- A: id, step, epoch, task_id, worker, lease_us + common settings.
-- Replies v =
--   run      start attempt `attempt`; `order` is the stored order JSON
--   done     the step already completed; `result` is its recorded result
--   busy     another attempt of this step holds the lease
--   stale    the message was superseded (re-driven, or the order moved on)
--   finished the order is terminal
--   missing  no such order
local K = order_keys()
local A = cjson.decode(ARGV[1])
local id = A.id
local sk = 's:' .. A.step .. ':'

local o = redis.call('HMGET', K.record, 'status', 'step', 'phase', 'epoch', 'task_id', 'order',
  'created', sk .. 'attempts', 'worker')
local status, step, phase, epoch = o[1], o[2], o[3], tonumber(o[4])
if not status then return reply({v = 'missing'}) end
if TERMINAL[status] then return reply({v = 'finished', status = status}) end
if step ~= A.step then
  local st = redis.call('HMGET', K.record, sk .. 'state', sk .. 'result')
  if st[1] == 'completed' then return reply({v = 'done', result = st[2]}) end
  return reply({v = 'stale', reason = 'order is at step ' .. step})
end
if epoch ~= tonumber(A.epoch) then
  return reply({v = 'stale', reason = 'superseded by epoch ' .. epoch})
end

local attempt = tonumber(o[8] or '0')
if phase == 'running' then
  if o[5] ~= A.task_id then
    return reply({v = 'busy', reason = 'attempt ' .. attempt .. ' holds the lease'})
  end
  -- This very message again while its attempt "runs": the broker handed it back
  -- because the process running it died (task_reject_on_worker_lost).
  emit(K, 'attempt_lost', {step = A.step, attempt = attempt, worker = o[9],
    reason = 'message redelivered: the process running the attempt died'})
elseif phase ~= 'queued' and phase ~= 'retry_wait' then
  return reply({v = 'stale', reason = 'step is ' .. tostring(phase)})
end

local now = now_us()
attempt = attempt + 1
local lease = now + A.lease_us
redis.call('HDEL', K.record, 'suspect')
redis.call('HSET', K.record, 'phase', 'running', 'lease_until', int(lease),
  'worker', A.worker, 'task_id', A.task_id, 'started', int(now), 'updated', int(now),
  sk .. 'state', 'running', sk .. 'attempts', attempt)
if status == 'pending' then set_status(K, id, status, 'running', o[7]) end
redis.call('ZADD', K.leases, lease, id)
redis.call('ZREM', K.queued, id)
redis.call('ZREM', K.timers, id)
redis.call('ZREM', K.retrying, id)
emit(K, 'attempt_started', {step = A.step, attempt = attempt, worker = A.worker,
  task_id = A.task_id})
return reply({v = 'run', attempt = attempt, order = o[6]})
