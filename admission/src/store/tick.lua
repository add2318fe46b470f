-- tick.lua: one step of the admission controller for one event, and the "now serving" view.
--
-- KEYS[1] lease           STRING  held by the replica that admits in this tick (PX tick_ms)
-- KEYS[2] queue           ZSET    user -> ticket, the users still waiting
-- KEYS[3] tickets         HASH    user -> ticket, the users still waiting
-- KEYS[4] passes          ZSET    user -> pass expiry (unix ms), the active passes
-- KEYS[5] admitted        HASH    user -> "pass_id:expires_at_ms:ticket"
-- KEYS[6] passseq         STRING  last pass id handed out
-- KEYS[7] admitted_total  STRING  passes issued so far
-- KEYS[8] seq             STRING  last ticket handed out
-- ARGV[1] sale_opens_at, unix ms: nothing is admitted before it
-- ARGV[2] admission capacity: active passes never exceed it
-- ARGV[3] pass ttl, ms
-- ARGV[4] tick, ms: the lease's length, so replicas admit at most once per tick
-- ARGV[5] the most users admitted in one tick
-- ARGV[6] the replica's id, stored in the lease
--
-- Returns {now_ms, head, queue_length, admitted_total, active_passes, admitted_count,
--          user_1, pass_id_1, expires_at_ms_1, ticket_1, ...}
-- where head is the lowest ticket still waiting (last ticket + 1 when nobody waits).
-- When the sale has not opened or another replica holds the lease it only reports.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local admitted = {}

if now >= tonumber(ARGV[1]) and redis.call('SET', KEYS[1], ARGV[6], 'NX', 'PX', ARGV[4]) then
  -- Expired passes free their slots first.
  local expired = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now)
  for _, user in ipairs(expired) do
    redis.call('HDEL', KEYS[5], user)
  end
  if #expired > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
  end
  local free = tonumber(ARGV[2]) - redis.call('ZCARD', KEYS[4])
  if free > tonumber(ARGV[5]) then
    free = tonumber(ARGV[5])
  end
  if free > 0 then
    local popped = redis.call('ZPOPMIN', KEYS[2], free)
    local expires = now + tonumber(ARGV[3])
    for i = 1, #popped, 2 do
      local user = popped[i]
      local ticket = popped[i + 1]
      local pass_id = redis.call('INCR', KEYS[6])
      redis.call('HDEL', KEYS[3], user)
      redis.call('HSET', KEYS[5], user, pass_id .. ':' .. expires .. ':' .. ticket)
      redis.call('ZADD', KEYS[4], expires, user)
      table.insert(admitted, user)
      table.insert(admitted, tostring(pass_id))
      table.insert(admitted, expires)
      table.insert(admitted, tonumber(ticket))
    end
    if #admitted > 0 then
      redis.call('INCRBY', KEYS[7], #admitted / 4)
    end
  end
end

local head
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if #first > 0 then
  head = tonumber(first[2])
else
  head = tonumber(redis.call('GET', KEYS[8]) or '0') + 1
end
local total = tonumber(redis.call('GET', KEYS[7]) or '0')
local result = {now, head, redis.call('ZCARD', KEYS[2]), total, redis.call('ZCARD', KEYS[4]), #admitted / 4}
for _, v in ipairs(admitted) do
  table.insert(result, v)
end
return result
