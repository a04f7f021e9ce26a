-- refund.lua: refund the order's charge, if there is one. Idempotent, fenced by the
-- compensation's claim.
-- KEYS: ledger, stock, faults, record.  A: order_id, token {action, claim}.
-- Replies v = ok (record, replay) | nothing | stale (reason).
local A = cjson.decode(ARGV[1])
local refused = refuse_stale(A)
if refused then return refused end
local ledger = KEYS[1]
redis.call('HINCRBY', ledger, 'refund_calls', 1)
local charge = redis.call('HGET', ledger, 'charge')
if not charge then return reply({v = 'nothing'}) end
local existing = redis.call('HGET', ledger, 'refund')
if existing then return reply({v = 'ok', replay = true, record = existing}) end
local record = cjson.encode({charge = cjson.decode(charge).id,
  amount = cjson.decode(charge).amount, at = int(now_us())})
redis.call('HSET', ledger, 'refund', record)
return reply({v = 'ok', replay = false, record = record})
