-- undone.lua: the running claim of a compensation finished: it undid an effect, or
-- found none. The run's next undo starts (one at a time, the reverse of its
-- steps), and once every undo is done the compensating run becomes failed or cancelled.
-- A: id, action, claim, undone (true if there was something to undo), summary
--    + common settings.
-- Replies v = ok (remaining; send: the next undo, or this one again after a late effect;
--   status: the run's status now) | stale (reason).
local K, A = transition()
local id = A.id
local p = 'c:' .. A.action
local why = stale_claim(K.record, A)
if why then return reply({v = 'stale', reason = why}) end
local now = now_us()
local outcome = 'not_needed'
if A.undone then outcome = 'done' end
redis.call('HSET', K.record, p, outcome, p .. ':summary', A.summary, 'updated', int(now))
emit(K, 'compensated', {action = A.action, outcome = outcome, summary = A.summary,
  claim = A.claim})
local sends = {}
if redis.call('HGET', K.record, p .. ':again') == '1' then
  -- a late effect of this step was reported while this claim ran: undo once more
  redis.call('HDEL', K.record, p .. ':again')
  open_compensation(K, A.action, now, sends, 0)
end
if redis.call('HGET', K.record, 'undo_mode') ~= 'concurrent' then
  open_next_compensation(K, now, sends)
end
local remaining = schedule_compensations(K, id, A)
local status = redis.call('HGET', K.record, 'status')
if remaining == 0 then
  if status == 'compensating' then
    finish_compensating(K, id, now, A)
    status = redis.call('HGET', K.record, 'status')
  else
    settle(K, status, A)
  end
end
return reply({v = 'ok', remaining = remaining, send = sends, status = status,
  limits = limits_of(K)})
