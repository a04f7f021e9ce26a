-- redrive.lua: the watchdog's look at one order whose timer came due.
-- KEYS: the order keys, then the held-message sets of the live workers.
-- A: id, reason (due | worker_lost), worker (the dead worker, for worker_lost),
--    policies {step = {initial_us, coefficient, maximum_us, maximum_attempts}},
--    grace_us (retry/approval grace), backlog (messages waiting in the queues),
--    stall_us, interval_us (heartbeat period), held_from (first held-set KEY)
--    + common settings.
-- Replies v =
--   dispatch   send the chain from `step` under the new `epoch` (after countdown_us)
--   compensate send the compensations in `send` ("action:n", comma-joined)
--   failed / cancelled (compensations, send)
--   timed_out  an approval wait passed its deadline
--   noop       nothing to do (not due, still on its way, or already handled)
local K = order_keys()
local A = cjson.decode(ARGV[1])
local id = A.id
local o = redis.call('HMGET', K.record, 'status', 'step', 'phase', 'epoch', 'lease_until',
  'next_at', 'queued_at', 'worker', 'approval:deadline', 'cancel_requested', 'cancel_reason',
  'redrives', 'compensations', 'summary', 'started')
local status, step, phase, epoch = o[1], o[2], o[3], tonumber(o[4])
if not status then
  clear_schedule(K, id)
  return reply({v = 'noop', reason = 'gone'})
end
local now = now_us()

if TERMINAL[status] then
  -- Compensations: a running one whose lease ran out is sent again; a pending one
  -- whose message is really missing is sent again, each time after a longer wait.
  local send = {}
  local later = nil
  for _, a in ipairs(split(o[13])) do
    local p = 'c:' .. a
    local c = redis.call('HMGET', K.record, p, p .. ':n', p .. ':sent', p .. ':not_before',
      p .. ':lease', p .. ':claims')
    local state, n = c[1], tonumber(c[2] or '0')
    local not_before = tonumber(c[4] or '0')
    if state == 'running' and now >= tonumber(c[5]) then
      emit(K, 'compensation_lost', {action = a, claim = tonumber(c[6]),
        reason = 'no result within its lease'})
      send[#send + 1] = open_compensation(K, a, now, 0)
    elseif state == 'pending' and n == 0 then
      if now >= not_before then send[#send + 1] = open_compensation(K, a, now, 0) end
    elseif state == 'pending' then
      local due = math.max(tonumber(c[3]), not_before) + A.comp_grace_us * 2 ^ (n - 1)
      local lost, again = message_lost(K, p .. ':suspect', message_id(id, a, n), due, now, A)
      if lost then
        emit(K, 'compensation_resent', {action = a, message = n + 1,
          reason = 'message ' .. message_id(id, a, n) .. ' not started'})
        send[#send + 1] = open_compensation(K, a, now, 0)
      elseif again and (not later or again < later) then
        later = again
      end
    end
  end
  local open = schedule_compensations(K, id, A)
  if later and open > 0 then
    local current = tonumber(redis.call('ZSCORE', K.timers, id) or '0')
    if current == 0 or later < current then redis.call('ZADD', K.timers, later, id) end
  end
  if #send == 0 then return reply({v = 'noop', reason = 'compensations on their way'}) end
  return reply({v = 'compensate', send = table.concat(send, ',')})
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
  -- The lost attempt may still be alive (a paused process): until its lease runs out,
  -- nothing may undo this step's effect (see finish and open_compensation).
  redis.call('HSET', K.record, sk .. 'error', 'AttemptLost: ' .. why, 'updated', int(now),
    sk .. 'fence_until', o[5])
  redis.call('ZREM', K.leases, id)
  if o[10] == '1' then
    redis.call('HSET', K.record, sk .. 'state', 'failed')
    local comps, send = finish(K, id, 'cancelled', now,
      {type = 'OrderCancelled', message = o[11], step = step}, A)
    emit(K, 'order_cancelled', {reason = o[11], step = step, compensations = comps})
    return reply({v = 'cancelled', compensations = comps, send = send})
  end
  local pol = A.policies[step]
  if pol.maximum_attempts > 0 and attempt >= pol.maximum_attempts then
    redis.call('HSET', K.record, sk .. 'state', 'failed')
    local msg = why .. ' (gave up after ' .. attempt .. ' attempts)'
    local comps, send = finish(K, id, 'failed', now,
      {type = 'AttemptLost', message = msg, step = step}, A)
    emit(K, 'order_failed', {type = 'AttemptLost', message = msg, step = step,
      compensations = comps})
    return reply({v = 'failed', compensations = comps, send = send})
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

-- A queued step or a retry whose message has not started: re-send it only if it is
-- really lost, each re-send waiting twice as long as the one before.
if phase == 'queued' or phase == 'retry_wait' then
  local redrives = tonumber(o[12] or '0')
  local base, grace, zset = tonumber(o[7]), A.queue_grace_us, K.queued
  if phase == 'retry_wait' then base, grace, zset = tonumber(o[6]), A.grace_us, K.timers end
  local due = base + grace * 2 ^ redrives
  local msg = message_id(id, step, epoch)
  local lost, again = message_lost(K, 'suspect', msg, due, now, A)
  if not lost then
    redis.call('ZADD', zset, again, id)
    return reply({v = 'noop', reason = 'message ' .. msg .. ' on its way'})
  end
  queue_step(K, id, step, epoch + 1, now, A)
  redis.call('HSET', K.record, 'redrives', redrives + 1)
  redis.call('ZADD', K.queued, now + A.queue_grace_us * 2 ^ (redrives + 1), id)
  local late = int((now - base) / 1000)
  if phase == 'retry_wait' then
    return dispatch('retry message lost: attempt not started ' .. late ..
      ' ms after it was due', 0)
  end
  return dispatch('queued message lost: step not started ' .. late ..
    ' ms after it was queued', 0)
end

if phase == 'waiting' then
  local deadline = tonumber(o[9])
  if now < deadline then
    redis.call('ZADD', K.timers, deadline + A.grace_us, id)
    return reply({v = 'noop', reason = 'approval deadline not reached'})
  end
  time_out_approval(K, id, now, deadline, 'watchdog', A)
  return reply({v = 'timed_out'})
end

clear_schedule(K, id)
return reply({v = 'noop', reason = 'phase ' .. tostring(phase)})
