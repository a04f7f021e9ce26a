-- begin.lua: a worker starts an attempt of A.step under A.epoch.
-- A: id, step, epoch, task_id, worker + common settings.
-- Replies v =
--   run      start attempt `attempt` (of the step's `round`: 1, or more after the run
--            was resumed and the step's effect had been undone); `input` is the run's
--            input (JSON), `steps` its plan, `policy` the step's policy (JSON), `limits`
--            the run's own time limits, `summary` what may be shown of it; for the last
--            step, `results` holds every step's recorded result (for the run's result)
--   done     the step already completed; `result` is its recorded result
--   busy     another attempt of this step holds the lease
--   stale    the message was superseded (re-driven, or the run moved on)
--   finished the run has ended (final, or compensating)
--   missing  no such run
local K, A = transition()
local id = A.id
local sk = 's:' .. A.step .. ':'

local o = redis.call('HMGET', K.record, 'status', 'step', 'phase', 'epoch', 'task_id',
  sk .. 'attempts', 'worker', 'created', 'input', 'p:' .. A.step, 'steps',
  sk .. 'state', sk .. 'result', 'suspect', 'summary', sk .. 'round', 'limits')
local status, step, phase, epoch = o[1], o[2], o[3], tonumber(o[4])
if not status then return reply({v = 'missing'}) end
if ENDED[status] then return reply({v = 'finished', status = status}) end
if step ~= A.step then
  if o[12] == 'completed' then return reply({v = 'done', result = o[13]}) end
  return reply({v = 'stale', reason = 'run is at step ' .. step})
end
if epoch ~= tonumber(A.epoch) then
  return reply({v = 'stale', reason = 'superseded by epoch ' .. epoch})
end

local attempt = tonumber(o[6] or '0')
if phase == 'running' then
  if o[5] ~= A.task_id then
    return reply({v = 'busy', reason = 'attempt ' .. attempt .. ' holds the lease'})
  end
  -- This very message again while its attempt "runs": the broker handed it back
  -- because the process running it died (task_reject_on_worker_lost).
  emit(K, 'attempt_lost', {step = A.step, attempt = attempt, worker = o[7],
    reason = 'message redelivered: the process running the attempt died'})
elseif phase ~= 'queued' and phase ~= 'retry_wait' then
  return reply({v = 'stale', reason = 'step is ' .. tostring(phase)})
end

local now = now_us()
attempt = attempt + 1
local lease = now + us(decode_policy(o[10]).lease)
redis.call('HSET', K.record, 'status', 'running', 'phase', 'running', 'lease_until', int(lease),
  'worker', A.worker, 'task_id', A.task_id, 'started', int(now), 'updated', int(now),
  sk .. 'state', 'running', sk .. 'attempts', attempt)
if o[14] then redis.call('HDEL', K.record, 'suspect') end
set_status(K, id, status, 'running', o[8], false)
if phase == 'retry_wait' then redis.call('ZREM', K.retrying, id) end
schedule(K, id, lease)
emit(K, 'attempt_started', {step = A.step, attempt = attempt, worker = A.worker,
  task_id = A.task_id})
local out = {v = 'run', attempt = attempt, input = o[9], steps = split(o[11]),
  summary = decoded(o[15]), round = tonumber(o[16] or '1'), policy = o[10],
  limits = decoded(o[17])}
if not next_step(o[11], A.step) then
  local steps = split(o[11])
  local fields = {}
  for i, s in ipairs(steps) do fields[i] = 's:' .. s .. ':result' end
  local values = redis.call('HMGET', K.record, unpack(fields))
  local results = {}
  for i, s in ipairs(steps) do
    if values[i] then results[s] = values[i] end
  end
  out.results = results
  out.last = true
end
return reply(out)
