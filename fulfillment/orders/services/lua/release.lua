-- release.lua: give back the order's reservation, if there is one. Idempotent, fenced
-- by the compensation's claim.
-- KEYS: ledger, record, faults, stock (lib.lua).  A: order_id, token {action, claim}.
-- Replies v = ok (replay) | nothing | stale (reason).
local A = cjson.decode(ARGV[1])
local refused = refuse_stale(A)
if refused then return refused end
local ledger, stock = KEYS[1], KEYS[4]
local l = redis.call('HMGET', ledger, 'reservation', 'release', 'release_calls')
local calls = tonumber(l[3] or '0') + 1
if not l[1] or l[2] then
  redis.call('HSET', ledger, 'release_calls', calls)
  if not l[1] then return reply({v = 'nothing'}) end
  return reply({v = 'ok', replay = true})
end
for _, line in ipairs(cjson.decode(l[1]).items) do
  redis.call('HINCRBY', stock, line[1], line[2])
end
redis.call('HSET', ledger, 'release_calls', calls, 'release', '1')
return reply({v = 'ok', replay = false})
