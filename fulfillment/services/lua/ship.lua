-- ship.lua: create the shipment, idempotent on the order id, fenced by the token.
-- KEYS: ledger, stock, faults, record.  A: order_id, token {step, epoch, attempt}.
-- Replies v = ok (record, replay) | down (mode) | stale (reason).
local A = cjson.decode(ARGV[1])
local refused = refuse_stale(A)
if refused then return refused end
local ledger = KEYS[1]
redis.call('HINCRBY', ledger, 'ship_calls', 1)
local mode = fault_for('delivery', A.order_id, A.token.attempt)
if mode then return reply({v = 'down', mode = mode}) end
local existing = redis.call('HGET', ledger, 'shipment')
if existing then return reply({v = 'ok', replay = true, record = existing}) end
local record = cjson.encode({
  tracking = 'TRK' .. string.upper(string.sub(redis.sha1hex(A.order_id .. ':ship'), 1, 12)),
  at = int(now_us())})
redis.call('HSET', ledger, 'shipment', record)
redis.call('HINCRBY', ledger, 'ship_effects', 1)
return reply({v = 'ok', replay = false, record = record})
