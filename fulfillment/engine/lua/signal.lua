-- signal.lua: a decision on a gate: approve, reject, or the gate's timeout. Exactly one
-- decision wins: all of them (and cancel.lua, where the gate says a cancel is one of
-- its decisions) apply only to a gate that is still undecided.
-- A: id, gate, decision (approve | reject | timeout), by, reason, source,
--    epoch (timeout only) + common settings.
-- Replies v =
--   dispatch      approved: send the run's next step `step` under `epoch`
--   recorded      decided before the run reached the gate: applied when it gets there
--   rejected | failed (a timeout): compensating, compensations, send
--   early         a timeout fired before the deadline (remaining_us)
--   noop          a timeout for a wait that is already over
--   decided       the gate was already decided (decision, by)
--   finished      the run has ended (status, decision, by); also a decision at or
--                 after the deadline, which times the wait out first
--   not_required  the gate is not part of this run's plan
--   missing       no such run
local K, A = transition()
local id = A.id
local G = A.gate
local gk = 'g:' .. G .. ':'
local sk = 's:' .. G .. ':'

local o = redis.call('HMGET', K.record, 'status', 'step', 'phase', 'epoch', 'steps',
  'created', 'gates', gk .. 'deadline', gk .. 'decision', gk .. 'by', sk .. 'state', 'p:' .. G)
local status, step, phase, epoch = o[1], o[2], o[3], tonumber(o[4])
if not status then return reply({v = 'missing'}) end
if ENDED[status] then
  return reply({v = 'finished', status = status, decision = o[9] or '', by = o[10] or '',
    gate = G})
end
if not o[12] then return reply({v = 'not_required', gate = G}) end
local state = o[11]
if o[9] or (state ~= 'pending' and state ~= 'queued' and state ~= 'waiting') then
  return reply({v = 'decided', decision = o[9] or state, by = o[10] or '', gate = G})
end
local pol = decode_policy(o[12])
local now = now_us()
local cur = {status = status, created = o[6], gates = o[7], phase = phase, steps = o[5]}
local at_gate = step == G

if A.decision == 'timeout' then
  if not at_gate or phase ~= 'waiting' or (A.epoch and tonumber(A.epoch) ~= epoch) then
    return reply({v = 'noop'})
  end
  local deadline = tonumber(o[8])
  if now < deadline then return reply({v = 'early', remaining_us = int(deadline - now)}) end
  return time_out_gate(K, id, G, now, deadline, A.source, A, cur)
end

-- A decision that arrives at or after the deadline (on the server's clock) finds the
-- wait over: the timeout wins, whoever asks.
if at_gate and phase == 'waiting' and now >= tonumber(o[8]) then
  local out = cjson.decode(time_out_gate(K, id, G, now, tonumber(o[8]), 'deadline', A, cur))
  return reply({v = 'finished', status = 'failed', decision = 'timed_out', by = 'deadline',
    gate = G, send = out.send, limits = out.limits})
end

local decision = 'approved'
if A.decision == 'reject' then decision = 'rejected' end
redis.call('HSET', K.record, gk .. 'decision', decision, gk .. 'by', A.by, gk .. 'reason', A.reason,
  gk .. 'at', int(now))
local waited = nil
if at_gate and phase == 'waiting' then waited = int(now - (tonumber(o[8]) - us(pol.timeout))) end
emit(K, 'gate_decided', {gate = G, decision = decision, by = A.by, reason = A.reason,
  early = phase ~= 'waiting', waited_us = waited})
if not at_gate then
  -- The run has not reached the gate yet: the decision waits for it there (advance).
  return reply({v = 'recorded', decision = decision})
end
if decision == 'rejected' then
  redis.call('HSET', K.record, sk .. 'state', 'failed')
  local out = cjson.decode(fail_run(K, id, now, {type = pol.reject_error, message = A.reason,
    step = G}, A, cur, nil))
  return reply({v = 'rejected', compensating = out.compensating,
    compensations = out.compensations, send = out.send, limits = out.limits})
end
redis.call('HSET', K.record, sk .. 'state', 'completed', sk .. 'result', 'Approved by ' .. A.by)
set_status(K, id, status, 'running', o[6], true)
cur.status = 'running'
local moved = advance(K, id, G, epoch + 1, now, A, cur)
if moved.failed then return moved.failed end
return reply({v = 'dispatch', step = moved.step, epoch = epoch + 1, steps = split(o[5]),
  summary = decoded(redis.call('HGET', K.record, 'summary')), limits = limits_of(K)})
