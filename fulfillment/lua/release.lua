-- release.lua: give back the order's reservation, if there is one. Idempotent.
-- KEYS: ledger, stock, faults.  A: order_id.  Replies v = ok (replay) | nothing.
local A = cjson.decode(ARGV[1])
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
