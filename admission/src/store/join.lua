-- join.lua: puts a user in an event's waiting room, once. Prepended: common.lua
-- (`redis_now_ms`, `ready_or_start`, `collect_pass`).
--
-- KEYS[1] rate-limit counter of the user   (<p>adm:{<event>}:rl:<user>)
-- KEYS[2] seq          STRING  last ticket handed out
-- KEYS[3] queue        ZSET    user -> score, the users still waiting (lowest served first)
-- KEYS[4] tickets      HASH    user -> ticket, the users still waiting
-- KEYS[5] passes       ZSET    user -> pass expiry (unix ms), the active passes
-- KEYS[6] admitted     HASH    user -> "pass_id:expires_at_ms:ticket:checked_in_expiry_ms"
-- KEYS[7] opening      HASH    state = sealed|open once the opening step ran; closed = 1 once
--                              an operator closed the sale (sale.lua)
-- KEYS[8] ready        STRING  the event's state exists (value: its epoch, Redis ms when made)
-- ARGV[1] user id
-- ARGV[2] joins allowed per user per second
-- ARGV[3] sale_opens_at, unix ms
-- ARGV[4] the pre-queue tier, 2^48: post-opening scores are tier + ticket
--
-- Returns one of
--   {-2}                                        the event's state is missing after the sale
--                                               opened (Redis lost it): rebuild first
--   {-3}                                        the sale is closed (sale.lua), nothing changed
--   {-1, retry_after_ms}                        rate limited, nothing else changed
--   {2, "pass_id:expires_at_ms:ticket:...", now_ms, queue_length}   the user holds a valid pass
--                                               (collected: extended to its checked-in expiry)
--   {0|1, ticket, rank (0-based), queue_length, now_ms, score}   waiting; 1 = newly queued
-- The ticket comes from INCR here, so the order is Redis's, identical for every replica.
-- Before opening (Redis time before sale_opens_at and no opening state) the score is the
-- ticket, below the tier: the pre-queue, shuffled at opening. From the sealing on it is
-- tier + ticket, behind every pre-queue user. The first join at or after sale_opens_at
-- seals (state "sealed", sealed_ticket = the last pre-queue ticket) if the controller has
-- not yet; checking and setting the state in this atomic script is what makes a join racing
-- with the opening land on exactly one side: ticket <= sealed_ticket is pre-queue.
local user = ARGV[1]
local now = redis_now_ms()
if not ready_or_start(KEYS[8], tonumber(ARGV[3]), now) then
  return {-2}
end
if redis.call('HGET', KEYS[7], 'closed') == '1' then
  return {-3}
end
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

local stored = collect_pass(KEYS[5], KEYS[6], user, now)
if stored then
  return {2, stored, now, redis.call('ZCARD', KEYS[3])}
end

local ticket = redis.call('HGET', KEYS[4], user)
if not ticket then
  local sealed = redis.call('HEXISTS', KEYS[7], 'state') == 1
  if not sealed and now >= tonumber(ARGV[3]) then
    -- The first join of the sale seals the pre-queue, so sealed_ticket is exactly the last
    -- pre-queue ticket; the controller shuffles and opens.
    redis.call('HSET', KEYS[7], 'state', 'sealed', 'sealed_ticket', redis.call('GET', KEYS[2]) or '0',
      'sealed_at', now)
    sealed = true
  end
  ticket = redis.call('INCR', KEYS[2])
  local score = ticket
  if sealed then
    score = tonumber(ARGV[4]) + ticket
  end
  redis.call('ZADD', KEYS[3], score, user)
  redis.call('HSET', KEYS[4], user, ticket)
  -- The newest ticket has the highest score of its tier, and while unsealed nobody is in
  -- the later tier: the newcomer is last in line, so no ZRANK is needed.
  local length = redis.call('ZCARD', KEYS[3])
  return {1, ticket, length - 1, length, now, score}
end
local rank = redis.call('ZRANK', KEYS[3], user)
local score = redis.call('ZSCORE', KEYS[3], user)
return {0, tonumber(ticket), rank, redis.call('ZCARD', KEYS[3]), now, tonumber(score)}
