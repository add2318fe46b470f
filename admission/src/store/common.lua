-- common.lua: helpers prepended to join.lua and status.lua (see `with_common` in
-- store/mod.rs). Redis has no `require`, so the one copy of a rule shared by scripts is
-- prepended to each; it defines functions only and touches no key by itself.

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
