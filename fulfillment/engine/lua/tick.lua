-- tick.lua: one watchdog tick of one worker: heartbeat, the messages it holds, take or
-- keep the watchdog lock, and (for the holder only) collect what is due.
-- KEYS: workers, lock, this worker's held set, then the due zset of each of the A.nw
--       workflows, then the broker's queue lists.
-- A: worker, lock_ttl_ms, takeover_us (a holder whose last beat is older has missed one),
--    dead_after_us, limit, nw, held (ids of the messages this worker holds: prefetched,
--    waiting for a countdown, running).
-- Replies {leader = false} or, for the lock holder: leader, now, backlog (messages in
-- the queues), due (per workflow: the run ids now due), alive (live workers), dead
-- (workers presumed dead) and scheduled (per workflow: every run in its due zset, only
-- when a worker is dead: the watchdog looks for the runs it was running).
local A = cjson.decode(ARGV[1])
local now = now_us()
redis.call('ZADD', KEYS[1], now, A.worker)
redis.call('DEL', KEYS[3])
if type(A.held) == 'table' and #A.held > 0 then
  for i = 1, #A.held, 1000 do
    redis.call('SADD', KEYS[3], unpack(A.held, i, math.min(i + 999, #A.held)))
  end
  -- a dead worker's set outlives it long enough for the watchdog to send the steps of
  -- the messages it held again (then the watchdog drops it), and vanishes after that
  redis.call('PEXPIRE', KEYS[3], math.floor(4 * A.dead_after_us / 1000))
end
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= A.worker then
  -- The holder keeps the lock while it beats. One that missed a heartbeat (killed, or
  -- stalled) is taken over now, not when its lock runs out: a dead leader is then
  -- found as fast as any dead worker. Should it come back mid-tick, its re-drives and
  -- the new holder's are the same atomic, epoch-checked scripts: one of each counts.
  local beat = tonumber(redis.call('ZSCORE', KEYS[1], holder))
  if beat and beat >= now - A.takeover_us then return reply({leader = false}) end
end
redis.call('SET', KEYS[2], A.worker, 'PX', A.lock_ttl_ms)

local backlog = 0
for i = 4 + A.nw, #KEYS do backlog = backlog + redis.call('LLEN', KEYS[i]) end
local horizon = now - A.dead_after_us
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. int(horizon))
local due, scheduled = {}, {}
for w = 1, A.nw do
  due[w] = redis.call('ZRANGEBYSCORE', KEYS[3 + w], '-inf', now, 'LIMIT', 0, A.limit)
  scheduled[w] = {}
  if #dead > 0 then scheduled[w] = redis.call('ZRANGE', KEYS[3 + w], 0, -1) end
end
return reply({
  leader = true,
  now = int(now),
  backlog = backlog,
  due = due,
  alive = redis.call('ZRANGEBYSCORE', KEYS[1], int(horizon), '+inf'),
  dead = dead,
  scheduled = scheduled,
})
