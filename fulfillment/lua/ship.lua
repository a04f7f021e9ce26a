-- ship.lua: create the shipment, idempotent on the order id.
-- KEYS: ledger, stock, faults.  A: order_id, attempt.  Replies v = ok (record, replay) | down.
local A = cjson.decode(ARGV[1])
local ledger = KEYS[1]
redis.call('HINCRBY', ledger, 'ship_calls', 1)
local mode = fault_for(KEYS[3], 'delivery', A.order_id, A.attempt)
if mode then return reply({v = 'down', mode = mode}) end
local existing = redis.call('HGET', ledger, 'shipment')
if existing then return reply({v = 'ok', replay = true, record = existing}) end
local record = cjson.encode({
  tracking = 'TRK' .. string.upper(string.sub(redis.sha1hex(A.order_id .. ':ship'), 1, 12)),
  at = int(now_us())})
redis.call('HSET', ledger, 'shipment', record)
return reply({v = 'ok', replay = false, record = record})
