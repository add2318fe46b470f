-- end_pass.lua: records that admission ended a pass (PassEnded), so the hold scripts refuse it.
-- KEYS[1]: the event's key base.
-- ARGV: pass_id, expires_at_ms (the latest expiry of the pass's tokens).
-- Returns 1 when recorded, 0 when there is nothing to record: the pass has expired anyway, or a
-- record that covers it is already there (a redelivered event). The record expires with the
-- pass (PXAT), so ended passes cost nothing once their tokens are refused by expiry. It does
-- not need the event's `ready` marker: it is independent of the seats.
local key = base .. 'ended:' .. ARGV[1]
local expires = tonumber(ARGV[2])
if expires <= now_ms() then return 0 end
local known = redis.call('GET', key)
if known and tonumber(known) >= expires then return 0 end
redis.call('SET', key, ARGV[2], 'PXAT', ARGV[2])
return 1
