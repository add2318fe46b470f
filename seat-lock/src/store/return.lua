-- return.lua: gives the sold seats of a cancelled booking back to sale, once per booking.
-- The seats' sold marks are deleted (hold_seats takes a seat whose key is missing as free)
-- and cleared in the zone's seat index (hold_best searches it), the places go back to the zone
-- counter, the user's bought count goes down (their ticket limit frees up), the hold turns
-- 'returned' (kept ENDED_TTL_SECS so a replay finds it) and the fact joins the outbox, so
-- SeatsReleased (CANCELLED) is published before any later SeatsHeld of the same seats.
-- KEYS[1]: the event's key base.
-- ARGV: booking_id, hold_id, user_id, zone_id, quantity, seat_id... (none for general admission)
-- Returns {'NOT_READY'};
--   {'RETURNED'} when it returned the seats;
--   {'ALREADY_RETURNED'} for a replay (nothing changes);
--   {'ANNOUNCED'} when the hold is unknown here (Redis lost it and was rebuilt from payment,
--     which no longer lists the cancelled booking, so its seats are already free): only the
--     release is announced, from a 'returned' record of the request, so inventory frees the
--     seats it still shows sold under this hold; counters and seats are not touched;
--   {'NOT_SOLD', why} when the hold exists but is not sold under this booking with exactly
--     these user, zone, quantity and seats (nothing changes).
if not ready() then return {'NOT_READY'} end
local booking, hold_id, user, zone = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local quantity = tonumber(ARGV[5])
local seats = {}
for i = 6, #ARGV do seats[#seats + 1] = ARGV[i] end

local hkey = base .. 'hold:' .. hold_id
local h = redis.call('HMGET', hkey, 'state', 'booking_id', 'user', 'zone', 'seats', 'quantity')
if not h[1] then
  redis.call('HSET', hkey, 'user', user, 'zone', zone, 'seats', table.concat(seats, ','),
    'quantity', quantity, 'state', 'returned', 'expires_at_ms', 0, 'price_cents', 0,
    'booking_id', booking)
  redis.call('EXPIRE', hkey, ENDED_TTL_SECS)
  redis.call('RPUSH', base .. 'outbox', 'released|' .. hold_id .. '|CANCELLED')
  return {'ANNOUNCED'}
end
if h[2] ~= booking then return {'NOT_SOLD', 'the hold is not sold under this booking'} end
if h[1] == 'returned' then return {'ALREADY_RETURNED'} end
if h[1] ~= 'sold' then return {'NOT_SOLD', 'the hold is ' .. h[1]} end
if h[3] ~= user or h[4] ~= zone or tonumber(h[6]) ~= quantity then
  return {'NOT_SOLD', 'the sold hold has another user, zone or quantity'}
end

-- The same seats, as sets: every stored seat is asked for, and as many distinct ones.
local asked = {}
local distinct = 0
for _, seat in ipairs(seats) do
  if not asked[seat] then distinct = distinct + 1 end
  asked[seat] = true
end
local stored = split(h[5])
if distinct ~= #stored then return {'NOT_SOLD', 'the sold hold has other seats'} end
for _, seat in ipairs(stored) do
  if not asked[seat] then return {'NOT_SOLD', 'the sold hold has other seats'} end
  if redis.call('GET', base .. 'seat:' .. seat) ~= 'sold:' .. hold_id then
    return {'NOT_SOLD', 'seat ' .. seat .. ' is not marked sold under the hold'}
  end
end

for _, seat in ipairs(stored) do redis.call('DEL', base .. 'seat:' .. seat) end
index_seats(stored, 0)
redis.call('INCRBY', base .. 'free:' .. zone, quantity)
local bkey = base .. 'bought:' .. user
if redis.call('DECRBY', bkey, quantity) <= 0 then redis.call('DEL', bkey) end
redis.call('HSET', hkey, 'state', 'returned')
redis.call('EXPIRE', hkey, ENDED_TTL_SECS)
redis.call('RPUSH', base .. 'outbox', 'released|' .. hold_id .. '|CANCELLED')
return {'RETURNED'}
