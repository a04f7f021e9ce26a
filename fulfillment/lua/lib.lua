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
-- transition queues (held back by fulfillment/transport.py:outbox). After the 14
-- order keys, KEYS holds for each message its queue list, then the lists to
-- PEXPIRE after the push (a queue declared with x-expires); A.outbox says, per
-- message, how many of those (n) and the expiry (ms), or, for a fanout message
-- (a Celery event), the pub/sub channel to PUBLISH it on (p); the payloads
-- follow A in ARGV. They are pushed only by the call that makes the transition, so "step
-- recorded" and "next step sent" happen together or not at all, and a replayed
-- call (its reply was lost) does not send them twice.
local OUTBOX_KEYS = 14
local function send_outbox(A)
  local k = OUTBOX_KEYS + 1
  for i, spec in ipairs(A.outbox or {}) do
    if spec.p then
      redis.call('PUBLISH', spec.p, ARGV[i + 1])
    else
      redis.call('LPUSH', KEYS[k], ARGV[i + 1])
      for j = 1, spec.n do redis.call('PEXPIRE', KEYS[k + j], spec.ms) end
      k = k + 1 + spec.n
    end
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
  redis.call('HDEL', K.record, 'suspect')
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

-- Which compensation undoes which step's effect.
local UNDO = {payment = 'refund_payment', inventory = 'release_inventory',
  delivery = 'cancel_shipment'}
local UNDO_ORDER = {'delivery', 'inventory', 'payment'}  -- newest effect first

