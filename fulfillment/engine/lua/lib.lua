-- lib.lua: helpers shared by every engine script; prepended to each one when it is loaded.
--
-- Times are the server's clock (TIME) in microseconds, so leases and deadlines mean
-- the same thing to every worker whatever its own clock says. They are written with
-- %d: Lua's tostring() would turn them into 1.7e+15.
--
-- KEYS of every run transition (fulfillment/engine/keys.py: RunKeys.transition):
--   1 record (hash)   2 history (stream)   3 settled (list: the doorbell)
--   4 due (zset: run id -> when the watchdog looks at it next: a lease's end, a late
--     message, a retry, a gate's deadline, a compensation)
--   5 retrying (zset: runs whose failed step waits for its next attempt)
--   6..11 status indexes: pending, waiting, running, completed, failed, cancelled
--   12 metrics (hash: event counters and histogram buckets, see count_event)
--   then A.nc companion keys (the workflow's own keys of the run, kept and expired with it),
--   then the outbox's keys (see send_outbox), or the held-message sets (see held).
-- ARGV[1] is one JSON argument A. Every transition's A carries the common settings:
--   queue_grace_us  a queued step's message counts as late after this
--   comp_grace_us   a compensation's message counts as late after this
--   retention_s     how long a finished run is kept
--   nc              how many companion keys follow the status indexes
--
-- The run record. Its plan, written at creation and read from there:
--   steps           the step names in order, gates included (comma-separated)
--   p:<step>        the step's policy (JSON): kind (step | gate), lease_us, initial_us,
--                   coefficient, maximum_us, max_attempts, undo (its compensation's name),
--                   and for a gate timeout_us, reject_error, timeout_error, timeout_message,
--                   cancel_decides (a cancel is one of the gate's decisions)
-- Its state: status, step, phase (queued | running | retry_wait | waiting), epoch,
--   gates (the gate names of the plan), s:<step>:state / attempts / result /
--   error / lost / fence_until, g:<gate>:deadline / decision / by / reason / at,
--   compensations and c:<action>:* (see open_compensation), result, failure:*,
--   cancel_requested / cancel_reason / cancel_by, cancel_error (the failure type of a
--   cancelled run, from the workflow).

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

local function run_keys()
  return {
    record = KEYS[1], history = KEYS[2], settled = KEYS[3], due = KEYS[4], retrying = KEYS[5],
    status = {
      pending = KEYS[6], waiting = KEYS[7], running = KEYS[8],
      completed = KEYS[9], failed = KEYS[10], cancelled = KEYS[11],
    },
    metrics = KEYS[12],
  }
end

-- The step's policy from the run's plan.
local function policy(K, step)
  local p = redis.call('HGET', K.record, 'p:' .. step)
  if not p then return nil end
  return cjson.decode(p)
end

-- Metrics: events count in the workflow's metrics hash (read by the Prometheus
-- collector of fulfillment/ui/metrics.py), in the same atomic step as the event. To
-- keep the hot path short, only what a metric needs is counted:
--   n|<event>|<step, action or gate>       the events in COUNTED (run_* events: n|<event>|)
--   a|<step>|<outcome>                     attempts: succeeded | retried | failed (reported),
--                                          lost (presumed dead) | discarded (a late result)
--   c|<action>|<outcome>                   compensations: done | not_needed | lost | resent
--   h|<name>|<i> / h|<name>|sum            histogram <name> (d:<step>: attempt durations,
--                                          w:<gate>: waits at a gate) in microseconds;
--                                          bucket i counts values <= BUCKETS_MS[i] ms
local BUCKETS_MS = {5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000}
local COUNTED = {run_started = true, run_completed = true, run_failed = true,
  run_cancelled = true, run_resumed = true, redriven = true, retried_now = true,
  gate_decided = true, gate_timed_out = true}
-- events that are an outcome of an attempt (a|) or of a compensation (c|)
local ATTEMPT_OUTCOME = {attempt_lost = 'lost', result_discarded = 'discarded'}
local COMPENSATION_OUTCOME = {compensation_lost = 'lost', compensation_resent = 'resent'}

local function observe(K, name, us)
  us = tonumber(us)
  if not us then return end
  local i = #BUCKETS_MS + 1
  for j, ms in ipairs(BUCKETS_MS) do
    if us <= ms * 1000 then i = j break end
  end
  local f = 'h|' .. name .. '|'
  redis.call('HINCRBY', K.metrics, f .. i, 1)
  redis.call('HINCRBY', K.metrics, f .. 'sum', math.floor(us))
end

local function count_event(K, kind, data)
  local name = data.step or data.action or data.gate or ''
  if kind == 'attempt_succeeded' or kind == 'attempt_failed' then
    local outcome = 'succeeded'
    if kind == 'attempt_failed' then
      outcome = 'failed'
      if data.next_at then outcome = 'retried' end
    end
    redis.call('HINCRBY', K.metrics, 'a|' .. name .. '|' .. outcome, 1)
    observe(K, 'd:' .. name, data.duration_us)
  elseif ATTEMPT_OUTCOME[kind] then
    redis.call('HINCRBY', K.metrics, 'a|' .. name .. '|' .. ATTEMPT_OUTCOME[kind], 1)
  elseif kind == 'compensated' or COMPENSATION_OUTCOME[kind] then
    local outcome = COMPENSATION_OUTCOME[kind] or tostring(data.outcome)
    redis.call('HINCRBY', K.metrics, 'c|' .. name .. '|' .. outcome, 1)
  elseif COUNTED[kind] then
    if string.sub(kind, 1, 4) == 'run_' then name = '' end
    redis.call('HINCRBY', K.metrics, 'n|' .. kind .. '|' .. name, 1)
    if data.waited_us then observe(K, 'w:' .. name, data.waited_us) end
  end
end

-- Append one event to the run's history stream (and count it).
local function emit(K, kind, data)
  redis.call('XADD', K.history, '*', 'type', kind, 'data', cjson.encode(data))
  count_event(K, kind, data)
end

-- Move the run between status indexes. The caller writes the status field (in the
-- HSET it makes anyway) unless `write` says so.
local function set_status(K, id, old, new, created, write)
  if old == new then return end
  if old and K.status[old] then redis.call('ZREM', K.status[old], id) end
  redis.call('ZADD', K.status[new], created, id)
  if write then redis.call('HSET', K.record, 'status', new) end
end

-- When the watchdog looks at the run next (one zset for every reason: a transition
-- moves the run's score, it never moves the run between sets).
local function schedule(K, id, at)
  redis.call('ZADD', K.due, at, id)
end

local function unschedule(K, id, phase)
  redis.call('ZREM', K.due, id)
  if phase == 'retry_wait' then redis.call('ZREM', K.retrying, id) end
end

-- The step after `step` in the plan (nil if it is the last).
local function next_step(steps_csv, step)
  local steps = split(steps_csv)
  for i, s in ipairs(steps) do
    if s == step then return steps[i + 1] end
  end
  return nil
end

-- Put `step` in the queue under `epoch`: the message for it is on its way. `cur` is
-- the run before ({phase}); `fields`: more fields to write in the same HSET.
local function queue_step(K, id, step, epoch, now, A, cur, fields)
  local args = {'step', step, 'phase', 'queued', 'epoch', epoch, 'queued_at', int(now),
    'updated', int(now)}
  for _, f in ipairs(fields or {}) do args[#args + 1] = f end
  redis.call('HSET', K.record, unpack(args))
  if cur.phase == 'retry_wait' then redis.call('ZREM', K.retrying, id) end
  schedule(K, id, now + A.queue_grace_us)
end

-- The transactional outbox: Celery messages the caller built for the step this
-- transition queues (held back by fulfillment/engine/transport.py:outbox). After the
-- companion keys, KEYS holds for each message its queue list, then the lists to
-- PEXPIRE after the push (a queue declared with x-expires); A.outbox says, per
-- message, how many of those (n) and the expiry (ms), or, for a fanout message (a
-- Celery event), the pub/sub channel to PUBLISH it on (p); the payloads follow A in
-- ARGV. They are pushed only by the call that makes the transition, so "step
-- recorded" and "next step sent" happen together or not at all, and a replayed
-- call (its reply was lost) does not send them twice.
local function send_outbox(A)
  local k = 13 + A.nc
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

-- The run is finished and nothing more will happen to it (no compensation pending):
-- ring its doorbell, a one-element list that waiters block on with BLMOVE from the
-- list to itself (every waiter wakes, the element stays, and a late waiter returns at
-- once), and start its retention, companion keys included. The element says how it
-- ended, with the result of a completed run, so a waiter needs no further read.
local function settle(K, status, A, result)
  local ttl = math.max(1, math.floor(A.retention_s))
  local outcome = {status = status}
  if status == 'completed' then
    outcome.result = result or redis.call('HGET', K.record, 'result')
  end
  redis.call('RPUSH', K.settled, cjson.encode(outcome))
  redis.call('EXPIRE', K.settled, ttl)
  redis.call('EXPIRE', K.record, ttl)
  redis.call('EXPIRE', K.history, ttl)
  for i = 13, 12 + A.nc do redis.call('EXPIRE', KEYS[i], ttl) end
end

-- A finished run that has to act again (a late effect to undo) must not expire meanwhile.
local function unsettle(K, A)
  redis.call('PERSIST', K.record)
  redis.call('PERSIST', K.history)
  for i = 13, 12 + A.nc do redis.call('PERSIST', KEYS[i]) end
  redis.call('DEL', K.settled)
end

-- Compensations. For each action `a` in the run's `compensations` list:
--   c:a             pending | running | done | not_needed
--   c:a:n           messages sent so far; the latest one's Celery task id is <id>:<a>:<n>
--                   (0: none yet, it waits for c:a:not_before)
--   c:a:sent        when the latest message was sent (or is due, after a failed try)
--   c:a:not_before  it must not run earlier: an attempt of its step that was presumed
--                   lost may still act until its lease runs out
--   c:a:claims, c:a:lease, c:a:task   the running claim (begin_undo.lua)
-- A pending message that does not start is sent again with a growing delay
-- (comp_grace_us * 2^(n-1)), once it is really missing (see message_lost).

-- Forget compensation `a` entirely (a resumed run does its step again).
local function clear_compensation(K, a)
  local p = 'c:' .. a
  local fields = {p}
  for _, f in ipairs({'n', 'sent', 'not_before', 'claims', 'lease', 'task', 'summary', 'again',
      'suspect'}) do
    fields[#fields + 1] = p .. ':' .. f
  end
  redis.call('HDEL', K.record, unpack(fields))
end

-- The Celery task id of a step's or compensation's message: readable in Flower, and
-- what a worker reports holding in its heartbeat (fulfillment/engine/keys.py builds
-- the same).
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

-- Put the run's watchdog timer at the earliest compensation due, or clear it.
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
  if soonest then schedule(K, id, soonest) else unschedule(K, id, nil) end
  return open
end

-- Mark compensation `a` pending and, unless its step's lost attempt may still act,
-- due to be sent now (returned as "a:n" for the sender, else nil).
local function open_compensation(K, a, now, not_before)
  local p = 'c:' .. a
  local n = tonumber(redis.call('HGET', K.record, p .. ':n') or '0')
  if now < not_before then
    redis.call('HSET', K.record, p, 'pending', p .. ':not_before', int(not_before),
      p .. ':n', n, p .. ':sent', int(not_before))
    return nil
  end
  n = n + 1
  redis.call('HSET', K.record, p, 'pending', p .. ':not_before', int(not_before),
    p .. ':n', n, p .. ':sent', int(now))
  return a .. ':' .. n
end

-- The compensations of a run that failed or was cancelled: every step with an undo,
-- newest first, that was attempted (an attempt can act and then be lost), except the
-- step a business error refused on its only attempt (the service did nothing).
local function undo_steps(K, refused_step)
  local steps = split(redis.call('HGET', K.record, 'steps'))
  local out = {}
  for i = #steps, 1, -1 do
    local step = steps[i]
    local pol = policy(K, step)
    if pol and pol.undo then
      local n = tonumber(redis.call('HGET', K.record, 's:' .. step .. ':attempts') or '0')
      if n > 1 or (n == 1 and step ~= refused_step) then out[#out + 1] = {step, pol.undo} end
    end
  end
  return out
end

-- Make the run terminal. `failure` is nil for a completed run, else
-- {type=, message=, step=, refused=} (refused: a business error of `step`).
-- `cur` = {status, created, phase} of the run before; `fields`: more fields to write;
-- `result`: a completed run's result (for its doorbell).
-- Returns the compensations started (comma-joined) and those to send now ("a:n",
-- comma-joined; the rest wait for their step's lost attempt to run out of lease).
local function finish(K, id, status, now, failure, A, cur, fields, result)
  set_status(K, id, cur.status, status, cur.created, false)
  unschedule(K, id, cur.phase)
  local args = {'status', status, 'step', '', 'phase', '', 'finished', int(now), 'updated', int(now)}
  for _, f in ipairs(fields or {}) do args[#args + 1] = f end
  redis.call('HSET', K.record, unpack(args))
  local actions, send = {}, {}
  if failure then
    redis.call('HSET', K.record, 'failure:type', failure.type,
      'failure:message', failure.message, 'failure:step', failure.step or '')
    for _, entry in ipairs(undo_steps(K, failure.refused and failure.step or nil)) do
      local step, a = entry[1], entry[2]
      actions[#actions + 1] = a
      local fence_until = tonumber(redis.call('HGET', K.record, 's:' .. step .. ':fence_until') or '0')
      send[#send + 1] = open_compensation(K, a, now, fence_until)
    end
  end
  if #actions > 0 then
    redis.call('HSET', K.record, 'compensations', table.concat(actions, ','))
    schedule_compensations(K, id, A)
  else
    settle(K, status, A, result)
  end
  return table.concat(actions, ','), table.concat(send, ',')
end

-- The run fails (or, if a cancel was accepted meanwhile, is cancelled). Emits the
-- run-level event and returns the reply for the sender.
local function fail_run(K, id, now, failure, A, cur, cancel)
  if cancel then
    local kind = redis.call('HGET', K.record, 'cancel_error') or 'Cancelled'
    local comps, send = finish(K, id, 'cancelled', now, {type = kind,
      message = cancel.reason, step = failure.step, refused = failure.refused}, A, cur)
    emit(K, 'run_cancelled', {reason = cancel.reason, by = cancel.by, step = failure.step,
      compensations = comps})
    return reply({v = 'cancelled', compensations = comps, send = send})
  end
  local comps, send = finish(K, id, 'failed', now, failure, A, cur)
  emit(K, 'run_failed', {type = failure.type, message = failure.message, step = failure.step,
    compensations = comps})
  return reply({v = 'failed', compensations = comps, send = send})
end

-- A gate's wait ends without a decision: the run fails with the gate's timeout error.
local function time_out_gate(K, id, gate, now, deadline, source, A, cur)
  local pol = policy(K, gate)
  redis.call('HSET', K.record, 'g:' .. gate .. ':decision', 'timed_out',
    'g:' .. gate .. ':by', source, 'g:' .. gate .. ':at', int(now),
    's:' .. gate .. ':state', 'failed')
  emit(K, 'gate_timed_out', {gate = gate, source = source, late_by_us = int(now - deadline),
    waited_us = int(now - deadline + pol.timeout_us)})
  return fail_run(K, id, now, {type = pol.timeout_error, message = pol.timeout_message,
    step = gate}, A, cur, nil)
end

-- Fencing. Is `tok` ({step, epoch, attempt}) the live attempt of the run whose
-- fields are `o` = {status, step, phase, epoch, attempts of tok.step}? nil if so,
-- else why not. Transition scripts and the services' scripts both ask this, in the
-- same atomic step as their write.
local function stale_fields(o, tok)
  if not o[1] then return 'run not found' end
  if TERMINAL[o[1]] then return 'run is ' .. o[1] end
  if o[2] ~= tok.step then return 'run moved on to step ' .. o[2] end
  if tonumber(o[4]) ~= tonumber(tok.epoch) then return 'superseded by epoch ' .. o[4] end
  if o[3] ~= 'running' then return 'step is ' .. o[3] end
  if tonumber(o[5] or '0') ~= tonumber(tok.attempt) then
    return 'superseded by attempt ' .. (o[5] or '0')
  end
  return nil
end

local function stale_attempt(record, tok)
  return stale_fields(redis.call('HMGET', record, 'status', 'step', 'phase', 'epoch',
    's:' .. tostring(tok.step) .. ':attempts'), tok)
end

-- Is `tok` ({action, claim}) the running claim of that compensation? nil if so.
local function stale_claim(record, tok)
  local p = 'c:' .. tostring(tok.action)
  local o = redis.call('HMGET', record, p, p .. ':claims')
  if o[1] ~= 'running' then return 'compensation is ' .. tostring(o[1] or 'unknown') end
  if tonumber(o[2]) ~= tonumber(tok.claim) then return 'superseded by claim ' .. o[2] end
  return nil
end

-- A result from an attempt that is no longer the live one: dropped, and said so.
local function discard(K, A, why, exists)
  if exists then
    emit(K, 'result_discarded', {step = A.step, attempt = A.attempt, epoch = A.epoch,
      outcome = A.outcome, reason = why})
  end
  return reply({v = 'stale', reason = why})
end

-- Is message `msg` held by a live worker? Workers report the ids of the messages they
-- hold (prefetched, waiting for a countdown, running) in their heartbeat; the
-- watchdog passes the sets of the live ones as KEYS[A.held_from..].
local function held(msg, first)
  for i = first, #KEYS do
    if redis.call('SISMEMBER', KEYS[i], msg) == 1 then return true end
  end
  return false
end

-- Is message `msg`, due to start by `due`, really lost (so it may be sent again)?
-- Not while a live worker holds it, nor while the queue has a backlog (it may be
-- waiting its turn), until A.stall_us after `due` (a worker that heartbeats but no
-- longer works must not keep it forever); and only if it was missing at an earlier
-- look too, at least two heartbeats ago (a worker reports what it holds once per
-- heartbeat). Returns lost (bool) and, when not lost, when to look again: the longer
-- it has been overdue, the later (so a long backlog costs few looks).
local function message_lost(K, suspect_field, msg, due, now, A)
  if now < due then return false, due end
  local stalled = now >= due + A.stall_us
  local again = math.min(now + math.max(2 * A.interval_us, A.queue_grace_us, now - due),
    due + A.stall_us)
  if not stalled and (A.backlog > 0 or held(msg, A.held_from)) then
    redis.call('HDEL', K.record, suspect_field)
    return false, again
  end
  -- the field holds "<message id>|<since>": a suspicion of an earlier message is void
  local seen = redis.call('HGET', K.record, suspect_field) or ''
  local since = nil
  if seen:sub(1, #msg + 1) == msg .. '|' then since = tonumber(seen:sub(#msg + 2)) end
  if not since then
    redis.call('HSET', K.record, suspect_field, msg .. '|' .. int(now))
    return false, now + 2 * A.interval_us
  end
  if now - since < 2 * A.interval_us then return false, since + 2 * A.interval_us end
  redis.call('HDEL', K.record, suspect_field)
  return true, nil
end

-- The run moves past `from` (a step that completed, or a gate that was passed) under
-- `epoch`: the next step is queued, passing at once any gate already decided early
-- (a decision sent before the run reached its gate counts). Returns the reply for
-- the caller's next move: {step = <the step queued>}, {completed = true} when `from`
-- was the last step, or {failed = <reply>} (a gate rejected early). `fields`: more fields
-- to write with the run's next write (the result of the step that completed).
local function advance(K, id, from, epoch, now, A, cur, fields)
  local nxt = next_step(cur.steps, from)
  local gates = {}
  for _, g in ipairs(split(cur.gates)) do gates[g] = true end
  while nxt and gates[nxt] do
    local pol = policy(K, nxt)
    local g = redis.call('HMGET', K.record, 'g:' .. nxt .. ':decision', 'g:' .. nxt .. ':by',
      'g:' .. nxt .. ':reason')
    if g[1] == 'approved' then
      local args = {'s:' .. nxt .. ':state', 'completed', 's:' .. nxt .. ':result',
        'Approved by ' .. g[2]}
      for _, f in ipairs(fields or {}) do args[#args + 1] = f end
      redis.call('HSET', K.record, unpack(args))
      fields = nil
      nxt = next_step(cur.steps, nxt)
    elseif g[1] == 'rejected' then
      local args = {'s:' .. nxt .. ':state', 'failed'}
      for _, f in ipairs(fields or {}) do args[#args + 1] = f end
      redis.call('HSET', K.record, unpack(args))
      return {failed = fail_run(K, id, now, {type = pol.reject_error, message = g[3], step = nxt},
        A, cur, nil)}
    else
      break
    end
  end
  if not nxt then return {completed = true} end
  queue_step(K, id, nxt, epoch, now, A, cur, fields)
  return {step = nxt}
end
