-- cancel_shipment.lua: cancel the order's shipment, if there is one. Idempotent,
-- fenced by the compensation's claim.
-- KEYS: ledger, record, faults, stock (lib.lua).  A: order_id, token {action, claim}.
-- Replies v = ok (replay) | nothing | stale (reason).
local A = cjson.decode(ARGV[1])
local refused = refuse_stale(A)
if refused then return refused end
local ledger = KEYS[1]
local l = redis.call('HMGET', ledger, 'shipment', 'shipment_cancelled', 'cancel_shipment_calls')
local calls = tonumber(l[3] or '0') + 1
if not l[1] or l[2] then
  redis.call('HSET', ledger, 'cancel_shipment_calls', calls)
  if not l[1] then return reply({v = 'nothing'}) end
  return reply({v = 'ok', replay = true})
end
redis.call('HSET', ledger, 'cancel_shipment_calls', calls, 'shipment_cancelled', '1')
return reply({v = 'ok', replay = false})
