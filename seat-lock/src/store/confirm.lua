-- confirm.lua: a live hold becomes a sale for good: its seats are marked "sold:<hold_id>"
-- without expiry, its tickets move from the user's live holds to the bought counter.
-- KEYS[1]: the event's key base.  ARGV: hold_id, user_id, booking_id.
-- Returns {'NOT_READY'}, {'NOT_FOUND'}, {'NOT_OWNER'}, {'EXPIRED'} (expired or released),
--   {'SOLD'} (already sold under another booking), {'LOST', seat_id...} (a seat no longer
--   points at the hold), or the hold reply {'OK', ...} (also for a replay with the same booking).
if not ready() then return {'NOT_READY'} end
local hold_id, user, booking = ARGV[1], ARGV[2], ARGV[3]
local refusal = check_owner(hold_id, user)
if refusal then return refusal end
local hkey = base .. 'hold:' .. hold_id
local state = settle(hold_id, now_ms())
if state == 'sold' then
  if redis.call('HGET', hkey, 'booking_id') == booking then return hold_reply(hold_id) end
  return {'SOLD'}
end
if not is_live(state) then return {'EXPIRED'} end

local h = redis.call('HMGET', hkey, 'seats', 'quantity')
local seats = split(h[1])
local lost = {'LOST'}
for _, seat in ipairs(seats) do
  if redis.call('GET', base .. 'seat:' .. seat) ~= hold_id then lost[#lost + 1] = seat end
end
if #lost > 1 then return lost end
for _, seat in ipairs(seats) do
  redis.call('SET', base .. 'seat:' .. seat, 'sold:' .. hold_id)
end
redis.call('HDEL', base .. 'user:' .. user, hold_id)
redis.call('INCRBY', base .. 'bought:' .. user, tonumber(h[2]))
redis.call('ZREM', base .. 'expiry', hold_id)
-- A sale does not expire: expires_at_ms 0, as after a rebuild from payment. Nor does its
-- record: return.lua needs it to give the seats back when the booking is cancelled, months
-- later perhaps.
redis.call('HSET', hkey, 'state', 'sold', 'booking_id', booking, 'expires_at_ms', 0)
return hold_reply(hold_id)
