-- reserve.lua: reserve stock for every line, all or nothing, idempotent on the order
-- id, fenced by the token.
-- KEYS: ledger, stock, faults, record.  A: order_id, token {step, epoch, attempt},
-- items [[name, quantity], ...] with each name once.
-- Replies v = ok (record, replay) | down (mode) | unknown (item)
--           | out_of_stock (item, available, wanted) | unseeded | stale (reason).
local A = cjson.decode(ARGV[1])
local refused = refuse_stale(A)
if refused then return refused end
local ledger, stock = KEYS[1], KEYS[2]
redis.call('HINCRBY', ledger, 'reserve_calls', 1)
local mode = fault_for('inventory', A.order_id, A.token.attempt)
if mode then return reply({v = 'down', mode = mode}) end
local existing = redis.call('HGET', ledger, 'reservation')
if existing then return reply({v = 'ok', replay = true, record = existing}) end
if redis.call('EXISTS', stock) == 0 then return reply({v = 'unseeded'}) end
for _, line in ipairs(A.items) do
  local have = redis.call('HGET', stock, line[1])
  if not have then return reply({v = 'unknown', item = line[1]}) end
  if tonumber(have) < line[2] then
    return reply({v = 'out_of_stock', item = line[1], available = tonumber(have), wanted = line[2]})
  end
end
for _, line in ipairs(A.items) do
  redis.call('HINCRBY', stock, line[1], -line[2])
end
local record = cjson.encode({items = A.items, at = int(now_us())})
redis.call('HSET', ledger, 'reservation', record)
redis.call('HINCRBY', ledger, 'reserve_effects', 1)
return reply({v = 'ok', replay = false, record = record})
