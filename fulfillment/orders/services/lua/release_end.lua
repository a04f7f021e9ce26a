-- release_end.lua (a cluster's inventory, undo 3 of 3): record in the ledger that the
-- reservation was given back (A.given), or that there was none to give back.
-- KEYS: ledger, record, faults (unused).  A: order_id, token {action, claim}, given.
-- Replies v = ok | nothing | stale (reason).
local A = cjson.decode(ARGV[1])
local refused = refuse_stale(A)
if refused then return refused end
local ledger = KEYS[1]
if redis.call('HGET', ledger, 'release') then return reply({v = 'ok', replay = true}) end
if not A.given then return reply({v = 'nothing'}) end
redis.call('HSET', ledger, 'release', '1')
return reply({v = 'ok', replay = false})
