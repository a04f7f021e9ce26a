-- orphans.lua: messages the Redis transport handed to a worker that is gone.
-- kombu keeps each message it handed to a worker and that is not acknowledged yet in
-- its unacked hash (by delivery_tag; when it was handed out in the unacked_index zset)
-- and puts it back only after the visibility timeout (an hour). Every live worker
-- reports the delivery_tag of each message it holds in
-- its heartbeat (its held set, "t:<tag>"); an entry older than A.before that no live
-- worker holds belongs to a worker that died (or lost its connection): it can go back
-- to its queue now.
-- KEYS: 1 unacked_index (zset: delivery_tag -> when handed out, seconds), 2 the scan's cursor
--       (string: the score to go on from), 3.. the held sets of the live workers.
-- A: before (seconds: only entries delivered earlier), limit (entries looked at).
-- Replies {orphans = [tag...]}.
local A = cjson.decode(ARGV[1])
local cursor = redis.call('GET', KEYS[2])
local from = '-inf'
if cursor then from = '(' .. cursor end
local rows = redis.call('ZRANGEBYSCORE', KEYS[1], from, A.before, 'WITHSCORES', 'LIMIT', 0,
  A.limit)
local orphans = {}
for i = 1, #rows, 2 do
  local tag = rows[i]
  local held = false
  for k = 3, #KEYS do
    if redis.call('SISMEMBER', KEYS[k], 't:' .. tag) == 1 then held = true break end
  end
  if not held then orphans[#orphans + 1] = tag end
end
-- go on from the last entry looked at next time; start over once through
if #rows / 2 >= A.limit then
  redis.call('SET', KEYS[2], rows[#rows], 'EX', 3600)
else
  redis.call('DEL', KEYS[2])
end
return cjson.encode({orphans = orphans})
