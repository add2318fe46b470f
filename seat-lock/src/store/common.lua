-- common.lua: helpers prepended to every seat-lock script except ack.lua.
--
-- KEYS[1] of every script is the event's key base "<prefix>sl:{<event_id>}:". Every key a
-- script touches is that base plus a suffix, so all of them share the event's hash tag and
-- live in one Redis Cluster slot:
--   ready              marker: the event's state is initialised (missing after a Redis loss)
--   seat:<seat_id>     hold_id while held (PXAT = hold expiry), "sold:<hold_id>" once sold
--   hold:<hold_id>     HASH user, zone, seats, quantity, state, expires_at_ms, price_cents, booking_id;
--                      state held | checkout | sold | released | expired | returned (a sold
--                      hold whose booking was cancelled); sold holds never expire, ended and
--                      returned ones after ENDED_TTL_SECS
--   user:<user_id>     HASH hold_id -> quantity of the user's live holds
--   bought:<user_id>   tickets the user has bought
--   free:<zone_id>     free seats / places of the zone
--   expiry             ZSET hold_id -> expires_at_ms of live holds
--   outbox             LIST of facts to publish: "held|<hold_id>", "released|<hold_id>|<REASON>"
--                      (REASON RELEASED, EXPIRED or CANCELLED)
--   taken:<zone_id>    the best-available index of a seated zone (see "Seat index" below):
--                      a bitmap, a fixed stride of `-bytes` bytes per row in row order, bit
--                      (position * 8 * bytes + number - 1) set while the seat is taken
--   runs:<zone_id>     one byte per row in row order: its longest run of free seats (255 at most)
--   idx:<zone_id>      HASH row label -> row position (0 = the best row), '-bytes' -> bytes per row
--   ended:<pass_id>    the latest expiry (unix ms) of the tokens of a pass admission ended
--                      (PassEnded: left, or bought); expires then (PXAT), when every such token
--                      is refused by its own expiry anyway
-- "Now" is Redis TIME, so every replica agrees on it.

