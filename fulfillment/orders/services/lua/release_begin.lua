-- release_begin.lua (a cluster's inventory, undo 1 of 3): whether there is stock to give
-- back, and under which reservation key. Fenced by the compensation's claim.
-- KEYS: ledger, record, faults (unused).  A: order_id, token {action, claim}.
-- Replies v = go (key) | ok (replay: released already) | nothing | stale (reason).
local A = cjson.decode(ARGV[1])
local refused = refuse_stale(A)
if refused then return refused end
local ledger = KEYS[1]
local l = redis.call('HMGET', ledger, 'reserve_key', 'release', 'release_calls')
redis.call('HSET', ledger, 'release_calls', tonumber(l[3] or '0') + 1)
if l[2] then return reply({v = 'ok', replay = true}) end
if not l[1] then return reply({v = 'nothing'}) end
return reply({v = 'go', key = l[1]})
