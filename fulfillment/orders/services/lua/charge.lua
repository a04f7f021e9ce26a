-- charge.lua: payment gateway charge, idempotent on the order id, fenced by the token.
-- KEYS: ledger, record, faults, stock (lib.lua).  A: order_id, token {step, epoch, attempt, round},
-- amount, card (masked).
-- Replies v = ok (record, replay) | down (mode) | stale (reason).
local A = cjson.decode(ARGV[1])
local refused = refuse_stale(A)
if refused then return refused end
local ledger = KEYS[1]
local answered, round, calls, effects = begin_effect(A, 'payment', 'charge', 'refund', 'charge')
if answered then return answered end
local record = cjson.encode({id = 'ch_' .. string.sub(redis.sha1hex(A.order_id .. ':charge' .. round), 1, 16),
  amount = A.amount, card = A.card})
redis.call('HSET', ledger, 'charge_calls', calls, 'charge', record,
  'charge_effects', effects + 1)
return reply({v = 'ok', replay = false, record = record})
