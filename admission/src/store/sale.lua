-- sale.lua: an operator's control of a sale (pause, resume, close) and its figures.
-- Prepended: common.lua (`redis_now_ms`, `ready_or_start`).
--
-- KEYS[1] opening         HASH    state (sealed|open), ...; `paused` = 1 while paused,
--                                 `closed` = 1 once closed (read by tick.lua and join.lua)
-- KEYS[2] queue           ZSET    user -> score, the users still waiting
-- KEYS[3] tickets         HASH    user -> ticket, the users still waiting
-- KEYS[4] passes          ZSET    user -> pass expiry (unix ms), the active passes
-- KEYS[5] admitted_total  STRING  passes issued so far
-- KEYS[6] ready           STRING  the event's state exists (see join.lua)
-- ARGV[1] action: status | pause | resume | close
-- ARGV[2] sale_opens_at, unix ms
--
-- Returns {-2} when the state is missing after opening (rebuild first), {-3} when the action
-- (pause, resume) needs a sale that is not closed, else
--   {opened (0|1), paused (0|1), closed (0|1), queue_length, admitted_total, active_passes}.
-- Closing takes the users still waiting out of the queue; passes issued stay until they end.
-- Active passes count those not yet expired (Redis time), as the tick would.
local action = ARGV[1]
local now = redis_now_ms()
if not ready_or_start(KEYS[6], tonumber(ARGV[2]), now) then
  return {-2}
end
local closed = redis.call('HGET', KEYS[1], 'closed') == '1'
if closed and (action == 'pause' or action == 'resume') then
  return {-3}
end
if action == 'pause' then
  redis.call('HSET', KEYS[1], 'paused', '1')
elseif action == 'resume' then
  redis.call('HDEL', KEYS[1], 'paused')
elseif action == 'close' and not closed then
  redis.call('HSET', KEYS[1], 'closed', '1', 'closed_at', now)
  redis.call('HDEL', KEYS[1], 'paused')
  redis.call('DEL', KEYS[2], KEYS[3])
  closed = true
end
local opened = 0
if redis.call('HGET', KEYS[1], 'state') == 'open' then
  opened = 1
end
local paused = 0
if redis.call('HGET', KEYS[1], 'paused') == '1' then
  paused = 1
end
local closed_flag = 0
if closed then
  closed_flag = 1
end
return {opened, paused, closed_flag, redis.call('ZCARD', KEYS[2]),
  tonumber(redis.call('GET', KEYS[5]) or '0'), redis.call('ZCOUNT', KEYS[4], '(' .. now, '+inf')}
