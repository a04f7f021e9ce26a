-- refund.lua: refund the order's charge, if there is one. Idempotent, fenced by the
-- compensation's claim.
-- KEYS: ledger, record, faults, stock (lib.lua).  A: order_id, token {action, claim}.
-- Replies v = ok (record, replay) | nothing | stale (reason).
local A = cjson.decode(ARGV[1])
local refused = refuse_stale(A)
if refused then return refused end
local ledger = KEYS[1]
local l = redis.call('HMGET', ledger, 'charge', 'refund', 'refund_calls')
local calls = tonumber(l[3] or '0') + 1
if not l[1] or l[2] then
  redis.call('HSET', ledger, 'refund_calls', calls)
  if not l[1] then return reply({v = 'nothing'}) end
  return reply({v = 'ok', replay = true, record = l[2]})
end
local charge = cjson.decode(l[1])
local record = cjson.encode({charge = charge.id, amount = charge.amount})
redis.call('HSET', ledger, 'refund_calls', calls, 'refund', record)
return reply({v = 'ok', replay = false, record = record})
