-- decide.lua: approve, reject, time out or cancel an order. Exactly one decision
-- wins: all four go through this script, which applies one only to an order that
-- is still undecided.
-- A: id, decision (approve|reject|timeout|cancel), by, reason, source, epoch (timeout only)
--    + common settings.
-- Replies v =
--   dispatch         approved: send the chain from `step` under `epoch`
--   rejected / timed_out / cancelled (compensations, send)
--   cancel_requested the step running now finishes first, then the order is cancelled
--   early            a timeout fired before the deadline (remaining_us)
--   noop             a timeout for a wait that is already over
--   decided          the approval was already decided (decision, by)
--   finished         the order is terminal (status, decision, by); also a decision
--                    at or after the deadline, which times the wait out first
--   not_required     the order never needed approval
--   missing          no such order
local K = order_keys()
local A = cjson.decode(ARGV[1])
local id = A.id

local o = redis.call('HMGET', K.record, 'status', 'step', 'phase', 'epoch', 'steps',
  'needs_approval', 'approval:deadline', 'approval:decision', 'approval:by', 'created',
  's:approval:state', 'cancel_requested')
local status, step, phase, epoch = o[1], o[2], o[3], tonumber(o[4])
if not status then return reply({v = 'missing'}) end
if TERMINAL[status] then
  return reply({v = 'finished', status = status, decision = o[8] or '', by = o[9] or ''})
end
local now = now_us()

-- A decision that arrives at or after the deadline (on the server's clock) finds the
-- wait over: the timeout wins, whoever asks.
if phase == 'waiting' and o[11] == 'waiting' and A.decision ~= 'timeout'
    and now >= tonumber(o[7]) then
  time_out_approval(K, id, now, tonumber(o[7]), 'deadline', A)
  return reply({v = 'finished', status = 'failed', decision = 'timed_out', by = 'deadline'})
end

if A.decision == 'cancel' then
  if o[12] == '1' then return reply({v = 'cancel_requested'}) end
  -- For an order that needs approval, cancel is one of the four decisions on the
  -- wait: once approve or reject has won, the order goes ahead as decided.
  if o[6] == '1' and o[11] ~= 'pending' and o[11] ~= 'waiting' then
    return reply({v = 'decided', decision = o[8] or o[11], by = o[9] or ''})
  end
  if phase == 'running' then
    redis.call('HSET', K.record, 'cancel_requested', '1', 'cancel_reason', A.reason,
      'updated', int(now))
    emit(K, 'cancel_requested', {by = A.by, reason = A.reason, step = step})
    return reply({v = 'cancel_requested'})
  end
  if phase == 'waiting' then
    redis.call('HSET', K.record, 'approval:decision', 'cancelled', 'approval:by', A.by,
      'approval:at', int(now), 's:approval:state', 'cancelled')
  end
  local comps, send = finish(K, id, 'cancelled', now,
    {type = 'OrderCancelled', message = A.reason, step = step}, A)
  emit(K, 'order_cancelled', {by = A.by, reason = A.reason, step = step, compensations = comps})
  return reply({v = 'cancelled', compensations = comps, send = send})
end

if o[6] ~= '1' then return reply({v = 'not_required'}) end
if o[11] ~= 'pending' and o[11] ~= 'waiting' then
  return reply({v = 'decided', decision = o[8] or o[11], by = o[9] or ''})
end

if A.decision == 'timeout' then
  if phase ~= 'waiting' or (A.epoch and tonumber(A.epoch) ~= epoch) then
    return reply({v = 'noop'})
  end
  local deadline = tonumber(o[7])
  if now < deadline then return reply({v = 'early', remaining_us = int(deadline - now)}) end
  time_out_approval(K, id, now, deadline, A.source, A)
  return reply({v = 'timed_out'})
end

if A.decision == 'reject' then
  redis.call('HSET', K.record, 'approval:decision', 'rejected', 'approval:by', A.by,
    'approval:reason', A.reason, 'approval:at', int(now), 's:approval:state', 'failed')
  emit(K, 'approval_decided', {decision = 'rejected', by = A.by, reason = A.reason,
    early = phase ~= 'waiting'})
  finish(K, id, 'failed', now,
    {type = 'ApprovalRejected', message = A.reason, step = 'approval'}, A)
  emit(K, 'order_failed', {type = 'ApprovalRejected', message = A.reason, step = 'approval',
    compensations = ''})
  return reply({v = 'rejected'})
end

-- approve: before the wait (the approval message is still on its way) or during it.
local result = 'Approved by ' .. A.by
redis.call('HSET', K.record, 'approval:decision', 'approved', 'approval:by', A.by,
  'approval:at', int(now), 's:approval:state', 'completed', 's:approval:result', result)
emit(K, 'approval_decided', {decision = 'approved', by = A.by, early = phase ~= 'waiting'})
set_status(K, id, status, 'running', o[10])
local nxt = next_step(o[5], 'approval')
queue_step(K, id, nxt, epoch + 1, now, A)
return reply({v = 'dispatch', step = nxt, epoch = epoch + 1,
  summary = redis.call('HGET', K.record, 'summary')})
