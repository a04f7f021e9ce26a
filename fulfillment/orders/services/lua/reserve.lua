-- reserve.lua: reserve stock for every line, all or nothing, idempotent on the order
-- id, fenced by the token.
-- KEYS: ledger, record, faults, stock (lib.lua).  A: order_id, token {step, epoch, attempt, round},
-- items [[name, quantity], ...] with each name once.
-- Replies v = ok (record, replay) | down (mode) | unknown (item)
--           | out_of_stock (item, available, wanted) | unseeded | stale (reason).
local A = cjson.decode(ARGV[1])
local refused = refuse_stale(A)
if refused then return refused end
local ledger, stock = KEYS[1], KEYS[4]
local answered, _, calls, effects = begin_effect(A, 'inventory', 'reservation', 'release',
  'reserve')
if answered then return answered end
local names = {}
for i, line in ipairs(A.items) do names[i] = line[1] end
local have = redis.call('HMGET', stock, unpack(names))
local seeded = false
for i, line in ipairs(A.items) do
  if have[i] then seeded = true end
end
if not seeded and redis.call('EXISTS', stock) == 0 then return reply({v = 'unseeded'}) end
for i, line in ipairs(A.items) do
  local refusal
  if not have[i] then
    refusal = {v = 'unknown', item = line[1]}
  elseif tonumber(have[i]) < line[2] then
    refusal = {v = 'out_of_stock', item = line[1], available = tonumber(have[i]),
      wanted = line[2]}
  end
  if refusal then
    redis.call('HSET', ledger, 'reserve_calls', calls)
    return reply(refusal)
  end
end
for _, line in ipairs(A.items) do
  redis.call('HINCRBY', stock, line[1], -line[2])
end
local record = cjson.encode({items = A.items})
redis.call('HSET', ledger, 'reserve_calls', calls, 'reservation', record,
  'reserve_effects', effects + 1)
return reply({v = 'ok', replay = false, record = record})
