-- complete.lua: record a successful attempt and move the order on.
-- A: id, step, epoch, attempt, result + common settings; ARGV[2..]: the next
-- step's message (outbox), pushed only with reply `next`.
-- Replies v = next (step), completed (result), cancelled (compensations), stale (reason).
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

local why = fence(K, A)
if why then return discard(K, A, why) end

local now = now_us()
local o = redis.call('HMGET', K.record, 'started', 'steps', 'epoch', 'cancel_requested',
  'cancel_reason')
redis.call('HSET', K.record, sk .. 'state', 'completed', sk .. 'result', A.result,
  'updated', int(now))
redis.call('ZREM', K.leases, id)
emit(K, 'attempt_succeeded', {step = A.step, attempt = A.attempt,
  duration_us = int(now - tonumber(o[1])), result = A.result})

local nxt = next_step(o[2], A.step)
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
if o[4] == '1' then
  local comps = finish(K, id, 'cancelled', now,
    {type = 'OrderCancelled', message = o[5], step = nxt}, A)
  emit(K, 'order_cancelled', {reason = o[5], step = nxt, compensations = comps})
  return reply({v = 'cancelled', compensations = comps})
end
queue_step(K, id, nxt, tonumber(o[3]), now, A)
send_outbox()
return reply({v = 'next', step = nxt, sent = #ARGV - 1})