local base = KEYS[1]
-- Ended (and returned) holds are kept this long so GetHold, ConfirmHold and ReturnSeats
-- replays still answer.
local ENDED_TTL_SECS = 86400
-- Expired holds ended inline by a hold script before it checks anything.
local INLINE_SWEEP = 100

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function split(csv)
  local out = {}
  if not csv or csv == '' then return out end
  for part in string.gmatch(csv, '[^,]+') do out[#out + 1] = part end
  return out
end

local function ready()
  return redis.call('EXISTS', base .. 'ready') == 1
end

local function is_live(state)
  return state == 'held' or state == 'checkout'
end

-- The hold as the service answers it:
-- {'OK', hold_id, user, zone, seats_csv, quantity, state, expires_at_ms, price_cents, booking_id}
local function hold_reply(hold_id)
  local h = redis.call('HMGET', base .. 'hold:' .. hold_id,
    'user', 'zone', 'seats', 'quantity', 'state', 'expires_at_ms', 'price_cents', 'booking_id')
  return {'OK', hold_id, h[1] or '', h[2] or '', h[3] or '', h[4] or '0', h[5] or '',
    h[6] or '0', h[7] or '0', h[8] or ''}
end

-- Seat index. A seat's bit is 1 while its seat key exists, and also once the key has lapsed
-- (PXAT) until the sweep ends the hold it belonged to; bits past the row's last seat are 1.
-- init.lua builds it from the seat keys, and every script that creates or deletes a seat key
-- updates it through index_seats in the same script, so it never disagrees with them: a 0
-- bit always means "no seat key". Each row's longest free run is kept beside it, so
-- hold_best.lua finds the first row that fits `quantity` adjacent seats by reading one byte
-- per row from the first row with a free seat (BITPOS), then reads that row alone: the cost
-- of a search does not grow with the seats sold, where one EXISTS per seat did.

-- zone, row position, bit offset and bytes per row of a seat id "<zone>-<row>-<number>"; nil
-- when the seat's zone has no index (general admission, or state written before it existed).
local function seat_bit(seat)
  local zone, row, number = string.match(seat, '^([^-]+)-([^-]+)-(%d+)$')
  if not zone then return nil end
  local geo = redis.call('HMGET', base .. 'idx:' .. zone, row, '-bytes')
  if not geo[1] or not geo[2] then return nil end
  local pos, bytes = tonumber(geo[1]), tonumber(geo[2])
  return zone, pos, pos * bytes * 8 + tonumber(number) - 1, bytes
end

-- The longest run of 0 bits in the row bytes `s` (its padding bits are 1).
local function longest_run(s)
  local best, run = 0, 0
  for i = 1, #s do
    local b = string.byte(s, i)
    if b == 0 then
      run = run + 8
    elseif b == 255 then
      if run > best then best = run end
      run = 0
    else
      for k = 7, 0, -1 do
        if bit.band(b, bit.lshift(1, k)) == 0 then
          run = run + 1
        else
          if run > best then best = run end
          run = 0
        end
      end
    end
  end
  if run > best then best = run end
  return math.min(best, 255)
end

-- Recomputes row `pos`'s longest free run from its bits.
local function index_row(zone, pos, bytes)
  local row = redis.call('GETRANGE', base .. 'taken:' .. zone, pos * bytes, pos * bytes + bytes - 1)
  redis.call('SETRANGE', base .. 'runs:' .. zone, pos, string.char(longest_run(row)))
end

-- Marks `seats` taken (1) or free (0) in their zones' index and recomputes each row touched.
local function index_seats(seats, taken)
  local rows = {}
  for _, seat in ipairs(seats) do
    local zone, pos, offset, bytes = seat_bit(seat)
    if zone then
      redis.call('SETBIT', base .. 'taken:' .. zone, offset, taken)
      rows[zone .. '-' .. pos] = {zone, pos, bytes}
    end
  end
  for _, row in pairs(rows) do index_row(row[1], row[2], row[3]) end
end

-- Ends a live hold (state 'released' or 'expired'): frees the seats that still point at it,
-- gives its places back to the zone counter, drops it from the user's live holds and the
-- expiry index, and appends the fact to the outbox.
local function end_hold(hold_id, state, reason)
  local hkey = base .. 'hold:' .. hold_id
  local h = redis.call('HMGET', hkey, 'user', 'zone', 'seats', 'quantity')
  local freed = {}
  for _, seat in ipairs(split(h[3])) do
    local skey = base .. 'seat:' .. seat
    local current = redis.call('GET', skey)
    if current == hold_id then redis.call('DEL', skey) end
    -- A key that lapsed (PXAT) before this sweep is still counted taken by the index.
    if current == hold_id or not current then freed[#freed + 1] = seat end
  end
  index_seats(freed, 0)
  redis.call('INCRBY', base .. 'free:' .. h[2], tonumber(h[4]))
  redis.call('HDEL', base .. 'user:' .. h[1], hold_id)
  redis.call('ZREM', base .. 'expiry', hold_id)
  redis.call('HSET', hkey, 'state', state)
  redis.call('EXPIRE', hkey, ENDED_TTL_SECS)
  redis.call('RPUSH', base .. 'outbox', 'released|' .. hold_id .. '|' .. reason)
end

-- Ends the hold if it is live but its expiry has passed; returns its state afterwards.
local function settle(hold_id, now)
  local h = redis.call('HMGET', base .. 'hold:' .. hold_id, 'state', 'expires_at_ms')
  if is_live(h[1]) and tonumber(h[2]) <= now then
    end_hold(hold_id, 'expired', 'EXPIRED')
    return 'expired'
  end
  return h[1]
end

-- Ends up to `limit` holds whose expiry has passed; returns how many it ended.
local function sweep(now, limit)
  local due = redis.call('ZRANGEBYSCORE', base .. 'expiry', '-inf', now, 'LIMIT', 0, limit)
  local ended = 0
  for _, hold_id in ipairs(due) do
    local h = redis.call('HMGET', base .. 'hold:' .. hold_id, 'state', 'expires_at_ms')
    if not is_live(h[1]) then
      redis.call('ZREM', base .. 'expiry', hold_id)
    elseif tonumber(h[2]) > now then
      -- Extended by a checkout: re-index at the new expiry.
      redis.call('ZADD', base .. 'expiry', tonumber(h[2]), hold_id)
    else
      end_hold(hold_id, 'expired', 'EXPIRED')
      ended = ended + 1
    end
  end
  return ended
end

-- nil when the user may take `quantity` more tickets, else the refusal
-- {'TICKET_LIMIT_EXCEEDED', limit, already}. Live holds and bought tickets both count.
local function check_limit(user, quantity, limit)
  local already = tonumber(redis.call('GET', base .. 'bought:' .. user) or '0')
  for _, q in ipairs(redis.call('HVALS', base .. 'user:' .. user)) do
    already = already + tonumber(q)
  end
  if already + quantity > limit then
    return {'TICKET_LIMIT_EXCEEDED', tostring(limit), tostring(already)}
  end
  return nil
end

-- nil when the zone has `quantity` free places, else {'ZONE_SOLD_OUT', free}.
local function check_zone(zone, quantity)
  local free = tonumber(redis.call('GET', base .. 'free:' .. zone) or '0')
  if free < quantity then return {'ZONE_SOLD_OUT', tostring(free)} end
  return nil
end

-- Records a new hold of `seats` (empty for general admission) and answers it.
local function create_hold(hold_id, user, zone, seats, quantity, now, ttl_ms, price_cents)
  local expires = now + ttl_ms
  for _, seat in ipairs(seats) do
    redis.call('SET', base .. 'seat:' .. seat, hold_id, 'PXAT', expires)
  end
  index_seats(seats, 1)
  redis.call('DECRBY', base .. 'free:' .. zone, quantity)
  redis.call('HSET', base .. 'hold:' .. hold_id, 'user', user, 'zone', zone,
    'seats', table.concat(seats, ','), 'quantity', quantity, 'state', 'held',
    'expires_at_ms', expires, 'price_cents', price_cents * quantity, 'booking_id', '')
  redis.call('HSET', base .. 'user:' .. user, hold_id, quantity)
  redis.call('ZADD', base .. 'expiry', expires, hold_id)
  redis.call('RPUSH', base .. 'outbox', 'held|' .. hold_id)
  return hold_reply(hold_id)
end

-- True when admission ended the pass `pass_id` and the presented token is one of its tokens
-- (expires no later than the recorded end): a token of a newer pass that reuses the id (after
-- admission's Redis lost its counters) expires later and is not refused.
local function pass_ended(pass_id, pass_expires_ms)
  local ended = redis.call('GET', base .. 'ended:' .. pass_id)
  return ended ~= false and tonumber(ended) >= pass_expires_ms
end

-- The checks every per-hold script starts with: nil when `user` owns the existing hold,
-- else {'NOT_FOUND'} or {'NOT_OWNER'}.
local function check_owner(hold_id, user)
  local owner = redis.call('HGET', base .. 'hold:' .. hold_id, 'user')
  if not owner then return {'NOT_FOUND'} end
  if owner ~= user then return {'NOT_OWNER'} end
  return nil
end

---------------------------------------------------------------------------------------------
