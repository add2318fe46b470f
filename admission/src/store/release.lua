-- release.lua: frees the slot of a user who has bought (BookingConfirmed) or walked away (a
-- hold of theirs expired: SeatsReleased with reason EXPIRED).
--
-- KEYS[1] passes    ZSET  user -> pass expiry (unix ms)
-- KEYS[2] admitted  HASH  user -> "pass_id:expires_at_ms:ticket:checked_in_expiry_ms"
-- KEYS[3] stats     HASH  ended-pass counters: left, expired, unclaimed, released
-- KEYS[4] outbox    STREAM  see tick.lua; a dropped pass adds
--                   user -> "end:<ARGV[2]>:pass_id:expires_at_ms" (PassEnded for seat-lock)
-- KEYS[5] ready     STRING  the event's state exists (see join.lua)
-- ARGV[1] user id
-- ARGV[2] why: "bought" or "abandoned" (counted as released either way: given back early
--         by an event, not by the holder)
--
-- Returns -2 when the event's state is missing (Redis lost it: the confirmation is retried
-- after the rebuild, which may have restored the pass), 1 when a pass was dropped (counted as released, its end in the outbox in this same
-- atomic step), 0 when the user held none (already expired, left, or a redelivered event):
-- repeating it is harmless.
if redis.call('EXISTS', KEYS[5]) == 0 then
  return -2
end
local stored = redis.call('HGET', KEYS[2], ARGV[1])
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if removed == 1 then
  redis.call('HINCRBY', KEYS[3], 'released', 1)
  local pass_id, exp, _, full = string.match(stored or '', '^([^:]+):([^:]+):([^:]+):([^:]+)$')
  if pass_id then
    local latest = math.max(tonumber(exp), tonumber(full))
    if redis.call('EXISTS', KEYS[4]) == 0 then
      redis.call('XGROUP', 'CREATE', KEYS[4], 'relay', '0', 'MKSTREAM')
    end
    redis.call('XADD', KEYS[4], '*', ARGV[1], 'end:' .. ARGV[2] .. ':' .. pass_id .. ':' .. string.format('%d', latest))
  end
end
return removed
