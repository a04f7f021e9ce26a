-- lib.lua: helpers shared by the engine's scripts; each script is loaded after the ones it uses
-- (fulfillment/engine/scripts.py: linked), so every helper is a top-level `local` of one name.
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
--   6..12 status indexes: pending, waiting, running, completed, failed, cancelled,
--     compensating
--   13 metrics (hash: event counters and histogram buckets, see count_event)
--   then A.nc companion keys (the workflow's own keys of the run, kept and expired with it),
--   then the outbox's keys (see send_outbox), or the held-message sets (see held).
-- ARGV[1] is one JSON argument A (see transition). Every transition's A carries the
-- common settings:
--   queue_grace_us  a queued step's message counts as late after this
--   comp_grace_us   a compensation's message counts as late after this
--   retention_s     how long a finished run is kept
--   nc              how many companion keys follow the status indexes
--
-- The run record. Its plan, written at creation and read from there:
--   steps           the step names, first to last, gates included (comma-separated)
--   p:<step>        the step's policy (JSON, fulfillment/engine/policy.py: StepPolicy, under
--                   its field names; durations in seconds): kind (step | gate),
--                   time_limit, initial_interval, backoff_coefficient, maximum_interval,
--                   maximum_attempts, non_retryable_error_types, lease, undo (its
--                   compensation's name); for a gate timeout, reject_error, timeout_error,
--                   timeout_message, cancel_decides (a cancel is one of the gate's decisions)
--   limits          the run's own step time limits (JSON, step -> seconds), if any
--   undo_mode       concurrent: every undo starts at once (else one at a time, last step first)
-- Its state: status, step, phase (queued | running | retry_wait | waiting), epoch,
--   gates (the gate names of the plan), s:<step>:state / attempts / result /
--   error / lost / fence_until, g:<gate>:deadline / decision / by / reason / at,
--   compensations and c:<action>:* (see open_compensation), result, failure:*,
--   ends_as (failed | cancelled: what a compensating run becomes once its undos are done),
--   cancel_requested / cancel_reason / cancel_by, cancel_error (the failure type of a
--   cancelled run, from the workflow).
--
-- Statuses: pending, waiting (at a gate), running, then completed; or, once a failure or
-- a cancel is accepted, compensating while its undos run and failed / cancelled (its
-- ends_as) only when every undo is done. A run without an undo to do is failed or
-- cancelled at once.

local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function int(n)
  return string.format('%d', n)
end

-- final statuses: nothing more will happen to the run (but see unsettle)
local TERMINAL = {completed = true, failed = true, cancelled = true}
-- the run no longer runs steps: final, or undoing its effects
local ENDED = {completed = true, failed = true, cancelled = true, compensating = true}
-- the first companion key (KEYS), after the run's own keys
local FIRST_COMPANION = 14

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
      completed = KEYS[9], failed = KEYS[10], cancelled = KEYS[11], compensating = KEYS[12],
    },
    metrics = KEYS[13],
  }
end

-- A policy from a run's plan (decoded). Plans written before the policy kept its
-- field names (durations in us, shorter names) are read the same way.
local function decode_policy(p)
  local pol = cjson.decode(p)
  if pol.initial_us then
    pol.initial_interval, pol.backoff_coefficient = pol.initial_us / 1e6, pol.coefficient
    pol.maximum_interval, pol.maximum_attempts = pol.maximum_us / 1e6, pol.max_attempts
  end
  if pol.lease_us then pol.lease = pol.lease_us / 1e6 end
  if pol.timeout_us then pol.timeout = pol.timeout_us / 1e6 end
  return pol
end

-- The step's policy from the run's plan.
local function policy(K, step)
  local p = redis.call('HGET', K.record, 'p:' .. step)
  if not p then return nil end
  return decode_policy(p)
end

-- Microseconds from seconds.
local function us(seconds)
  return math.floor(seconds * 1000000 + 0.5)
end

