-- charge.lua: payment gateway charge, idempotent on the order id, fenced by the token.
-- KEYS: ledger, stock, faults, record.  A: order_id, token {step, epoch, attempt},
-- amount, card (masked).
-- Replies v = ok (record, replay) | down (mode) | stale (reason).
local A = cjson.decode(ARGV[1])
local refused = refuse_stale(A)
if refused then return refused end
local ledger = KEYS[1]
redis.call('HINCRBY', ledger, 'charge_calls', 1)
local mode = fault_for('payment', A.order_id, A.token.attempt)
if mode then return reply({v = 'down', mode = mode}) end
local existing = redis.call('HGET', ledger, 'charge')
if existing then return reply({v = 'ok', replay = true, record = existing}) end
local record = cjson.encode({id = 'ch_' .. string.sub(redis.sha1hex(A.order_id .. ':charge'), 1, 16),
  amount = A.amount, card = A.card, at = int(now_us())})
redis.call('HSET', ledger, 'charge', record)
redis.call('HINCRBY', ledger, 'charge_effects', 1)
return reply({v = 'ok', replay = false, record = record})
