-- ship.lua: create the shipment, idempotent on the order id, fenced by the token.
-- KEYS: ledger, record, faults, stock (lib.lua).  A: order_id, token {step, epoch, attempt, round}.
-- Replies v = ok (record, replay) | down (mode) | stale (reason).
local A = cjson.decode(ARGV[1])
local refused = refuse_stale(A)
if refused then return refused end
local ledger = KEYS[1]
local answered, round, calls, effects = begin_effect(A, 'delivery', 'shipment',
  'shipment_cancelled', 'ship')
if answered then return answered end
local record = cjson.encode({
  tracking = 'TRK' .. string.upper(string.sub(redis.sha1hex(A.order_id .. ':ship' .. round), 1, 12))})
redis.call('HSET', ledger, 'ship_calls', calls, 'shipment', record,
  'ship_effects', effects + 1)
return reply({v = 'ok', replay = false, record = record})
