-- complete.lua: record a successful attempt and move the run on.
-- A: id, step, epoch, attempt, result, final (the run's result, if this was its last
--    step), outbox_step (the step the held message starts) + common settings;
--    ARGV[2..]: the next step's message (outbox), pushed only with reply `next` for
--    that very step.
-- Replies v = next (step, sent; dispatch: send it, the outbox did not), completed
--   (result), cancelled | failed (compensating, compensations, send), compensate (send:
--   a late effect of a presumed-dead attempt on a run that failed or was cancelled: its
--   undo runs again, and the run is compensating until it is done), stale (reason).
local K, A = transition()
local id = A.id
A.outcome = 'succeeded'
local sk = 's:' .. A.step .. ':'

local o = redis.call('HMGET', K.record, 'status', 'step', 'phase', 'epoch', sk .. 'attempts',
  sk .. 'state', 'result', 'started', 'steps', 'cancel_requested', 'cancel_reason', 'created',
  'gates', 'cancel_by')
local status = o[1]

-- The same call again (the client retried after losing the reply): answer as before.
if o[6] == 'completed' and tonumber(o[5]) == tonumber(A.attempt)
    and tonumber(o[4]) == tonumber(A.epoch) then
  if status == 'completed' then return reply({v = 'completed', result = o[7], replay = true}) end
  if status == 'compensating' then status = redis.call('HGET', K.record, 'ends_as') end
  if TERMINAL[status] then return reply({v = status, replay = true}) end
  return reply({v = 'next', step = o[2], replay = true})
end

local now = now_us()
local why = stale_fields(o, A)
if why then
  -- A success that arrives too late still happened. On a run that failed or was
  -- cancelled, the step's undo must run (again): its effect may postdate the undo.
  local pol = status and policy(K, A.step)
  local undo = pol and pol.undo
  if (status == 'compensating' or status == 'failed' or status == 'cancelled') and undo then
    local p = 'c:' .. undo
    local state = redis.call('HGET', K.record, p)
    emit(K, 'result_discarded', {step = A.step, attempt = A.attempt, epoch = A.epoch,
      outcome = A.outcome, reason = why, undo = undo})
    local comps = split(redis.call('HGET', K.record, 'compensations'))
    local listed = false
    for _, a in ipairs(comps) do listed = listed or a == undo end
    if not listed then
      comps[#comps + 1] = undo
      redis.call('HSET', K.record, 'compensations', table.concat(comps, ','),
        p .. ':step', A.step)
    end
    if state == 'running' then
      redis.call('HSET', K.record, p .. ':again', '1')  -- undone.lua sends it again
      return reply({v = 'stale', reason = why})
    end
    -- still to run (in its turn), or on its way: it undoes this effect too
    if state == 'pending' or (state == 'waiting' and status == 'compensating') then
      return reply({v = 'stale', reason = why})
    end
    if status ~= 'compensating' then
      -- it was final: an effect is in place again, until its undo is done
      unsettle(K, A)
      set_status(K, id, status, 'compensating', o[12], false)
      redis.call('HSET', K.record, 'status', 'compensating', 'ends_as', status,
        'updated', int(now))
      emit(K, 'run_compensating', {ends_as = status, late_effect = A.step,
        compensations = undo})
    end
    local sends = {}
    open_compensation(K, undo, now, sends, 0)
    schedule_compensations(K, id, A)
    return reply({v = 'compensate', send = sends, reason = why, limits = limits_of(K)})
  end
  return discard(K, A, why, status ~= nil)
end

local recorded = {sk .. 'state', 'completed', sk .. 'result', A.result}
emit(K, 'attempt_succeeded', {step = A.step, attempt = A.attempt,
  duration_us = int(now - tonumber(o[8])), result = A.result})
local cur = {status = status, created = o[12], gates = o[13], phase = 'running', steps = o[9]}

-- An accepted cancel wins, even over the last step: its effects are undone.
if o[10] == '1' then
  redis.call('HSET', K.record, unpack(recorded))
  return fail_run(K, id, now, {type = 'Cancelled', message = o[11], step = A.step}, A, cur,
    {reason = o[11], by = o[14]})
end
-- the step's result and the next step's queueing: one write
local moved = advance(K, id, A.step, tonumber(o[4]), now, A, cur, recorded)
if moved.failed then return moved.failed end
if moved.completed then
  local result = A.final or ''
  recorded[#recorded + 1] = 'result'
  recorded[#recorded + 1] = result
  finish(K, id, 'completed', now, nil, A, cur, recorded, result)
  emit(K, 'run_completed', {result = result})
  return reply({v = 'completed', result = result})
end
if moved.step == A.outbox_step then
  send_outbox(A)
  return reply({v = 'next', step = moved.step, sent = #ARGV - 1})
end
return reply({v = 'next', step = moved.step, epoch = tonumber(o[4]), dispatch = true,
  summary = decoded(redis.call('HGET', K.record, 'summary')), steps = split(o[9]),
  limits = limits_of(K)})
