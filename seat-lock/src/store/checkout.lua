-- checkout.lua: a live hold enters checkout; its expiry becomes max(expiry, now + grace).
-- KEYS[1]: the event's key base.  ARGV: hold_id, user_id, grace_ms.
-- Returns {'NOT_READY'}, {'NOT_FOUND'}, {'NOT_OWNER'}, {'EXPIRED'} (expired or released),
--   {'SOLD'}, or the hold reply {'OK', ...}.
if not ready() then return {'NOT_READY'} end
local hold_id, user, grace = ARGV[1], ARGV[2], tonumber(ARGV[3])
local refusal = check_owner(hold_id, user)
if refusal then return refusal end
local now = now_ms()
local state = settle(hold_id, now)
if state == 'sold' then return {'SOLD'} end
if not is_live(state) then return {'EXPIRED'} end

local hkey = base .. 'hold:' .. hold_id
local h = redis.call('HMGET', hkey, 'seats', 'expires_at_ms')
local expires = math.max(tonumber(h[2]), now + grace)
for _, seat in ipairs(split(h[1])) do
  redis.call('PEXPIREAT', base .. 'seat:' .. seat, expires)
end
redis.call('HSET', hkey, 'state', 'checkout', 'expires_at_ms', expires)
redis.call('ZADD', base .. 'expiry', expires, hold_id)
return hold_reply(hold_id)
