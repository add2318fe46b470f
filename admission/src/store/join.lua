-- join.lua: puts a user in an event's waiting room, once.
--
-- KEYS[1] rate-limit counter of the user   (<p>adm:{<event>}:rl:<user>)
-- KEYS[2] seq          STRING  last ticket handed out
-- KEYS[3] queue        ZSET    user -> ticket, the users still waiting
-- KEYS[4] tickets      HASH    user -> ticket, the users still waiting
-- KEYS[5] passes       ZSET    user -> pass expiry (unix ms), the active passes
-- KEYS[6] admitted     HASH    user -> "pass_id:expires_at_ms:ticket"
-- ARGV[1] user id
-- ARGV[2] joins allowed per user per second
--
-- Returns one of
--   {-1, retry_after_ms}                        rate limited, nothing else changed
--   {2, "pass_id:expires_at_ms:ticket", now_ms, queue_length}   the user holds a valid pass
--   {0|1, ticket, rank (0-based), queue_length, now_ms}   waiting; 1 = newly queued, 0 = already was
-- The ticket comes from INCR here, so the order is Redis's, identical for every replica.
local user = ARGV[1]
local count = redis.call('INCR', KEYS[1])
if count == 1 then
  redis.call('PEXPIRE', KEYS[1], 1000)
end
if count > tonumber(ARGV[2]) then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl < 0 then
    redis.call('PEXPIRE', KEYS[1], 1000)
    ttl = 1000
  end
  return {-1, ttl}
end

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

local expires = redis.call('ZSCORE', KEYS[5], user)
if expires and tonumber(expires) > now then
  return {2, redis.call('HGET', KEYS[6], user), now, redis.call('ZCARD', KEYS[3])}
end

local created = 0
local ticket = redis.call('HGET', KEYS[4], user)
if not ticket then
  ticket = redis.call('INCR', KEYS[2])
  redis.call('ZADD', KEYS[3], ticket, user)
  redis.call('HSET', KEYS[4], user, ticket)
  created = 1
end
local rank = redis.call('ZRANK', KEYS[3], user)
return {created, tonumber(ticket), rank, redis.call('ZCARD', KEYS[3]), now}