-- The backoff: how long to wait after failure number `n` (1: the first) before trying
-- again (Temporal's: initial interval x coefficient^(n-1), capped at the maximum), in us.
-- Every delay the engine computes is this one: a step's retries, a step whose worker
-- keeps dying, an undo that failed.
local function backoff(pol, n)
  return us(math.min(pol.initial_interval * pol.backoff_coefficient ^ (n - 1),
    pol.maximum_interval))
end

-- Metrics: events count in the workflow's metrics hash (read by the Prometheus
-- collector of fulfillment/ui/metrics.py), in the same atomic step as the event. To
-- keep the hot path short, only what a metric needs is counted:
--   n|<event>|<step, action or gate>       the events in COUNTED (run_* events: n|<event>|)
--   a|<step>|<outcome>                     attempts: retried | failed (reported), lost
--                                          (presumed dead) | discarded (a late result); the
--                                          succeeded ones are the d:<step> histogram's count
--                                          less the failed and retried
--   c|<action>|<outcome>                   compensations: done | not_needed | lost | resent
--   h|<name>|<i> / h|<name>|sum            histogram <name> (d:<step>: attempt durations,
--                                          w:<gate>: waits at a gate) in microseconds;
--                                          bucket i counts values <= BUCKETS_MS[i] ms
local BUCKETS_MS = {5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000}
local COUNTED = {run_started = true, run_completed = true, run_failed = true,
  run_cancelled = true, run_compensating = true, run_resumed = true, redriven = true,
  retried_now = true, gate_decided = true, gate_timed_out = true}
-- events that are an outcome of an attempt (a|) or of a compensation (c|)
local ATTEMPT_OUTCOME = {attempt_lost = 'lost', result_discarded = 'discarded'}
local COMPENSATION_OUTCOME = {compensation_lost = 'lost', compensation_resent = 'resent'}

local function observe(K, name, micros)
  micros = tonumber(micros)
  if not micros then return end
  local i = #BUCKETS_MS + 1
  for j, ms in ipairs(BUCKETS_MS) do
    if micros <= ms * 1000 then i = j break end
  end
  local f = 'h|' .. name .. '|'
  redis.call('HINCRBY', K.metrics, f .. i, 1)
  redis.call('HINCRBY', K.metrics, f .. 'sum', math.floor(micros))
end

local function count_event(K, kind, data)
  local name = data.step or data.action or data.gate or ''
  if kind == 'attempt_succeeded' or kind == 'attempt_failed' then
    -- every attempt that reports is in its step's duration histogram; a failed one is
    -- counted as failed or retried too, and the succeeded ones are the rest (one write
    -- less on the hot path: fulfillment/engine/metrics.py reads them so)
    if kind == 'attempt_failed' then
      local outcome = 'failed'
      if data.next_at then outcome = 'retried' end
      redis.call('HINCRBY', K.metrics, 'a|' .. name .. '|' .. outcome, 1)
    end
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

-- The run's keys and the script's argument A, at the start of every run transition.
-- On a cluster A also names the due shard of the node serving the run's bucket
-- (A.shard, a key of another slot on the same node: see schedule) and the bucket
-- (A.bucket); touching it first makes a stale guess of that node fail before the
-- script writes anything.
local function transition()
  local K = run_keys()
  local A = cjson.decode(ARGV[1])
  if A.shard then
    redis.call('EXISTS', A.shard)
    K.shard, K.bucket = A.shard, A.bucket
  end
  return K, A
end

