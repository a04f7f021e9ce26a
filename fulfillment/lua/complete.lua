-- complete.lua: record a successful attempt and move the order on.
-- A: id, step, epoch, attempt, result + common settings; ARGV[2..]: the next
-- step's message (outbox), pushed only with reply `next`.
-- Replies v = next (step), completed (result), cancelled (compensations, send),
--   compensate (send: a late effect of a presumed-dead attempt on a failed or
--   cancelled order; its undo runs again), stale (reason).
local K = order_keys()
local A = cjson.decode(ARGV[1])
local id = A.id
A.outcome = 'succeeded'
local sk = 's:' .. A.step .. ':'

-- The same call again (the client retried after losing the reply): answer as before.
local done = redis.call('HMGET', K.record, sk .. 'state', sk .. 'attempts', 'epoch', 'status',
  'step', 'result')
if done[1] == 'completed' and tonumber(done[2]) == tonumber(A.attempt)
    and tonumber(done[3]) == tonumber(A.epoch) then
  if done[4] == 'completed' then return reply({v = 'completed', result = done[6], replay = true}) end
  if TERMINAL[done[4]] then return reply({v = done[4], compensations = '', replay = true}) end
  return reply({v = 'next', step = done[5], replay = true})
end

local now = now_us()
local why = fence(K, A)
if why then
  -- A success that arrives too late still happened. On an order that failed or was
  -- cancelled, the step's undo must run (again): its effect may postdate the undo.
  local status = done[4]
  local undo = UNDO[A.step]
  if (status == 'failed' or status == 'cancelled') and undo then
    local p = 'c:' .. undo
    local state = redis.call('HGET', K.record, p)
    emit(K, 'result_discarded', {step = A.step, attempt = A.attempt, epoch = A.epoch,
      outcome = A.outcome, reason = why, undo = undo})
    local comps = split(redis.call('HGET', K.record, 'compensations'))
    local listed = false
    for _, a in ipairs(comps) do listed = listed or a == undo end
    if not listed then
      comps[#comps + 1] = undo
      redis.call('HSET', K.record, 'compensations', table.concat(comps, ','))
    end
    if state == 'running' then
      redis.call('HSET', K.record, p .. ':again', '1')  -- compensated.lua sends it again
      return reply({v = 'stale', reason = why})
    end
    if state == 'pending' then return reply({v = 'stale', reason = why}) end
    redis.call('PERSIST', K.record)
    redis.call('PERSIST', K.history)
    redis.call('PERSIST', K.ledger)
    redis.call('DEL', K.settled)
    local send = open_compensation(K, undo, now, 0)
    schedule_compensations(K, id, A)
    return reply({v = 'compensate', send = send, reason = why})
  end
  return discard(K, A, why)
end

local o = redis.call('HMGET', K.record, 'started', 'steps', 'epoch', 'cancel_requested',
  'cancel_reason')
redis.call('HSET', K.record, sk .. 'state', 'completed', sk .. 'result', A.result,
  'updated', int(now))
redis.call('ZREM', K.leases, id)
emit(K, 'attempt_succeeded', {step = A.step, attempt = A.attempt,
  duration_us = int(now - tonumber(o[1])), result = A.result})

local nxt = next_step(o[2], A.step)
-- An accepted cancel wins, even over the last step: its effects are undone.
if o[4] == '1' then
  local comps, send = finish(K, id, 'cancelled', now,
    {type = 'OrderCancelled', message = o[5], step = nxt or A.step}, A)
  emit(K, 'order_cancelled', {reason = o[5], step = nxt or A.step, compensations = comps})
  return reply({v = 'cancelled', compensations = comps, send = send})
end
if not nxt then
  local parts = {}
  for _, s in ipairs(split(o[2])) do
    if s ~= 'approval' then parts[#parts + 1] = redis.call('HGET', K.record, 's:' .. s .. ':result') end
  end
  local result = 'Order fulfilled: ' .. table.concat(parts, ', ')
  redis.call('HSET', K.record, 'result', result)
  finish(K, id, 'completed', now, nil, A)
  emit(K, 'order_completed', {result = result})
  return reply({v = 'completed', result = result})
end
queue_step(K, id, nxt, tonumber(o[3]), now, A)
send_outbox(A)
return reply({v = 'next', step = nxt, sent = #ARGV - 1})
