-- init.lua: initialises an event's state from its layout and the sales payment knows of, then
-- sets the ready marker. Does nothing when the marker is already set. Sold holds are kept
-- without expiry, as confirm.lua keeps them (return.lua needs them).
-- KEYS[1]: the event's key base.
-- ARGV: zone_count, then zone_count pairs (zone_id, capacity), then one group of 7 per sold
--       hold: hold_id, user_id, zone_id, seats_csv, quantity, booking_id, total_price_cents.
-- Returns 1 when it initialised the event, 0 when it was already initialised.
if ready() then return 0 end
local zones = tonumber(ARGV[1])
local free = {}
for i = 0, zones - 1 do
  free[ARGV[2 + 2 * i]] = tonumber(ARGV[3 + 2 * i])
end
local i = 2 + 2 * zones
while i + 6 <= #ARGV do
  local hold_id, user, zone, seats = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local quantity, booking, price = tonumber(ARGV[i + 4]), ARGV[i + 5], ARGV[i + 6]
  for _, seat in ipairs(split(seats)) do
    redis.call('SET', base .. 'seat:' .. seat, 'sold:' .. hold_id)
  end
  free[zone] = (free[zone] or 0) - quantity
  redis.call('INCRBY', base .. 'bought:' .. user, quantity)
  local hkey = base .. 'hold:' .. hold_id
  redis.call('HSET', hkey, 'user', user, 'zone', zone, 'seats', seats, 'quantity', quantity,
    'state', 'sold', 'expires_at_ms', 0, 'price_cents', price, 'booking_id', booking)
  i = i + 7
end
for zone, count in pairs(free) do
  redis.call('SET', base .. 'free:' .. zone, math.max(count, 0))
end
redis.call('SET', base .. 'ready', '1')
return 1
