-- redrive.lua: the watchdog's look at one order whose timer came due.
-- A: id, reason (due | worker_lost), worker (the dead worker, for worker_lost),
--    policies {step = {initial_us, coefficient, maximum_us, maximum_attempts}},
--    grace_us (retry/approval grace) + common settings.
-- Replies v =
--   dispatch   send the chain from `step` under the new `epoch` (after countdown_us)
--   compensate re-send the pending compensations (`actions`)
--   timed_out  an approval wait passed its deadline
--   noop       nothing to do (not due, or already handled)
local K = order_keys()
local A = cjson.decode(ARGV[1])
local id = A.id
local o = redis.call('HMGET', K.record, 'status', 'step', 'phase', 'epoch', 'lease_until',
  'next_at', 'queued_at', 'worker', 'approval:deadline', 'cancel_requested', 'cancel_reason',
  'redrives', 'compensations', 'summary')
local status, step, phase, epoch = o[1], o[2], o[3], tonumber(o[4])
if not status then
  clear_schedule(K, id)
  return reply({v = 'noop', reason = 'gone'})
end
local now = now_us()

if TERMINAL[status] then
  local pending = {}
  for _, action in ipairs(split(o[13])) do
    if redis.call('HGET', K.record, 'c:' .. action) == 'pending' then
      pending[#pending + 1] = action
    end
  end
  clear_schedule(K, id)
  if #pending == 0 then return reply({v = 'noop', reason = 'finished'}) end
  redis.call('ZADD', K.timers, now + A.comp_grace_us, id)
  return reply({v = 'compensate', actions = table.concat(pending, ',')})
end

local sk = 's:' .. step .. ':'
local function dispatch(reason, countdown_us)
  emit(K, 'redriven', {step = step, epoch = epoch + 1, reason = reason,
    countdown_us = int(countdown_us)})
  return reply({v = 'dispatch', step = step, epoch = epoch + 1,
    countdown_us = int(countdown_us), summary = o[14]})
end

if phase == 'running' then
  local lost_worker = A.reason == 'worker_lost' and o[8] == A.worker
  if not lost_worker and now < tonumber(o[5]) then
    redis.call('ZADD', K.leases, o[5], id)
    return reply({v = 'noop', reason = 'lease still valid'})
  end
  local attempt = tonumber(redis.call('HGET', K.record, sk .. 'attempts') or '0')
  local why
  if lost_worker then
    why = 'worker ' .. o[8] .. ' stopped sending heartbeats'
  else
    why = 'lease expired: no result within the time limit'
  end
  emit(K, 'attempt_lost', {step = step, attempt = attempt, worker = o[8], reason = why})
  local lost = redis.call('HINCRBY', K.record, sk .. 'lost', 1)
  redis.call('HSET', K.record, sk .. 'error', 'AttemptLost: ' .. why, 'updated', int(now))
  redis.call('ZREM', K.leases, id)
  if o[10] == '1' then
    redis.call('HSET', K.record, sk .. 'state', 'failed')
    local comps = finish(K, id, 'cancelled', now,
      {type = 'OrderCancelled', message = o[11], step = step}, A)
    emit(K, 'order_cancelled', {reason = o[11], step = step, compensations = comps})
    return reply({v = 'cancelled', compensations = comps})
  end
  local pol = A.policies[step]
  if pol.maximum_attempts > 0 and attempt >= pol.maximum_attempts then
    redis.call('HSET', K.record, sk .. 'state', 'failed')
    local msg = why .. ' (gave up after ' .. attempt .. ' attempts)'
    local comps = finish(K, id, 'failed', now, {type = 'AttemptLost', message = msg, step = step}, A)
    emit(K, 'order_failed', {type = 'AttemptLost', message = msg, step = step,
      compensations = comps})
    return reply({v = 'failed', compensations = comps})
  end
  if lost < 2 then
    -- First loss: the worker died, not the step. Carry on at once elsewhere.
    queue_step(K, id, step, epoch + 1, now, A)
    redis.call('HSET', K.record, sk .. 'state', 'queued')
    return dispatch(why, 0)
  end
  -- The step keeps losing its worker (a poison step?): back off as for a failure.
  local delay = math.min(pol.initial_us * pol.coefficient ^ (attempt - 1), pol.maximum_us)
  redis.call('HSET', K.record, 'epoch', epoch + 1, 'phase', 'retry_wait',
    'next_at', int(now + delay), sk .. 'state', 'retrying')
  redis.call('ZADD', K.timers, now + delay + A.grace_us, id)
  redis.call('ZADD', K.retrying, now, id)
  return dispatch(why, delay)
end

if phase == 'retry_wait' then
  if now < tonumber(o[6]) + A.grace_us then
    redis.call('ZADD', K.timers, tonumber(o[6]) + A.grace_us, id)
    return reply({v = 'noop', reason = 'retry not due'})
  end
  queue_step(K, id, step, epoch + 1, now, A)
  return dispatch('retry message lost: attempt not started ' ..
    int((now - tonumber(o[6])) / 1000) .. ' ms after it was due', 0)
end

if phase == 'queued' then
  if now < tonumber(o[7]) + A.queue_grace_us then
    redis.call('ZADD', K.queued, tonumber(o[7]) + A.queue_grace_us, id)
    return reply({v = 'noop', reason = 'queued recently'})
  end
  local redrives = tonumber(o[12] or '0')
  queue_step(K, id, step, epoch + 1, now, A)
  -- Each re-drive of a queued step waits twice as long before the next one, so a
  -- slow queue never multiplies messages.
  redis.call('HSET', K.record, 'redrives', redrives + 1)
  redis.call('ZADD', K.queued, now + A.queue_grace_us * 2 ^ (redrives + 1), id)
  return dispatch('queued message lost: step not started ' ..
    int((now - tonumber(o[7])) / 1000) .. ' ms after it was queued', 0)
end

if phase == 'waiting' then
  local deadline = tonumber(o[9])
  if now < deadline then
    redis.call('ZADD', K.timers, deadline + A.grace_us, id)
    return reply({v = 'noop', reason = 'approval deadline not reached'})
  end
  redis.call('HSET', K.record, 'approval:decision', 'timed_out', 'approval:by', 'watchdog',
    'approval:at', int(now), 's:approval:state', 'failed')
  emit(K, 'approval_timed_out', {source = 'watchdog', late_by_us = int(now - deadline)})
  finish(K, id, 'failed', now,
    {type = 'ApprovalTimeout', message = 'Approval timed out', step = 'approval'}, A)
  emit(K, 'order_failed', {type = 'ApprovalTimeout', message = 'Approval timed out',
    step = 'approval', compensations = ''})
  return reply({v = 'timed_out'})
end

clear_schedule(K, id)
return reply({v = 'noop', reason = 'phase ' .. tostring(phase)})
