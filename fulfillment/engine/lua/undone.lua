-- undone.lua: the running claim of a compensation finished: it undid an effect, or
-- found none.
-- A: id, action, claim, undone (true if there was something to undo), summary
--    + common settings.
-- Replies v = ok (remaining; send: sent again after a late effect) | stale (reason).
local K = run_keys()
local A = cjson.decode(ARGV[1])
local id = A.id
local p = 'c:' .. A.action
local why = stale_claim(K.record, A)
if why then return reply({v = 'stale', reason = why}) end
local outcome = 'not_needed'
if A.undone then outcome = 'done' end
redis.call('HSET', K.record, p, outcome, p .. ':summary', A.summary)
emit(K, 'compensated', {action = A.action, outcome = outcome, summary = A.summary,
  claim = A.claim})
local send = nil
if redis.call('HGET', K.record, p .. ':again') == '1' then
  -- a late effect of this step was reported while this claim ran: undo once more
  redis.call('HDEL', K.record, p .. ':again')
  send = open_compensation(K, A.action, now_us(), 0)
end
local remaining = schedule_compensations(K, id, A)
if remaining == 0 then settle(K, redis.call('HGET', K.record, 'status'), A) end
return reply({v = 'ok', remaining = remaining, send = send})
