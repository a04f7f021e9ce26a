-- reserve_end.lua (a cluster's inventory, 3 of 3): record in the ledger what was taken.
-- A stale token is refused: the stock stays taken under the reservation's key, which
-- the ledger holds (reserve_key), so the order's undo gives it back, or a live attempt
-- of the same round takes it over (stock_take.lua replays it).
-- KEYS: ledger, record, faults (unused).  A: order_id, token {step, epoch, attempt, round}, record.
-- Replies v = ok (record, replay) | stale (reason).
local A = cjson.decode(ARGV[1])
local refused = refuse_stale(A)
if refused then return refused end
local ledger = KEYS[1]
local l = redis.call('HMGET', ledger, 'reservation', 'reserve_effects')
if l[1] then return reply({v = 'ok', replay = true, record = l[1]}) end
redis.call('HSET', ledger, 'reservation', A.record, 'reserve_effects', tonumber(l[2] or '0') + 1)
return reply({v = 'ok', replay = false, record = A.record})
