-- create.lua: store a new run and queue its first step (idempotent on the run id).
-- A: id, workflow, input (JSON), digest, summary (JSON), fields (extra record fields of
--    the workflow), plan ([{name, policy (JSON), gate (true for a gate)}]), event (extra data of
--    the run_started event), outbox_step + common settings;
--    ARGV[2..]: the first step's message (outbox), pushed only with reply `created`.
-- Replies v = created (step, epoch, sent) | exists (status) | conflict (status).
local K, A = transition()
local id = A.id

local existing = redis.call('HMGET', K.record, 'digest', 'status')
if existing[1] then
  if existing[1] ~= A.digest then return reply({v = 'conflict', status = existing[2]}) end
  return reply({v = 'exists', status = existing[2]})
end

local now = now_us()
local names = {}
local fields = {'id', id, 'workflow', A.workflow, 'created', int(now), 'updated', int(now),
  'status', 'pending', 'input', A.input, 'digest', A.digest, 'summary', A.summary, 'epoch', 1}
local gates = {}
for _, s in ipairs(A.plan) do
  names[#names + 1] = s.name
  if s.gate then gates[#gates + 1] = s.name end
  for _, f in ipairs({'p:' .. s.name, s.policy, 's:' .. s.name .. ':state', 'pending',
      's:' .. s.name .. ':attempts', 0}) do
    fields[#fields + 1] = f
  end
end
fields[#fields + 1] = 'steps'
fields[#fields + 1] = table.concat(names, ',')
fields[#fields + 1] = 'gates'
fields[#fields + 1] = table.concat(gates, ',')
for k, v in pairs(A.fields or {}) do
  fields[#fields + 1] = k
  fields[#fields + 1] = v
end
redis.call('ZADD', K.status.pending, now, id)
local event = A.event or {}
event.steps = table.concat(names, ',')
emit(K, 'run_started', event)
local first = names[1]
queue_step(K, id, first, 1, now, A, {phase = ''}, fields)
if first == A.outbox_step then send_outbox(A) end
return reply({v = 'created', step = first, epoch = 1, sent = #ARGV - 1})
