-- lib.lua: helpers shared by every script; prepended to each one when it is loaded.
--
-- Times are the server's clock (TIME) in microseconds, so leases and deadlines
-- mean the same thing to every worker whatever its own clock says. They are
-- written with %d: Lua's tostring() would turn them into 1.7e+15.
--
-- Order transition scripts take the keys of fulfillment/keys.py:OrderKeys.transition()
-- and one JSON argument A. A always carries the common settings:
--   queue_grace_us  how long a queued step may wait before it counts as lost
--   comp_grace_us   how long a compensation may stay pending before it is re-sent
--   retention_s     how long a finished order is kept

local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function int(n)
  return string.format('%d', n)
end

local TERMINAL = {completed = true, failed = true, cancelled = true}

local function reply(t)
  return cjson.encode(t)
end

local function split(csv)
  local out = {}
  for part in string.gmatch(csv or '', '[^,]+') do
    out[#out + 1] = part
  end
  return out
end

local function order_keys()
  return {
    record = KEYS[1], history = KEYS[2], ledger = KEYS[3],
    leases = KEYS[4], timers = KEYS[5], queued = KEYS[6], retrying = KEYS[7],
    status = {
      pending = KEYS[8], awaiting_approval = KEYS[9], running = KEYS[10],
      completed = KEYS[11], failed = KEYS[12], cancelled = KEYS[13],
    },
    settled = KEYS[14],
  }
end

-- The transactional outbox: Celery messages the caller built for the step this
-- transition queues (held back by fulfillment/transport.py:outbox). Their queue
-- keys follow the 14 order keys in KEYS, their payloads follow A in ARGV. They
-- are pushed only by the call that makes the transition, so "step recorded" and
-- "next step sent" happen together or not at all, and a replayed call (its
-- reply was lost) does not send them twice.
local OUTBOX_KEYS = 14
local function send_outbox()
  for i = 2, #ARGV do
    redis.call('LPUSH', KEYS[OUTBOX_KEYS + i - 1], ARGV[i])
  end
end

-- Append one event to the order's history stream.
local function emit(K, kind, data)
  redis.call('XADD', K.history, '*', 'type', kind, 'data', cjson.encode(data))
end

-- Move the order between status indexes and set its status field.
local function set_status(K, id, old, new, created)
  if old == new then return end
  if old and K.status[old] then redis.call('ZREM', K.status[old], id) end
  redis.call('ZADD', K.status[new], created, id)
  redis.call('HSET', K.record, 'status', new)
end

local function clear_schedule(K, id)
  redis.call('ZREM', K.leases, id)
  redis.call('ZREM', K.timers, id)
  redis.call('ZREM', K.queued, id)
  redis.call('ZREM', K.retrying, id)
end

local function next_step(steps_csv, step)
  local steps = split(steps_csv)
  for i, s in ipairs(steps) do
    if s == step then return steps[i + 1] end
  end
  return nil
end

-- Put `step` in the queue under `epoch`: the next message for it is on its way.
local function queue_step(K, id, step, epoch, now, A)
  redis.call('HSET', K.record, 'step', step, 'phase', 'queued', 'epoch', epoch,
    'queued_at', int(now), 'updated', int(now))
  redis.call('ZREM', K.leases, id)
  redis.call('ZREM', K.timers, id)
  redis.call('ZREM', K.retrying, id)
  redis.call('ZADD', K.queued, now + A.queue_grace_us, id)
end

-- The order is finished and nothing more will happen to it (no compensation
-- pending): ring its doorbell, a one-element list that waiters block on with
-- BLMOVE from the list to itself (every waiter wakes, the element stays, and a
-- late waiter returns at once), and start its retention. The element says how
-- it ended, with the result of a completed order, so that a waiter for the
-- result needs no further read.
local function settle(K, status, retention_s)
  local ttl = math.max(1, math.floor(retention_s))
  local outcome = {status = status}
  if status == 'completed' then outcome.result = redis.call('HGET', K.record, 'result') end
  redis.call('RPUSH', K.settled, cjson.encode(outcome))
  redis.call('EXPIRE', K.settled, ttl)
  redis.call('EXPIRE', K.record, ttl)
  redis.call('EXPIRE', K.history, ttl)
  redis.call('EXPIRE', K.ledger, ttl)
end

-- Undo, newest effect first, whatever a step may have done. A step counts once
-- it was attempted (an attempt can charge the card and then be lost), except the
-- step a business error refused on its only attempt: the service did nothing.
local function compensations_for(K, refused_step)
  local att = redis.call('HMGET', K.record,
    's:payment:attempts', 's:inventory:attempts', 's:delivery:attempts')
  local steps = {{'delivery', att[3], 'cancel_shipment'}, {'inventory', att[2], 'release_inventory'},
    {'payment', att[1], 'refund_payment'}}
  local actions = {}
  for _, s in ipairs(steps) do
    local n = tonumber(s[2] or '0')
    if n > 1 or (n == 1 and s[1] ~= refused_step) then actions[#actions + 1] = s[3] end
  end
  return actions
end

-- Make the order terminal. `failure` is nil for completed orders, else
-- {type=, message=, step=, refused=} (refused: a business error of `step`).
-- Returns the compensations started, comma-joined.
local function finish(K, id, status, now, failure, A)
  local cur = redis.call('HMGET', K.record, 'status', 'created')
  set_status(K, id, cur[1], status, cur[2])
  clear_schedule(K, id)
  redis.call('HSET', K.record, 'step', '', 'phase', '', 'finished', int(now), 'updated', int(now))
  local actions = {}
  if failure then
    redis.call('HSET', K.record, 'failure:type', failure.type,
      'failure:message', failure.message, 'failure:step', failure.step or '')
    actions = compensations_for(K, failure.refused and failure.step or nil)
  end
  if #actions > 0 then
    redis.call('HSET', K.record, 'compensations', table.concat(actions, ','))
    for _, action in ipairs(actions) do
      redis.call('HSET', K.record, 'c:' .. action, 'pending')
    end
    redis.call('ZADD', K.timers, now + A.comp_grace_us, id)
  else
    settle(K, status, A.retention_s)
  end
  return table.concat(actions, ',')
end

-- Is (A.step, A.epoch, A.attempt) still the live attempt? nil if so, else why not.
local function fence(K, A)
  local o = redis.call('HMGET', K.record, 'status', 'step', 'phase', 'epoch')
  if not o[1] then return 'order not found' end
  if TERMINAL[o[1]] then return 'order is ' .. o[1] end
  if o[2] ~= A.step then return 'order moved on to step ' .. o[2] end
  if tonumber(o[4]) ~= tonumber(A.epoch) then return 'superseded by epoch ' .. o[4] end
  if o[3] ~= 'running' then return 'step is ' .. o[3] end
  local attempts = tonumber(redis.call('HGET', K.record, 's:' .. A.step .. ':attempts') or '0')
  if attempts ~= tonumber(A.attempt) then
    return 'superseded by attempt ' .. attempts
  end
  return nil
end

-- A result from an attempt that is no longer the live one: dropped, and said so.
local function discard(K, A, why)
  if redis.call('EXISTS', K.record) == 1 then
    emit(K, 'result_discarded', {step = A.step, attempt = A.attempt, epoch = A.epoch,
      outcome = A.outcome, reason = why})
  end
  return reply({v = 'stale', reason = why})
end

-- Service side: is `service` down for this call? Returns the fault mode or nil.
-- A fault set for one order (field "<service>:<order id>") wins over one set for all.
local function fault_for(faults_key, service, order_id, attempt)
  local spec = redis.call('HGET', faults_key, service .. ':' .. order_id)
  if not spec then spec = redis.call('HGET', faults_key, service) end
  if not spec then return nil end
  local f = cjson.decode(spec)
  if f.attempts >= 0 and attempt > f.attempts then return nil end
  return f.mode
end
