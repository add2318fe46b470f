-- hold_best.lua: holds the best `quantity` seats of a seated zone, or places of a GA zone.
-- Seated: the first row (in row order) with `quantity` adjacent free seats, lowest numbers
-- first; failing that and when allowed, the best free seats across rows. The search runs
-- inside the script, so concurrent callers never pick the same seat. It reads the zone's seat
-- index (common.lua), not the seat keys, so its cost does not grow with the seats sold. A
-- seat whose hold has expired counts as free once the sweep at the start has ended that hold
-- (it ends up to INLINE_SWEEP overdue holds per call, the sweeper the rest).
-- KEYS[1]: the event's key base.
-- ARGV: hold_id, user_id, zone_id, ttl_ms, price_cents (one seat), max_tickets_per_user,
--       pass_id, pass_expires_at_ms, quantity, kind ('seated' | 'ga'), allow_split ('1' | '0'),
--       seats_per_row, row_label...
-- Returns {'NOT_READY'}, {'PASS_REVOKED'} (admission ended the pass), {'TICKET_LIMIT_EXCEEDED', limit, already}, {'ZONE_SOLD_OUT', free},
--   {'NO_ADJACENT_SEATS'} (free seats exist, but not side by side), or the hold reply {'OK', ...}.
if not ready() then return {'NOT_READY'} end
local hold_id, user, zone = ARGV[1], ARGV[2], ARGV[3]
local ttl_ms, price, limit = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
if pass_ended(ARGV[7], tonumber(ARGV[8])) then return {'PASS_REVOKED'} end
local quantity, kind, allow_split = tonumber(ARGV[9]), ARGV[10], ARGV[11] == '1'
local per_row = tonumber(ARGV[12])
local now = now_ms()
sweep(now, INLINE_SWEEP)

local refusal = check_limit(user, quantity, limit) or check_zone(zone, quantity)
if refusal then return refusal end
if kind == 'ga' then
  return create_hold(hold_id, user, zone, {}, quantity, now, ttl_ms, price)
end

local rows = #ARGV - 12
local bytes = tonumber(redis.call('HGET', base .. 'idx:' .. zone, '-bytes') or '0')

-- The search without an index (state an older version initialised): one EXISTS per seat.
local function scan()
  local function is_free(seat)
    return redis.call('EXISTS', base .. 'seat:' .. seat) == 0
  end
  for i = 13, #ARGV do
    local run = {}
    for n = 1, per_row do
      local seat = zone .. '-' .. ARGV[i] .. '-' .. n
      if is_free(seat) then
        run[#run + 1] = seat
        if #run == quantity then return run end
      else
        run = {}
      end
    end
  end
  if not allow_split then return nil end
  local picked = {}
  for i = 13, #ARGV do
    for n = 1, per_row do
      local seat = zone .. '-' .. ARGV[i] .. '-' .. n
      if #picked < quantity and is_free(seat) then picked[#picked + 1] = seat end
    end
  end
  return picked
end

-- The same choice from the seat index (common.lua): BITPOS skips the full rows inside Redis,
-- the rows' longest free runs name the first row that fits, and only that row's bits are read.
local function search()
  local taken = base .. 'taken:' .. zone
  local row_bits, last = bytes * 8, rows * bytes - 1
  local function seat_at(pos, n) return zone .. '-' .. ARGV[13 + pos] .. '-' .. n end
  local first_free = redis.call('BITPOS', taken, 0, 0, last)
  if first_free < 0 then
    -- Every seat taken: as the walk answered, ZONE_SOLD_OUT (0 found) when split is allowed.
    if allow_split then return {} end
    return nil
  end
  local from = math.floor(first_free / row_bits)
  local runs = redis.call('GETRANGE', base .. 'runs:' .. zone, from, rows - 1)
  for i = 1, #runs do
    if string.byte(runs, i) >= quantity then
      local pos = from + i - 1
      local s = redis.call('GETRANGE', taken, pos * bytes, pos * bytes + bytes - 1)
      local run = 0
      for k = 0, per_row - 1 do
        if bit.band(string.byte(s, math.floor(k / 8) + 1), bit.rshift(128, k % 8)) == 0 then
          run = run + 1
          if run == quantity then
            local chosen = {}
            for n = k - quantity + 2, k + 1 do chosen[#chosen + 1] = seat_at(pos, n) end
            return chosen
          end
        else
          run = 0
        end
      end
    end
  end
  if not allow_split then return nil end
  -- The best free seats across rows: the lowest free bits, in row order.
  local picked = {}
  local at, last_bit = first_free, rows * row_bits - 1
  while #picked < quantity and at <= last_bit do
    local p = redis.call('BITPOS', taken, 0, at, last_bit, 'BIT')
    if p < 0 then break end
    local pos = math.floor(p / row_bits)
    picked[#picked + 1] = seat_at(pos, p - pos * row_bits + 1)
    at = p + 1
  end
  return picked
end

local chosen
-- A run longer than 255 seats is not told apart from 255 in `runs`: such a hold scans.
if bytes > 0 and quantity <= 255 then chosen = search() else chosen = scan() end
if not chosen then return {'NO_ADJACENT_SEATS'} end
if #chosen < quantity then return {'ZONE_SOLD_OUT', tostring(#chosen)} end
return create_hold(hold_id, user, zone, chosen, quantity, now, ttl_ms, price)
