-- status.lua: where a user stands. Collecting a valid pass here is the user's check-in: an
-- uncollected pass (short check-in expiry) is extended to its checked-in expiry. Prepended:
-- common.lua (`redis_now_ms`, `ready_or_start`, `collect_pass`).
--
-- KEYS[1] queue     ZSET  user -> score (lowest served first)
-- KEYS[2] tickets   HASH  user -> ticket
-- KEYS[3] passes    ZSET  user -> pass expiry (unix ms)
-- KEYS[4] admitted  HASH  user -> "pass_id:expires_at_ms:ticket:checked_in_expiry_ms"
-- KEYS[5] ready     STRING  the event's state exists (see join.lua)
-- ARGV[1] user id
-- ARGV[2] sale_opens_at, unix ms
--
-- Returns one of
--   {-2}                                                    state missing after opening: rebuild
--   {3, queue_started_at_ms}                                neither waiting nor holding a valid pass;
--        the event's state (its queue) exists since then: a place taken earlier was lost
--        with Redis (the ready marker's epoch, see rebuild.lua)
--   {2, "pass_id:expires_at_ms:ticket:...", now_ms, queue_length}   holds a valid pass
--   {1, ticket, rank (0-based), queue_length, now_ms, score}        waiting
local user = ARGV[1]
local now = redis_now_ms()
if not ready_or_start(KEYS[5], tonumber(ARGV[2]), now) then
  return {-2}
end

local stored = collect_pass(KEYS[3], KEYS[4], user, now)
if stored then
  return {2, stored, now, redis.call('ZCARD', KEYS[1])}
end
local ticket = redis.call('HGET', KEYS[2], user)
local rank = redis.call('ZRANK', KEYS[1], user)
if not ticket or not rank then
  return {3, tonumber(redis.call('GET', KEYS[5]))}
end
local score = redis.call('ZSCORE', KEYS[1], user)
return {1, tonumber(ticket), rank, redis.call('ZCARD', KEYS[1]), now, tonumber(score)}
