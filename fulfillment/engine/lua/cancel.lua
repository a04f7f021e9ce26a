-- cancel.lua: cancel a run. Between steps (queued, waiting at a gate, waiting for a
-- retry) it is cancelled at once; while a step runs, the cancel is recorded and wins
-- as soon as that attempt reports (or is presumed lost). A gate whose policy says
-- cancel_decides takes a cancel as one of its decisions: once it was approved or
-- rejected, the cancel is refused.
-- A: id, by, reason + common settings.
-- Replies v = cancelled (compensating, compensations, send) | cancel_requested | decided
--   (decision, by) | finished (status, decision, by) | missing.
local K, A = transition()
local id = A.id

local o = redis.call('HMGET', K.record, 'status', 'step', 'phase', 'epoch', 'steps', 'created',
  'gates', 'cancel_requested')
local status, step, phase = o[1], o[2], o[3]
if not status then return reply({v = 'missing'}) end
if ENDED[status] then return reply({v = 'finished', status = status}) end
if o[8] == '1' then return reply({v = 'cancel_requested'}) end
local now = now_us()
local cur = {status = status, created = o[6], gates = o[7], phase = phase, steps = o[5]}

for _, g in ipairs(split(o[7])) do
  local pol = policy(K, g)
  if pol.cancel_decides then
    local gs = redis.call('HMGET', K.record, 's:' .. g .. ':state', 'g:' .. g .. ':decision',
      'g:' .. g .. ':by', 'g:' .. g .. ':deadline')
    if gs[1] ~= 'pending' and gs[1] ~= 'queued' and gs[1] ~= 'waiting' then
      return reply({v = 'decided', decision = gs[2] or gs[1], by = gs[3] or '', gate = g})
    end
    if gs[2] then return reply({v = 'decided', decision = gs[2], by = gs[3] or '', gate = g}) end
    if step == g and phase == 'waiting' and now >= tonumber(gs[4]) then
      local out = cjson.decode(time_out_gate(K, id, g, now, tonumber(gs[4]), 'deadline', A, cur))
      return reply({v = 'finished', status = 'failed', decision = 'timed_out', by = 'deadline',
        gate = g, send = out.send, limits = out.limits})
    end
  end
end

if phase == 'running' then
  redis.call('HSET', K.record, 'cancel_requested', '1', 'cancel_reason', A.reason,
    'cancel_by', A.by, 'updated', int(now))
  emit(K, 'cancel_requested', {by = A.by, reason = A.reason, step = step})
  return reply({v = 'cancel_requested'})
end
if phase == 'waiting' then
  redis.call('HSET', K.record, 'g:' .. step .. ':decision', 'cancelled', 'g:' .. step .. ':by', A.by,
    'g:' .. step .. ':at', int(now), 's:' .. step .. ':state', 'cancelled')
end
return fail_run(K, id, now, {type = 'Cancelled', message = A.reason, step = step}, A, cur,
  {reason = A.reason, by = A.by})
