-- lib.lua of the simulated services: prepended to each of their scripts, after the
-- engine's lib.lua (whose stale_attempt / stale_claim do the fencing).
--
-- KEYS of every ledger script: 1 the run's ledger (hash), 2 the run's record (the
-- engine's), 3 the faults (hash: on a cluster the copy in the run's bucket); on one
-- server also 4 stock (hash: item -> units). On a cluster a script touches one slot:
-- the stock is changed by scripts of its own (stock_take.lua, stock_give.lua).
-- A: order_id, token (the caller's fencing token: {step, epoch, attempt} for a
-- step's attempt, {action, claim} for a compensation), then the script's own.

-- May this call act? A stale token is refused before anything is written (and a
-- call for an order that does not exist writes nothing at all). Returns the refusal
-- reply, or nil if the call may go ahead.
local function refuse_stale(A)
  local tok = A.token or {}
  local why
  if tok.action then why = stale_claim(KEYS[2], tok) else why = stale_attempt(KEYS[2], tok) end
  if not why then return nil end
  if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('HINCRBY', KEYS[1], 'refused_calls', 1) end
  return reply({v = 'stale', reason = why})
end

-- Is `service` down for this call? Returns the fault mode or nil. A fault set for
-- one order (field "<service>:<order id>") wins over one set for all.
local function fault_for(service, order_id, attempt)
  local spec = redis.call('HMGET', KEYS[3], service .. ':' .. order_id, service)
  local f = spec[1] or spec[2]
  if not f then return nil end
  f = cjson.decode(f)
  if f.attempts >= 0 and attempt > f.attempts then return nil end
  return f.mode
end

-- A resumed run does a step again, in a new round (A.token.round), only after the
-- step's effect was undone. Such an undone effect (`effect` with its undo `undone`
-- recorded) is archived under "<field>:<its round>", so the call acts anew; an
-- effect still in place is kept, and the call replays it. The ledger is read once:
-- returns the round's suffix for ids made from the order id ('' in round 1), the
-- effect in place now (nil: none, or archived), and the values of the ledger's
-- `more` fields (by position).
local function start_round(ledger, effect, undone, round, more)
  round = tonumber(round or 1)
  local fields = {effect, undone, effect .. '_round'}
  for _, f in ipairs(more or {}) do fields[#fields + 1] = f end
  local l = redis.call('HMGET', ledger, unpack(fields))
  local had = tonumber(l[3] or '1')
  local current = l[1]
  if l[1] and l[2] and round > had then
    redis.call('HSET', ledger, effect .. ':' .. had, l[1], undone .. ':' .. had, l[2],
      effect .. '_round', round)
    redis.call('HDEL', ledger, effect, undone)
    current = nil
  end
  local values = {}
  for i = 4, #fields do values[i - 3] = l[i] end
  local suffix = ''
  if round > 1 then suffix = ':r' .. round end
  return suffix, current, values
end

-- The start of a call that makes an effect: the ledger read once; a service that is down
-- (fault injection) or an effect already in place (a replay: the idempotency key) is
-- answered at once, the call counted. Otherwise returns nil, then the round's suffix,
-- this call's number and how many times the effect was made before, for the caller to
-- make it and record all three.
local function begin_effect(A, service, effect, undone, counter)
  local round, current, l = start_round(KEYS[1], effect, undone, A.token.round,
    {counter .. '_calls', counter .. '_effects'})
  local calls = tonumber(l[1] or '0') + 1
  local mode = fault_for(service, A.order_id, A.token.attempt)
  if mode or current then
    redis.call('HSET', KEYS[1], counter .. '_calls', calls)
    if mode then return reply({v = 'down', mode = mode}) end
    return reply({v = 'ok', replay = true, record = current})
  end
  return nil, round, calls, tonumber(l[2] or '0')
end
