-- shuffle.lua: second half of the opening step; rescores one batch of the pre-queue.
--
-- KEYS[1] opening  HASH  state (sealed|open), ...
-- KEYS[2] queue    ZSET  user -> score
-- ARGV[1] 1 on the last batch: the event opens (state "open", admissions start)
-- ARGV[2] pre-queue size, recorded on the last batch
-- ARGV[3] the pre-queue tier, 2^48
-- ARGV[4], ARGV[5], ... pairs of user id and shuffle score (below the tier)
--
-- Returns 1 when applied, 0 when the event is not sealed (another replica finished the
-- opening). Only users still waiting with a pre-queue score are rescored: one who left and
-- rejoined after sealing stays behind, in join order.
if redis.call('HGET', KEYS[1], 'state') ~= 'sealed' then
  return 0
end
local tier = tonumber(ARGV[3])
for i = 4, #ARGV - 1, 2 do
  local score = redis.call('ZSCORE', KEYS[2], ARGV[i])
  if score and tonumber(score) < tier then
    redis.call('ZADD', KEYS[2], ARGV[i + 1], ARGV[i])
  end
end
if ARGV[1] == '1' then
  local time = redis.call('TIME')
  local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', now, 'prequeue', ARGV[2])
end
return 1
