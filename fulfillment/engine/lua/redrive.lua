-- redrive.lua: the watchdog's look at one run whose schedule came due.
-- KEYS: the run's keys (lib.lua).
-- A: id, reason (due | worker_lost | resend), worker (the dead worker, for worker_lost),
--    epoch (for resend: the epoch the redelivered message's step completed under),
--    grace_us (retry / gate grace), backlog (messages waiting in queues that could not be
--    looked through), stall_us, interval_us (heartbeat period), and the ids of this
--    run's messages that live workers hold (held), that wait in a queue (queued) and
--    that a dead worker held (lost) + common settings.
-- Replies v =
--   dispatch   send the run's step `step` under the new `epoch` (after countdown_us)
--   (any of them with lost_task: the Celery task id of an attempt presumed lost, and
--   reason)
--   compensate send the compensations in `send` ([{action, n}])
--   failed | cancelled (compensating, compensations, send): also a gate's wait past
--              its deadline
--   noop       nothing to do (not due, still on its way, or already handled)
local K, A = transition()
local id = A.id
local o = redis.call('HMGET', K.record, 'status', 'step', 'phase', 'epoch', 'lease_until',
  'next_at', 'queued_at', 'worker', 'cancel_requested', 'cancel_reason', 'redrives',
  'compensations', 'summary', 'created', 'gates', 'steps', 'cancel_by', 'task_id')
local status, step, phase, epoch = o[1], o[2], o[3], tonumber(o[4])
if not status then
  redis.call('ZREM', K.due, id)
  redis.call('ZREM', K.retrying, id)
  return reply({v = 'noop', reason = 'gone'})
end
local now = now_us()
local cur = {status = status, created = o[14], gates = o[15], phase = phase, steps = o[16]}

if ENDED[status] then
  -- Compensations: a running one whose lease ran out is sent again; a pending one
  -- whose message is really missing is sent again, each time after a longer wait. A
  -- waiting one waits for the undo before it (undone.lua opens it).
  local send = {}
  local later = nil
  for _, a in ipairs(split(o[12])) do
    local p = 'c:' .. a
    local c = redis.call('HMGET', K.record, p, p .. ':n', p .. ':sent', p .. ':not_before',
      p .. ':lease', p .. ':claims')
    local state, n = c[1], tonumber(c[2] or '0')
    local not_before = tonumber(c[4] or '0')
    if state == 'running' and now >= tonumber(c[5]) then
      emit(K, 'compensation_lost', {action = a, claim = tonumber(c[6]),
        reason = 'no result within its lease'})
      open_compensation(K, a, now, send, 0)
    elseif state == 'pending' and n == 0 then
      if now >= not_before then open_compensation(K, a, now, send, 0) end
    elseif state == 'pending' then
      local sent = math.max(tonumber(c[3]), not_before)
      local due = sent + A.comp_grace_us * 2 ^ (n - 1)
      local lost, again = message_lost(K, p .. ':suspect', message_id(id, a, n), due, now, A,
        sent)
      if lost then
        emit(K, 'compensation_resent', {action = a, message = n + 1,
          reason = 'message ' .. message_id(id, a, n) .. ' not started'})
        open_compensation(K, a, now, send, 0)
      elseif again and (not later or again < later) then
        later = again
      end
    end
  end
  local open = schedule_compensations(K, id, A)
  if later and open > 0 then
    local current = tonumber(redis.call('ZSCORE', K.due, id) or '0')
    if current == 0 or later < current then schedule(K, id, later) end
  end
  if #send == 0 then return reply({v = 'noop', reason = 'compensations on their way'}) end
  return reply({v = 'compensate', send = send, limits = limits_of(K)})
end

local sk = 's:' .. step .. ':'
-- the Celery task id of an attempt presumed lost, for the sender to tell Flower
local lost_task = nil
local function dispatch(reason, countdown_us)
  emit(K, 'redriven', {step = step, epoch = epoch + 1, reason = reason,
    countdown_us = int(countdown_us)})
  return reply({v = 'dispatch', step = step, epoch = epoch + 1, reason = reason,
    countdown_us = int(countdown_us), summary = decoded(o[13]), steps = split(o[16]),
    lost_task = lost_task,
    limits = limits_of(K)})
end
local function with_lost(out, why)
  local r = cjson.decode(out)
  r.lost_task, r.reason = lost_task, why
  return reply(r)
end

if phase == 'running' then
  local lost_worker = A.reason == 'worker_lost' and o[8] == A.worker
  if not lost_worker and now < tonumber(o[5]) then
    schedule(K, id, tonumber(o[5]))
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
  lost_task = o[18]
  local lost = redis.call('HINCRBY', K.record, sk .. 'lost', 1)
  -- The lost attempt may still be alive (a paused process): until its lease runs out,
  -- nothing may undo this step's effect (see finish and open_compensation).
  redis.call('HSET', K.record, sk .. 'error', 'AttemptLost: ' .. why, 'updated', int(now),
    sk .. 'fence_until', o[5])
  if o[9] == '1' then
    redis.call('HSET', K.record, sk .. 'state', 'failed')
    return with_lost(fail_run(K, id, now, {type = 'AttemptLost', message = why, step = step},
      A, cur, {reason = o[10], by = o[17]}), why)
  end
  local pol = policy(K, step)
  if pol.maximum_attempts > 0 and attempt >= pol.maximum_attempts then
    redis.call('HSET', K.record, sk .. 'state', 'failed')
    return with_lost(fail_run(K, id, now, {type = 'AttemptLost',
      message = why .. ' (gave up after ' .. attempt .. ' attempts)', step = step}, A, cur, nil),
      why)
  end
  if lost < 2 then
    -- First loss: the worker died, not the step. Carry on at once elsewhere.
    queue_step(K, id, step, epoch + 1, now, A, cur, {sk .. 'state', 'queued'})
    return dispatch(why, 0)
  end
  -- The step keeps losing its worker (a poison step?): back off as for a failure.
  local delay = backoff(pol, attempt)
  redis.call('HSET', K.record, 'epoch', epoch + 1, 'phase', 'retry_wait',
    'next_at', int(now + delay), sk .. 'state', 'retrying')
  schedule(K, id, now + delay + A.grace_us)
  redis.call('ZADD', K.retrying, now, id)
  return dispatch(why, delay)
end

-- The message of the step before this one came back from the broker after that step had
-- completed: its worker died before acknowledging it, so it may also have died before it
-- sent this step's message (without the outbox, the send follows the script). Send it
-- again at once, under a new epoch (a copy that did go out is then stale).
if A.reason == 'resend' then
  if phase ~= 'queued' or epoch ~= tonumber(A.epoch) then
    return reply({v = 'noop', reason = 'the step after it is under way'})
  end
  queue_step(K, id, step, epoch + 1, now, A, cur)
  return dispatch('the message of the step before came back (its worker died before it was '
    .. 'acknowledged): this one may never have been sent', 0)
end

-- A queued step or a retry whose message has not started: sent again only if it is
-- really lost, each re-send waiting twice as long as the one before.
if phase == 'queued' or phase == 'retry_wait' then
  local redrives = tonumber(o[11] or '0')
  local base, grace = tonumber(o[7]), A.queue_grace_us
  if phase == 'retry_wait' then base, grace = tonumber(o[6]), A.grace_us end
  local due = base + grace * 2 ^ redrives
  local msg = message_id(id, step, epoch)
  local lost, again = message_lost(K, 'suspect', msg, due, now, A, base)
  if not lost then
    schedule(K, id, again)
    return reply({v = 'noop', reason = 'message ' .. msg .. ' on its way'})
  end
  queue_step(K, id, step, epoch + 1, now, A, cur)
  redis.call('HSET', K.record, 'redrives', redrives + 1)
  schedule(K, id, now + A.queue_grace_us * 2 ^ (redrives + 1))
  local late = int((now - base) / 1000)
  if phase == 'retry_wait' then
    return dispatch('retry message lost: attempt not started ' .. late ..
      ' ms after it was due', 0)
  end
  return dispatch('queued message lost: step not started ' .. late ..
    ' ms after it was queued', 0)
end

if phase == 'waiting' then
  local deadline = tonumber(redis.call('HGET', K.record, 'g:' .. step .. ':deadline'))
  if now < deadline then
    schedule(K, id, deadline + A.grace_us)
    return reply({v = 'noop', reason = 'gate deadline not reached'})
  end
  return time_out_gate(K, id, step, now, deadline, 'watchdog', A, cur)
end

unschedule(K, id, phase)
return reply({v = 'noop', reason = 'phase ' .. tostring(phase)})
