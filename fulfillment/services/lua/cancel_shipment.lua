-- cancel_shipment.lua: cancel the order's shipment, if there is one. Idempotent,
-- fenced by the compensation's claim.
-- KEYS: ledger, stock, faults, record.  A: order_id, token {action, claim}.
-- Replies v = ok (replay) | nothing | stale (reason).
local A = cjson.decode(ARGV[1])
local refused = refuse_stale(A)
if refused then return refused end
local ledger = KEYS[1]
redis.call('HINCRBY', ledger, 'cancel_shipment_calls', 1)
if redis.call('HEXISTS', ledger, 'shipment') == 0 then return reply({v = 'nothing'}) end
if redis.call('HEXISTS', ledger, 'shipment_cancelled') == 1 then
  return reply({v = 'ok', replay = true})
end
redis.call('HSET', ledger, 'shipment_cancelled', cjson.encode({at = int(now_us())}))
return reply({v = 'ok', replay = false})
