-- hold_best.lua: holds the best `quantity` seats of a seated zone, or places of a GA zone.
-- Seated: the first row (in row order) with `quantity` adjacent free seats, lowest numbers
-- first; failing that and when allowed, the best free seats across rows. The search runs
-- inside the script, so concurrent callers never pick the same seat.
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

local function is_free(seat)
  return redis.call('EXISTS', base .. 'seat:' .. seat) == 0
end

local chosen = nil
for i = 13, #ARGV do
  local run = {}
  for n = 1, per_row do
    local seat = zone .. '-' .. ARGV[i] .. '-' .. n
    if is_free(seat) then
      run[#run + 1] = seat
      if #run == quantity then chosen = run break end
    else
      run = {}
    end
  end
  if chosen then break end
end
if not chosen and allow_split then
  local picked = {}
  for i = 13, #ARGV do
    for n = 1, per_row do
      local seat = zone .. '-' .. ARGV[i] .. '-' .. n
      if #picked < quantity and is_free(seat) then picked[#picked + 1] = seat end
    end
  end
  if #picked == quantity then chosen = picked else return {'ZONE_SOLD_OUT', tostring(#picked)} end
end
if not chosen then return {'NO_ADJACENT_SEATS'} end
return create_hold(hold_id, user, zone, chosen, quantity, now, ttl_ms, price)
