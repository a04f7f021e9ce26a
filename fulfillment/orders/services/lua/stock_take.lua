-- stock_take.lua (a cluster's inventory, 2 of 3): take stock for every line, all or
-- nothing, once per reservation key. A key whose reservation was given back already
-- (stock_give.lua) is refused: a late attempt cannot take stock again after the undo.
-- KEYS: stock (hash), the key's take (string), the key's release mark (string), all in
--       the inventory's slot.  A: items [[name, quantity], ...], ttl (seconds to keep
--       the take and the mark).
-- Replies v = ok (record, replay) | released | unknown (item)
--           | out_of_stock (item, available, wanted) | unseeded.
local A = cjson.decode(ARGV[1])
local stock, take, released = KEYS[1], KEYS[2], KEYS[3]
local done = redis.call('GET', take)
if done then return reply({v = 'ok', replay = true, record = done}) end
if redis.call('EXISTS', released) == 1 then return reply({v = 'released'}) end
local names = {}
for i, line in ipairs(A.items) do names[i] = line[1] end
local have = redis.call('HMGET', stock, unpack(names))
local seeded = false
for i = 1, #A.items do
  if have[i] then seeded = true end
end
if not seeded and redis.call('EXISTS', stock) == 0 then return reply({v = 'unseeded'}) end
for i, line in ipairs(A.items) do
  if not have[i] then return reply({v = 'unknown', item = line[1]}) end
  if tonumber(have[i]) < line[2] then
    return reply({v = 'out_of_stock', item = line[1], available = tonumber(have[i]),
      wanted = line[2]})
  end
end
for _, line in ipairs(A.items) do
  redis.call('HINCRBY', stock, line[1], -line[2])
end
local record = cjson.encode({items = A.items})
redis.call('SET', take, record, 'EX', A.ttl)
return reply({v = 'ok', replay = false, record = record})
