-- resume.lua: a run that failed or was cancelled runs again from a step (Temporal's
-- reset), under a new epoch. An earlier step is kept only while its effect is still in
-- place: a step that did not complete, or whose effect was undone (its compensation
-- ran), runs again, so it starts from the first such step if that comes earlier. A
-- step that runs again gets a new round: its idempotency key changes, so an effect that
-- was undone is made anew. The run must be settled (no compensation pending).
-- A: id, step (where to resume), by + common settings.
-- Replies v = dispatch (step, epoch, steps, summary) | noop (reason) | missing.
local K, A = transition()
local id = A.id
local o = redis.call('HMGET', K.record, 'status', 'epoch', 'steps', 'summary', 'compensations',
  'created', 'gates')
local status, epoch = o[1], tonumber(o[2])
if not status then return reply({v = 'missing'}) end
if status == 'compensating' then
  return reply({v = 'noop', reason = 'it is still undoing its effects (compensating)'})
end
if status ~= 'failed' and status ~= 'cancelled' then
  return reply({v = 'noop', reason = 'it is ' .. status ..
    ' (only a failed or cancelled one can resume)'})
end
local comps = {}
for _, a in ipairs(split(o[5])) do
  local state = redis.call('HGET', K.record, 'c:' .. a)
  if state == 'pending' or state == 'running' or state == 'waiting' then
    return reply({v = 'noop', reason = 'its compensation ' .. a .. ' has not finished'})
  end
  comps[a] = true
end
local steps = split(o[3])
local wanted = nil
for i, s in ipairs(steps) do if s == A.step then wanted = i end end
if not wanted then
  return reply({v = 'noop', reason = 'no step ' .. tostring(A.step) .. ' in this run'})
end
-- the first step that must run again
local start = wanted
for i = 1, wanted - 1 do
  local pol = policy(K, steps[i])
  local state = redis.call('HGET', K.record, 's:' .. steps[i] .. ':state')
  if state ~= 'completed' or (pol.undo and comps[pol.undo]) then
    start = i
    break
  end
end
local now = now_us()
local fields = {'status', 'running', 'epoch', epoch + 1, 'updated', int(now)}
for i = start, #steps do
  local s = steps[i]
  local pol = policy(K, s)
  local add = {'s:' .. s .. ':state', 'pending'}
  if pol.undo and comps[pol.undo] then
    local round = tonumber(redis.call('HGET', K.record, 's:' .. s .. ':round') or '1')
    add[#add + 1] = 's:' .. s .. ':round'
    add[#add + 1] = round + 1
    clear_compensation(K, pol.undo)
    comps[pol.undo] = nil
  end
  if pol.kind == 'gate' then
    redis.call('HDEL', K.record, 'g:' .. s .. ':decision', 'g:' .. s .. ':by',
      'g:' .. s .. ':reason', 'g:' .. s .. ':at', 'g:' .. s .. ':deadline')
  end
  for _, f in ipairs(add) do fields[#fields + 1] = f end
end
local left = {}
for _, a in ipairs(split(o[5])) do
  if comps[a] then left[#left + 1] = a end
end
fields[#fields + 1] = 'compensations'
fields[#fields + 1] = table.concat(left, ',')
redis.call('HDEL', K.record, 'failure:type', 'failure:message', 'failure:step', 'finished',
  'result', 'cancel_requested', 'cancel_reason', 'cancel_by', 'ends_as')
set_status(K, id, status, 'running', o[6], false)
unsettle(K, A)
queue_step(K, id, steps[start], epoch + 1, now, A, {phase = ''}, fields)
emit(K, 'run_resumed', {step = steps[start], requested = A.step, epoch = epoch + 1, by = A.by})
return reply({v = 'dispatch', step = steps[start], epoch = epoch + 1, steps = steps,
  summary = decoded(o[4]), limits = limits_of(K)})
