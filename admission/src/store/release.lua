-- release.lua: frees the slot of a user who has bought (BookingConfirmed).
--
-- KEYS[1] passes    ZSET  user -> pass expiry (unix ms)
-- KEYS[2] admitted  HASH  user -> "pass_id:expires_at_ms:ticket:checked_in_expiry_ms"
-- KEYS[3] stats     HASH  ended-pass counters: left, expired, unclaimed, released
-- ARGV[1] user id
--
-- Returns 1 when a pass was dropped (counted as released), 0 when the user held none
-- (already expired, left, or a redelivered event): repeating it is harmless.
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if removed == 1 then
  redis.call('HINCRBY', KEYS[3], 'released', 1)
end
return removed
