-- queued.lua: the task ids of the messages waiting in the broker's queue lists (the broker
-- being this Redis): a due run whose message is among them is not lost, backlog or not.
-- KEYS: the queue lists. A: limit (messages looked at, over all the lists).
-- Replies {ids = [task id...], complete (every message was looked at)}.
local A = cjson.decode(ARGV[1])
local ids, seen, total = {}, 0, 0
for _, key in ipairs(KEYS) do total = total + redis.call('LLEN', key) end
if total > A.limit then return reply({ids = ids, complete = false}) end
for _, key in ipairs(KEYS) do
  local n, i = redis.call('LLEN', key), 0
  while i < n do
    local chunk = redis.call('LRANGE', key, i, i + 499)
    if #chunk == 0 then break end
    for _, message in ipairs(chunk) do
      -- the headers of a task message (protocol 2) name its task id
      local id = string.match(message, '"id": ?"([^"]+)"')
      if id then ids[#ids + 1] = id end
    end
    i = i + #chunk
  end
end
return reply({ids = ids, complete = true})
