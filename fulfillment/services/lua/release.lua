-- release.lua: give back the order's reservation, if there is one. Idempotent, fenced
-- by the compensation's claim.
-- KEYS: ledger, stock, faults, record.  A: order_id, token {action, claim}.
-- Replies v = ok (replay) | nothing | stale (reason).
local A = cjson.decode(ARGV[1])
local refused = refuse_stale(A)
if refused then return refused end
local ledger, stock = KEYS[1], KEYS[2]
redis.call('HINCRBY', ledger, 'release_calls', 1)
local reservation = redis.call('HGET', ledger, 'reservation')
if not reservation then return reply({v = 'nothing'}) end
if redis.call('HEXISTS', ledger, 'release') == 1 then return reply({v = 'ok', replay = true}) end
for _, line in ipairs(cjson.decode(reservation).items) do
  redis.call('HINCRBY', stock, line[1], line[2])
end
redis.call('HSET', ledger, 'release', cjson.encode({at = int(now_us())}))
return reply({v = 'ok', replay = false})
