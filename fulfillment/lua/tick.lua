-- tick.lua: one watchdog tick of one worker: heartbeat, take or keep the watchdog
-- lock, and (for the holder only) collect what is due.
-- KEYS: workers, lock, leases, timers, queued, then the broker queue lists.
-- A: worker, lock_ttl_ms, dead_after_us, limit, stall_us.
local A = cjson.decode(ARGV[1])
local now = now_us()
redis.call('ZADD', KEYS[1], now, A.worker)
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= A.worker then return reply({leader = false, holder = holder}) end
redis.call('SET', KEYS[2], A.worker, 'PX', A.lock_ttl_ms)

local backlog = 0
for i = 6, #KEYS do backlog = backlog + redis.call('LLEN', KEYS[i]) end
-- While the queue has a backlog a queued step may simply be waiting its turn:
-- only a step queued for longer than the stall limit counts as lost then.
local queued_ceiling = now
if backlog > 0 then queued_ceiling = now - A.stall_us end

local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - A.dead_after_us)
local running = {}
if #dead > 0 then running = redis.call('ZRANGE', KEYS[3], 0, -1) end
return reply({
  leader = true,
  now = int(now),
  backlog = backlog,
  leases = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, A.limit),
  timers = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, A.limit),
  queued = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', queued_ceiling, 'LIMIT', 0, A.limit),
  dead = dead,
  running = running,
})
