-- compensated.lua: a compensation (refund, release, cancel shipment) is done.
-- A: id, action, undone (true if there was something to undo), summary + common settings.
-- Replies v = ok (remaining) | noop.
local K = order_keys()
local A = cjson.decode(ARGV[1])
local id = A.id
local state = redis.call('HGET', K.record, 'c:' .. A.action)
if state ~= 'pending' then return reply({v = 'noop'}) end
local outcome = 'not_needed'
if A.undone then outcome = 'done' end
redis.call('HSET', K.record, 'c:' .. A.action, outcome, 'c:' .. A.action .. ':summary', A.summary)
emit(K, 'compensated', {action = A.action, outcome = outcome, summary = A.summary})
local remaining = {}
for _, action in ipairs(split(redis.call('HGET', K.record, 'compensations'))) do
  if redis.call('HGET', K.record, 'c:' .. action) == 'pending' then
    remaining[#remaining + 1] = action
  end
end
if #remaining == 0 then
  redis.call('ZREM', K.timers, id)
  settle(K, redis.call('HGET', K.record, 'status'), A.retention_s)
end
return reply({v = 'ok', remaining = table.concat(remaining, ',')})
