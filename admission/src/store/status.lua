-- status.lua: where a user stands, read only.
--
-- KEYS[1] queue     ZSET  user -> ticket
-- KEYS[2] tickets   HASH  user -> ticket
-- KEYS[3] passes    ZSET  user -> pass expiry (unix ms)
-- KEYS[4] admitted  HASH  user -> "pass_id:expires_at_ms:ticket"
-- ARGV[1] user id
--
-- Returns one of
--   {0}                                                     neither waiting nor holding a valid pass
--   {2, "pass_id:expires_at_ms:ticket", now_ms, queue_length}   holds a valid pass
--   {1, ticket, rank (0-based), queue_length, now_ms}       waiting
local user = ARGV[1]
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

local expires = redis.call('ZSCORE', KEYS[3], user)
if expires and tonumber(expires) > now then
  return {2, redis.call('HGET', KEYS[4], user), now, redis.call('ZCARD', KEYS[1])}
end
local ticket = redis.call('HGET', KEYS[2], user)
local rank = redis.call('ZRANK', KEYS[1], user)
if not ticket or not rank then
  return {0}
end
return {1, tonumber(ticket), rank, redis.call('ZCARD', KEYS[1]), now}
