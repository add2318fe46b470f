-- common.lua: helpers prepended to join.lua and status.lua (see `with_common` in
-- store/mod.rs): Redis time, the readiness check and the pass check-in rule. Redis has no `require`, so the one copy of a rule shared by scripts is
-- prepended to each; it defines functions only and touches no key by itself.

-- Redis time in unix ms: every replica agrees on it.
local function redis_now_ms()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end

-- Readiness (see store/mod.rs): before the sale opens no pass exists and the pre-queue is
-- shuffled anyway, so a missing state is simply started (the marker set to `now`, its
-- epoch); from the opening on it must be rebuilt first.
--
-- ready  STRING  the event's readiness marker
-- sale_opens_at, now (unix ms)
--
-- Returns false when the state is missing after the opening (the script answers {-2}).
local function ready_or_start(ready, sale_opens_at, now)
  if redis.call('EXISTS', ready) == 0 then
    if now >= sale_opens_at then
      return false
    end
    redis.call('SET', ready, string.format('%d', now))
  end
  return true
end

-- The pass check-in rule. A pass is issued with a short expiry (the check-in window) and its
-- full one stored beside it; whoever answers the holder a valid pass (Join, GetQueueStatus,
-- WatchQueue) collects it, which extends it to its checked-in expiry.
--
-- passes    ZSET  user -> pass expiry (unix ms), the active passes
-- admitted  HASH  user -> "pass_id:expires_at_ms:ticket:checked_in_expiry_ms"
-- user, now (Redis time, unix ms)
--
-- Returns the stored pass ("pass_id:expires_at_ms:ticket:checked_in_expiry_ms", collected)
-- when the user holds a valid pass, nil otherwise.
local function collect_pass(passes, admitted, user, now)
  local expires = redis.call('ZSCORE', passes, user)
  if not (expires and tonumber(expires) > now) then
    return nil
  end
  local stored = redis.call('HGET', admitted, user)
  local pass_id, exp, ticket, full = string.match(stored, '^([^:]+):([^:]+):([^:]+):([^:]+)$')
  if full and tonumber(full) > tonumber(exp) then
    stored = pass_id .. ':' .. full .. ':' .. ticket .. ':' .. full
    redis.call('HSET', admitted, user, stored)
    redis.call('ZADD', passes, 'XX', full, user)
  end
  return stored
end