-- When the watchdog looks at the run next (one zset for every reason: a transition
-- moves the run's score, it never moves the run between sets). On a cluster the node's
-- due shard keeps, per bucket, the earliest time anything in it is due (it can only be
-- early, never late: the watchdog corrects it), so that a watchdog tick looks only at
-- the buckets that have something due.
local function schedule(K, id, at)
  redis.call('ZADD', K.due, at, id)
  if K.shard then redis.call('ZADD', K.shard, 'LT', at, K.bucket) end
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
  local k = FIRST_COMPANION + A.nc
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
  for i = FIRST_COMPANION, FIRST_COMPANION + A.nc - 1 do redis.call('EXPIRE', KEYS[i], ttl) end
end

-- A finished run that has to act again (a late effect to undo) must not expire meanwhile.
local function unsettle(K, A)
  redis.call('PERSIST', K.record)
  redis.call('PERSIST', K.history)
  for i = FIRST_COMPANION, FIRST_COMPANION + A.nc - 1 do redis.call('PERSIST', KEYS[i]) end
  redis.call('DEL', K.settled)
end

-- Compensations. A run that fails or is cancelled undoes the effects of its steps in
-- reverse: its `compensations` list holds their undo actions, the last step's
-- first, and they run one at a time (the next is opened when the one before is done or
-- found nothing to undo), unless the run's undo_mode is concurrent. For each action `a`:
--   c:a             waiting (its turn has not come) | pending (due, or its message is on
--                   its way) | running (claimed) | done | not_needed
--   c:a:step        the step it undoes
--   c:a:n           messages sent so far; the latest one's Celery task id is <id>:<a>:<n>
--                   (0: none yet, it waits for c:a:not_before)
--   c:a:sent        when the latest message was sent (or is due, after a failed try)
--   c:a:not_before  it must not run earlier: an attempt of its step that was presumed
--                   lost may still act until its lease runs out
--   c:a:claims, c:a:lease, c:a:task   the running claim (begin_undo.lua)
--   c:a:failures, c:a:error           failed tries so far, and the last error
--   c:a:summary, c:a:again            what it did; a late effect to undo once more
-- A pending message that does not start is sent again with a growing delay
-- (comp_grace_us * 2^(n-1)), once it is really missing (see message_lost). The run
-- stays compensating until every action is done or not_needed; only then is it failed
-- or cancelled (finish_compensating).
--
-- Scripts that open compensations collect them in `sends`, a list of {action, n} that
-- their reply carries for the sender (with the run's own time limits, see limits_of).

local COMPENSATION_FIELDS = {'step', 'n', 'sent', 'not_before', 'claims', 'lease', 'task',
  'summary', 'again', 'suspect', 'failures', 'error'}

-- Forget compensation `a` entirely (a resumed run does its step again).
local function clear_compensation(K, a)
  local p = 'c:' .. a
  local fields = {p}
  for _, f in ipairs(COMPENSATION_FIELDS) do fields[#fields + 1] = p .. ':' .. f end
  redis.call('HDEL', K.record, unpack(fields))
end

-- The Celery task id of a step's or compensation's message: readable in Flower, and
-- what a worker reports holding in its heartbeat (fulfillment/engine/keys.py builds
-- the same).
local function message_id(id, name, n)
  return id .. ':' .. name .. ':' .. int(n)
end

-- The run's own step time limits (JSON text), for the messages a reply asks for.
local function limits_of(K)
  local limits = redis.call('HGET', K.record, 'limits')
  if limits then return cjson.decode(limits) end
  return nil
end

-- A JSON text of the record (a summary) as a table, for a reply (nil stays nil).
local function decoded(text)
  if text and text ~= '' then return cjson.decode(text) end
  return nil
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
-- Returns the number of compensations not finished yet (waiting ones included).
local function schedule_compensations(K, id, A)
  local soonest, open = nil, 0
  for _, a in ipairs(split(redis.call('HGET', K.record, 'compensations'))) do
    local state = redis.call('HGET', K.record, 'c:' .. a)
    if state == 'pending' or state == 'running' or state == 'waiting' then
      open = open + 1
      local due = compensation_due(K, a, A)
      if due and (not soonest or due < soonest) then soonest = due end
    end
  end
  if soonest then schedule(K, id, soonest) else unschedule(K, id, nil) end
  return open
end

-- When compensation `a` may run: not before its step's presumed-lost attempt (if any)
-- has run out of lease.
local function not_before_of(K, a)
  local step = redis.call('HGET', K.record, 'c:' .. a .. ':step')
  if not step then return 0 end
  return tonumber(redis.call('HGET', K.record, 's:' .. step .. ':fence_until') or '0')
end

-- Mark compensation `a` pending and, unless its step's lost attempt may still act,
-- due to be sent now: then {action, n} is added to `sends`. `not_before`: when it may
-- run (default: see not_before_of).
local function open_compensation(K, a, now, sends, not_before)
  local p = 'c:' .. a
  not_before = not_before or not_before_of(K, a)
  local n = tonumber(redis.call('HGET', K.record, p .. ':n') or '0')
  if now < not_before then
    redis.call('HSET', K.record, p, 'pending', p .. ':not_before', int(not_before),
      p .. ':n', n, p .. ':sent', int(not_before))
    return
  end
  n = n + 1
  redis.call('HSET', K.record, p, 'pending', p .. ':not_before', int(not_before),
    p .. ':n', n, p .. ':sent', int(now))
  sends[#sends + 1] = {action = a, n = n}
end

-- One at a time: when no compensation of the run is pending or running, the first
-- waiting one (the newest step's not yet undone) is opened.
local function open_next_compensation(K, now, sends)
  local waiting = nil
  for _, a in ipairs(split(redis.call('HGET', K.record, 'compensations'))) do
    local state = redis.call('HGET', K.record, 'c:' .. a)
    if state == 'pending' or state == 'running' then return end
    if state == 'waiting' and not waiting then waiting = a end
  end
  if waiting then open_compensation(K, waiting, now, sends) end
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

-- The event data of a run that failed or was cancelled, from its record.
local function ending_data(K)
  local o = redis.call('HMGET', K.record, 'ends_as', 'failure:type', 'failure:message',
    'failure:step', 'cancel_reason', 'cancel_by', 'compensations')
  local step = o[4]
  if step == '' then step = nil end
  if o[1] == 'cancelled' then
    return 'cancelled', {reason = o[5], by = o[6], step = step, compensations = o[7] or ''}
  end
  return 'failed', {type = o[2], message = o[3], step = step, compensations = o[7] or ''}
end

-- A compensating run whose every undo is done becomes what it ends as (failed or
-- cancelled), and is settled. Call after a compensation finished.
local function finish_compensating(K, id, now, A)
  local o = redis.call('HMGET', K.record, 'status', 'created')
  if o[1] ~= 'compensating' then return end
  local status, data = ending_data(K)
  set_status(K, id, 'compensating', status, o[2], false)
  redis.call('HSET', K.record, 'status', status, 'finished', int(now), 'updated', int(now))
  emit(K, 'run_' .. status, data)
  settle(K, status, A)
end

-- Make the run final, or compensating. `failure` is nil for a completed run, else
-- {type=, message=, step=, refused=} (refused: a business error of `step`).
-- `cur` = {status, created, phase} of the run before; `fields`: more fields to write;
-- `result`: a completed run's result (for its doorbell); `sends`: compensations opened.
-- Returns the compensations the run has to do (their actions, first to run first).
local function finish(K, id, status, now, failure, A, cur, fields, result, sends)
  unschedule(K, id, cur.phase)
  local args = {'step', '', 'phase', '', 'updated', int(now)}
  if not failure then  -- completed: final in this very write
    args[#args + 1], args[#args + 2], args[#args + 3], args[#args + 4] =
      'status', status, 'finished', int(now)
  end
  for _, f in ipairs(fields or {}) do args[#args + 1] = f end
  redis.call('HSET', K.record, unpack(args))
  local actions = {}
  if failure then
    redis.call('HSET', K.record, 'failure:type', failure.type,
      'failure:message', failure.message, 'failure:step', failure.step or '', 'ends_as', status)
    local concurrent = redis.call('HGET', K.record, 'undo_mode') == 'concurrent'
    for i, entry in ipairs(undo_steps(K, failure.refused and failure.step or nil)) do
      local step, a = entry[1], entry[2]
      actions[#actions + 1] = a
      redis.call('HSET', K.record, 'c:' .. a, 'waiting', 'c:' .. a .. ':step', step)
      if concurrent or i == 1 then open_compensation(K, a, now, sends) end
    end
  end
  if #actions == 0 then
    set_status(K, id, cur.status, status, cur.created, false)
    if failure then redis.call('HSET', K.record, 'status', status, 'finished', int(now)) end
    settle(K, status, A, result)
    return actions
  end
  set_status(K, id, cur.status, 'compensating', cur.created, false)
  redis.call('HSET', K.record, 'status', 'compensating', 'compensations',
    table.concat(actions, ','))
  schedule_compensations(K, id, A)
  return actions
end

-- The run fails (or, if a cancel was accepted meanwhile, is cancelled): final at once
-- when there is nothing to undo, else compensating. Emits the run-level event
-- (run_failed / run_cancelled, or run_compensating) and returns the reply for the
-- sender: v = failed | cancelled, with `compensating`, `compensations` and `send`.
local function fail_run(K, id, now, failure, A, cur, cancel)
  local status = 'failed'
  if cancel then
    status = 'cancelled'
    failure = {type = redis.call('HGET', K.record, 'cancel_error') or 'Cancelled',
      message = cancel.reason, step = failure.step, refused = failure.refused}
    redis.call('HSET', K.record, 'cancel_reason', cancel.reason or '', 'cancel_by',
      cancel.by or '')
  end
  local sends = {}
  local actions = finish(K, id, status, now, failure, A, cur, nil, nil, sends)
  local _, data = ending_data(K)
  if #actions > 0 then
    data.ends_as = status
    emit(K, 'run_compensating', data)
  else
    emit(K, 'run_' .. status, data)
  end
  return reply({v = status, compensating = #actions > 0, compensations = actions, send = sends,
    limits = limits_of(K)})
end

-- A gate's wait ends without a decision: the run fails with the gate's timeout error.
local function time_out_gate(K, id, gate, now, deadline, source, A, cur)
  local pol = policy(K, gate)
  redis.call('HSET', K.record, 'g:' .. gate .. ':decision', 'timed_out',
    'g:' .. gate .. ':by', source, 'g:' .. gate .. ':at', int(now),
    's:' .. gate .. ':state', 'failed')
  emit(K, 'gate_timed_out', {gate = gate, source = source, late_by_us = int(now - deadline),
    waited_us = int(now - deadline + us(pol.timeout))})
  return fail_run(K, id, now, {type = pol.timeout_error, message = pol.timeout_message,
    step = gate}, A, cur, nil)
end

-- Fencing. Is `tok` ({step, epoch, attempt}) the live attempt of the run whose
-- fields are `o` = {status, step, phase, epoch, attempts of tok.step}? nil if so,
-- else why not. Transition scripts and the services' scripts both ask this, in the
-- same atomic step as their write.
local function stale_fields(o, tok)
  if not o[1] then return 'run not found' end
  if ENDED[o[1]] then return 'run is ' .. o[1] end
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

-- Is message `msg` in `list` (ids the watchdog passes: held by live workers, waiting in
-- a queue, held by a dead worker)?
local function listed(msg, list)
  for _, m in ipairs(list or {}) do
    if m == msg then return true end
  end
  return false
end

-- Is message `msg`, due to start by `due`, really lost (so it may be sent again)? It is
-- if its publish failed (unsent.lua), or if the worker that held it died (A.lost: it
-- reported it in its last heartbeat; the transport keeps nothing for a dead worker),
-- once it may run (`ready`: at once for a queued step, at its time for a retry).
-- Otherwise: not while a live worker holds it (A.held), nor while it waits in a queue
-- (A.queued, or A.backlog > 0 where the queue cannot be looked through), until
-- A.stall_us after `due` (a worker that heartbeats but no longer works must not keep
-- it forever); and only if it was missing at an earlier look too, at least two
-- heartbeats ago (a worker reports what it holds once per heartbeat). Returns lost
-- (bool) and, when not lost, when to look again: the longer it has been overdue, the
-- later (so a long backlog costs few looks).
local function message_lost(K, suspect_field, msg, due, now, A, ready)
  if listed(msg, A.lost) and now >= (ready or due) then
    redis.call('HDEL', K.record, suspect_field)
    return true, nil
  end
  if now < due then return false, due end
  -- a message whose publish failed (unsent.lua) is lost for sure
  local unsent = split(redis.call('HGET', K.record, 'unsent'))
  for i, m in ipairs(unsent) do
    if m == msg then
      table.remove(unsent, i)
      if #unsent > 0 then
        redis.call('HSET', K.record, 'unsent', table.concat(unsent, ','))
      else
        redis.call('HDEL', K.record, 'unsent')
      end
      return true, nil
    end
  end
  local stalled = now >= due + A.stall_us
  local again = math.min(now + math.max(2 * A.interval_us, A.queue_grace_us, now - due),
    due + A.stall_us)
  local waiting = A.backlog > 0 or listed(msg, A.queued) or listed(msg, A.held)
  if not stalled and waiting then
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
