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
local answered, _, calls = begin_effect(A, 'inventory', 'reservation', 'release', 'reserve')
if answered then return answered end
redis.call('HSET', ledger, 'reserve_calls', calls, 'reserve_key', A.key)
return reply({v = 'go'})
