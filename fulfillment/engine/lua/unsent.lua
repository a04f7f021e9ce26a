-- unsent.lua: messages a transition asked for could not be published (the broker was out
-- of reach); the watchdog sends them again at its next look, whatever the queue holds.
-- A message is kept only while the run still waits for it: its step queued (or waiting
-- for its retry) under its epoch, or its compensation pending with that message number.
-- A: id, messages (their Celery task ids, <run id>:<step or action>:<n>) + common settings.
-- Replies v = ok (kept: how many are recorded) | missing.
local K, A = transition()
local o = redis.call('HMGET', K.record, 'status', 'step', 'phase', 'epoch', 'unsent')
if not o[1] then return reply({v = 'missing'}) end
local unsent = split(o[5])
local kept = 0
for _, m in ipairs(A.messages) do
  local name, n = string.match(string.sub(m, #A.id + 2), '^(.*):(%d+)$')
  local awaited = name == o[2] and tonumber(n) == tonumber(o[4])
    and (o[3] == 'queued' or o[3] == 'retry_wait')
  if not awaited and name then
    local c = redis.call('HMGET', K.record, 'c:' .. name, 'c:' .. name .. ':n')
    awaited = c[1] == 'pending' and tonumber(c[2]) == tonumber(n)
  end
  if awaited then
    unsent[#unsent + 1] = m
    kept = kept + 1
  end
end
if kept > 0 then
  redis.call('HSET', K.record, 'unsent', table.concat(unsent, ','))
  schedule(K, A.id, now_us())
end
return reply({v = 'ok', kept = kept})
