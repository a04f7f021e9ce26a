-- fraud_check.lua: screen an order once (idempotent on the order id), fenced by the token.
-- KEYS: 1 the order's ledger, 2 faults, 3 the order's record.
-- A: order_id, token {step, epoch, attempt}, card (masked), total, items.
-- Replies v = ok (score, replay) | suspected (reason) | down | stale (reason).
local A = cjson.decode(ARGV[1])
local why = stale_attempt(KEYS[3], A.token)
if why then return reply({v = 'stale', reason = why}) end
redis.call('HINCRBY', KEYS[1], 'fraud_calls', 1)
local fault = redis.call('HGET', KEYS[2], 'fraud:' .. A.order_id)
if fault and A.token.attempt <= cjson.decode(fault).attempts then return reply({v = 'down'}) end
local done = redis.call('HGET', KEYS[1], 'fraud')
if done then return reply({v = 'ok', score = tonumber(done), replay = true}) end
if string.sub(A.card, -4) == '0000' then
  return reply({v = 'suspected', reason = 'card ' .. A.card .. ' is on the watch list'})
end
local score = math.min(99, A.items * 7 + math.floor(tonumber(A.total) / 1000))
redis.call('HSET', KEYS[1], 'fraud', score)
return reply({v = 'ok', score = score, replay = false})
