-- tick.lua: one step of the admission controller for one event, and the "now serving" view.
--
-- KEYS[1] lease           STRING  held by the replica that admits in this tick (PX tick_ms)
-- KEYS[2] queue           ZSET    user -> score, the users still waiting (lowest served first)
-- KEYS[3] tickets         HASH    user -> ticket, the users still waiting
-- KEYS[4] passes          ZSET    user -> pass expiry (unix ms), the active passes
-- KEYS[5] admitted        HASH    user -> "pass_id:expires_at_ms:ticket:checked_in_expiry_ms"
-- KEYS[6] passseq         STRING  last pass id handed out
-- KEYS[7] admitted_total  STRING  passes issued so far
-- KEYS[8] seq             STRING  last ticket handed out
-- KEYS[9] opening         HASH    state (sealed|open), sealed_ticket, sealed_at, opened_at, prequeue;
--                                 paused, closed (sale.lua): set, nobody is admitted
-- KEYS[10] stats          HASH    ended-pass counters: expired, unclaimed, released, left
-- KEYS[11] outbox         STREAM  one entry per tick that admitted: user -> "pass_id:expires_at_ms:ticket",
--                                 read by the consumer group "relay", which publishes Admitted events;
--                                 leave.lua and release.lua add entries user -> "end:<reason>:pass_id:expires_at_ms"
--                                 (PassEnded events)
-- KEYS[12] ready         STRING  the event's state exists; its value is the state's epoch
-- ARGV[1] sale_opens_at, unix ms: nothing is admitted before it
-- ARGV[2] admission capacity: active passes never exceed it
-- ARGV[3] pass ttl, ms: a collected pass lasts this long from admission
-- ARGV[4] tick, ms: the lease's length, so replicas admit at most once per tick
-- ARGV[5] the most users admitted in one tick
-- ARGV[6] the replica's id, stored in the lease
-- ARGV[7] check-in window, ms: an uncollected pass expires this soon (if shorter than the ttl)
-- ARGV[8] the pre-queue tier, 2^48: scores below it are pre-queue scores
--
-- Returns {-2} when the event's state is missing after opening (Redis lost it: rebuild), else
--         {now_ms, head, queue_length, admitted_total, active_passes, opened (0|1),
--          expired, unclaimed, released, left, admitted_count, outbox_entries, epoch}
-- where head is the lowest score still waiting (2^50, above every score, when nobody waits)
-- and outbox_entries counts the outbox entries not yet published and deleted by a relay.
-- The admissions go to the outbox in the same atomic step that issues the passes, so a
-- replica dying right after the tick loses no Admitted event: any replica's relay sends it.
-- Admits only once the event is open (state "open") and neither paused nor closed. When the sale time has come and nobody
-- is in the pre-queue, it opens the event itself; otherwise the controller's opening step
-- (seal.lua, shuffle.lua) must run first.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local epoch = redis.call('GET', KEYS[12])
if not epoch then
  if now >= tonumber(ARGV[1]) then
    return {-2}
  end
  epoch = string.format('%d', now)
  redis.call('SET', KEYS[12], epoch)
end
local admitted = {}
local count = 0
local tier = ARGV[8]

local state = redis.call('HGET', KEYS[9], 'state')
if not state and now >= tonumber(ARGV[1]) and redis.call('ZCOUNT', KEYS[2], '-inf', '(' .. tier) == 0 then
  redis.call('HSET', KEYS[9], 'state', 'open', 'sealed_ticket', redis.call('GET', KEYS[8]) or '0',
    'sealed_at', now, 'opened_at', now, 'prequeue', 0)
  state = 'open'
end

-- An operator's pause or close (sale.lua) stops admitting; the queue and the figures stay.
local halted = redis.call('HGET', KEYS[9], 'paused') == '1' or redis.call('HGET', KEYS[9], 'closed') == '1'

if state == 'open' and not halted and now >= tonumber(ARGV[1])
  and redis.call('SET', KEYS[1], ARGV[6], 'NX', 'PX', ARGV[4]) then
  -- Expired passes free their slots first; an uncollected one is a no-show freed early.
  local expired = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now)
  local unclaimed = 0
  for _, user in ipairs(expired) do
    local stored = redis.call('HGET', KEYS[5], user) or ''
    local _, exp, _, full = string.match(stored, '^([^:]+):([^:]+):([^:]+):([^:]+)$')
    if full and tonumber(full) > tonumber(exp) then
      unclaimed = unclaimed + 1
    end
    redis.call('HDEL', KEYS[5], user)
  end
  if #expired > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
    redis.call('HINCRBY', KEYS[10], 'expired', #expired)
    if unclaimed > 0 then
      redis.call('HINCRBY', KEYS[10], 'unclaimed', unclaimed)
    end
  end
  local free = tonumber(ARGV[2]) - redis.call('ZCARD', KEYS[4])
  if free > tonumber(ARGV[5]) then
    free = tonumber(ARGV[5])
  end
  if free > 0 then
    local popped = redis.call('ZPOPMIN', KEYS[2], free)
    local ttl = tonumber(ARGV[3])
    local window = math.min(ttl, tonumber(ARGV[7]))
    local full = now + ttl
    local expires = now + window
    for i = 1, #popped, 2 do
      local user = popped[i]
      local ticket = redis.call('HGET', KEYS[3], user) or '0'
      local pass_id = redis.call('INCR', KEYS[6])
      redis.call('HDEL', KEYS[3], user)
      redis.call('HSET', KEYS[5], user, pass_id .. ':' .. expires .. ':' .. ticket .. ':' .. full)
      redis.call('ZADD', KEYS[4], expires, user)
      table.insert(admitted, user)
      table.insert(admitted, pass_id .. ':' .. expires .. ':' .. ticket)
    end
    count = #admitted / 2
    if count > 0 then
      redis.call('INCRBY', KEYS[7], count)
      if redis.call('EXISTS', KEYS[11]) == 0 then
        -- From id 0, so the group sees this first entry too.
        redis.call('XGROUP', 'CREATE', KEYS[11], 'relay', '0', 'MKSTREAM')
      end
      redis.call('XADD', KEYS[11], '*', unpack(admitted))
    end
  end
end

local head = 1125899906842624
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if #first > 0 then
  head = tonumber(first[2])
end
local total = tonumber(redis.call('GET', KEYS[7]) or '0')
local stats = redis.call('HMGET', KEYS[10], 'expired', 'unclaimed', 'released', 'left')
local opened = 0
if state == 'open' then
  opened = 1
end
return {now, head, redis.call('ZCARD', KEYS[2]), total, redis.call('ZCARD', KEYS[4]), opened,
  tonumber(stats[1] or '0'), tonumber(stats[2] or '0'), tonumber(stats[3] or '0'), tonumber(stats[4] or '0'),
  count, redis.call('XLEN', KEYS[11]), tonumber(epoch)}