-- Undo, newest effect first, whatever a step may have done. A step counts once
-- it was attempted (an attempt can charge the card and then be lost), except the
-- step a business error refused on its only attempt: the service did nothing.
local function compensations_for(K, refused_step)
  local actions = {}
  for _, step in ipairs(UNDO_ORDER) do
    local n = tonumber(redis.call('HGET', K.record, 's:' .. step .. ':attempts') or '0')
    if n > 1 or (n == 1 and step ~= refused_step) then actions[#actions + 1] = step end
  end
  return actions
end

-- Compensations. For each action `a` of the order's `compensations` list:
--   c:a             pending | running | done | not_needed
--   c:a:n           messages sent so far; the latest one's Celery task id is <id>:<a>:<n>
--                   (0: none yet, it waits for c:a:not_before)
--   c:a:sent        when the latest message was sent (or is due, after a failed try)
--   c:a:not_before  it must not run earlier: an attempt of its step that was presumed
--                   lost may still act until its lease runs out
--   c:a:claims, c:a:lease, c:a:task   the running claim (begin_compensation.lua)
-- A pending message that does not start is re-sent with a growing delay
-- (comp_grace_us * 2^(n-1)), only once it is really missing (see message_lost).

-- The message id of a step or compensation message: readable in Flower, and what a
-- worker reports holding in its heartbeat.
local function message_id(id, name, n)
  return id .. ':' .. name .. ':' .. int(n)
end

-- When the watchdog must look at compensation `a` again (nil: nothing to wait for).
local function compensation_due(K, a, A)
  local p = 'c:' .. a
  local c = redis.call('HMGET', K.record, p, p .. ':n', p .. ':sent', p .. ':not_before',
    p .. ':lease')
  if c[1] == 'running' then return tonumber(c[5]) end
  if c[1] ~= 'pending' then return nil end
  local n, not_before = tonumber(c[2] or '0'), tonumber(c[4] or '0')
  if n == 0 then return not_before end
  return math.max(tonumber(c[3]), not_before) + A.comp_grace_us * 2 ^ (n - 1)
end

-- Put the order's watchdog timer at the earliest compensation due, or clear it.
-- Returns the number of compensations not finished yet.
local function schedule_compensations(K, id, A)
  local soonest, open = nil, 0
  for _, a in ipairs(split(redis.call('HGET', K.record, 'compensations'))) do
    local state = redis.call('HGET', K.record, 'c:' .. a)
    if state == 'pending' or state == 'running' then
      open = open + 1
      local due = compensation_due(K, a, A)
      if due and (not soonest or due < soonest) then soonest = due end
    end
  end
  if soonest then redis.call('ZADD', K.timers, soonest, id) else redis.call('ZREM', K.timers, id) end
  return open
end

-- Mark compensation `a` pending and, unless its step's lost attempt may still act,
-- due to be sent now (returned as "a:n" for the sender, else nil).
local function open_compensation(K, a, now, not_before)
  local p = 'c:' .. a
  local n = tonumber(redis.call('HGET', K.record, p .. ':n') or '0')
  redis.call('HSET', K.record, p, 'pending', p .. ':not_before', int(not_before))
  if now < not_before then
    redis.call('HSET', K.record, p .. ':n', n, p .. ':sent', int(not_before))
    return nil
  end
  n = n + 1
  redis.call('HSET', K.record, p .. ':n', n, p .. ':sent', int(now))
  return a .. ':' .. n
end

-- Make the order terminal. `failure` is nil for completed orders, else
-- {type=, message=, step=, refused=} (refused: a business error of `step`).
-- Returns the compensations started (comma-joined) and those to send now ("a:n",
-- comma-joined; the rest wait for their step's lost attempt to run out of lease).
local function finish(K, id, status, now, failure, A)
  local cur = redis.call('HMGET', K.record, 'status', 'created')
  set_status(K, id, cur[1], status, cur[2])
  clear_schedule(K, id)
  redis.call('HSET', K.record, 'step', '', 'phase', '', 'finished', int(now), 'updated', int(now))
  local actions, send = {}, {}
  if failure then
    redis.call('HSET', K.record, 'failure:type', failure.type,
      'failure:message', failure.message, 'failure:step', failure.step or '')
    for _, step in ipairs(compensations_for(K, failure.refused and failure.step or nil)) do
      local a = UNDO[step]
      actions[#actions + 1] = a
      local fence_until = tonumber(redis.call('HGET', K.record, 's:' .. step .. ':fence_until') or '0')
      send[#send + 1] = open_compensation(K, a, now, fence_until)
    end
  end
  if #actions > 0 then
    redis.call('HSET', K.record, 'compensations', table.concat(actions, ','))
    schedule_compensations(K, id, A)
  else
    settle(K, status, A.retention_s)
  end
  return table.concat(actions, ','), table.concat(send, ',')
end

-- The approval wait ends without a decision: the order fails with ApprovalTimeout.
local function time_out_approval(K, id, now, deadline, source, A)
  redis.call('HSET', K.record, 'approval:decision', 'timed_out', 'approval:by', source,
    'approval:at', int(now), 's:approval:state', 'failed')
  emit(K, 'approval_timed_out', {source = source, late_by_us = int(now - deadline)})
  finish(K, id, 'failed', now,
    {type = 'ApprovalTimeout', message = 'Approval timed out', step = 'approval'}, A)
  emit(K, 'order_failed', {type = 'ApprovalTimeout', message = 'Approval timed out',
    step = 'approval', compensations = ''})
end

-- Fencing. Is `tok` ({step, epoch, attempt}) the live attempt of the order whose
-- record is `record`? nil if so, else why not. Transition scripts and the
-- services' scripts both ask this, in the same atomic step as their write.
local function stale_attempt(record, tok)
  local o = redis.call('HMGET', record, 'status', 'step', 'phase', 'epoch',
    's:' .. tostring(tok.step) .. ':attempts')
  if not o[1] then return 'order not found' end
  if TERMINAL[o[1]] then return 'order is ' .. o[1] end
  if o[2] ~= tok.step then return 'order moved on to step ' .. o[2] end
  if tonumber(o[4]) ~= tonumber(tok.epoch) then return 'superseded by epoch ' .. o[4] end
  if o[3] ~= 'running' then return 'step is ' .. o[3] end
  if tonumber(o[5] or '0') ~= tonumber(tok.attempt) then
    return 'superseded by attempt ' .. (o[5] or '0')
  end
  return nil
end

-- Is `tok` ({action, claim}) the running claim of that compensation? nil if so.
local function stale_claim(record, tok)
  local p = 'c:' .. tostring(tok.action)
  local o = redis.call('HMGET', record, p, p .. ':claims')
  if o[1] ~= 'running' then return 'compensation is ' .. tostring(o[1] or 'unknown') end
  if tonumber(o[2]) ~= tonumber(tok.claim) then return 'superseded by claim ' .. o[2] end
  return nil
end

local function fence(K, A)
  return stale_attempt(K.record, A)
end

-- A result from an attempt that is no longer the live one: dropped, and said so.
local function discard(K, A, why)
  if redis.call('EXISTS', K.record) == 1 then
    emit(K, 'result_discarded', {step = A.step, attempt = A.attempt, epoch = A.epoch,
      outcome = A.outcome, reason = why})
  end
  return reply({v = 'stale', reason = why})
end

-- Is message `msg` held by a live worker? Workers report the ids of the messages
-- they hold (prefetched, waiting for their countdown, running) in their heartbeat;
-- the watchdog passes the sets of the live ones as KEYS[first..].
local function held(msg, first)
  for i = first, #KEYS do
    if redis.call('SISMEMBER', KEYS[i], msg) == 1 then return true end
  end
  return false
end

-- Is message `msg`, due to start by `due`, really lost (so it may be sent again)?
-- Not while a live worker holds it, nor while the queue has a backlog (it may be
-- waiting its turn), until A.stall_us after `due` (a worker that heartbeats but no
-- longer works must not keep it forever); and only if it was missing at an
-- earlier look too, at least two heartbeats ago (a worker reports what it holds
-- once per heartbeat). Returns lost (bool) and, when not lost, when to look again:
-- the longer it has been overdue, the later (so a long backlog costs few looks).
local function message_lost(K, suspect_field, msg, due, now, A)
  if now < due then return false, due end
  local stalled = now >= due + A.stall_us
  local again = math.min(now + math.max(2 * A.interval_us, A.queue_grace_us, now - due),
    due + A.stall_us)
  if not stalled and (A.backlog > 0 or held(msg, A.held_from)) then
    redis.call('HDEL', K.record, suspect_field)
    return false, again
  end
  local since = tonumber(redis.call('HGET', K.record, suspect_field) or '')
  if not since then
    redis.call('HSET', K.record, suspect_field, int(now))
    return false, now + 2 * A.interval_us
  end
  if now - since < 2 * A.interval_us then return false, since + 2 * A.interval_us end
  redis.call('HDEL', K.record, suspect_field)
  return true, nil
end

-- Service side: may this call act? KEYS of a service script: ledger, stock, faults,
-- the order's record. A.token is the caller's fencing token: {step, epoch, attempt}
-- for a step's attempt, {action, claim} for a compensation. A stale token is refused
-- before anything is written (and a call for an order that does not exist writes
-- nothing at all). Returns the refusal reply, or nil if the call may go ahead.
local function refuse_stale(A)
  local tok = A.token or {}
  local why
  if tok.action then why = stale_claim(KEYS[4], tok) else why = stale_attempt(KEYS[4], tok) end
  if not why then return nil end
  if redis.call('EXISTS', KEYS[4]) == 1 then redis.call('HINCRBY', KEYS[1], 'refused_calls', 1) end
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
