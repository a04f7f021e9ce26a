-- create.lua: store a new order and queue its first step (idempotent on the id).
-- A: id, order (canonical JSON), digest, summary (JSON), total, items, steps (csv),
--    needs_approval (0/1), approval_timeout_us, threshold + common settings;
-- ARGV[2..]: the first step's message (outbox), pushed only with reply `created`.
local K = order_keys()
local A = cjson.decode(ARGV[1])
local id = A.id

local existing = redis.call('HMGET', K.record, 'digest', 'status', 'epoch', 'step')
if existing[1] then
  if existing[1] ~= A.digest then
    return reply({v = 'conflict', status = existing[2]})
  end
  return reply({v = 'exists', status = existing[2]})
end

local now = now_us()
local steps = split(A.steps)
local first = steps[1]
redis.call('HSET', K.record,
  'id', id, 'created', int(now), 'updated', int(now), 'status', 'pending',
  'order', A.order, 'digest', A.digest, 'summary', A.summary, 'total', A.total,
  'items', A.items, 'steps', A.steps, 'needs_approval', A.needs_approval,
  'approval_timeout_us', int(A.approval_timeout_us), 'epoch', 1)
for _, s in ipairs(steps) do
  redis.call('HSET', K.record, 's:' .. s .. ':state', 'pending', 's:' .. s .. ':attempts', 0)
end
redis.call('ZADD', K.status.pending, now, id)
emit(K, 'order_placed', {total = A.total, items = A.items, steps = A.steps,
  needs_approval = A.needs_approval == 1, threshold = A.threshold})
queue_step(K, id, first, 1, now, A)
send_outbox(A)
return reply({v = 'created', step = first, epoch = 1, sent = #ARGV - 1})
