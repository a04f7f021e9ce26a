-- stock_give.lua (a cluster's inventory, undo 2 of 3): give back the stock taken under a
-- reservation key, once, and mark the key released so that no late attempt takes it
-- again (stock_take.lua refuses a released key).
-- KEYS: stock (hash), the key's take (string), the key's release mark (string).
-- A: ttl (seconds to keep the mark).
-- Replies v = ok (replay) | nothing.
local A = cjson.decode(ARGV[1])
local stock, take, released = KEYS[1], KEYS[2], KEYS[3]
local done = redis.call('GET', take)
if done then
  for _, line in ipairs(cjson.decode(done).items) do
    redis.call('HINCRBY', stock, line[1], line[2])
  end
  redis.call('DEL', take)
  redis.call('SET', released, '1', 'EX', A.ttl)
  return reply({v = 'ok', replay = false})
end
if redis.call('EXISTS', released) == 1 then return reply({v = 'ok', replay = true}) end
redis.call('SET', released, '1', 'EX', A.ttl)
return reply({v = 'nothing'})
