-- ship.lua: create the shipment, idempotent on the order id, fenced by the token.
-- KEYS: ledger, record, faults, stock (lib.lua).  A: order_id, token {step, epoch, attempt, round}.
-- Replies v = ok (record, replay) | down (mode) | stale (reason).
local A = cjson.decode(ARGV[1])
local refused = refuse_stale(A)
if refused then return refused end
local ledger = KEYS[1]
local round, shipment, l = start_round(ledger, 'shipment', 'shipment_cancelled',
  A.token.round, {'ship_calls', 'ship_effects'})
local calls = tonumber(l[1] or '0') + 1
local mode = fault_for('delivery', A.order_id, A.token.attempt)
if mode or shipment then
  redis.call('HSET', ledger, 'ship_calls', calls)
  if mode then return reply({v = 'down', mode = mode}) end
  return reply({v = 'ok', replay = true, record = shipment})
end
local record = cjson.encode({
  tracking = 'TRK' .. string.upper(string.sub(redis.sha1hex(A.order_id .. ':ship' .. round), 1, 12))})
redis.call('HSET', ledger, 'ship_calls', calls, 'shipment', record,
  'ship_effects', tonumber(l[2] or '0') + 1)
return reply({v = 'ok', replay = false, record = record})
