-- begin_undo.lua: a worker claims a compensation before it calls the service. Only a
-- pending compensation of the run (or a running one whose claim was lost) can be
-- claimed; anything else (a forged or duplicated message, a compensation that is done,
-- a run that does not exist) is a no-op that writes nothing.
-- A: id, action, step (whose undo it is: its policy's lease applies), task_id, worker
--    + common settings.
-- Replies v =
--   run      claim number `claim` is yours (the service checks it: its fencing token);
--            `input` is the run's input
--   busy     another claim runs and its lease is valid
--   waiting  its turn has not come: an undo of a later step runs first
--   early    its step's presumed-lost attempt may still act (remaining_us)
--   noop     nothing to do (reason)
--   missing  no such run
local K, A = transition()
local id = A.id
local p = 'c:' .. A.action
local c = redis.call('HMGET', K.record, 'status', p, p .. ':not_before', p .. ':lease',
  p .. ':task', p .. ':claims', p .. ':suspect', 'input')
if not c[1] then return reply({v = 'missing'}) end
local state = c[2]
if state == 'waiting' then
  return reply({v = 'noop', reason = 'it waits for the undo of a later step'})
end
if state ~= 'pending' and state ~= 'running' then
  return reply({v = 'noop', reason = 'compensation is ' .. tostring(state or 'not needed')})
end
local now = now_us()
local not_before = tonumber(c[3] or '0')
if now < not_before then return reply({v = 'early', remaining_us = int(not_before - now)}) end
local claims = tonumber(c[6] or '0')
if state == 'running' then
  if c[5] ~= A.task_id and now < tonumber(c[4]) then
    return reply({v = 'busy', reason = 'claim ' .. claims .. ' holds the lease'})
  end
  local why = 'lease expired'
  if c[5] == A.task_id then why = 'message redelivered: the process running it died' end
  emit(K, 'compensation_lost', {action = A.action, claim = claims, reason = why})
end
claims = claims + 1
local pol = policy(K, A.step)
redis.call('HSET', K.record, p, 'running', p .. ':claims', claims,
  p .. ':lease', int(now + us(pol.lease)), p .. ':task', A.task_id)
if c[7] then redis.call('HDEL', K.record, p .. ':suspect') end
schedule_compensations(K, id, A)
emit(K, 'compensation_started', {action = A.action, claim = claims, worker = A.worker,
  task_id = A.task_id})
return reply({v = 'run', claim = claims, input = c[8]})
