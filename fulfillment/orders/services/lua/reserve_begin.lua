-- reserve_begin.lua (a cluster's inventory, 1 of 3): the ledger's part before the stock
-- is taken. On a cluster the stock is in a slot of its own, so a reservation is three
-- calls: this one (fenced: a stale token is refused before anything is taken), then
-- stock_take.lua (the stock, by the reservation's idempotency key), then reserve_end.lua
-- (fenced again: the ledger records what was taken). The key is kept in the ledger
-- (reserve_key) from here on, so an undo gives back whatever was taken under it.
-- KEYS: ledger, record, faults.  A: order_id, token {step, epoch, attempt, round}, key.
-- Replies v = go | ok (record, replay: reserved already) | down (mode) | stale (reason).
local A = cjson.decode(ARGV[1])
local refused = refuse_stale(A)
if refused then return refused end
local ledger = KEYS[1]
local _, reservation, l = start_round(ledger, 'reservation', 'release', A.token.round,
  {'reserve_calls'})
redis.call('HSET', ledger, 'reserve_calls', tonumber(l[1] or '0') + 1)
local mode = fault_for('inventory', A.order_id, A.token.attempt)
if mode then return reply({v = 'down', mode = mode}) end
if reservation then return reply({v = 'ok', replay = true, record = reservation}) end
redis.call('HSET', ledger, 'reserve_key', A.key)
return reply({v = 'go'})
