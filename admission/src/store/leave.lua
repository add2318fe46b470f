-- leave.lua: takes a user out of the queue, or gives back the user's unused pass.
--
-- KEYS[1] queue     ZSET  user -> score
-- KEYS[2] tickets   HASH  user -> ticket
-- KEYS[3] passes    ZSET  user -> pass expiry (unix ms)
-- KEYS[4] admitted  HASH  user -> "pass_id:expires_at_ms:ticket:checked_in_expiry_ms"
-- KEYS[5] stats     HASH  ended-pass counters: left, expired, unclaimed, released
-- KEYS[6] outbox    STREAM  see tick.lua; a valid pass given back adds
--                   user -> "end:left:pass_id:expires_at_ms" (PassEnded for seat-lock)
-- KEYS[7] ready     STRING  the event's state exists (see join.lua)
-- ARGV[1] user id
-- ARGV[2] sale_opens_at, unix ms
--
-- Returns -2 when the event's state is missing after opening (rebuild first), 1 when the
-- user was waiting (removed from the queue), 2 when the user held a valid pass (slot freed for
-- the next in line; its end is in the outbox, written in this same atomic step), 0 when
-- neither. A dropped pass is counted as left, or as expired when it had already
-- expired (the controller had not swept it yet; an expired pass is refused by its own expiry,
-- so it needs no PassEnded). expires_at_ms is the latest expiry any token of the pass carries
-- (its checked-in expiry when that is later).
local user = ARGV[1]
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
if redis.call('EXISTS', KEYS[7]) == 0 then
  if now >= tonumber(ARGV[2]) then
    return -2
  end
  redis.call('SET', KEYS[7], string.format('%d', now))
end

local queued = redis.call('ZREM', KEYS[1], user)
local ticketed = redis.call('HDEL', KEYS[2], user)
if queued + ticketed > 0 then
  return 1
end
local expires = redis.call('ZSCORE', KEYS[3], user)
if expires then
  local stored = redis.call('HGET', KEYS[4], user) or ''
  redis.call('ZREM', KEYS[3], user)
  redis.call('HDEL', KEYS[4], user)
  if tonumber(expires) > now then
    redis.call('HINCRBY', KEYS[5], 'left', 1)
    local pass_id, exp, _, full = string.match(stored, '^([^:]+):([^:]+):([^:]+):([^:]+)$')
    if pass_id then
      local latest = math.max(tonumber(exp), tonumber(full))
      if redis.call('EXISTS', KEYS[6]) == 0 then
        redis.call('XGROUP', 'CREATE', KEYS[6], 'relay', '0', 'MKSTREAM')
      end
      redis.call('XADD', KEYS[6], '*', user, 'end:left:' .. pass_id .. ':' .. string.format('%d', latest))
    end
    return 2
  end
  redis.call('HINCRBY', KEYS[5], 'expired', 1)
  local _, exp, _, full = string.match(stored, '^([^:]+):([^:]+):([^:]+):([^:]+)$')
  if full and tonumber(full) > tonumber(exp) then
    redis.call('HINCRBY', KEYS[5], 'unclaimed', 1)
  end
end
return 0
