-- tick.lua: one watchdog tick of one worker: heartbeat, the messages it holds, take
-- or keep the watchdog lock, and (for the holder only) collect what is due.
-- KEYS: workers, lock, leases, timers, queued, this worker's held set, then the
--       broker's queue lists.
-- A: worker, lock_ttl_ms, dead_after_us, limit, held (ids of the messages this worker
--    holds: prefetched, waiting for a countdown, running).
-- Replies {leader = false} or, for the lock holder: leader, now, backlog (messages in
-- the queues), leases / timers / queued (order ids now due), alive (live workers),
-- dead (workers presumed dead), running (orders with a running attempt, when any
-- worker is dead).
local A = cjson.decode(ARGV[1])
local now = now_us()
redis.call('ZADD', KEYS[1], now, A.worker)
redis.call('DEL', KEYS[6])
if type(A.held) == 'table' and #A.held > 0 then
  for i = 1, #A.held, 1000 do
    redis.call('SADD', KEYS[6], unpack(A.held, i, math.min(i + 999, #A.held)))
  end
  -- a dead worker's set vanishes with it
  redis.call('PEXPIRE', KEYS[6], math.floor(A.dead_after_us / 1000))
end
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= A.worker then return reply({leader = false}) end
redis.call('SET', KEYS[2], A.worker, 'PX', A.lock_ttl_ms)

local backlog = 0
for i = 7, #KEYS do backlog = backlog + redis.call('LLEN', KEYS[i]) end
local horizon = now - A.dead_after_us
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. int(horizon))
local running = {}
if #dead > 0 then running = redis.call('ZRANGE', KEYS[3], 0, -1) end
return reply({
  leader = true,
  now = int(now),
  backlog = backlog,
  leases = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, A.limit),
  timers = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, A.limit),
  queued = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now, 'LIMIT', 0, A.limit),
  alive = redis.call('ZRANGEBYSCORE', KEYS[1], int(horizon), '+inf'),
  dead = dead,
  running = running,
})
