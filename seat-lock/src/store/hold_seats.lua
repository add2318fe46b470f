-- hold_seats.lua: holds every listed seat of one zone for one user, or none.
-- KEYS[1]: the event's key base.
-- ARGV: hold_id, user_id, zone_id, ttl_ms, price_cents (one seat), max_tickets_per_user,
--       pass_id, pass_expires_at_ms, seat_id...
-- Returns {'NOT_READY'} when the event's state must be rebuilt first, {'PASS_REVOKED'} when
--   admission ended the pass (see pass_ended in common.lua),
--   {'TICKET_LIMIT_EXCEEDED', limit, already}, {'ZONE_SOLD_OUT', free},
--   {'SEAT_TAKEN', seat_id...} (the seats that are taken), or the hold reply {'OK', ...}.
if not ready() then return {'NOT_READY'} end
local hold_id, user, zone = ARGV[1], ARGV[2], ARGV[3]
local ttl_ms, price, limit = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
if pass_ended(ARGV[7], tonumber(ARGV[8])) then return {'PASS_REVOKED'} end
local now = now_ms()
sweep(now, INLINE_SWEEP)

local seats = {}
for i = 9, #ARGV do seats[#seats + 1] = ARGV[i] end
local refusal = check_limit(user, #seats, limit) or check_zone(zone, #seats)
if refusal then return refusal end

local taken = {'SEAT_TAKEN'}
for _, seat in ipairs(seats) do
  if redis.call('EXISTS', base .. 'seat:' .. seat) == 1 then taken[#taken + 1] = seat end
end
if #taken > 1 then return taken end
return create_hold(hold_id, user, zone, seats, #seats, now, ttl_ms, price)
