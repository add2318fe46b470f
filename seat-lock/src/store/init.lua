-- init.lua: initialises an event's state from its layout and the sales payment knows of, then
-- sets the ready marker. Does nothing when the marker is already set. Sold holds are kept
-- without expiry, as confirm.lua keeps them (return.lua needs them). Each seated zone's seat
-- index (see common.lua) is built from the seat keys as they then stand: the sold seats just
-- written, and any seat key that outlived the marker.
-- KEYS[1]: the event's key base.
-- ARGV: zone_count, then per zone: zone_id, capacity, seats_per_row (0 for general
--       admission), row_count, row_label... (row_count labels, best row first); then one group
--       of 7 per sold hold: hold_id, user_id, zone_id, seats_csv, quantity, booking_id,
--       total_price_cents.
-- Returns 1 when it initialised the event, 0 when it was already initialised.
if ready() then return 0 end
local zones = tonumber(ARGV[1])
local free = {}
local seated = {}
local i = 2
for _ = 1, zones do
  local zone, capacity, per_row, rows = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]),
    tonumber(ARGV[i + 3])
  free[zone] = capacity
  if per_row > 0 and rows > 0 then
    local labels = {}
    for r = 1, rows do labels[r] = ARGV[i + 3 + r] end
    seated[#seated + 1] = {zone = zone, per_row = per_row, labels = labels}
  end
  i = i + 4 + rows
end
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

for _, z in ipairs(seated) do
  local bytes = math.ceil(z.per_row / 8)
  -- Every seat free, the bits past the row's last seat taken (the low bits of its last byte).
  local tail = z.per_row % 8
  local row = string.rep('\0', bytes)
  if tail > 0 then row = string.rep('\0', bytes - 1) .. string.char(2 ^ (8 - tail) - 1) end
  local taken_key = base .. 'taken:' .. z.zone
  redis.call('SET', taken_key, string.rep(row, #z.labels))
  local idx_key = base .. 'idx:' .. z.zone
  redis.call('DEL', idx_key)
  redis.call('HSET', idx_key, '-bytes', bytes)
  local runs = {}
  for r, label in ipairs(z.labels) do
    redis.call('HSET', idx_key, label, r - 1)
    local all_free = true
    for n = 1, z.per_row do
      if redis.call('EXISTS', base .. 'seat:' .. z.zone .. '-' .. label .. '-' .. n) == 1 then
        redis.call('SETBIT', taken_key, (r - 1) * bytes * 8 + n - 1, 1)
        all_free = false
      end
    end
    if all_free then
      runs[r] = string.char(math.min(z.per_row, 255))
    else
      local bits = redis.call('GETRANGE', taken_key, (r - 1) * bytes, r * bytes - 1)
      runs[r] = string.char(longest_run(bits))
    end
  end
  redis.call('SET', base .. 'runs:' .. z.zone, table.concat(runs))
end
redis.call('SET', base .. 'ready', '1')
return 1
